"""Fault injection for the tests of sharded stages (never shipped: tests/faults/).

The kit's production modules hold no test hooks. This module patches
``rvos_kit.compute.scale`` in the process that runs it, from environment variables:

- ``RVOS_KIT_FAULT_KILL_WORKER=PATH``: the first shard child that finishes a video while
  PATH exists removes it and SIGKILLs the Ray worker that started it (mid-shard); the
  child then dies with that worker (PR_SET_PDEATHSIG, as in production).
- ``RVOS_KIT_FAULT_SLOW_VIDEO_S=SECONDS``: every shard child sleeps that long after each
  video, so that a test can interrupt a stage mid-way.
- ``RVOS_KIT_FAULT_PRELOAD=FOLDER:MODULE``: every shard child imports MODULE (from
  FOLDER) right after its setup (a stand-in inference driver).

The driver forwards the variables, and this folder first on PYTHONPATH, to every shard's
child; there ``sitecustomize.py`` (beside this file) calls :func:`install` at start-up.
A test that runs a sharded verb in its own process calls ``install(monkeypatch)``; one
that starts ``rvos-kit`` as a subprocess puts this folder on its PYTHONPATH
(:func:`subprocess_env`).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

KILL_WORKER = "RVOS_KIT_FAULT_KILL_WORKER"
SLOW_VIDEO = "RVOS_KIT_FAULT_SLOW_VIDEO_S"
PRELOAD = "RVOS_KIT_FAULT_PRELOAD"
NAMES = (KILL_WORKER, SLOW_VIDEO, PRELOAD)
HERE = str(Path(__file__).resolve().parent)


def _pythonpath() -> str:
    rest = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != HERE]
    return os.pathsep.join([HERE, *rest])


def subprocess_env(**faults: str) -> dict[str, str]:
    """The environment for ``rvos-kit`` started as a subprocess, with ``faults`` (name ->
    value) armed."""
    return {**os.environ, **faults, "PYTHONPATH": _pythonpath()}


def install(monkeypatch=None) -> None:
    """Patch the driver (forward the faults to every shard's child) and the child's two
    hooks (``child_setup``, ``video_done``), with ``monkeypatch`` when given (undone after
    the test), else for the life of this process."""
    from rvos_kit.compute import scale
    from rvos_kit.compute.scale import child, driver

    setattr_ = monkeypatch.setattr if monkeypatch is not None else setattr
    submit, setup, done = driver._submit, child.child_setup, child.video_done

    def _submit(*args):
        *head, env = args
        faults = {k: v for k, v in os.environ.items() if k in NAMES}
        if faults:
            env = {**faults, "PYTHONPATH": _pythonpath(), **(env or {})}
        return submit(*head, env)

    def child_setup() -> None:
        setup()
        preload = os.environ.get(PRELOAD)
        if preload and os.environ.get(child.PARENT_ENV):  # a shard's child only
            import importlib

            folder, _, module = preload.rpartition(":")
            sys.path.insert(0, folder)
            importlib.import_module(module)

    def video_done(name: str) -> None:
        done(name)
        if os.environ.get(SLOW_VIDEO):
            time.sleep(float(os.environ[SLOW_VIDEO]))
        marker, parent = os.environ.get(KILL_WORKER), os.environ.get(child.PARENT_ENV)
        if marker and parent:
            try:
                os.unlink(marker)  # exactly one child wins
            except FileNotFoundError:
                return
            print(f"fault injection: killing the Ray worker (pid {parent})", file=sys.stderr)
            os.kill(int(parent), signal.SIGKILL)
            time.sleep(30)  # PR_SET_PDEATHSIG ends this process
            os._exit(137)

    setattr_(driver, "_submit", _submit)
    for mod in (child, scale):
        setattr_(mod, "child_setup", child_setup)
        setattr_(mod, "video_done", video_done)
