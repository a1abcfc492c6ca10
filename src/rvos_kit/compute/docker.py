"""How a verb runs in the Docker image its stage needs: the ``runner.*`` settings of
params.yaml (:func:`load_settings`), which image a stage runs in (:func:`image_key`), the
folders a container sees (:func:`plan_mounts`) and the complete ``docker run`` line
(:func:`plan_docker`), and whether the engine and the image are there
(:func:`check_docker`).

The ``rvos-kit run`` verb (:mod:`rvos_kit.pipeline.run`) and the sharded stages
(:mod:`rvos_kit.compute.scale`) plan their containers here. The paths the published
inference code hard-codes are not this module's business: a caller passes them as
``extra`` mounts (for ``infer``, from the table beside the model's driver,
:mod:`rvos_kit.stages.rvos.infer.mounts`). The command line and the params keys read are
described in ``rvos-kit run --help``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .. import catalog
from ..catalog import default
from ..errors import KitError
from .runguard import check_images, check_mounts, image_ref_error

MODES = catalog.RUNNER_MODES
# runner.stack (issue 22): ``published`` runs each GPU stage in its model's image of the
# published stack; ``modern`` runs every GPU stage in runner.images.modern.
STACKS = catalog.STACKS
MODERN = "modern"

# Verbs that never need an image: CPU work on files (fusion, packing, evaluation, audit,
# downloads, imports, the DAG tools). ``run`` itself is refused as a verb.
CPU_ONLY_VERBS = frozenset(
    {
        "vote",
        "keyframes",
        "pack",
        "evaluate",
        "audit",
        "import-zip",
        "import-pth",
        "fetch",
        "verify",
        "make-sample",
        "summarize",
        "dag",
        "preflight",
    }
)

# runner.images when params.yaml does not say; runner.stages: catalog.default_stages()
# (the model and backend catalogues say which image each stage runs in).
DEFAULT_IMAGES = catalog.IMAGES


def stage_name(stage: str) -> str:
    """A model's inference stage by its DVC name, ``rvos_<model>``; the older
    ``infer_<model>`` (runner.stages, ``run --stage``) still means the same stage."""
    return "rvos_" + stage[len("infer_") :] if stage.startswith("infer_") else stage


# Set in both images: a `rvos-kit run` inside a container runs natively there.
IN_CONTAINER_ENV = "RVOS_KIT_IN_CONTAINER"
# Set by `rvos-kit run` for a verb it runs natively (`--runner native`, or runner.mode
# native): a sharded verb below it then runs its shards natively too, whatever the
# stage's params file says (the command line's choice wins, as documented).
NATIVE_ENV = "RVOS_KIT_NATIVE"


@dataclass(frozen=True)
class Settings:
    """The runner's view of params.yaml (see the module docstring for the defaults)."""

    base: Path  # the folder holding params.yaml (paths in it are relative to it)
    where: str = "params.yaml"  # for messages
    mode: str = default("runner", "mode")
    gpus: str | None = default("runner", "gpus")
    images: dict = field(default_factory=lambda: dict(catalog.IMAGES))
    stages: dict = field(default_factory=catalog.default_stages)
    shm_size: str | None = default("runner", "shm_size")
    network: str | None = default("runner", "network")
    outputs: str = "outputs"
    ro_paths: tuple = (default("paths", "checkpoints"),)  # relative to base; read-only if there
    allow_mounts_outside_project: bool = default("runner", "allow_mounts_outside_project")
    stack: str = default("runner", "stack")  # STACKS


@dataclass(frozen=True)
class Mount:
    path: str  # absolute host path
    mode: str  # "ro" | "rw"
    target: str | None = None  # inside the container; None = the same path


# ``infer``: the options that name input paths. They are mounted read-only even when they
# do not exist yet (so --dry-run prints the complete command on a machine without data);
# a real run refuses a missing one before Docker would create it as an empty root folder.
INFER_INPUTS = ("--meta", "--images", "--checkpoint", "--pretrained")


