"""rvos-kit preflight: before a long `dvc repro`, list everything a pipeline needs that
is not here, each with how to get it. Exit 0 when nothing is missing, 2 otherwise.

Checked, for the stages the pipeline's outputs actually need: the dataset files (meta,
frames, ground truth); the .pth dumps of imported models; the downloads of
checkpoints.lock (released trees, propagation checkpoints: one `rvos-kit fetch --params`
gets them all); per model with source: infer, what its inference lacks (image,
checkpoint, pretrained text encoder / backbone, upstream code); and for GPU stages a CUDA device
(runner.mode: native) or, in runner.mode: docker, the docker command, a running engine,
the NVIDIA runtime, a GPU (nvidia-smi) and every image the stages run in.

Every stage of a generated dvc.yaml that reads something from outside the DAG is guarded
by a preflight stage that runs this for the stages it guards only (``--for``):
``preflight_<model>`` for a model's inference or import, ``preflight_<propagation>`` for
AOT / DeAOT, ``preflight`` for the dataset. A bare `dvc repro` stops there with the list;
`dvc repro dvc.yaml:keyframes_soc` checks only what SOC's stages read.
``--stage S`` / ``--model M`` list what one target needs (:mod:`.targets`).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .. import catalog
from ..argtypes import declare_paths
from ..catalog import default
from ..errors import KitError

if TYPE_CHECKING:  # pydantic: not in the images, where verbs register too
    from ..config import Params


@dataclass
class Pipeline:
    """What the checks look at: the params file, its parsed content and its DAG."""

    params_path: Path
    p: Params
    stages: dict = field(default_factory=dict)  # the generated dvc.yaml stages (or a scope)
    builder: object = None
    scoped: bool = False  # stages is a part of the DAG: check only what those stages read

    @property
    def base(self) -> Path:
        return self.params_path.parent

    def missing(self, path: str | None) -> bool:
        """True when ``path`` (relative to the params folder) is needed and absent; paths
        the pipeline generates itself (``sample.out``) are never missing."""
        if not path or _produced_by_sample(self.p, path):
            return False
        return not (self.base / path).exists()

    def reads(self, path: str | None) -> bool:
        """Whether a stage in view reads ``path`` (or something inside it); every path
        counts when the whole pipeline is in view."""
        if not path:
            return False
        if not self.scoped:
            return True
        p = os.path.normpath(path)
        deps = (os.path.normpath(d) for s in self.stages.values() for d in s.get("deps", []))
        return any(d == p or d.startswith(p + os.sep) for d in deps)

    def scope(self, names: Iterable[str]) -> Pipeline:
        """The same pipeline with only the stages ``names`` in view."""
        keep = set(names)
        stages = {n: s for n, s in self.stages.items() if n in keep}
        return Pipeline(self.params_path, self.p, stages, self.builder, scoped=True)

    def where(self, path: str) -> str:
        return os.path.normpath(self.base / path)

    def cmd_path(self, path: str) -> str:
        """``path`` as typed from the current folder (hints are copy-pasteable)."""
        return os.path.relpath(self.base / path)

    @property
    def mode(self) -> str:
        return self.p.runner.mode

    def docker_stages(self) -> list[tuple[str, str, list[str]]]:
        """(stage, verb, args) of every stage that goes through `rvos-kit run`, and of
        the sharded stages (propagate, infer), whose shards run in the image (compute/scale/)."""
        out = []
        for name, s in self.stages.items():
            words = shlex.split(s["cmd"])
            if words[:2] == ["rvos-kit", "run"] and "--" in words:
                i = words.index("--")
                stage = words[words.index("--stage") + 1] if "--stage" in words[:i] else None
                out.append((stage or name, words[i + 1], words[i + 2 :]))
            elif words[:2] in (["rvos-kit", "propagate"], ["rvos-kit", "infer"]):
                out.append((words[1], words[1], words[2:]))
        return out


def _produced_by_sample(p: Params, path: str) -> bool:
    s = p.sample
    if not s:
        return False
    out = os.path.normpath(s.out)
    return os.path.normpath(path) == out or os.path.normpath(path).startswith(out + os.sep)


Check = Callable[[Pipeline], Iterable[str]]


# --------------------------------------------------------------------------- checks
def check_data(pl: Pipeline) -> Iterable[str]:
    data, name = pl.p.data, pl.params_path.name
    get = "Download Ref-YouTube-VOS (https://youtube-vos.org/dataset/rvos/) and set data.*"
    get += f" in {name}"
    for key, what, how in (
        ("meta", "meta_expressions", get),
        ("images", "JPEG frames", get),
        ("gt", "ground truth", f"set data.gt: null in {name} if none"),
    ):
        path = getattr(data, key)
        if pl.reads(path) and pl.missing(path):
            yield f"{what}: {pl.where(path)} not found. {how}"


def pipeline_downloads(pl: Pipeline) -> list[str]:
    """Names of the checkpoints.lock artifacts the pipeline reads (released trees the DAG
    unpacks, checkpoints of the propagations it computes, checkpoints and pretrained parts
    of the models it infers)."""
    names = [s[len("fetch_") :] for s in pl.stages if s.startswith("fetch_")]
    for _prop, c, name in _computed_propagations(pl):
        if c.checkpoint and name not in names:
            names.append(name)
    return names + [n for n in infer_downloads(pl) if n not in names]


def needed_downloads(pl: Pipeline) -> list[str]:
    """The artifacts of :func:`pipeline_downloads` that are not on disk yet."""
    downloads = pl.p.paths.downloads
    lock = pl.builder.lock()
    return [
        n for n in pipeline_downloads(pl) if pl.missing(os.path.join(downloads, lock.get(n).path))
    ]


def _computed_propagations(pl: Pipeline):
    """(prop, config, checkpoint artifact) of propagation configs that run a network."""
    for prop, c in pl.p.props.items():
        if not c.row.gpu:
            continue
        cmds = [pl.stages.get(f"propagate_{prop}_{n}", {}).get("cmd", "") for n in c.nodes]
        if any(cmd and "import-zip" not in cmd for cmd in cmds):
            yield prop, c, c.row.checkpoint


def fetch_cmd(pl: Pipeline, names: list[str]) -> str:
    """The fetch command for ``names``: the whole pipeline's downloads (``--params``), or
    in a scoped view only the named ones, from the pipeline's lock into its folder."""
    if not pl.scoped:
        return f"rvos-kit fetch --params {pl.cmd_path(pl.params_path.name)}"
    words = ["rvos-kit", "fetch", *names]
    lock, default_lock = pl.cmd_path(pl.p.paths.lock), default("paths", "lock")
    dest = pl.cmd_path(pl.p.paths.downloads)
    words += ["--lock", lock] * (lock != default_lock)
    words += ["--dest", dest] * (dest != "." or lock != default_lock)
    return shlex.join(words)


