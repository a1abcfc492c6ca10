"""What a shard's child process (``python -m rvos_kit VERB ... --videos-json '["V1", ...]'``) calls:
:func:`child_setup` first, :func:`video_done` after each complete video.

Nothing here imports Ray; the child may run in a stage's image (docker mode), the
uninext image's CPython 3.9 included. The environment variables here are the protocol
between the task (:mod:`.task`) and its child. (The tests inject their faults at these
two calls from outside: tests/faults/.)"""

from __future__ import annotations

import os

from ..parentdeath import die_with_parent

# The line a shard's child prints when a video is complete.
PROGRESS_PREFIX = "rvos-kit:video-done "
# Set by the task for its child: the pid of the Ray worker that runs the task.
PARENT_ENV = "RVOS_KIT_SHARD_PARENT"


def child_setup() -> None:
    """First thing a shard's child does: die with the Ray worker that started it (Linux
    PR_SET_PDEATHSIG), so that a retried attempt never races an orphan."""
    parent = os.environ.get(PARENT_ENV)
    if not parent:
        return
    die_with_parent(int(parent), 137)


def video_done(name: str) -> None:
    """Called by a shard's child after each complete video: a progress line for the task."""
    print(f"{PROGRESS_PREFIX}{name}", flush=True)
