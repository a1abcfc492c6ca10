"""A child process that dies with its parent: :func:`die_with_parent`, for the pooled
verbs' workers (:mod:`.pool`) and a shard's child process (:mod:`.scale.child`).

Linux ``PR_SET_PDEATHSIG``: the kernel sends the child SIGKILL when its parent exits,
however the parent ends (SIGKILL included), so that nothing is left running that could
still write into a stage's staging folder or race a retried attempt. Elsewhere the call
does nothing. Stdlib only: a shard's child may run in the uninext image (CPython 3.9).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent: int, status: int) -> None:
    """Ask the kernel to SIGKILL this process when its parent dies, then exit at once
    with ``status`` if the parent (pid ``parent``) is already gone: it may have died
    before the request took effect, and then no signal will come."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(status)