def check_downloads(pl: Pipeline) -> Iterable[str]:
    names = needed_downloads(pl)
    if names:
        lock = pl.builder.lock()
        unpinned = [n for n in names if lock.get(n).sha256 is None]
        record = (
            f" --record` (the lock has no sha256 for {len(unpinned)} of them yet: trust on "
            "first use, then commit the lock;"
            if unpinned else "` ("
        )  # fmt: skip
        yield (
            f"downloads: {len(names)} file(s) of checkpoints.lock not here ({', '.join(names)}). "
            f"Run `{fetch_cmd(pl, names)}{record} on a "
            "machine that reaches Google Drive / Hugging Face; or place the files, "
            "`rvos-kit verify` checks them)"
        )


def check_pins(pl: Pipeline) -> Iterable[str]:
    """Released zips the DAG fetches that are here but that checkpoints.lock has no sha256
    for: nothing verifies them, and the pipeline's `fetch_*` stage exits 1 on them."""
    downloads = pl.p.paths.downloads
    lock = pl.builder.lock()
    fetched = [s[len("fetch_") :] for s in pl.stages if s.startswith("fetch_")]
    names = [
        n for n in fetched
        if lock.get(n).sha256 is None and not pl.missing(os.path.join(downloads, lock.get(n).path))
    ]  # fmt: skip
    if names:
        yield (
            f"downloads: {len(names)} file(s) here have no sha256 in checkpoints.lock "
            f"({', '.join(names)}), so nothing verifies them. Pin them (trust on first use) "
            f"with `{fetch_cmd(pl, names)} --record`"
        )


def check_models(pl: Pipeline) -> Iterable[str]:
    for name, m in pl.p.models.items():
        if m.source == "tree" and pl.reads(m.tree) and pl.missing(m.tree):
            yield (
                f"models.{name} tree: {pl.where(m.tree)} not found. Point "
                f"models.{name}.tree at a model folder"
            )
        elif m.source == "imported" and f"rvos_{name}" in pl.stages:
            for d in m.dumps:
                if pl.missing(d):
                    yield (
                        f"models.{name} dump: {pl.where(d)} not found. The original inference "
                        ".pth (contract section 3)"
                    )


