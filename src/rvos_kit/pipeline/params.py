"""params.yaml: every path and parameter of a pipeline, and its schema.

Paths in it are relative to the folder that holds it (where DVC runs the stages).
:func:`load_params` checks the whole file against the schema below (pydantic, strict:
unknown keys, wrong types and values outside a fixed set are refused with the key path
and what is allowed) plus the cross-key rules in :meth:`Params._cross_checks`, then
returns the file as a plain ``dict``; :mod:`rvos_kit.pipeline.dag` turns it into ``dvc.yaml``.
A member of a fusion node is ``NODE`` (the node's own masks: a model's output or a fused
tree) or ``NODE/PROP`` (those masks after the propagation config PROP, e.g. ``soc/aot``).

Extending: to add a section, define ``class MySection(Section)`` with typed fields and
defaults, add ``mysection: MySection | None = None`` to :class:`Params` (or a field to an
existing section class), and put any rule spanning several keys in
``Params._cross_checks``; nothing else needs to change.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ..errors import KitError
from ..trees.yamlfiles import read_yaml

COMPAT_MODES = ("challenge2023", "corrected")
MODEL_KINDS = ("logits", "probabilities")
MODEL_SOURCES = ("tree", "imported", "released", "infer")
FUSION_SOURCES = ("compute", "released")
BACKENDS = ("aot", "deaot", "flow")
SPLITS = ("valid", "test")
DEVICES = ("cuda", "cpu")
PAIRINGS = ("consecutive", "none")  # fusion.PAIRINGS (tested equal)
ODD_RULES = ("vote", "first")  # fusion.ODD_RULES
ENCODERS = ("pil", "fast")  # masktree.ENCODERS
RUNNER_MODES = ("native", "docker")  # runner.MODES

# The five RVOS models of the published solution and the kind of their raw output
# (spec 3). A model of another name may only come as a ready tree (source: tree).
RVOS_MODELS = {
    "soc": "logits",
    "mutr": "logits",
    "referformer_ft": "logits",
    "vit_huge": "probabilities",
    "convnext": "probabilities",
}


_UNKNOWN = "unknown key \0"


def _lit(values: tuple):
    return Literal[values]  # type: ignore[valid-type]


class Section(BaseModel):
    """Base of every mapping in params.yaml: strict types, no unknown keys."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data):
        if isinstance(data, dict):
            unknown = [k for k in data if k not in cls.model_fields]
            if unknown:
                raise ValueError(
                    f"{_UNKNOWN}{unknown[0]}\0; allowed keys: {', '.join(cls.model_fields)}"
                )
        return data


Path_ = str  # a path relative to the params file's folder


class DataSection(Section):
    meta: Path_
    images: Path_ | None = None
    gt: Path_ | None = None
    split: _lit(SPLITS) = "test"  # valid: the valid-only videos (meta minus test_meta)
    test_meta: Path_ | None = None


class PathsSection(Section):
    outputs: Path_ = Field(min_length=1)
    lock: Path_ = "checkpoints.lock"
    code: Path_ | None = None
    downloads: Path_ = "."
    checkpoints: Path_ = "checkpoints"


class RunnerSection(Section):
    mode: _lit(RUNNER_MODES) = "native"
    gpus: Union[int, str, bool, list[int], None] = "all"  # noqa: UP007
    images: dict[str, str] | None = None
    stages: dict[str, str] | None = None
    shm_size: str | None = None
    network: str | None = None
    allow_mounts_outside_project: bool = False  # compute/runguard.py

    @field_validator("images")
    @classmethod
    def _references(cls, v):
        from ..compute.runguard import image_ref_error

        for key, ref in (v or {}).items():
            why = image_ref_error(ref)
            if why is not None:
                raise ValueError(f"runner.images.{key}: {ref!r} is not a Docker image "
                                 f"reference ({why})")  # fmt: skip
        return v


class InferSection(Section):
    """``source: infer`` (``rvos-kit infer``, docs/inference.md)."""

    upstream: Path_  # the published code at the pinned commit
    pretrained: Path_ = "checkpoints/pretrained"
    chunk_videos: int | None = Field(None, ge=1)


class SampleSection(Section):
    out: Path_
    seed: int = Field(0, ge=0)
    videos: int = Field(6, ge=1)
    frames: int = Field(12, ge=2)
    height: int = Field(96, ge=32)
    width: int = Field(160, ge=32)


class ModelSection(Section):
    kind: _lit(MODEL_KINDS)
    source: _lit(MODEL_SOURCES)
    tree: Path_ | None = None
    dumps: list[Path_] | None = None

    @model_validator(mode="after")
    def _source_keys(self):
        if self.source == "tree" and not self.tree:
            raise ValueError("source: tree needs tree: DIR (a model dir)")
        if self.source == "imported" and not self.dumps:
            raise ValueError("source: imported needs dumps: [the .pth dump file(s)]")
        return self


