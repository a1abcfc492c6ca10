"""The package tree reads like the DAG, and each room imports only what it may.

Every ``import`` of the kit's own modules is read from the source (those inside functions
too: a lazy import is still a dependency), resolved to a module by the resolver that
gives each DVC stage its code dependencies (``rvos_kit.pipeline.codedeps``), and
checked against the room rules written in ``rvos_kit/__init__.py``'s docstring (``ROOMS``
below is the same table). No module imports itself back through others (no import
circles), and no module is longer than ~500 lines unless its docstring says why.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rvos_kit.pipeline import codedeps

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "src" / "rvos_kit"

# room -> rooms it may import (besides itself). "base": errors, argtypes, helptext, the
# params.yaml reader, the catalogues and the typed config, and the package (__version__).
ROOMS = {
    "base": set(),
    "trees": {"base"},
    "compute": {"base", "trees"},
    "artifacts": {"base", "trees"},
    "stages": {"base", "trees", "compute"},
    "pipeline": {"base", "trees", "compute", "artifacts", "stages"},
    "top": {"base", "trees", "compute", "artifacts", "stages", "pipeline"},  # cli, __main__
}
BASE = {"rvos_kit", "rvos_kit.errors", "rvos_kit.argtypes", "rvos_kit.helptext",
        "rvos_kit.yamlfiles", "rvos_kit.catalog", "rvos_kit.config"}  # fmt: skip
# The documented exceptions: (importer, imported) -> why. Each is named in the docstring
# of the importing module.
EXCEPTIONS = {
    ("rvos_kit.artifacts.fetch", "rvos_kit.pipeline.preflight"):
        "fetch --params asks the pipeline which downloads a params file reads",
    ("rvos_kit.stages.evaluate.report", "rvos_kit.stages.audit.compare"):
        "the run report compares a node with the ground truth with the audit's engine",
    ("rvos_kit.stages.evaluate.report", "rvos_kit.stages.audit.html"):
        "the run report draws with the audit report's pictures",
}  # fmt: skip
MAX_LINES = 500
SIZE_REASON = re.compile(r"^Why one module of \d+ lines:", re.M)


def modules() -> dict[str, Path]:
    """The kit's Python modules (name -> path), as the code-deps resolver lists them."""
    return {m: p for m, p in codedeps.modules().items() if p.suffix == ".py"}


def room(mod: str) -> str:
    parts = mod.split(".")
    if mod in BASE:
        return "base"
    if len(parts) > 2 and parts[1] in ROOMS:
        return parts[1]
    if len(parts) == 2 and parts[1] in ROOMS:  # the room's own __init__
        return parts[1]
    return "top"


def graph() -> dict[str, set[str]]:
    """Module -> the kit modules its import statements name (the product's resolver,
    :func:`rvos_kit.pipeline.codedeps.imports`, without its run-time extras)."""
    mods = modules()
    return {m: codedeps.imports(m, run_time=False) & mods.keys() for m in mods}


def test_the_rooms_exist_and_say_what_they_hold():
    for r in ("trees", "compute", "artifacts", "stages", "pipeline"):
        init = PKG / r / "__init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert len(doc) > 80 and "May import" in doc, f"{init}: say what the room holds"
    top = ast.get_docstring(ast.parse((PKG / "__init__.py").read_text())) or ""
    for r in ("trees/", "compute/", "artifacts/", "stages/", "pipeline/"):
        assert r in top, f"rvos_kit/__init__.py: the package map lacks {r}"


def violations(g: dict[str, set[str]]) -> list[str]:
    bad = []
    for mod, deps in g.items():
        for dep in deps:
            a, b = room(mod), room(dep)
            if (mod, dep) in EXCEPTIONS:
                continue
            if a == b == "stages" and mod.split(".")[:3] != dep.split(".")[:3]:
                bad.append(f"{mod} -> {dep} (one stage imports another)")
            elif a != b and b not in ROOMS[a]:
                bad.append(f"{mod} ({a}) -> {dep} ({b})")
    return sorted(bad)


def test_rooms_import_only_what_they_may():
    bad = violations(graph())
    assert bad == [], "imports against the room rules:\n" + "\n".join(bad)


def test_documented_exceptions_are_real_and_documented():
    g, mods = graph(), modules()
    for a, b in EXCEPTIONS:
        assert b in g[a], f"{a} no longer imports {b}: drop the exception"
        doc = ast.get_docstring(ast.parse(mods[a].read_text())) or ""
        assert b.rsplit(".", 1)[-1] in doc or b in doc, f"{a}: its docstring must name {b}"


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(g[m]):
            if state.get(d) == 1:
                return stack[stack.index(d) :] + [d]
            if d not in state and (c := visit(d)):
                return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(g):
        if m not in state and (c := visit(m)):
            return c
    return None


def test_no_import_circles():
    cycle = find_cycle(graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_planted_circle():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert find_cycle(g) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_planted_violations_are_caught():
    """The checker itself: a tree module importing a stage, a stage importing another, and
    compute importing the pipeline are reported; allowed edges are not."""
    fake = {
        "rvos_kit.trees.x": {"rvos_kit.stages.fusion", "rvos_kit.errors"},
        "rvos_kit.stages.fusion": {"rvos_kit.stages.pack", "rvos_kit.trees.masktree"},
        "rvos_kit.stages.propagate.engine": {"rvos_kit.stages.propagate.frames"},
        "rvos_kit.compute.pool": {"rvos_kit.pipeline.params"},
    }
    assert violations(fake) == [
        "rvos_kit.compute.pool (compute) -> rvos_kit.pipeline.params (pipeline)",
        "rvos_kit.stages.fusion -> rvos_kit.stages.pack (one stage imports another)",
        "rvos_kit.trees.x (trees) -> rvos_kit.stages.fusion (stages)",
    ]


def test_no_module_over_500_lines_without_a_reason():
    long = []
    for path in modules().values():
        n = len(path.read_text().splitlines())
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        if n > MAX_LINES and not SIZE_REASON.search(doc):
            long.append(f"{path.relative_to(REPO)}: {n} lines")
    assert long == [], (
        "modules over 500 lines; split them or start a docstring paragraph with "
        "'Why one module of N lines:'\n" + "\n".join(long)
    )


@pytest.mark.parametrize("mod", ["rvos_kit.cli", "rvos_kit.pipeline.dag"])
def test_importing_in_a_fresh_interpreter_works(mod):
    """Import order cannot hide a circle: each entry point imports on its own."""
    r = subprocess.run([sys.executable, "-c", f"import {mod}"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_every_module_imports_on_its_own():
    """No module works only because another was imported first (a lazy circle)."""
    skip = {"rvos_kit.__main__"}
    code = (
        "import importlib, sys\n"
        "bad = []\n"
        "for m in sys.argv[1:]:\n"
        "    for k in [k for k in sys.modules if k.startswith('rvos_kit')]:\n"
        "        del sys.modules[k]\n"
        "    try:\n"
        "        importlib.import_module(m)\n"
        "    except ImportError as e:\n"
        "        if 'rvos_kit' in str(e) or 'circular' in str(e): bad.append(f'{m}: {e}')\n"
        "print('\\n'.join(bad))\n"
    )
    mods = [m for m in modules() if m not in skip]
    r = subprocess.run([sys.executable, "-c", code, *mods], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "", r.stdout
