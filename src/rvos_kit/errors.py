"""The one error type the CLI prints as a line without traceback, the message cap, and
the line for an output that cannot be written (disk full, read-only or not writable)."""

from __future__ import annotations

import errno
import os
import shutil

# A message longer than this is cut (head and tail kept): an error must fit a terminal
# whatever the input (a params file that expands to megabytes, a huge value quoted back).
MAX_MESSAGE = 4000


class KitError(Exception):
    """A user-facing error: names the file and what is wrong (and the fix when known).

    The CLI prints ``rvos-kit <verb>: error: <message>`` and exits with status 2.
    """


def cap_message(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text``, or its head and tail with the number of characters left out between."""
    if len(text) <= limit:
        return text
    n = len(text)
    keep = (limit - len(f" [... {n} characters, {n} left out ...] ")) // 2  # <= limit
    return f"{text[:keep]} [... {n} characters, {n - 2 * keep} left out ...] {text[-keep:]}"


# errno -> what the user reads; these mean "the output could not be written here".
_WRITE_ERRORS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


def _human(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} TiB"  # pragma: no cover


def write_error_message(e: OSError) -> str | None:
    """One line for an :class:`OSError` that stops an output from being written (disk
    full, quota, read-only, permissions): the file, the folder and its free space. ``None``
    for any other error. Outputs are written to temp names and renamed, so what was there
    before is still there."""
    what = _WRITE_ERRORS.get(e.errno)
    if what is None:
        return None
    where = e.filename if e.filename is not None else os.getcwd()
    folder = os.path.dirname(os.path.abspath(os.fsdecode(where)))  # the folder holding it
    while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    try:
        free = f"{_human(shutil.disk_usage(folder).free)} free"
    except OSError:
        free = "free space unknown"
    fix = "free space" if e.errno in (errno.ENOSPC, errno.EDQUOT) else "check its permissions"
    return (
        f"{os.fsdecode(where)}: {what} (folder {folder}: {free}); nothing was replaced: "
        f"{fix}, or write the output to another folder"
    )