class PropagationSection(Section):
    backend: _lit(BACKENDS)
    tree: str
    nodes: list[str]
    model: str | None = None
    checkpoint: Path_ | None = None
    scales: list[float] = Field(default=[0.8, 1.0, 1.2], min_length=1)
    flip: bool = True
    max_long_side: int = Field(1040, ge=1)
    # engine code reproduced (contract 5.6-5.7): aot stages only published_aot_fork
    engine: Literal["published_aot_fork", "aot_benchmark"] | None = None
    # encoder features shared between a video's expressions (exact; docs/propagation.md)
    share_encoder: bool = True
    # caps in MiB on the measured budgets of its tiers (None: measured only)
    encoder_cache_mb: float | None = Field(None, ge=0, allow_inf_nan=False)
    host_cache_mb: float | None = Field(None, ge=0, allow_inf_nan=False)

    @field_validator("scales")
    @classmethod
    def _positive(cls, v):
        if any(s <= 0 for s in v):
            raise ValueError("every scale must be > 0")
        return v

    @model_validator(mode="after")
    def _model_of_backend(self):
        from ..stages.propagate.aot_backend import MODELS

        if self.backend == "flow":
            if self.model is not None:
                raise ValueError("backend flow takes no model (remove model:)")
            if self.engine is not None:
                raise ValueError("backend flow takes no engine (remove engine:)")
        elif self.backend == "aot" and self.engine not in (None, "published_aot_fork"):
            raise ValueError(
                "backend aot runs the published AOT engine: engine: published_aot_fork "
                "(only DeAOT's engine is an open question, contract section 5.7)"
            )
        elif self.model is not None and self.model not in MODELS[self.backend]:
            raise ValueError(
                f"model {self.model!r} is not a model of backend {self.backend}; allowed: "
                f"{', '.join(MODELS[self.backend])}"
            )
        return self


class FusionSection(Section):
    members: list[str] = Field(min_length=1)
    source: _lit(FUSION_SOURCES) = "compute"
    pairing: _lit(PAIRINGS) = "consecutive"
    pair_threshold: int = Field(4, ge=1)
    odd: _lit(ODD_RULES) = "vote"
    odd_threshold: int = Field(3, ge=1)


class SubmissionSection(Section):
    node: str
    sha256: Path_ = "submission.sha256"


class AuditSection(Section):
    stages: dict[str, str]
    report: Path_ | None = None


class ScaleNeedsSection(Section):
    """What one shard asks Ray for; an absent key keeps the kind's default."""

    gpus: float | None = Field(None, ge=0)  # an int is a float here (strict mode too)
    cpus: float | None = Field(None, ge=0)


class ScaleLocalSection(Section):
    """The embedded Ray of ``address: local``."""

    cpus: int | None = Field(None, ge=1)
    gpus: int | None = Field(None, ge=0)


class ScaleSection(Section):
    """Sharding on Ray (rvos_kit.compute.scale, docs/scale.md): how, never what, so no stage
    depends on it."""

    address: str = Field("local", min_length=1)
    shards: Union[int, Literal["auto"]] = "auto"  # noqa: UP007
    videos_per_shard: int | None = Field(None, ge=1)
    max_retries: int = Field(2, ge=0)
    needs: dict[str, ScaleNeedsSection] | None = None
    local: ScaleLocalSection | None = None

    @model_validator(mode="after")
    def _shards(self):
        if isinstance(self.shards, int) and self.shards < 1:
            raise ValueError("shards: auto or a number >= 1")
        if self.videos_per_shard is not None and self.shards != "auto":
            raise ValueError("give shards or videos_per_shard, not both")
        return self


