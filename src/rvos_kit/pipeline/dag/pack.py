"""DAG kind ``pack``: the submission zip of ``submission.node``'s tree and its sha256."""

from __future__ import annotations

from .context import Builder, q


def add(b: Builder) -> None:
    sub = b.p.submission
    if not sub:
        return
    z = f"{b.out}/submission.zip"
    sha = sub.sha256
    src = b.tree(sub.node)
    b.stages["pack"] = {
        "cmd": q(["rvos-kit", "pack", src, "--out", z, "--meta", b.meta, "--sha256", sha]),
        "deps": [src, b.meta],
        "params": ["submission"],
        "outs": [z, {sha: {"cache": False}}],
    }
