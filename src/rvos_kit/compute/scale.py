"""Sharded stages on Ray: one DVC stage, many workers, the same bytes (docs/scale.md).

A sharded stage (``propagate`` today; ``infer`` when its stage runs through here) is one
verb call over every video of meta. :func:`run_sharded` splits the videos into shards,
runs each shard as a Ray task and merges the shards' outputs into the stage's output:

Ray
    ``scale.address: local`` (default) starts an embedded single-node Ray for the stage
    and stops it afterwards; ``auto`` joins the cluster this node belongs to;
    ``ray://HOST:PORT`` (Ray client) or ``HOST:PORT`` joins that cluster. A program that
    has already called ``ray.init`` (the tests, a notebook) is used as it is.

Shards
    The videos, sorted by id, are cut into contiguous runs: ``scale.shards: N`` runs of
    about equal work (work of a video = frames x expressions for propagation), or
    ``scale.videos_per_shard: K`` runs of K videos; ``scale.shards: auto`` (default) makes
    as many shards as the cluster can run at once for the stage's needs. The output of a
    video depends only on that video, so the merged output is byte-identical whatever
    the partition (and to an unsharded run); ``scale.*`` is therefore no dependency of
    any DVC stage.

A shard's task
    Asks Ray for the stage's needs (``scale.needs.<kind>``: ``gpus`` and ``cpus``; GPU
    shards get ``num_gpus``, CPU shards ``num_cpus``), then runs the verb for its videos
    in a child process (``python -m rvos_kit VERB ... --videos V1,V2 --out ATTEMPT``):
    natively with ``CUDA_VISIBLE_DEVICES`` set to the GPU(s) Ray assigned, or in docker
    mode (``runner.mode: docker``) as ``docker run --gpus device=ID ...`` in the stage's
    image. The child writes into its own attempt folder, which is renamed to the shard's
    folder only when the child exits 0: a shard is committed whole or not at all.

Failures
    A worker that dies (process killed, node lost) or a child killed by a signal is
    retried up to ``scale.max_retries`` times, each attempt in a fresh folder; retries are
    reported at the end. A child that fails (exit status != 0) is not retried: the
    shard's videos and the child's last lines of output are printed. Other shards still
    finish and are kept, then the stage fails.

Resume
    Committed shards live in ``.<out>.shards/<key>/`` beside the output, ``key`` being a
    digest of the shard's videos and of everything the stage's output depends on (its
    inputs and settings). A re-run after an interrupt reuses a committed shard only when
    its key matches and all of its video folders are there, and runs the others from
    scratch (attempt folders are never reused). When every shard is committed, their
    videos are moved into ``.<out>.partial`` and that is renamed to ``<out>`` (the
    output appears atomically), then ``.<out>.shards`` is removed.

Progress
    One bar per stage over videos, advanced as any worker finishes a video (each task
    streams its child's progress lines back to the driver), with rate and ETA.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import KitError

# What the needs of a stage kind are when params.yaml does not say (scale.needs).
DEFAULT_NEEDS = {
    "flow": {"cpus": 1, "gpus": 0},
    "aot": {"cpus": 2, "gpus": 1},
    "deaot": {"cpus": 2, "gpus": 1},
    "infer": {"cpus": 4, "gpus": 1},
}
SCALE_KEYS = ("address", "shards", "videos_per_shard", "max_retries", "needs", "local")

# Child side: the line a shard's child prints when a video is complete.
PROGRESS_PREFIX = "rvos-kit:video-done "
# Set by `python -m rvos_kit.compute.scale -- CMD` (make demo): the address of one local Ray that
# every stage of CMD with scale.address: local joins instead of starting its own.
SESSION_ENV = "RVOS_KIT_LOCAL_RAY"
# Set by the task for its child: the pid of the Ray worker that runs the task.
PARENT_ENV = "RVOS_KIT_SHARD_PARENT"
# Fault injection for the tests: a path; the first child that finishes a video while
# the file exists removes it and kills its Ray worker (SIGKILL), mid-shard.
FAULT_ENV = "RVOS_KIT_FAULT_KILL_WORKER"
# ... and a delay after every video (seconds), to interrupt a stage mid-way in the tests.
SLOW_ENV = "RVOS_KIT_FAULT_SLOW_VIDEO_S"
# ... and a module every shard's child imports first ("FOLDER:MODULE"; test stand-ins).
PRELOAD_ENV = "RVOS_KIT_FAULT_PRELOAD"


# ---------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class ShardNeeds:
    cpus: float = 1
    gpus: float = 0


@dataclass(frozen=True)
class ScaleSettings:
    """``scale:`` of params.yaml (every key optional)."""

    address: str = "local"
    shards: int | None = None  # None = auto
    videos_per_shard: int | None = None
    max_retries: int = 2
    needs: dict = field(default_factory=lambda: {k: dict(v) for k, v in DEFAULT_NEEDS.items()})
    local_cpus: int | None = None  # embedded Ray: CPUs (default: all) ...
    local_gpus: int | None = None  # ... and GPUs (default: what Ray detects)

    def needs_of(self, kind: str) -> ShardNeeds:
        n = {**DEFAULT_NEEDS.get(kind, {"cpus": 1, "gpus": 0}), **self.needs.get(kind, {})}
        return ShardNeeds(cpus=n["cpus"], gpus=n["gpus"])


def _number(v, key: str, where: str, low: float, integer: bool = False):
    ok = isinstance(v, int) if integer else isinstance(v, (int, float))
    if isinstance(v, bool) or not ok or v < low:
        kind = "an integer" if integer else "a number"
        raise KitError(f"{where}: scale.{key} must be {kind} >= {low:g}, not {v!r}")
    return v


def scale_settings(p: dict | None, where: str = "params.yaml") -> ScaleSettings:
    """The ``scale`` section of a parsed params file (absent = every default)."""
    s = (p or {}).get("scale") or {}
    if not isinstance(s, dict):
        raise KitError(f"{where}: scale must be a mapping")
    unknown = sorted(set(s) - set(SCALE_KEYS))
    if unknown:
        raise KitError(f"{where}: unknown key scale.{unknown[0]}; allowed: {', '.join(SCALE_KEYS)}")
    address = s.get("address", "local")
    if not isinstance(address, str) or not address.strip():
        raise KitError(f"{where}: scale.address must be local, auto, ray://HOST:PORT or HOST:PORT")
    shards = s.get("shards", "auto")
    if shards == "auto" or shards is None:
        shards = None
    else:
        shards = _number(shards, "shards", where, 1, integer=True)
    vps = s.get("videos_per_shard")
    if vps is not None:
        vps = _number(vps, "videos_per_shard", where, 1, integer=True)
        if shards is not None:
            raise KitError(f"{where}: give scale.shards or scale.videos_per_shard, not both")
    retries = _number(s.get("max_retries", 2), "max_retries", where, 0, integer=True)
    needs = {k: dict(v) for k, v in DEFAULT_NEEDS.items()}
    given = s.get("needs") or {}
    if not isinstance(given, dict):
        raise KitError(f"{where}: scale.needs must map a stage kind to {{cpus, gpus}}")
    for kind, n in given.items():
        if not isinstance(n, dict) or set(n) - {"cpus", "gpus"}:
            raise KitError(f"{where}: scale.needs.{kind} must be {{cpus: N, gpus: N}}")
        for k, v in n.items():
            _number(v, f"needs.{kind}.{k}", where, 0)
        needs[kind] = {**needs.get(kind, {"cpus": 1, "gpus": 0}), **n}
    local = s.get("local") or {}
    if not isinstance(local, dict) or set(local) - {"cpus", "gpus"}:
        raise KitError(f"{where}: scale.local must be {{cpus: N, gpus: N}} (embedded Ray)")
    for k, v in local.items():
        _number(v, f"local.{k}", where, 0, integer=True)
    return ScaleSettings(
        address=address.strip(),
        shards=shards,
        videos_per_shard=vps,
        max_retries=retries,
        needs=needs,
        local_cpus=local.get("cpus"),
        local_gpus=local.get("gpus"),
    )


def add_arguments(parser) -> None:
    """The command-line overrides of ``scale.*`` shared by the sharded verbs."""
    from ..argtypes import positive_int

    g = parser.add_argument_group("sharding on Ray (defaults: scale.* of ./params.yaml)")
    g.add_argument(
        "--shards",
        dest="scale_shards",
        type=positive_int,
        metavar="N",
        help="split the videos into N shards (scale.shards)",
    )
    g.add_argument(
        "--ray-address",
        dest="scale_address",
        help="local (embedded Ray, default), auto or ray://HOST:PORT (scale.address)",
    )
    g.add_argument(
        "--gpus-per-shard",
        dest="scale_gpus",
        type=float,
        metavar="N",
        help="GPUs a shard asks Ray for (scale.needs.<kind>.gpus)",
    )
    g.add_argument(
        "--cpus-per-shard",
        dest="scale_cpus",
        type=float,
        metavar="N",
        help="CPUs a shard asks Ray for (scale.needs.<kind>.cpus)",
    )


def stage_params(args) -> str | None:
    """The params file of the DVC stage this verb runs as: ``rvos-kit --params FILE``
    (generated stages say it), else ``params.yaml`` of the current folder when DVC runs
    the command (DVC sets DVC_STAGE and runs a stage beside its params file); None for a
    verb typed by hand."""
    given = getattr(args, "dag_params", None)
    if given:
        return given
    if os.environ.get("DVC_STAGE") and Path("params.yaml").is_file():
        return "params.yaml"
    return None


def settings_from_args(args, kind: str) -> ScaleSettings:
    """``scale`` of the stage's params file (:func:`stage_params`; defaults without one)
    with the command line's overrides."""
    params = stage_params(args)
    settings = load_scale(params) if params else ScaleSettings()
    if getattr(args, "scale_shards", None) is not None:
        settings = replace(settings, shards=args.scale_shards, videos_per_shard=None)
    if getattr(args, "scale_address", None) is not None:
        settings = replace(settings, address=args.scale_address)
    needs = {}
    for key, attr in (("gpus", "scale_gpus"), ("cpus", "scale_cpus")):
        v = getattr(args, attr, None)
        if v is not None:
            if v < 0:
                raise KitError(f"--{key}-per-shard must be >= 0")
            needs[key] = v
    if needs:
        merged = {**settings.needs, kind: {**settings.needs.get(kind, {}), **needs}}
        settings = replace(settings, needs=merged)
    return settings


