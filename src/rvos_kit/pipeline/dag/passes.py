"""The passes over the whole DAG, after every stage kind has added its stages: drop what
no target reads (:func:`prune`), put the ``preflight`` stage first
(:func:`add_preflight`), and make each stage depend on the code of its verb
(:func:`add_code_deps`)."""

from __future__ import annotations

from .context import Builder, q

# The module(s) each verb emitted here runs (collected in :data:`rvos_kit.pipeline.dag.CODE`).
CODE = {"preflight": ["pipeline/preflight.py"]}


def _path(out) -> str:
    """The path of a dvc.yaml ``outs`` / ``metrics`` entry (a path or {path: options})."""
    return next(iter(out)) if isinstance(out, dict) else out


def prune(b: Builder) -> None:
    """Drop stages whose outputs nothing downstream reads (e.g. a released Origin tree
    when only its released AOT tree is a fusion member)."""
    ends = ("pack", "audit", "summary", "report")
    sinks = [n for n in b.stages if n in ends or n.startswith("audit_")]
    if not sinks:
        return
    producer = {}
    for name, s in b.stages.items():
        for o in s.get("outs", []) + s.get("metrics", []):
            producer[_path(o)] = name
    keep, todo = set(), list(sinks)
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        keep.add(name)
        for d in b.stages[name].get("deps", []):
            for out, prod in producer.items():  # a dep may sit inside another stage's out
                if d == out or d.startswith(out + "/"):
                    todo.append(prod)
    b.stages = {n: s for n, s in b.stages.items() if n in keep}


def add_preflight(b: Builder) -> None:
    """Put ``preflight`` first: it becomes a dependency of every stage that depends on
    no other stage."""
    out = f"{b.out}/preflight.txt"
    produced = {
        _path(o) for s in b.stages.values() for o in s.get("outs", []) + s.get("metrics", [])
    }
    for s in b.stages.values():
        deps = s.get("deps", [])
        if not any(d == o or d.startswith(o + "/") for d in deps for o in produced):
            s["deps"] = [*deps, out]
    cmd = q(["rvos-kit", "preflight", "--params", b.params_name, "--out", out])
    b.stages = {
        "preflight": {
            "cmd": cmd,
            "deps": [b.params_name],
            "outs": [{out: {"cache": False}}],
        },
        **b.stages,
    }


def add_code_deps(b: Builder, code: dict[str, list[str]]) -> None:
    """Make every stage depend on the module(s) its verb runs (``code``: verb -> paths
    under ``paths.code``), so that a code change re-runs its stages and DVC's run-cache
    never restores outputs made by other code."""
    root = b.p["paths"].get("code")
    if not root:
        return
    for s in b.stages.values():
        words = s["cmd"].split()
        verb = words[words.index("--") + 1] if "--" in words else words[1]
        for f in code.get(verb, []):
            s.setdefault("deps", []).append(f"{root}/{f}")
