"""params.yaml as one typed, frozen object: the schema of every section, the cross-key
rules, and :func:`load_params`, the one reader of a params file. Every layer (the DAG
builder, preflight, ``rvos-kit run``, the Ray settings of the sharded verbs) reads
attributes of the object it returns; nothing else parses params.yaml.

Paths in it are relative to the folder that holds it (where DVC runs the stages). The
schema is pydantic, strict: unknown keys, wrong types and values outside a fixed set are
refused with the key path and what is allowed; the value sets, the defaults and the
model and backend catalogues come from :mod:`rvos_kit.catalog` (plain Python, which the
verbs read in the images too). A member of a fusion node is ``NODE`` (the node's own
masks: a model's output or a fused tree) or ``NODE/PROP`` (those masks after the
propagation config PROP, e.g. ``soc/aot``).

Extending: to add a section, define ``class MySection(Section)`` with typed fields (their
defaults in ``catalog.DEFAULTS``), add ``mysection: MySection | None = None`` to
:class:`Params` (or a field to an existing section class), and put any rule spanning
several keys in ``Params._cross_checks``; to add a model or a propagation backend, add a
catalogue row (docs/extending.md).
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

from . import catalog
from .argtypes import image_ref_error
from .catalog import (
    COMPAT_MODES,
    DEVICES,
    ENCODERS,
    ENGINES,
    FUSION_SOURCES,
    MODEL_KINDS,
    MODEL_SOURCES,
    ODD_RULES,
    PAIRINGS,
    RUNNER_MODES,
    SPLITS,
)
from .errors import KitError
from .yamlfiles import read_yaml

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
D = catalog.DEFAULTS


def _d(section: str, key: str):
    return D[section][key]


class DataSection(Section):
    meta: Path_
    images: Path_ | None = None
    gt: Path_ | None = None
    split: _lit(SPLITS) = _d("data", "split")  # valid: the valid-only videos (meta - test_meta)
    test_meta: Path_ | None = None


class PathsSection(Section):
    outputs: Path_ = Field(min_length=1)
    lock: Path_ = _d("paths", "lock")
    code: Path_ | None = None
    downloads: Path_ = _d("paths", "downloads")
    checkpoints: Path_ = _d("paths", "checkpoints")


class RunnerSection(Section):
    """``rvos-kit run`` (compute/docker.py): the images, which stage runs in which."""

    mode: _lit(RUNNER_MODES) = _d("runner", "mode")
    gpus: Union[int, str, bool, list[int], None] = _d("runner", "gpus")  # noqa: UP007
    images: dict[str, str] = Field(default_factory=lambda: dict(catalog.IMAGES))
    stages: dict[str, str] = Field(default_factory=catalog.default_stages)
    shm_size: str | None = _d("runner", "shm_size")  # null: docker's default
    network: str | None = _d("runner", "network")  # null: docker's default network
    allow_mounts_outside_project: bool = _d("runner", "allow_mounts_outside_project")
    stack: _lit(catalog.STACKS) = _d("runner", "stack")  # compute/docker.py, docs/docker.md

    @field_validator("images")
    @classmethod
    def _references(cls, v):
        for key, ref in (v or {}).items():
            why = image_ref_error(ref)
            if why is not None:
                raise ValueError(f"runner.images.{key}: {ref!r} is not a Docker image "
                                 f"reference ({why})")  # fmt: skip
        return v

    @model_validator(mode="after")
    def _stage_images(self):
        for stage, key in self.stages.items():
            if key not in self.images:
                raise ValueError(
                    f"runner.stages.{stage}: image {key!r} is not in runner.images "
                    f"({', '.join(self.images) or 'none'})"
                )
        return self


class InferSection(Section):
    """``source: infer`` (``rvos-kit infer``, docs/inference.md)."""

    upstream: Path_  # the published code at the pinned commit
    pretrained: Path_ = _d("infer", "pretrained")
    chunk_videos: int | None = Field(None, ge=1)  # None: the verb's default
    msda: _lit(catalog.MSDA_PATHS) | None = None  # None: by device (catalog.MSDA_PATHS)


class SampleSection(Section):
    out: Path_
    seed: int = Field(_d("sample", "seed"), ge=0)
    videos: int = Field(_d("sample", "videos"), ge=1)
    frames: int = Field(_d("sample", "frames"), ge=2)
    height: int = Field(_d("sample", "height"), ge=32)
    width: int = Field(_d("sample", "width"), ge=32)


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
    backend: str  # a row of catalog.BACKENDS
    tree: str
    nodes: list[str]
    model: str | None = None
    checkpoint: Path_ | None = None
    # int or float as written (the generated command spells them as given)
    scales: list[Union[int, float]] = Field(  # noqa: UP007
        default_factory=lambda: list(_d("propagation", "scales")), min_length=1
    )
    flip: bool = _d("propagation", "flip")
    max_long_side: int = Field(_d("propagation", "max_long_side"), ge=1)
    # engine code reproduced (contract 5.6-5.7): aot stages only published_aot_fork
    engine: _lit(ENGINES) | None = None  # None: the backend's default
    # encoder features shared between a video's expressions (exact; docs/propagation.md)
    share_encoder: bool = _d("propagation", "share_encoder")
    # caps in MiB on the measured budgets of the feature cache's tiers (None: measured only)
    encoder_cache_mb: float | None = Field(_d("propagation", "encoder_cache_mb"), ge=0,
                                           allow_inf_nan=False)  # fmt: skip
    host_cache_mb: float | None = Field(_d("propagation", "host_cache_mb"), ge=0,
                                        allow_inf_nan=False)  # fmt: skip

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, v):
        if v not in catalog.BACKENDS:
            allowed = ", ".join(repr(b) for b in catalog.BACKENDS)
            raise ValueError(f"Input should be one of {allowed} (got {v!r})")
        return v

    @field_validator("scales")
    @classmethod
    def _positive(cls, v):
        if any(s <= 0 for s in v):
            raise ValueError("every scale must be > 0")
        return v

    @model_validator(mode="after")
    def _model_of_backend(self):
        row = catalog.BACKENDS[self.backend]
        if not row.takes_model:
            if self.model is not None:
                raise ValueError(f"backend {self.backend} takes no model (remove model:)")
            if self.engine is not None:
                raise ValueError(f"backend {self.backend} takes no engine (remove engine:)")
        elif self.backend == "aot" and self.engine not in (None, "published_aot_fork"):
            raise ValueError(
                "backend aot runs the published AOT engine: engine: published_aot_fork "
                "(only DeAOT's engine is an open question, contract section 5.7)"
            )
        elif self.model is not None and self.model not in row.models:
            raise ValueError(
                f"model {self.model!r} is not a model of backend {self.backend}; allowed: "
                f"{', '.join(row.models)}"
            )
        return self

    @property
    def row(self) -> catalog.BackendRow:
        return catalog.BACKENDS[self.backend]

    @property
    def network(self) -> str | None:
        """The network it runs: ``model``, else the backend's default (None: no network)."""
        return self.model or self.row.default_model