def load_scale(params: str | os.PathLike) -> ScaleSettings:
    """``scale`` of a params file."""
    import yaml

    path = Path(params)
    if not path.is_file():
        raise KitError(f"{path}: params file not found")
    try:
        p = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise KitError(f"{path}: cannot read params ({e})") from None
    return scale_settings(p if isinstance(p, dict) else {}, str(path))


# ---------------------------------------------------------------------------- shards
def partition(
    weights: Sequence[tuple[str, float]], shards: int | None, videos_per_shard: int | None
) -> list[list[str]]:
    """Cut videos (sorted by id here) into contiguous runs.

    ``videos_per_shard=K``: runs of K videos. Else ``shards=N`` runs (fewer when there are
    fewer videos) of about equal total weight: the k-th cut goes where the running total
    first reaches k/N of the whole, moved so that no run is empty."""
    items = sorted(weights)
    names = [n for n, _ in items]
    if not names:
        return []
    if videos_per_shard:
        return [names[i : i + videos_per_shard] for i in range(0, len(names), videos_per_shard)]
    n = max(1, min(int(shards or 1), len(names)))
    running = list(itertools.accumulate(max(float(w), 1e-9) for _, w in items))
    cuts: list[int] = []
    for k in range(1, n):
        first = bisect.bisect_left(running, running[-1] * k / n * (1 - 1e-12)) + 1
        low = (cuts[-1] if cuts else 0) + 1  # this run holds a video
        high = len(names) - (n - k)  # and so does every later run
        cuts.append(min(max(first, low), high))
    bounds = [0, *cuts, len(names)]
    pairs = zip(bounds, bounds[1:])  # noqa: B905 (runs on Python 3.9 in the uninext image)
    return [names[a:b] for a, b in pairs if b > a]


