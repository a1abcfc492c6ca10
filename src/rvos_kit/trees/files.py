"""Atomic file writing: every file the kit writes goes to a temp name beside its target and
is renamed into place, so a killed run never leaves a truncated file."""

from __future__ import annotations

import os
from pathlib import Path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder + rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException as e:
        discard(tmp)
        blame(e, path, tmp)
        raise


def discard(tmp: str | os.PathLike) -> None:
    """Remove a temp file if it is there; never raises (on a read-only folder even a
    missing file's unlink fails, and that must not hide the error being handled)."""
    try:
        os.unlink(tmp)
    except OSError:
        pass


def blame(e: BaseException, target: str | os.PathLike, *temps: str | os.PathLike) -> None:
    """Make an :class:`OSError` raised while writing ``target`` (through the temp names
    ``temps``: files or staging folders) name ``target``: a full disk or a read-only
    folder is then reported against the output the user named, not a temp name."""
    if isinstance(e, OSError):
        name = None if e.filename is None else os.fsdecode(e.filename)
        if name is None or any(name == str(t) or name.startswith(f"{t}{os.sep}") for t in temps):
            e.filename = str(target)
