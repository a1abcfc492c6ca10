"""What a shard's child process (``python -m rvos_kit VERB ... --videos-json '["V1", ...]'``) calls:
:func:`child_setup` first, :func:`video_done` after each complete video.

Nothing here imports Ray; the child may run in a stage's image (docker mode), the
uninext image's CPython 3.9 included. The environment variables here are the protocol
between the task (:mod:`.task`) and its child, plus the tests' fault-injection hooks."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time

# The line a shard's child prints when a video is complete.
PROGRESS_PREFIX = "rvos-kit:video-done "
# Set by the task for its child: the pid of the Ray worker that runs the task.
PARENT_ENV = "RVOS_KIT_SHARD_PARENT"
# Fault injection for the tests: a path; the first child that finishes a video while
# the file exists removes it and kills its Ray worker (SIGKILL), mid-shard.
FAULT_ENV = "RVOS_KIT_FAULT_KILL_WORKER"
# ... and a delay after every video (seconds), to interrupt a stage mid-way in the tests.
SLOW_ENV = "RVOS_KIT_FAULT_SLOW_VIDEO_S"
# ... and a module every shard's child imports first ("FOLDER:MODULE"; test stand-ins).
PRELOAD_ENV = "RVOS_KIT_FAULT_PRELOAD"


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
