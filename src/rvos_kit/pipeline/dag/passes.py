"""The passes over the whole DAG, after every stage kind has added its stages: drop what
no target reads (:func:`prune`), guard the stages that read from outside the DAG with
preflight stages (:func:`add_preflight`), and make each stage depend on the code of its verb
(:func:`add_code_deps`)."""

from __future__ import annotations

from ..codedeps import stage_code
from ..targets import closure
from .context import Builder, q


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
    keep = closure(b.stages, sinks)
    b.stages = {n: s for n, s in b.stages.items() if n in keep}


def _group(b: Builder, name: str, stage: dict) -> str:
    """The preflight stage that guards ``name``: ``preflight_<model>`` for a model's
    inference or import (its checkpoint, dumps, image, GPU), ``preflight_<prop>`` for a
    propagation that runs a network (its checkpoint, GPU), else ``preflight``."""
    verb = stage["cmd"].split()[1]
    for m, spec in b.models.items():
        if name == f"rvos_{m}" and spec.source in ("infer", "imported"):
            return f"preflight_{m}"
    if verb == "propagate":
        for prop in b.props:
            if name.startswith(f"propagate_{prop}_"):
                return f"preflight_{prop}"
    return "preflight"


def add_preflight(b: Builder) -> None:
    """Guard every stage that reads something from outside the DAG (or depends on no
    other stage) with a preflight stage that checks only what its stages read: one per
    model that is inferred or imported, one per propagation that runs a network, and
    ``preflight`` for the rest (the dataset). So ``dvc repro dvc.yaml:<stage>`` checks
    what that stage and its upstream need, nothing more. Each preflight stage comes just
    before the first stage it guards."""
    produced = {
        _path(o) for s in b.stages.values() for o in s.get("outs", []) + s.get("metrics", [])
    }

    def inside(d: str) -> bool:
        return any(d == o or d.startswith(o + "/") for o in produced)

    guard: dict[str, str] = {}
    for name, s in b.stages.items():
        deps = s.get("deps", [])
        if not deps or not all(inside(d) for d in deps):
            guard[name] = _group(b, name, s)
    stages: dict[str, dict] = {}
    for name, s in b.stages.items():
        g = guard.get(name)
        if g is not None:
            out = f"{b.out}/{g}.txt"
            if g not in stages:
                cmd = ["rvos-kit", "preflight", "--params", b.params_name, "--for", g]
                stages[g] = {
                    "cmd": q([*cmd, "--out", out]),
                    "deps": [b.params_name],
                    "outs": [{out: {"cache": False}}],
                }
            s["deps"] = [*s.get("deps", []), out]
        stages[name] = s
    b.stages = stages


def add_code_deps(b: Builder) -> None:
    """Make every stage depend on the code its command runs: every kit module (and C or
    data file) its verb imports, transitively, the CLI's and a wrapped verb's included
    (:func:`rvos_kit.pipeline.codedeps.stage_code`) -- among them, through the CLI's
    ``--params/--node`` (:mod:`.runtime`), the builder that spells out its command at run
    time (dvc.yaml holds no values) with the typed config and catalogue -- as paths under
    ``paths.code``; so that a code change re-runs its stages and DVC's run-cache never
    restores outputs made by other code."""
    root = b.p.paths.code
    if not root:
        return
    for s in b.stages.values():
        words = s["cmd"].split()
        verbs = [words[1]] + ([words[words.index("--") + 1]] if "--" in words else [])
        deps = s.setdefault("deps", [])
        deps.extend(f"{root}/{f}" for f in stage_code(verbs))
