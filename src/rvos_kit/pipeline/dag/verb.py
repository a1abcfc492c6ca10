"""The work of the ``rvos-kit dag`` verb (registered in :mod:`rvos_kit.pipeline.dag`): write
dvc.yaml, check that it is up to date, print a stage's spelled-out command (``--explain``),
or compare the output hashes of two dvc.lock files (``--compare-outs``: ``make
demo-check``'s byte-identity check)."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from ...errors import KitError
from ...trees.staging import check_outputs
from .generate import render, spelled


def lock_outs(path) -> dict[str, tuple]:
    """{output path: (md5, size, nfiles)} of every stage output recorded in a dvc.lock."""
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise KitError(f"{path}: dvc.lock not found") from None
    return {
        o["path"]: (o.get("md5"), o.get("size"), o.get("nfiles"))
        for st in (doc or {}).get("stages", {}).values()
        for o in st.get("outs", [])
    }


def compare_outs(expected, actual) -> list[str]:
    """Outputs whose hash differs between two dvc.lock files (code deps may differ)."""
    a, b = lock_outs(expected), lock_outs(actual)
    return [f"{k}: {a.get(k, ('absent',))[0]} -> {b.get(k, ('absent',))[0]}"
            for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]  # fmt: skip


def run(args) -> int:
    params = Path(args.params)
    if args.compare_outs:
        lock = params.with_name("dvc.lock")
        diff = compare_outs(args.compare_outs, lock)
        if diff:
            lines = "\n".join(f"  {d}" for d in diff)
            raise KitError(
                f"{lock}: {len(diff)} output(s) differ from {args.compare_outs}:\n{lines}"
            )
        print(f"{lock}: all {len(lock_outs(lock))} outputs match {args.compare_outs} byte for byte")
        return 0
    out = Path(args.out) if args.out else params.with_name("dvc.yaml")
    if not args.out:  # the CLI checked a given --out; the default one is checked here
        check_outputs([("--params", str(params))], [("(default) --out", str(out))])
    ref = os.path.relpath(params, out.parent)
    if args.explain:
        return explain(params, ref, out, args.explain)
    text = render(params, ref)
    if args.check:
        current = out.read_text() if out.exists() else ""
        if current != text:
            raise KitError(
                f"{out} is out of date with {params}: run `rvos-kit dag --params {params}`"
            )
        print(f"{out} is up to date with {params}")
        return 0
    from ...trees.files import atomic_write_bytes

    atomic_write_bytes(out, text.encode())
    print(f"wrote {out} ({len(yaml.safe_load(text)['stages'])} stages) from {params}")
    return 0


def explain(params: Path, ref: str, out: Path, node: str) -> int:
    """Print the command stage ``node`` runs now (what ``rvos-kit --params REF --node
    NODE`` in ``out``'s folder runs once it has checked dvc.yaml), with its params keys."""
    import shlex

    doc = spelled(params, ref)
    if node not in doc:
        raise KitError(f"{params} generates no stage {node!r}; its stages: {', '.join(doc)}")
    s = doc[node]
    words = ["rvos-kit", "--params", ref, *shlex.split(s["cmd"])[1:]]
    keys = ", ".join(s.get("params", [])) or "none (only its params file's shape)"
    print(f"# stage {node} of {out}, run in {out.parent or '.'}/; params keys: {keys}")
    print(shlex.join(words))
    return 0