def _infer_models(pl: Pipeline) -> list[str]:
    return [n for n, m in pl.p.models.items()
            if m.source == "infer" and f"rvos_{n}" in pl.stages]  # fmt: skip


def _model_artifacts(pl: Pipeline, models) -> list:
    """checkpoints.lock entries the stages of ``models`` read (each model's checkpoint and
    its pretrained parts: the entries whose used_by names the model's stage)."""
    stages = {f"rvos_{n}" for n in models}
    return [a for a in pl.builder.lock().artifacts if stages & set(a.used_by)]


def infer_downloads(pl: Pipeline) -> list[str]:
    """Names of the checkpoints.lock artifacts the inference stages read."""
    return [a.name for a in _model_artifacts(pl, _infer_models(pl))]


def check_split(pl: Pipeline) -> Iterable[str]:
    """The valid split is the valid meta minus the test meta: both files are needed."""
    if "meta_valid_only" in pl.stages and pl.missing(pl.p.data.test_meta):
        yield (
            f"test meta_expressions: {pl.where(pl.p.data.test_meta)} not found "
            "(data.split: valid = the valid meta minus the test videos). Download "
            "Ref-YouTube-VOS (https://youtube-vos.org/dataset/rvos/) and set data.test_meta"
        )


def _image_missing(image: str) -> bool:
    """True only when a Docker engine answers and lacks ``image`` (no engine: check_docker
    says so once)."""
    docker = shutil.which("docker")
    info = _run([docker, "info", "--format", "{{.ServerVersion}}"]) if docker else None
    if info is None or info.returncode != 0:
        return False
    r = _run([docker, "image", "inspect", "--format", "{{.Id}}", image])
    return r is None or r.returncode != 0


def check_infer(pl: Pipeline) -> Iterable[str]:
    """Per model with ``source: infer``: what its inference lacks here (its image in docker
    mode, its checkpoint, the pretrained text encoder / backbone, the upstream code when
    native). The GPU: check_cuda (native) and check_docker (docker)."""
    inf = pl.p.infer
    downloads = pl.p.paths.downloads
    pretrained = inf.pretrained if inf else default("infer", "pretrained")
    settings = None
    if pl.mode == "docker":
        from ..compute.docker import settings_of

        settings = settings_of(pl.p, pl.params_path)
    for m in _infer_models(pl):
        lacks, row = [], catalog.MODELS[m]
        if settings is not None:
            image = settings.images.get(settings.stages.get(row.stage, row.image))
            if image and _image_missing(image):
                lacks.append(f"image {image} (`make images`)")
        ckpt = os.path.join(downloads, pl.builder.lock().get(m).path)
        if pl.missing(ckpt):
            lacks.append(f"checkpoint {pl.where(ckpt)}")
        for part in row.pretrained:
            if pl.missing(os.path.join(pretrained, part)):
                lacks.append(f"pretrained {pl.where(os.path.join(pretrained, part))}")
        if pl.mode != "docker" and pl.missing(inf.upstream):
            lacks.append(
                f"upstream code {pl.where(inf.upstream)} (the published repository at "
                "commit c538b0d)"
            )
        if lacks:
            # unpinned lock entries are fetched only with --record (trust on first use)
            unpinned = any(a.sha256 is None for a in _model_artifacts(pl, [m]))
            yield (
                f"models.{m} (source: infer) lacks {'; '.join(lacks)}. Files: "
                f"`{fetch_cmd(pl, [a.name for a in _model_artifacts(pl, [m])])}"
                f"{' --record' * unpinned}` "
                "(UNINEXT weights: by hand, it prints how)"
            )


def check_cuda(pl: Pipeline) -> Iterable[str]:
    computed = any(True for _ in _computed_propagations(pl)) or _infer_models(pl)
    gpu = computed and pl.p.device == "cuda"
    if not gpu or pl.mode != "native":
        return
    try:
        import torch

        ok = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        ok = False
    if not ok:
        yield (
            "GPU: device: cuda but torch sees no CUDA device here. Run on a GPU machine "
            "(runner.mode: docker for the pinned images) or set device: cpu (very slow)"
        )


def _run(argv: list[str]) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None