def _gpus_value(v, where: str) -> str | None:
    if v is None or v is False or (isinstance(v, str) and v.strip().lower() in ("", "none")):
        return None
    if isinstance(v, bool):  # True
        return "all"
    if isinstance(v, int):
        if v < 1:
            return None
        return str(v)
    if isinstance(v, (list, tuple)) and v and all(isinstance(x, int) for x in v):
        return ",".join(str(x) for x in v)
    if isinstance(v, str):
        return v.strip()
    raise KitError(f"{where}: runner.gpus must be all, a count, a device list or none")


def load_settings(params: str | os.PathLike | None) -> Settings:
    """The runner's view of a params file (read and checked by
    :func:`rvos_kit.config.load_params`). ``None`` = ``params.yaml`` in the current folder
    when it exists, else every default."""
    explicit = params is not None
    path = Path(params) if explicit else Path("params.yaml")
    if not path.is_file():
        if explicit:
            raise KitError(f"{path}: params file not found (give --params PATH)")
        return Settings(base=Path.cwd(), where="(defaults, no params.yaml)")
    from ..config import load_params  # pydantic: the runner runs natively

    return settings_of(load_params(path), path)


def docker_settings(params: str | os.PathLike | None) -> Settings | None:
    """A sharded verb's runner: the settings of its stage's params file when they say
    ``runner.mode: docker`` and neither an image (:data:`IN_CONTAINER_ENV`) nor a native
    ``rvos-kit run`` (:data:`NATIVE_ENV`) runs this process; else None (shards native)."""
    if not params or os.environ.get(IN_CONTAINER_ENV) == "1" or os.environ.get(NATIVE_ENV) == "1":
        return None
    s = load_settings(params)
    return s if s.mode == "docker" else None


def settings_of(p, path: str | os.PathLike) -> Settings:
    """The runner's view of a loaded params file ``p`` (:class:`rvos_kit.config.Params`)
    read from ``path``."""
    r, where = p.runner, str(path)
    check_images(r.images, where)  # the schema checked them too; the last gate is here
    ro = [p.paths.checkpoints]
    ro += [v for k, v in p.data.model_dump().items() if k != "split"]
    return Settings(
        base=Path(path).resolve().parent,
        where=where,
        mode=r.mode,
        gpus=_gpus_value(r.gpus, where),
        images=dict(r.images),
        stages={stage_name(k): v for k, v in r.stages.items()},
        shm_size=_opt_str(r.shm_size),
        network=_opt_str(r.network),
        outputs=p.paths.outputs,
        ro_paths=tuple(x for x in ro if isinstance(x, str) and x),
        allow_mounts_outside_project=r.allow_mounts_outside_project,
        stack=r.stack,
    )


def _opt_str(v) -> str | None:
    return None if v is None or v is False or v == "" else str(v)


def option_value(args: list[str], name: str) -> str | None:
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(name + "="):
            return a[len(name) + 1 :]
    return None


def image_key(settings: Settings, verb: str, args: list[str], stage: str | None) -> str | None:
    """The image key a stage runs in, or None when it runs natively. With
    ``runner.stack: modern`` every stage that has an image runs in ``modern``."""
    if verb in CPU_ONLY_VERBS:
        return None
    if verb == "propagate":
        row = catalog.BACKENDS.get(option_value(args, "--backend") or "")
        if row is not None and row.image is None:  # CPU work (flow): natively
            return None
    if stage is not None and stage_name(stage) in settings.stages:
        key = settings.stages[stage_name(stage)]
    else:
        key = settings.stages.get(verb)
    return MODERN if key is not None and settings.stack == MODERN else key


def native_argv(verb: str, args: list[str]) -> list[str]:
    return [sys.executable, "-m", "rvos_kit", verb, *args]


def _inside(p: Path, parent: Path) -> bool:
    return p == parent or parent in p.parents


def _path_candidates(args: list[str]) -> list[str]:
    out = []
    for a in args:
        if a.startswith("--") and "=" in a:
            a = a.split("=", 1)[1]
        if a and not a.startswith("-"):
            out.append(a)
    return out