def shard_key(record: dict, videos: Sequence[str]) -> str:
    """Digest of what a shard's output depends on: the stage's record (inputs, settings,
    verb) and its videos."""
    text = json.dumps({"record": record, "videos": list(videos)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass
class ShardedStage:
    """What :func:`run_sharded` needs to know about a verb.

    ``argv(videos)``: the verb and its arguments for a shard, without ``--out`` (the task
    adds ``--videos`` and ``--out ATTEMPT``). ``merge(shard_dirs, out)``: join the
    committed shards, in shard order, into ``out``, atomically (e.g. :func:`tree_merge`).
    ``complete(shard_dir, videos)``: whether a committed shard still holds its videos."""

    name: str  # for messages and the bar
    kind: str  # key of scale.needs: flow, aot, deaot, infer
    out: Path
    weights: list[tuple[str, float]]  # (video, work)
    # everything the output of a shard depends on (JSON-able; e.g. content digests of
    # its inputs): a dict for the stage, or a function of the shard's videos
    record: dict | Callable[[list[str]], dict]
    argv: Callable[[list[str]], list[str]]
    merge: Callable[[list[Path], Path], None]
    complete: Callable[[Path, list[str]], bool]
    image: str | None = None  # docker mode: the image a shard runs in
    runner: object = None  # compute.docker.Settings for docker mode
    # docker mode: shard args -> extra (host, container path, mode) mounts (infer: the
    # paths the published code hard-codes, rvos_kit.stages.rvos.infer.mounts)
    mounts: Callable[[list[str]], list[tuple[str, str, str]]] | None = None


@dataclass
class Shard:
    index: int  # 1-based
    videos: list[str]
    key: str

    def label(self, n: int) -> str:
        v = self.videos
        span = v[0] if len(v) == 1 else f"{v[0]} .. {v[-1]}"
        return f"shard {self.index}/{n} ({len(v)} video{'s' if len(v) != 1 else ''}: {span})"


@dataclass
class ScaleReport:
    shards: int
    reused: int  # committed by an earlier run, not run again
    ran: int
    retried: list[str]  # one line per shard that needed more than one attempt
    videos: int
    seconds: float

    def describe(self) -> str:
        ran = f"{self.ran} run"
        if self.reused:
            ran += f", {self.reused} reused from an interrupted run"
        if self.retried:
            ran += f", {len(self.retried)} retried"
        plural = "s" if self.shards != 1 else ""
        return (
            f"{self.videos} videos in {self.shards} shard{plural} ({ran}) in {self.seconds:.1f} s"
        )


def tree_merge(shard_dirs: list[Path], out: Path) -> None:
    """Merge for mask trees ``<video>/<exp>/<frame>.png``: every shard's video folders
    are moved (renamed) into ``.<out>.partial``, which then replaces ``out``."""
    from ..trees.masktree import StagedTree

    with StagedTree(out) as staged:
        for d in shard_dirs:
            for v in sorted(p.name for p in d.iterdir()):
                os.rename(d / v, staged.path / v)


def tree_complete(shard_dir: Path, videos: list[str]) -> bool:
    return shard_dir.is_dir() and all((shard_dir / v).is_dir() for v in videos)


# --------------------------------------------------------------------------- child side
def child_setup() -> None:
    """First thing a shard's child does: die with the Ray worker that started it (Linux
    PR_SET_PDEATHSIG), so that a retried attempt never races an orphan."""
    parent = os.environ.get(PARENT_ENV)
    if not parent:
        return
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if str(os.getppid()) != parent:  # the worker died before prctl took effect
        os._exit(137)
    preload = os.environ.get(PRELOAD_ENV)
    if preload:  # tests: e.g. a stand-in inference driver, "FOLDER:MODULE"
        import importlib

        folder, _, module = preload.rpartition(":")
        sys.path.insert(0, folder)
        importlib.import_module(module)


def video_done(name: str) -> None:
    """Called by a shard's child after each complete video: a progress line for the task
    (and the tests' fault-injection point)."""
    print(f"{PROGRESS_PREFIX}{name}", flush=True)
    if os.environ.get(SLOW_ENV):
        time.sleep(float(os.environ[SLOW_ENV]))
    marker, parent = os.environ.get(FAULT_ENV), os.environ.get(PARENT_ENV)
    if marker and parent:
        try:
            os.unlink(marker)  # exactly one child wins
        except FileNotFoundError:
            return
        print(f"fault injection: killing the Ray worker (pid {parent})", file=sys.stderr)
        os.kill(int(parent), signal.SIGKILL)
        time.sleep(30)  # PR_SET_PDEATHSIG ends this process
        os._exit(137)


# ---------------------------------------------------------------------------- task side
class ShardFailed(Exception):
    """The child exited with an error: not retried."""


class ShardCrashed(Exception):
    """The child was killed by a signal: retried like a dead worker."""


def _new_attempt(shards_dir: Path, key: str) -> tuple[int, Path]:
    n = 1
    while True:
        log = shards_dir / f".{key}.attempt-{n}.log"
        try:
            fd = os.open(log, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            n += 1
            continue
        os.close(fd)
        return n, log


def _tail(path: Path, lines: int = 12) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no output)"
    kept = [x for x in text.splitlines() if x.strip() and not x.startswith(PROGRESS_PREFIX)]
    return "\n".join(kept[-lines:]) or "(no output)"


def shard_command(
    spec: dict, attempt: int, work: Path, gpu_ids: list[str], worker_pid: int
) -> tuple[list[str], dict[str, str]]:
    """(argv, extra environment) of a shard's child: the verb for the shard's videos into
    ``work``; natively with ``CUDA_VISIBLE_DEVICES`` = the GPUs Ray assigned, or in docker
    mode ``docker run --gpus "device=ID" --name ...`` in the stage's image."""
    verb_args = [*spec["argv"], "--videos", ",".join(spec["videos"]), "--out", str(work)]
    env = {PARENT_ENV: str(worker_pid), **(spec.get("env") or {})}
    if spec["gpus"] and not gpu_ids:
        raise ShardFailed("Ray assigned no GPU to a GPU shard")
    if not spec.get("image"):
        if spec["gpus"]:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpu_ids)
        return [sys.executable, "-m", "rvos_kit", *verb_args], env
    from .docker import kit_source_dir, plan_docker

    settings = spec["runner"]
    settings = replace(settings, gpus="device=" + ",".join(gpu_ids) if gpu_ids else None)
    argv = plan_docker(
        settings,
        spec["image"],
        verb_args[0],
        verb_args[1:],
        cwd=Path(spec["cwd"]),
        uid=os.getuid(),
        gid=os.getgid(),
        kit_src=kit_source_dir(),
        extra_mounts=spec["mounts"](verb_args[1:]) if spec.get("mounts") else (),
    )
    return [*argv[:2], "--name", container_name(spec["key"], attempt), *argv[2:]], env


def container_name(key: str, attempt: int) -> str:
    return f"rvos-kit-{key[:12]}-a{attempt}"


def _shard_task(spec: dict):
    """Body of a shard's Ray task (a streaming generator): yields ("video", name) as the
    child finishes videos, then ("done", attempt, seconds, where)."""
    import ray

    t0 = time.monotonic()
    shards_dir, key = Path(spec["shards_dir"]), spec["key"]
    final = shards_dir / key
    attempt, log = _new_attempt(shards_dir, key)
    work = shards_dir / f".{key}.attempt-{attempt}"
    if final.is_dir():  # an earlier attempt committed after all (lost only its report)
        yield ("done", attempt, 0.0, "")
        return
    gpu_ids = [str(g) for g in ray.get_gpu_ids()] if spec["gpus"] else []
    argv, extra = shard_command(spec, attempt, work, gpu_ids, os.getpid())
    if spec.get("image"):  # a container of a lost attempt may outlive its worker
        for a in range(1, attempt):
            subprocess.run(
                [argv[0], "rm", "-f", container_name(key, a)], capture_output=True, check=False
            )
    env = {**os.environ, **extra}
    where = ray.util.get_node_ip_address() + (f" GPU {','.join(gpu_ids)}" if gpu_ids else "")
    with open(log, "a", encoding="utf-8") as err:
        shown = " ".join(f"{k}={v}" for k, v in extra.items() if k == "CUDA_VISIBLE_DEVICES")
        err.write(f"$ {shown + ' ' if shown else ''}{' '.join(argv)}\n")
        err.flush()
        proc = subprocess.Popen(
            argv,
            cwd=spec["cwd"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            bufsize=1,
        )
        try:
            for line in proc.stdout:
                if line.startswith(PROGRESS_PREFIX):
                    yield ("video", line[len(PROGRESS_PREFIX) :].strip())
                else:
                    err.write(line)
            rc = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if rc < 0:
        raise ShardCrashed(f"the child was killed by signal {-rc}:\n{_tail(log)}")
    if rc != 0:
        raise ShardFailed(f"the child exited with status {rc}:\n{_tail(log)}")
    if not work.is_dir():
        raise ShardFailed(f"the child exited 0 but wrote no {work}:\n{_tail(log)}")
    try:
        os.rename(work, final)  # the commit
    except OSError:
        if not final.is_dir():
            raise
        shutil.rmtree(work, ignore_errors=True)  # another attempt committed first
    yield ("done", attempt, time.monotonic() - t0, where)


_REMOTE = None


def _remote():
    global _REMOTE
    if _REMOTE is None:
        import ray

        _REMOTE = ray.remote(_shard_task)
    return _REMOTE


# --------------------------------------------------------------------------- driver side
@contextlib.contextmanager
def ray_session(settings: ScaleSettings):
    """Connect to Ray as ``scale.address`` says; an existing connection is used as is."""
    import logging

    import ray

    if ray.is_initialized():
        yield
        return
    common = dict(
        include_dashboard=False,
        configure_logging=True,
        logging_level=logging.WARNING,
        log_to_driver=True,
        namespace="rvos-kit",
    )
    address = settings.address
    if address == "local" and os.environ.get(SESSION_ENV):
        address = os.environ[SESSION_ENV]  # the local Ray of the whole `make` run
    try:
        if address == "local":
            _local_init(settings)
        else:
            ray.init(address=address, **common)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise KitError(
            f"cannot connect to Ray at scale.address {address!r} ({e}); start the cluster "
            "first (docs/scale.md) or use scale.address: local"
        ) from None
    try:
        yield
    finally:
        ray.shutdown()


def _local_init(settings: ScaleSettings) -> None:
    import logging

    import ray

    ray.init(
        address="local",
        num_cpus=settings.local_cpus or os.cpu_count() or 1,
        num_gpus=settings.local_gpus,
        object_store_memory=128 * 1024 * 1024,  # tasks pass no big objects
        include_dashboard=False,
        logging_level=logging.WARNING,
        namespace="rvos-kit",
    )


def session_main(argv: list[str]) -> int:
    """``python -m rvos_kit.compute.scale -- CMD ...``: run CMD with one local Ray that every
    stage with ``scale.address: local`` joins (Ray's start-up, ~10 s on a 2-core machine,
    is then paid once per ``make demo``, not once per stage)."""
    import ray

    cmd = argv[1:] if argv[:1] == ["--"] else argv
    if not cmd:
        print("usage: python -m rvos_kit.compute.scale -- CMD [ARG...]", file=sys.stderr)
        return 2
    _local_init(ScaleSettings())
    try:
        env = {**os.environ, SESSION_ENV: ray.get_runtime_context().gcs_address}
        return subprocess.call(cmd, env=env)
    finally:
        ray.shutdown()


def _slots(needs: ShardNeeds) -> int:
    """How many shards with these needs the cluster runs at once."""
    import ray

    res = ray.cluster_resources()
    slots = []
    if needs.cpus:
        slots.append(int(res.get("CPU", 0) // needs.cpus))
    if needs.gpus:
        slots.append(int(res.get("GPU", 0) // needs.gpus))
    return min(slots) if slots else max(1, int(res.get("CPU", 1)))


def _prepare_shards_dir(shards_dir: Path, keys: set[str]) -> None:
    """Keep committed shards of the current plan; remove everything else (shards of
    other inputs or partitions, attempt folders and logs of earlier runs)."""
    shards_dir.mkdir(parents=True, exist_ok=True)
    for p in shards_dir.iterdir():
        if p.name in keys and p.is_dir():
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def run_sharded(
    stage: ShardedStage, settings: ScaleSettings, progress: bool = True, env=None
) -> ScaleReport:
    """Run ``stage`` as shards on Ray and commit its output (see the module docstring)."""
    from tqdm import tqdm

    t0 = time.monotonic()
    out = Path(stage.out)
    shards_dir = out.parent / f".{out.name}.shards"
    needs = settings.needs_of(stage.kind)
    fault = {k: v for k, v in os.environ.items() if k in (FAULT_ENV, SLOW_ENV, PRELOAD_ENV)}
    n_videos = len(stage.weights)
    with ray_session(settings):
        if settings.shards is None and settings.videos_per_shard is None:
            slots = _slots(needs)
            if slots < 1:
                raise KitError(
                    f"{stage.name}: the Ray cluster has no room for one shard (needs "
                    f"{needs.gpus:g} GPU and {needs.cpus:g} CPU; it has "
                    f"{_describe_resources()}); change scale.needs.{stage.kind} or add nodes"
                )
            n_shards = slots
        else:
            n_shards = settings.shards
        groups = partition(stage.weights, n_shards, settings.videos_per_shard)
        record = stage.record if callable(stage.record) else (lambda g: stage.record)
        shards = [Shard(i + 1, g, shard_key(record(g), g)) for i, g in enumerate(groups)]
        _prepare_shards_dir(shards_dir, {s.key for s in shards})
        done = [s for s in shards if stage.complete(shards_dir / s.key, s.videos)]
        todo = [s for s in shards if s not in done]
        n = len(shards)
        if progress:
            print(
                f"{stage.name}: {n_videos} videos in {n} shard{'s' if n != 1 else ''} on Ray "
                f"({needs.gpus:g} GPU + {needs.cpus:g} CPU each; {_describe_resources()})"
                + (f"; {len(done)} shard(s) already done, reused" if done else ""),
                file=sys.stderr,
            )
        cwd = str(Path.cwd())
        remote = _remote()
        refs = {}
        for s in todo:
            spec = {
                "shards_dir": str(shards_dir.resolve()),
                "key": s.key,
                "videos": s.videos,
                "argv": stage.argv(s.videos),
                "cwd": cwd,
                "gpus": needs.gpus,
                "env": {**fault, **(env or {})},
                "image": stage.image,
                "runner": stage.runner,
                "mounts": stage.mounts,
            }
            ref = remote.options(
                num_cpus=needs.cpus,
                num_gpus=needs.gpus,
                max_retries=settings.max_retries,
                retry_exceptions=[ShardCrashed],
                num_returns="streaming",
                name=f"{stage.name} shard {s.index}/{n}",
            ).remote(spec)
            refs[ref] = s
        failures: list = []
        retried: list[str] = []
        placed: list[str] = []
        bar = tqdm(
            total=n_videos,
            initial=sum(len(s.videos) for s in done),
            unit="video",
            desc=stage.name,
            disable=not progress,
            file=sys.stderr,
            dynamic_ncols=True,
        )
        try:
            with bar:
                _drain(refs, bar, failures, retried, placed, shards_dir, n)
        except KeyboardInterrupt:
            import ray

            for ref in refs:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
            print(
                f"{stage.name}: interrupted; committed shards are kept in {shards_dir} and "
                "reused by the next run",
                file=sys.stderr,
            )
            raise
    for line in placed + retried:
        print(f"{stage.name}: {line}", file=sys.stderr)
    if failures:
        first, why = failures[0]
        more = f" and {len(failures) - 1} more shard(s), see above" if len(failures) > 1 else ""
        kept = n - len(failures)
        raise KitError(
            f"{why} ({first.label(n)}{more}; "
            + (f"the {kept} other shard(s) are kept for the next run)" if kept else "nothing kept)")
        )
    stage.merge([shards_dir / s.key for s in shards], out)
    shutil.rmtree(shards_dir, ignore_errors=True)
    return ScaleReport(n, len(done), len(todo), retried, n_videos, time.monotonic() - t0)


def _describe_resources() -> str:
    import ray

    res = ray.cluster_resources()
    nodes = sum(1 for x in ray.nodes() if x.get("Alive"))
    return (
        f"cluster: {nodes} node{'s' if nodes != 1 else ''}, {res.get('CPU', 0):g} CPU, "
        f"{res.get('GPU', 0):g} GPU"
    )


def _drain(refs: dict, bar, failures: list, retried: list, placed: list, shards_dir: Path, n: int):
    """Follow every shard's stream until all have ended."""
    import ray

    pending = list(refs)
    seen: dict = {}
    while pending:
        ready, pending = ray.wait(pending, num_returns=1, timeout=1.0)
        for gen in ready:
            shard = refs[gen]
            try:
                item_ref = next(gen)
            except StopIteration:
                continue
            try:
                item = ray.get(item_ref)
            except Exception as e:  # the shard failed for good
                text, why = _failure(shard, e, shards_dir, n)
                failures.append((shard, why))
                bar.write(f"FAILED {text}", file=sys.stderr)
                continue
            if item[0] == "video":
                seen[gen] = seen.get(gen, 0) + 1
                bar.update(1)
            elif item[0] == "done":  # a verb that reports no videos: the shard at once
                bar.update(max(0, len(shard.videos) - seen.get(gen, 0)))
            if item[0] == "done" and "GPU" in item[3]:
                placed.append(f"{shard.label(n)} ran on {item[3]} in {item[2]:.1f} s")
            if item[0] == "done" and item[1] > 1:
                logs = [shards_dir / f".{shard.key}.attempt-{a}.log" for a in range(1, item[1])]
                lost = "; ".join(f"attempt {a}: {_tail(p, 1)}" for a, p in enumerate(logs, 1))
                retried.append(
                    f"{shard.label(n)} retried after a lost worker, done on attempt "
                    f"{item[1]} ({lost})"
                )
            pending.append(gen)


def _failure(shard: Shard, e: Exception, shards_dir: Path, n: int) -> tuple[str, str]:
    """(what to print: the shard, its videos and the worker's error; the error in one
    line: the child's own error message when it gave one)."""
    cause = getattr(e, "cause", None) or e  # a RayTaskError wraps the task's exception
    if isinstance(cause, (ShardFailed, ShardCrashed)):
        msg = str(cause)
    else:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        msg = f"{type(e).__name__}: {first}"
        logs = sorted(shards_dir.glob(f".{shard.key}.attempt-*.log"))
        if logs:
            msg += f"\nlast output of the child:\n{_tail(logs[-1])}"
    lines = msg.splitlines()
    why = next((x.split(": error: ", 1)[1] for x in reversed(lines) if ": error: " in x), None)
    if why is None:
        why = f"{shard.label(n)} failed: {lines[0] if lines else type(e).__name__}"
    indented = "\n".join("    " + x for x in lines)
    return f"{shard.label(n)}: videos {', '.join(shard.videos)}\n{indented}", why


__all__ = [
    "DEFAULT_NEEDS",
    "ScaleReport",
    "ScaleSettings",
    "ShardedStage",
    "child_setup",
    "load_scale",
    "partition",
    "run_sharded",
    "scale_settings",
    "shard_key",
    "tree_complete",
    "tree_merge",
    "video_done",
]


if __name__ == "__main__":
    sys.exit(session_main(sys.argv[1:]))