class FusionSection(Section):
    members: list[str] = Field(min_length=1)
    source: _lit(FUSION_SOURCES) = _d("fusion", "source")
    pairing: _lit(PAIRINGS) = _d("fusion", "pairing")
    pair_threshold: int = Field(_d("fusion", "pair_threshold"), ge=1)
    odd: _lit(ODD_RULES) = _d("fusion", "odd")
    odd_threshold: int = Field(_d("fusion", "odd_threshold"), ge=1)


class SubmissionSection(Section):
    node: str
    sha256: Path_ = _d("submission", "sha256")


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

    address: str = Field(_d("scale", "address"), min_length=1)
    shards: Union[int, Literal["auto"]] = _d("scale", "shards")  # noqa: UP007
    videos_per_shard: int | None = Field(None, ge=1)
    max_retries: int = Field(_d("scale", "max_retries"), ge=0)
    needs: dict[str, ScaleNeedsSection] | None = None
    local: ScaleLocalSection | None = None

    @field_validator("address")
    @classmethod
    def _address(cls, v):
        if not v.strip():
            raise ValueError("scale.address: local, auto, ray://HOST:PORT or HOST:PORT")
        return v

    @model_validator(mode="after")
    def _shards(self):
        if isinstance(self.shards, int) and self.shards < 1:
            raise ValueError("scale.shards: auto or a number >= 1")
        if self.videos_per_shard is not None and self.shards != "auto":
            raise ValueError("scale.shards: give shards or videos_per_shard, not both")
        return self