class Params(Section):
    compat: _lit(COMPAT_MODES) = "challenge2023"
    data: DataSection
    paths: PathsSection
    device: _lit(DEVICES) = "cuda"
    encoder: _lit(ENCODERS) = "pil"
    runner: RunnerSection | None = None
    infer: InferSection | None = None
    sample: SampleSection | None = None
    models: dict[str, ModelSection]
    propagation: dict[str, PropagationSection] | None = None
    fusion: dict[str, FusionSection] | None = None
    submission: SubmissionSection | None = None
    audit: AuditSection | None = None
    scale: ScaleSection | None = None

    @model_validator(mode="after")
    def _cross_checks(self):
        """Rules spanning several keys; each error names its key path."""
        models, props, fusion = self.models, self.propagation or {}, self.fusion or {}
        for section, names in (("models", models), ("propagation", props), ("fusion", fusion)):
            for name in names:
                if not name or "." in name or "/" in name:
                    raise ValueError(
                        f"{section}.{name}: a name may not be empty nor hold '.' or '/' (they "
                        "join a node and its propagation: soc/aot, metrics soc.aot.json); "
                        "rename it"
                    )
        lists = [(f"fusion.{n}.members", f.members) for n, f in fusion.items()]
        lists += [(f"propagation.{n}.nodes", c.nodes) for n, c in props.items()]
        for where, refs in lists:
            twice = sorted({r for r in refs if refs.count(r) > 1})
            if twice:
                raise ValueError(
                    f"{where}: {twice[0]!r} is listed twice; each member counts once (a "
                    "repeated one would vote twice)"
                )
        for name, m in models.items():
            want = RVOS_MODELS.get(name)
            if want is None and m.source != "tree":
                raise ValueError(
                    f"models.{name}: not an RVOS model of the solution (known: "
                    f"{', '.join(RVOS_MODELS)}); another model can only be a ready tree "
                    "(source: tree)"
                )
            if want is not None and m.kind != want:
                raise ValueError(f"models.{name}.kind: {name} outputs {want}, not {m.kind}")
        if any(m.source == "infer" for m in models.values()):
            if self.data.images is None:
                raise ValueError("data.images: source: infer needs the JPEG frames")
            if self.infer is None:
                raise ValueError(
                    "(top level): missing key 'infer': source: infer needs an infer section "
                    "(upstream: DIR)"
                )
            if self.data.split == "valid" and self.data.test_meta is None:
                raise ValueError(
                    "data.test_meta: split valid (valid minus test videos) needs the test meta"
                )
        for name, c in props.items():
            for n in c.nodes:
                if n not in models and n not in fusion:
                    raise ValueError(
                        f"propagation.{name}.nodes: {n!r} is neither a model nor a fusion node"
                    )
        for name, f in fusion.items():
            if name in models:
                raise ValueError(f"fusion.{name}: a fusion node cannot share a model's name")
            for m in f.members:
                node, _, prop = m.partition("/")
                if node not in models and node not in fusion:
                    raise ValueError(
                        f"fusion.{name}.members: {m!r}: {node!r} is neither a model nor a node"
                    )
                if prop and (prop not in props or node not in props[prop].nodes):
                    raise ValueError(
                        f"fusion.{name}.members: {m!r}: propagation {prop!r} does not list "
                        f"node {node!r}"
                    )
        if self.submission is not None and self.submission.node not in fusion:
            raise ValueError(
                f"submission.node: {self.submission.node!r} is not a fusion node "
                f"({', '.join(fusion) or 'none'})"
            )
        if self.runner is not None and self.runner.stages and self.runner.images is not None:
            for stage, key in self.runner.stages.items():
                if key not in self.runner.images:
                    raise ValueError(
                        f"runner.stages.{stage}: image {key!r} is not in runner.images "
                        f"({', '.join(self.runner.images) or 'none'})"
                    )
        return self


def _message(err: dict) -> str:
    loc = ".".join(str(x) for x in err["loc"])
    msg = err["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
    if err["type"] == "value_error" and msg.startswith(("models.", "fusion.", "propagation.",
                                                       "submission.", "runner.", "data.",
                                                       "(top level)")):  # fmt: skip
        return msg  # a cross-key rule names its own path
    if msg.startswith(_UNKNOWN):  # Section._known_keys
        key, _, allowed = msg[len(_UNKNOWN) :].partition("\0")
        return f"{loc + '.' if loc else ''}{key}: unknown key{allowed}"
    if err["type"] == "missing":
        parent, _, key = loc.rpartition(".")
        return f"{parent or '(top level)'}: missing key {key!r}"
    got = "" if err["type"] == "value_error" else f" (got {err.get('input')!r})"
    return f"{loc or '(top level)'}: {msg}{got}"


def check_params(p, where: str = "params.yaml") -> Params:
    """Validate a loaded params mapping; :class:`KitError` naming every bad key."""
    if not isinstance(p, dict):
        raise KitError(f"{where}: expected a mapping at the top level")
    try:
        return Params.model_validate(p)
    except ValidationError as e:
        errors = [_message(x) for x in e.errors(include_url=False)]
        if len(errors) == 1:
            raise KitError(f"{where}: {errors[0]}") from None
        lines = "\n".join(f"  - {x}" for x in errors)
        raise KitError(f"{where}: {len(errors)} problems:\n{lines}") from None


def load_params(path: str | os.PathLike) -> dict:
    """The params file as a dict, after :func:`check_params`."""
    path = Path(path)
    p = read_yaml(path)  # no aliases, no duplicate keys (trees.yamlfiles)
    check_params(p, str(path))
    return p
