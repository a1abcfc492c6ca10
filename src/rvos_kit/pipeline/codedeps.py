"""Each stage's code dependencies, from the import graph of the kit's source: the modules
its verb imports, transitively, and nothing else (:func:`stage_code`).

The source is read, never imported: every ``import`` of a kit module counts, those inside
functions too (a lazy import runs when the verb needs it), and so do the packages Python
runs on the way (``a/__init__.py`` before ``a/b.py``), a name spelled in full in a string
(``python -m rvos_kit.x.y``), every module of a package imported by a name built at run
time (``import_module(f"rvos_kit.x.{name}")``), a compiled extension's C source
(``trees/_unfilter.c``) and a data file named beside its module (``upstream-*.tsv``).
Not followed: the CLI's registration of every verb (``cli.VERB_GROUPS``), which only adds
their parsers. A verb's modules are the one that registers it and the one its function
lives in; a stage's command runs ``cli`` (with ``--params/--node``: the DAG's own check),
its verb, and for ``rvos-kit run ... -- rvos-kit VERB`` that wrapped verb as well.
"""

from __future__ import annotations

import ast
import functools
import importlib
from pathlib import Path

PKG = Path(__file__).resolve().parents[1]  # src/rvos_kit
DATA = {".c", ".tsv"}  # the non-Python sources a module compiles or reads at run time
# Verbs whose stages depend on no code: verb -> why.
NO_CODE = {
    "fetch": "a download must match the sha256 its lock entry pins, whatever code fetched "
    "it (and a re-run would hash every download again)",
}
# The modules that import every verb's module to register it (not followed: see above).
REGISTRARS = {"rvos_kit.cli", __name__}
# Imports that are not followed (importer, imported) -> why.
NOT_FOLLOWED = {
    ("rvos_kit.cli", "rvos_kit.pipeline.dag"): "the --params/--node check only compares a "
    "stage's command with what its params file generates: it runs the verb unchanged or "
    "refuses, and writes nothing",
}


def _name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def modules() -> dict[str, Path]:
    """Module name -> its source file (``.py``, or a compiled extension's ``.c``)."""
    found = {_name(p): p for p in sorted(PKG.rglob("*.py"))}
    for c in sorted(PKG.rglob("*.c")):
        found.setdefault(_name(c), c)
    return found


def _parents(mod: str) -> list[str]:
    parts = mod.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _dynamic(node: ast.AST) -> bool:
    """``import_module(f"rvos_kit.pkg.{name}")``: one module of a package, chosen at run
    time (so every module of that package is a dependency)."""
    if not (isinstance(node, ast.Call) and node.args):
        return False
    f, a = node.func, node.args[0]
    name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
    return (
        name == "import_module"
        and isinstance(a, ast.JoinedStr)
        and isinstance(a.values[0], ast.Constant)
        and str(a.values[0].value).endswith(".")
    )


@functools.cache  # each stage's closure walks the same modules: parse each file once
def imports(mod: str, run_time: bool = True) -> frozenset[str]:
    """The kit modules ``mod`` imports anywhere in its source (``from . import x`` of a
    submodule imports that submodule). ``run_time``: also a module spelled out in a
    string (``python -m``), every module a dynamic import may choose, and the ``file:``
    paths (relative to the package) of the C or data files it compiles or reads;
    without it, the import statements only (what ``tests/test_layout.py`` checks)."""
    path, known = modules()[mod], modules()
    if path.suffix != ".py":
        return set()
    package = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
    beside = {p.name for p in path.parent.iterdir() if p.suffix in DATA}
    out: set[str] = set()
    files: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out |= {f"{target}.{a.name}" if f"{target}.{a.name}" in known else target
                    for a in node.names}  # fmt: skip
        elif not run_time:
            continue
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            out.add(node.value)  # a module spelled out for `python -m`
            if node.value in beside:
                files.add(f"file:{(path.parent / node.value).relative_to(PKG).as_posix()}")
        elif _dynamic(node) and mod not in REGISTRARS:  # import_module(f"rvos_kit.pkg.{x}")
            prefix = node.args[0].values[0].value
            out |= {m for m in known if m.startswith(prefix) and prefix[:-1] in known}
    return frozenset({m for m in out if m in known and m != mod} | files)


def edges(mod: str) -> set[str]:
    """What loading ``mod`` runs or reads: its parent packages (``a/__init__.py`` runs
    before ``a/b.py``) and its run-time imports, less :data:`NOT_FOLLOWED`."""
    out = {p for p in _parents(mod) if p in modules()} | imports(mod)
    return {m for m in out if (mod, m) not in NOT_FOLLOWED}


@functools.cache
def closure(roots: tuple[str, ...]) -> frozenset[str]:
    """``roots`` and every module (and ``file:`` path) they need, transitively."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        if not m.startswith("file:"):
            todo += sorted(edges(m))
    return frozenset(seen)


@functools.cache
def verb_modules() -> dict[str, tuple[str, ...]]:
    """verb -> (the module that registers it, the module its function lives in), from
    the CLI's own registration: ``cli.VERB_GROUPS`` (read from the source) names the
    modules, and each one's ``register`` adds its verbs to a scratch parser."""
    import argparse

    tree = ast.parse((PKG / "cli.py").read_text())
    groups = next(
        ast.literal_eval(n.value)
        for n in tree.body
        if isinstance(n, ast.AnnAssign) and getattr(n.target, "id", "") == "VERB_GROUPS"
    )
    out: dict[str, tuple[str, ...]] = {}
    for _, mods in groups:
        for m in mods:
            sub = argparse.ArgumentParser().add_subparsers()
            importlib.import_module(f"rvos_kit.{m}").register(sub)
            for verb, p in sub.choices.items():
                func = p.get_default("func")
                out[verb] = tuple(sorted({f"rvos_kit.{m}", func.__module__}))
    return out


def path_of(entry: str) -> str:
    """A closure entry as a path relative to the package (``trees/masktree.py``)."""
    if entry.startswith("file:"):
        return entry[5:]
    return modules()[entry].relative_to(PKG).as_posix()


def stage_code(verbs: list[str]) -> list[str]:
    """The sorted files (relative to the package) a stage running ``verbs`` (the verb,
    then a wrapped one) depends on, the CLI included; none for a verb of :data:`NO_CODE`."""
    if any(v in NO_CODE for v in verbs):
        return []
    roots = ["rvos_kit.cli"]
    for v in verbs:
        roots += verb_modules()[v]
    return sorted({path_of(m) for m in closure(tuple(sorted(roots)))})