def kit_source_dir() -> Path | None:
    """``<checkout>/src`` when the kit runs from a source checkout, else None."""
    src = Path(__file__).resolve().parents[2]  # src/rvos_kit/compute/docker.py
    if src.name == "src" and (src.parent / "pyproject.toml").is_file():
        return src
    return None


def infer_inputs(args: list[str], cwd: Path) -> list[Path]:
    return [(cwd / v).resolve() for o in INFER_INPUTS if (v := option_value(args, o))]


def one_gpu(gpus: str | None, visible: str | None = None) -> str | None:
    """The one GPU an ``infer`` process gets: the first of ``device=IDS`` (the GPU(s) Ray
    assigned a shard, compute/scale), the single id in CUDA_VISIBLE_DEVICES when a
    scheduler set one, else the first of ``runner.gpus`` (device 0 for all / N)."""
    if gpus is None:
        return None
    if gpus.startswith("device="):  # named by a scheduler: the GPU(s) Ray gave a shard
        return "device=" + gpus[len("device=") :].split(",")[0].strip()
    if visible and visible.strip().isdigit():
        return f"device={visible.strip()}"
    first = gpus.split(",")[0].strip()
    return f"device={first}" if gpus != "all" and "," in gpus else "device=0"


def plan_mounts(
    settings: Settings,
    args: list[str],
    cwd: Path,
    kit_src: Path | None = None,
    verb: str | None = None,
    extra: list[tuple[str, str, str]] = (),
) -> list[Mount]:
    """Which folders the container sees, each at its own resolved path.

    Read-only: the working folder, the params folder, the kit source, ``paths.checkpoints``
    and ``data.*`` when they exist, and every existing path among ``args`` that lies
    outside those. Read-write: ``paths.outputs`` (created here if missing: Docker would
    otherwise create it as root). Checked by :func:`rvos_kit.compute.runguard.check_mounts`
    (no ``/``, home or folder above the project; read-write only inside the outputs)."""
    outputs = (settings.base / settings.outputs).resolve()
    rw = [outputs]
    src = {str(outputs): f"paths.outputs {settings.outputs!r}"}
    ro = [cwd.resolve(), settings.base.resolve()]
    src.setdefault(str(ro[0]), "the working folder")
    src.setdefault(str(ro[1]), "the folder of the params file")
    if kit_src is not None:
        ro.append(kit_src.resolve())
    for rel in settings.ro_paths:
        p = settings.base / rel
        if p.exists():
            ro.append(p.resolve())
            src.setdefault(str(ro[-1]), f"{rel!r} of the params file")
    for a in _path_candidates(args):
        p = cwd / a
        try:
            if p.exists():
                ro.append(p.resolve())
                src.setdefault(str(ro[-1]), f"argument {a!r}")
        except OSError:  # a name too long to be a path, say
            continue
    if verb == "infer":
        ro += infer_inputs(args, cwd)
    mounts: list[Mount] = [Mount(str(p), "rw") for p in rw]
    kept: list[Path] = []
    for p in sorted(set(ro), key=lambda x: (len(x.parts), str(x))):
        if any(_inside(p, o) for o in rw) or any(_inside(p, k) for k in kept):
            continue
        kept.append(p)
    mounts = [Mount(str(p), "ro") for p in kept] + mounts
    mounts += [Mount(h, mode, target) for h, target, mode in extra]
    for h, target, _ in extra:
        src.setdefault(h, f"the folder the published code reads or writes as {target}")
    check_mounts(mounts, project=settings.base, outputs=outputs, where=settings.where,
                 allow=settings.allow_mounts_outside_project, sources=src)  # fmt: skip
    for m in mounts:
        if ":" in m.path or "," in m.path:
            raise KitError(
                f"cannot mount {m.path} into a container (':' or ',' in the path); "
                "rename it or run natively (--runner native)"
            )
    return mounts