def check_docker(pl: Pipeline) -> Iterable[str]:
    if pl.mode != "docker":
        return
    from ..compute.docker import image_key, settings_of

    settings = settings_of(pl.p, pl.params_path)
    images = sorted(
        {
            settings.images[k]
            for stage, verb, args in pl.docker_stages()
            if (k := image_key(settings, verb, args, stage))
        }
    )
    if not images:
        return
    docs = "(docs/docker.md)"
    docker = shutil.which("docker")
    if docker is None:
        yield f"Docker: `docker` not found; install Docker Engine + NVIDIA Container Toolkit {docs}"
        return
    info = _run([docker, "info", "--format", "{{json .Runtimes}}"])
    if info is None or info.returncode != 0:
        yield f"Docker: no engine answers `docker info`; start the daemon {docs}"
        return
    if "nvidia" not in info.stdout:
        yield (
            "NVIDIA runtime: `docker info` lists no nvidia runtime; install the NVIDIA "
            f"Container Toolkit and run `nvidia-ctk runtime configure --runtime=docker` {docs}"
        )
    smi = shutil.which("nvidia-smi")
    r = _run([smi, "-L"]) if smi else None
    if r is None or r.returncode != 0 or "GPU" not in r.stdout:
        yield "GPU: `nvidia-smi -L` lists no NVIDIA GPU on this machine; install the driver"
    for image in images:
        r = _run([docker, "image", "inspect", "--format", "{{.Id}}", image])
        if r is None or r.returncode != 0:
            yield (
                f"image {image}: not built on this machine; run `make images` {docs} (and on "
                "every Ray node that runs shards, docs/scale.md)"
            )


# Run in this order; issue-specific checks (e.g. per-model inference needs) append here.
CHECKS: list[Check] = [
    check_data,
    check_downloads,
    check_pins,
    check_models,
    check_split,
    check_infer,
    check_cuda,
    check_docker,
]


def load_pipeline(params_path) -> Pipeline:
    from ..config import load_params  # pydantic: preflight runs natively
    from .dag import Builder, build

    params_path = Path(params_path)
    p = load_params(params_path)
    builder = Builder(p, params_path.parent)
    stages = build(builder)  # only what the pipeline's targets consume
    return Pipeline(params_path, p, stages, builder)


DOWNLOAD_CHECKS = (check_downloads, check_pins)


def missing_inputs(params_path, checks: Iterable[Check] | None = None, stages=None) -> list[str]:
    """What is missing for the whole pipeline, or (``stages``) for those stages only."""
    pl = load_pipeline(params_path)
    if stages is not None:
        pl = pl.scope(stages)
    return [problem for check in (CHECKS if checks is None else checks) for problem in check(pl)]


def run(args) -> int:
    from .targets import target_stages

    pl = load_pipeline(args.params)
    names = target_stages(pl, args.stage, args.model, args.guard)
    if names is not None:
        pl = pl.scope(names)
    checks = [c for c in CHECKS if not (args.skip_downloads and c in DOWNLOAD_CHECKS)]
    problems = [problem for check in checks for problem in check(pl)]
    what = "every input"
    if args.guard or args.stage or args.model:
        what = f"every input of {', '.join(names) if names else 'no stage'}"
    if problems:
        lines = "\n".join(f"  - {x}" for x in problems)
        of = "" if what == "every input" else f" ({what[len('every input of ') :]})"
        raise KitError(f"{args.params}: cannot run yet{of}, {len(problems)} missing:\n{lines}")
    msg = f"{args.params}: {what} is present"
    if args.skip_downloads:
        msg += " (downloads not checked)"
    if args.out:
        from ..trees.files import atomic_write_bytes

        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(args.out, (msg + "\n").encode())
    print(msg)
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "preflight",
        help="list what a pipeline (or one stage, one model) needs that is missing",
        description=__doc__,
    )
    p.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    p.add_argument(
        "--stage",
        action="append",
        metavar="STAGE",
        help="only what `dvc repro dvc.yaml:STAGE` runs needs: that DVC stage and the stages "
        "it depends on (repeatable)",
    )
    p.add_argument(
        "--model",
        action="append",
        metavar="MODEL",
        help="only what one model's stages need (rvos_MODEL, keyframes_MODEL and what they "
        "depend on; repeatable)",
    )
    p.add_argument(
        "--for",
        dest="guard",
        metavar="PREFLIGHT_STAGE",
        help="only the stages a generated preflight stage guards (what dvc.yaml runs)",
    )
    p.add_argument(
        "--skip-downloads",
        action="store_true",
        help="leave out the files `rvos-kit fetch --params` gets (check the rest first)",
    )
    p.add_argument(
        "--out",
        metavar="FILE",
        help="when nothing is missing, also write the verdict to FILE (the DVC stage's "
        "output; default: none)",
    )
    declare_paths(p, reads=("params",), writes=("out",))
    p.set_defaults(func=run)
