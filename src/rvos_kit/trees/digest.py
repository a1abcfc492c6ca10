"""Content digests: the key of resumable work.

A stage that resumes (``propagate``; shard-level resume elsewhere) stores, beside its
partial output, the digest of everything the output depends on, and discards the partial
work when the digest differs. Paths are hashed by *content*, never by name or mtime, so
an input regenerated with other values (e.g. a fused tree after a threshold change) never
resumes onto stale work.

Usage::

    key = content_digest({
        "tree": {f"{v}/{e}/{f}": path, ...},   # pathlib.Path -> the file's bytes
        "meta": Path("meta_expressions.json"),
        "params": {"pair_threshold": 3},       # plain values -> their JSON form
    })

``content_digest(value)`` accepts nested dicts / lists / tuples of JSON values and
:class:`pathlib.Path` objects: a file path stands for its bytes, a folder path for every
file under it (relative names and bytes), a missing path for "missing". A ``str`` is a
value, not a path. Dict order does not matter, list order does. The result is a sha256
hex string, stable across runs, machines and Python versions.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

_CHUNK = 1 << 20


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _folder(root: Path) -> dict:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for n in sorted(filenames):
            p = Path(dirpath) / n
            out[p.relative_to(root).as_posix()] = file_sha256(p)
    return out


def _canonical(value):
    if isinstance(value, Path):
        if value.is_file():
            return {"file": file_sha256(value)}
        if value.is_dir():
            return {"folder": _folder(value)}
        return {"missing": True}
    if isinstance(value, dict):
        return {"dict": {str(k): _canonical(v) for k, v in value.items()}}
    if isinstance(value, (list, tuple)):
        return {"list": [_canonical(v) for v in value]}
    if value is None or isinstance(value, (str, int, float, bool)):
        return {"value": value}
    raise TypeError(f"content_digest: cannot digest a {type(value).__name__}")


def content_digest(value) -> str:
    """sha256 hex digest of ``value`` with every :class:`~pathlib.Path` replaced by its
    content (see the module docstring)."""
    text = json.dumps(_canonical(value), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------- whole files, with a bar
CHUNK = 1 << 20


def progress_bar(total, desc, initial=0):
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        leave=False,
        file=sys.stderr,
        disable=None if (total or 0) > 64 * CHUNK else True,
    )


def sha256_file(path: str | os.PathLike, desc: str = "") -> tuple[str, int]:
    """(hex sha256, size) of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as f, progress_bar(os.fstat(f.fileno()).st_size, f"hash {desc}") as bar:
        while block := f.read(CHUNK):
            h.update(block)
            n += len(block)
            bar.update(len(block))
    return h.hexdigest(), n