def docker_argv(
    image: str,
    command: list[str],
    *,
    mounts: list[Mount],
    workdir: str,
    user: str,
    gpus: str | None = "all",
    shm_size: str | None = "8g",
    network: str | None = "none",
    env: dict[str, str] | None = None,
    docker: str = "docker",
) -> list[str]:
    """The ``docker run`` command line. Pure: same inputs, same list."""
    why = image_ref_error(image)
    if why is not None:  # load_settings checked runner.images; this is the last gate
        raise KitError(f"image {image!r} is not a Docker image reference ({why})")
    argv = [docker, "run", "--rm", "--init", "--pull", "never"]
    if gpus:
        # Docker parses --gpus as CSV: a device list must be quoted to keep its commas.
        if gpus.startswith("device=") and "," not in gpus:  # one device: no CSV quoting
            argv += ["--gpus", gpus]
        elif gpus.startswith("device="):  # e.g. the GPUs Ray assigned a shard (compute/scale)
            argv += ["--gpus", f'"{gpus}"']
        else:
            argv += ["--gpus", gpus if gpus == "all" or gpus.isdigit() else f'"device={gpus}"']
    argv += ["--user", user]
    if network:
        argv += ["--network", network]
    if shm_size:
        argv += ["--shm-size", shm_size]
    for k, v in (env or {}).items():
        argv += ["--env", f"{k}={v}"]
    for m in mounts:
        argv += ["--volume", f"{m.path}:{m.target or m.path}:{m.mode}"]
    argv += ["--workdir", workdir, image, *command]
    return argv


def container_env(kit_src: Path | None) -> dict[str, str]:
    env = {"HOME": "/tmp", "PYTHONDONTWRITEBYTECODE": "1"}
    if kit_src is not None:
        env["PYTHONPATH"] = str(kit_src)
    from .probe import ENV as PROBE  # rvos-kit smoke: where each process reports its peaks

    if os.environ.get(PROBE):
        env[PROBE] = os.environ[PROBE]
    return env


def plan_docker(
    settings: Settings,
    image: str,
    verb: str,
    args: list[str],
    *,
    cwd: Path,
    uid: int,
    gid: int,
    kit_src: Path | None = None,
    docker: str = "docker",
    visible: str | None = None,
    extra_mounts: list[tuple[str, str, str]] = (),
) -> list[str]:
    mounts = plan_mounts(settings, args, cwd, kit_src, verb, extra_mounts)
    return docker_argv(
        image,
        ["python", "-m", "rvos_kit", verb, *args],
        mounts=mounts,
        workdir=str(cwd.resolve()),
        user=f"{uid}:{gid}",
        gpus=one_gpu(settings.gpus, visible) if verb == "infer" else settings.gpus,
        shm_size=settings.shm_size,
        network=settings.network,
        env=container_env(kit_src),
        docker=docker,
    )


def _first_line(text: str) -> str:
    lines = [x.strip() for x in (text or "").splitlines() if x.strip()]
    return lines[0] if lines else "no message"


def check_docker(image: str, docker: str = "docker") -> str:
    """The docker executable, once it is known that an engine answers and ``image``
    exists locally; otherwise one KitError saying what to do."""
    native = "or run natively: --runner native, or runner.mode: native in params.yaml"
    exe = shutil.which(docker)
    if exe is None:
        raise KitError(
            "docker mode needs the `docker` command, which is not on PATH. Install "
            f"Docker Engine and the NVIDIA Container Toolkit (docs/docker.md), {native}"
        )
    try:
        r = subprocess.run(
            [exe, "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        raise KitError(f"the Docker engine did not answer in 60 s; {native}") from None
    if r.returncode != 0:
        raise KitError(
            f"cannot reach the Docker engine ({_first_line(r.stderr)}). Start it "
            f"(`docker info` must work for this user), {native}"
        )
    r = subprocess.run(
        [exe, "image", "inspect", "--format", "{{.Id}}", image],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if r.returncode != 0:
        raise KitError(
            f"image {image} is not built on this machine: run `make images` "
            f"(docs/docker.md), {native}"
        )
    return exe