class Params(Section):
    """The whole params file (frozen): read its attributes, never the YAML again."""

    compat: _lit(COMPAT_MODES) = _d("", "compat")
    data: DataSection
    paths: PathsSection
    device: _lit(DEVICES) = _d("", "device")
    encoder: _lit(ENCODERS) = _d("", "encoder")
    runner: RunnerSection = Field(default_factory=RunnerSection)
    infer: InferSection | None = None
    sample: SampleSection | None = None
    models: dict[str, ModelSection]
    propagation: dict[str, PropagationSection] | None = None
    fusion: dict[str, FusionSection] | None = None
    submission: SubmissionSection | None = None
    audit: AuditSection | None = None
    scale: ScaleSection = Field(default_factory=ScaleSection)

    @model_validator(mode="before")
    @classmethod
    def _null_sections(cls, data):
        """``runner:`` / ``scale:`` with no value: every default, as when absent."""
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if not (k in ("runner", "scale") and v is None)}
        return data

    @property
    def props(self) -> dict[str, PropagationSection]:
        return self.propagation or {}

    @property
    def nodes(self) -> dict[str, FusionSection]:
        return self.fusion or {}

    def model_row(self, name: str) -> catalog.ModelRow | None:
        """The catalogue row of ``models.<name>`` (None: a model only known as a tree)."""
        return catalog.MODELS.get(name)

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
            row = catalog.MODELS.get(name)
            if row is None and m.source != "tree":
                raise ValueError(
                    f"models.{name}: not an RVOS model of the solution (known: "
                    f"{', '.join(catalog.MODELS)}); another model can only be a ready tree "
                    "(source: tree)"
                )
            if row is not None and m.kind != row.kind:
                raise ValueError(f"models.{name}.kind: {name} outputs {row.kind}, not {m.kind}")
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
        if self.infer is not None and self.infer.msda == "compiled" and self.device == "cpu":
            raise ValueError(
                "infer.msda: compiled needs device: cuda (the compiled op has CUDA kernels "
                "only); use msda: pytorch, or leave msda out to choose by device"
            )
        if self.runner.stack == "modern" and "modern" not in self.runner.images:
            raise ValueError(
                "runner.stack: modern runs every GPU stage in runner.images.modern, which "
                f"is not defined ({', '.join(self.runner.images) or 'none'}); add "
                "modern: rvos-kit/modern:<version> to runner.images"
            )
        return self


def _message(err: dict) -> str:
    loc = ".".join(str(x) for x in err["loc"])
    msg = err["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
    if err["type"] == "value_error" and msg.startswith(("models.", "fusion.", "propagation.",
                                                       "submission.", "runner.", "data.", "scale.",
                                                       "infer.",
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
    return _validate(Params, p, where)


def check_section(cls: type[Section], value, key: str, where: str = "params.yaml"):
    """One section (``key``: its path, e.g. ``scale``) checked on its own, the errors
    named as in a whole file; an absent or empty one gets every default."""
    return _validate(cls, {} if value is None else value, where, key)


def _validate(cls, value, where: str, key: str | None = None):
    try:
        return cls.model_validate(value)
    except ValidationError as e:
        errs = e.errors(include_url=False)
        if key is not None:
            errs = [{**x, "loc": (*key.split("."), *x["loc"])} for x in errs]
        errors = [_message(x) for x in errs]
        if len(errors) == 1:
            raise KitError(f"{where}: {errors[0]}") from None
        lines = "\n".join(f"  - {x}" for x in errors)
        raise KitError(f"{where}: {len(errors)} problems:\n{lines}") from None


def load_params(path: str | os.PathLike) -> Params:
    """The params file, checked (:func:`check_params`), as one frozen :class:`Params`."""
    path = Path(path)
    if not path.is_file():
        raise KitError(f"{path}: params file not found")
    p = read_yaml(path)  # no aliases, no duplicate keys (rvos_kit.yamlfiles)
    return check_params(p, str(path))
