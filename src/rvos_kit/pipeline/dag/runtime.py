"""A generated stage at run time: ``rvos-kit --params P --node S`` (the command dvc.yaml
holds) regenerates the DAG from the params file as it is now, refuses unless the dvc.yaml
it runs from is still exactly what that file generates (its shape: commands, deps, outs,
metrics, plots, params keys), and then gives the stage's spelled-out command, whose
values come from the params file now (:func:`stage_argv`). A value edit (``dvc exp run
-S``) leaves the shape alone; a structural one (a node's members, a model's source, a
backend, a path) does not, and then the preflight stages, which depend on the params file
and come first, refuse before any stage has deleted an output."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import yaml

from ...errors import KitError
from .generate import shaped, spelled


def _repo_root(start: Path) -> Path | None:
    """The DVC repository holding ``start`` (the nearest folder with a ``.dvc``)."""
    for d in (start, *start.parents):
        if (d / ".dvc").is_dir():
            return d
    return None


def regenerate_hint(params: str, dvc_yaml: str = "dvc.yaml") -> tuple[str, str, str]:
    """(the params file, the dvc.yaml, the command that rewrites it), each as typed from
    the root of the DVC repository when there is one (where ``dvc`` commands are run),
    else from the current folder; plus where to run the command."""
    params_abs, dvc_abs = Path(params).resolve(), Path(dvc_yaml).resolve()
    root = _repo_root(Path.cwd().resolve())
    base = root or Path.cwd()
    shown_p = os.path.relpath(params_abs, base)
    shown_d = os.path.relpath(dvc_abs, base)
    cmd = f"rvos-kit dag --params {shown_p}"
    if dvc_abs != params_abs.with_name("dvc.yaml"):
        cmd += f" --out {shown_d}"
    where = f"the repository root ({root})" if root else "this folder"
    return shown_p, shown_d, f"run `{cmd}` from {where}"


def shape_changes(params: str, dvc_yaml: str = "dvc.yaml") -> tuple[list[str], dict]:
    """How ``dvc_yaml`` differs from what ``params`` generates now (empty: up to date),
    and the spelled-out stages ``params`` generates (:func:`~.generate.spelled`)."""
    try:
        have = (yaml.safe_load(Path(dvc_yaml).read_text()) or {}).get("stages") or {}
    except FileNotFoundError:
        raise KitError(
            f"no {dvc_yaml} here: run a generated stage in the folder of its dvc.yaml (DVC does)"
        ) from None
    ref = os.path.relpath(params, Path(dvc_yaml).parent)
    doc = spelled(params, ref)
    want = yaml.safe_load(yaml.safe_dump(shaped(doc, ref), sort_keys=False))
    changes = [f"stage {n} added" for n in want if n not in have]
    changes += [f"stage {n} removed" for n in have if n not in want]
    for n in want:
        if n in have and have[n] != want[n]:
            keys = sorted(k for k in {*have[n], *want[n]} if have[n].get(k) != want[n].get(k))
            changes.append(f"stage {n}: {', '.join(keys)}")
    return changes, doc


def check_shape(params: str, dvc_yaml: str = "dvc.yaml") -> dict:
    """Refuse, naming the params file and the exact command that rewrites ``dvc_yaml``,
    when it is no longer what ``params`` generates; else return the spelled-out stages."""
    changes, doc = shape_changes(params, dvc_yaml)
    if not changes:
        return doc
    shown_p, shown_d, fix = regenerate_hint(params, dvc_yaml)
    more = f" (+{len(changes) - 3} more)" if len(changes) > 3 else ""
    raise KitError(
        f"{shown_d} is stale: {shown_p} now gives the pipeline another shape "
        f"({'; '.join(changes[:3])}{more}); nothing was run. Regenerate it: {fix}, "
        "then run dvc again"
    )


def stage_argv(params: str, node: str) -> list[str]:
    """The arguments (after ``rvos-kit``) that stage ``node`` runs, values read from
    ``params`` now, once the dvc.yaml of the current folder (DVC runs a stage in its
    dvc.yaml's folder) is checked to be what ``params`` generates."""
    stage = check_shape(params).get(node)
    if stage is None:  # typed by hand: dvc.yaml is up to date but has no such stage
        raise KitError(f"{params} generates no stage {node}")
    return ["--params", params, *shlex.split(stage["cmd"])[1:]]
