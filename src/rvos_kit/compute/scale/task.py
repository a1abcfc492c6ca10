"""What runs in a Ray worker for one shard: :func:`shard_task` starts the verb for the
shard's videos in a child process (natively or in the stage's docker image), streams the
child's progress back to the driver and commits the shard's attempt folder when the
child exits 0.

Each attempt writes into its own ``.<key>.attempt-N`` folder (log beside it) under the
stage's shards folder; the rename to ``<key>`` is the commit, so a shard is committed
whole or not at all. A child killed by a signal raises :class:`ShardCrashed` (retried by
Ray like a dead worker), and so does, in docker mode, a ``docker run`` that exits 128+N
(Docker's report of a container whose process signal N killed: the OOM killer's SIGKILL
is 137); a child that exits with an error raises :class:`ShardFailed` (not retried).

Ray pickles :func:`shard_task` by reference: this module must stay importable in the
workers (it is, as ``rvos_kit.compute.scale.task``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from .child import PARENT_ENV, PROGRESS_PREFIX


class ShardFailed(Exception):
    """The child exited with an error: not retried."""


class ShardCrashed(Exception):
    """The child was killed by a signal: retried like a dead worker."""


def _new_attempt(shards_dir: Path, key: str) -> tuple[int, Path]:
    """(number, log file) of a new attempt: the first N whose log did not exist yet."""
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


def log_tail(path: Path, lines: int = 12) -> str:
    """The last ``lines`` non-blank lines of an attempt's log, without progress lines."""
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
    # a JSON list: no video id (commas, spaces, any character) can change the list
    videos = json.dumps(list(spec["videos"]))
    verb_args = [*spec["argv"], "--videos-json", videos, "--out", str(work)]
    env = {PARENT_ENV: str(worker_pid), **(spec.get("env") or {})}
    if spec["gpus"] and not gpu_ids:
        raise ShardFailed("Ray assigned no GPU to a GPU shard")
    if not spec.get("image"):
        if spec["gpus"]:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpu_ids)
        return [sys.executable, "-m", "rvos_kit", *verb_args], env
    from ..docker import kit_source_dir, plan_docker

    settings = spec["runner"]
    settings = replace(settings, gpus="device=" + ",".join(gpu_ids) if gpu_ids else None)
    docker = spec.get("docker")  # the client the driver checked, if this node has it there
    docker = docker if docker and os.access(docker, os.X_OK) else "docker"
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
        docker=docker,
    )
    return [*argv[:2], "--name", container_name(spec["key"], attempt), *argv[2:]], env


def container_name(key: str, attempt: int) -> str:
    return f"rvos-kit-{key[:12]}-a{attempt}"


def shard_task(spec: dict):
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
        raise ShardCrashed(f"the child was killed by signal {-rc}:\n{log_tail(log)}")
    if spec.get("image") and 128 < rc <= 128 + 64:  # how `docker run` reports a signal
        raise ShardCrashed(
            f"the container's process was killed by signal {rc - 128} (docker run exited "
            f"{rc}):\n{log_tail(log)}"
        )
    if rc != 0:
        raise ShardFailed(f"the child exited with status {rc}:\n{log_tail(log)}")
    if not work.is_dir():
        raise ShardFailed(f"the child exited 0 but wrote no {work}:\n{log_tail(log)}")
    try:
        os.rename(work, final)  # the commit
    except OSError:
        if not final.is_dir():
            raise
        shutil.rmtree(work, ignore_errors=True)  # another attempt committed first
    yield ("done", attempt, time.monotonic() - t0, where)


_REMOTE = None


def remote_task():
    """:func:`shard_task` as a Ray remote function (made once, on first use)."""
    global _REMOTE
    if _REMOTE is None:
        import ray

        _REMOTE = ray.remote(shard_task)
    return _REMOTE
