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

from .. import __version__
from ..errors import KitError
from .runguard import check_images, check_mounts, image_ref_error

MODES = ("native", "docker")

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

DEFAULT_IMAGES = {
    "rvos": f"rvos-kit/rvos:{__version__}",
    "uninext": f"rvos-kit/uninext:{__version__}",
}
DEFAULT_STAGES = {
    "propagate": "rvos",
    "rvos_soc": "rvos",
    "rvos_mutr": "rvos",
    "rvos_referformer_ft": "rvos",
    "rvos_vit_huge": "uninext",
    "rvos_convnext": "uninext",
}


def stage_name(stage: str) -> str:
    """A model's inference stage by its DVC name, ``rvos_<model>``; the older
    ``infer_<model>`` (runner.stages, ``run --stage``) still means the same stage."""
    return "rvos_" + stage[len("infer_") :] if stage.startswith("infer_") else stage


# Set in both images: a `rvos-kit run` inside a container runs natively there.
IN_CONTAINER_ENV = "RVOS_KIT_IN_CONTAINER"


@dataclass(frozen=True)
class Settings:
    """The runner's view of params.yaml (see the module docstring for the defaults)."""

    base: Path  # the folder holding params.yaml (paths in it are relative to it)
    where: str = "params.yaml"  # for messages
    mode: str = "native"
    gpus: str | None = "all"
    images: dict = field(default_factory=lambda: dict(DEFAULT_IMAGES))
    stages: dict = field(default_factory=lambda: dict(DEFAULT_STAGES))
    shm_size: str | None = "8g"
    network: str | None = "none"
    outputs: str = "outputs"
    ro_paths: tuple = ("checkpoints",)  # relative to base; mounted read-only if present
    allow_mounts_outside_project: bool = False  # compute/runguard.py


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


def _str_map(v, key: str, where: str) -> dict:
    if not isinstance(v, dict) or not all(
        isinstance(k, str) and isinstance(x, str) and x for k, x in v.items()
    ):
        raise KitError(f"{where}: runner.{key} must map names to strings")
    return dict(v)


def load_settings(params: str | os.PathLike | None) -> Settings:
    """Read the runner keys of a params.yaml. ``None`` = ``params.yaml`` in the current
    folder when it exists, else every default."""
    from ..trees.yamlfiles import read_yaml

    explicit = params is not None
    path = Path(params) if explicit else Path("params.yaml")
    if not path.is_file():
        if explicit:
            raise KitError(f"{path}: params file not found (give --params PATH)")
        return Settings(base=Path.cwd(), where="(defaults, no params.yaml)")
    p = read_yaml(path)  # the one safe reader: no aliases, no duplicate keys
    where = str(path)
    if p is None:
        p = {}
    if not isinstance(p, dict):
        raise KitError(f"{where}: expected a mapping at the top level")
    r = p.get("runner") or {}
    if not isinstance(r, dict):
        raise KitError(f"{where}: runner must be a mapping")
    mode = r.get("mode", "native")
    if mode not in MODES:
        raise KitError(f"{where}: runner.mode {mode!r} is not one of {', '.join(MODES)}")
    images = _str_map(r.get("images", DEFAULT_IMAGES), "images", where)
    check_images(images, where)
    allow = r.get("allow_mounts_outside_project", False)
    if not isinstance(allow, bool):
        raise KitError(f"{where}: runner.allow_mounts_outside_project must be true or false")
    stages = _str_map(r.get("stages", DEFAULT_STAGES), "stages", where)
    stages = {stage_name(k): v for k, v in stages.items()}
    for stage, key in stages.items():
        if key not in images:
            raise KitError(
                f"{where}: runner.stages.{stage} names image {key!r}, which runner.images "
                f"does not define ({', '.join(sorted(images)) or 'none'})"
            )
    paths = p.get("paths") or {}
    data = p.get("data") or {}
    if not isinstance(paths, dict) or not isinstance(data, dict):
        raise KitError(f"{where}: paths and data must be mappings")
    outputs = paths.get("outputs", "outputs")
    if not isinstance(outputs, str) or not outputs:
        raise KitError(f"{where}: paths.outputs must be a path")
    ro = [paths.get("checkpoints", "checkpoints")]
    ro += [v for k, v in data.items() if k != "split"]
    return Settings(
        base=path.resolve().parent,
        where=where,
        mode=mode,
        gpus=_gpus_value(r.get("gpus", "all"), where),
        images=images,
        stages=stages,
        shm_size=_opt_str(r.get("shm_size", "8g")),
        network=_opt_str(r.get("network", "none")),
        outputs=outputs,
        ro_paths=tuple(x for x in ro if isinstance(x, str) and x),
        allow_mounts_outside_project=allow,
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
    """The image key a stage runs in, or None when it runs natively."""
    if verb in CPU_ONLY_VERBS:
        return None
    if verb == "propagate" and option_value(args, "--backend") == "flow":
        return None
    if stage is not None and stage_name(stage) in settings.stages:
        return settings.stages[stage_name(stage)]
    return settings.stages.get(verb)


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
    """The one GPU an ``infer`` process gets: the single id in CUDA_VISIBLE_DEVICES when a
    scheduler (Ray) set one, else the first of ``runner.gpus`` (device 0 for all / N)."""
    if gpus is None:
        return None
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
