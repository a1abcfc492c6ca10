"""Each generated stage depends on the code its verb runs, and on nothing else.

The deps come from the import graph (:mod:`rvos_kit.pipeline.codedeps`). Checked here
against what does not come from that resolver: the modules Python really loads when the
demo's stages run (a missing dep fails), the room rules (a vote must not depend on
propagation code), and the files the issue found missing from the old hand-kept lists.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rvos_kit.pipeline import codedeps
from rvos_kit.pipeline.dag import spelled

REPO = Path(__file__).resolve().parents[1]
CODE = "../src/rvos_kit"  # paths.code of demo/params.yaml, as dvc.yaml spells it

# Run one verb the way `rvos-kit` does (cli.main), with only that verb registered (the
# CLI imports every verb's module just to list it), and write the kit modules that were
# loaded when it exits.
LOADED = r"""
import atexit, json, sys
out, module, *argv = sys.argv[1:]
atexit.register(lambda: json.dump(sorted(n for n in sys.modules if n.startswith("rvos_kit")),
                                  open(out, "w")))
from rvos_kit import cli
cli.VERB_GROUPS = (("the verb", (module.removeprefix("rvos_kit."),)),)
sys.exit(cli.main(argv))
"""


def _verbs(cmd: str) -> list[str]:
    """The verb of a spelled-out stage command (``rvos-kit VERB ...``, what ``rvos-kit
    --params P --node N`` runs), and the one it wraps (``run ... -- VERB``)."""
    words = shlex.split(cmd)[1:]
    return [words[0]] + ([words[words.index("--") + 1]] if "--" in words else [])


def _code_deps(stage: dict, root: str = CODE) -> list[str]:
    return [d[len(root) + 1 :] for d in stage.get("deps", []) if d.startswith(root + "/")]


def _demo() -> dict:
    return spelled(REPO / "demo/params.yaml", "params.yaml")


def test_the_committed_demo_is_what_the_resolver_gives():
    committed = yaml.safe_load((REPO / "demo/dvc.yaml").read_text())["stages"]
    for name, s in _demo().items():
        deps = _code_deps(s)
        assert deps == codedeps.stage_code(_verbs(s["cmd"])), name
        assert s["deps"] == sorted(set(s["deps"])), name
        assert all(not Path(d).is_absolute() and "\\" not in d for d in s["deps"]), name
        assert all((REPO / "src/rvos_kit" / d).is_file() for d in deps), name
        assert committed[name].get("deps") == s.get("deps"), f"demo/dvc.yaml is stale: {name}"


def test_the_files_the_hand_kept_lists_missed_are_deps_now():
    """Issue 23: vote runs the staging folder, the JSON side files, atomic writes and the
    worker pool; the C unfilter is compiled for every PNG reader."""
    demo = _demo()
    vote = set(_code_deps(demo["vote_final"]))
    assert {"trees/staging.py", "trees/jsonfiles.py", "trees/files.py", "compute/pool.py",
            "stages/fusion.py", "trees/_unfilter.c", "cli.py", "errors.py"} <= vote  # fmt: skip
    assert "trees/_unfilter.c" in _code_deps(demo["evaluate_final"])
    assert "trees/_unfilter.c" not in _code_deps(demo["keyframes_soc"])  # reads JSON only


def test_a_wrapped_inference_depends_on_the_runner_and_every_driver():
    """``run -- infer``: the runner's code and the inference's, each driver included (the
    model's driver is imported by a name chosen at run time), the worker the uninext
    driver starts with ``python -m``, and the data file the upstream check reads."""
    stages = spelled(REPO / "params.yaml")
    s = stages["rvos_soc"]
    assert _verbs(s["cmd"]) == ["run", "infer"]
    deps = set(_code_deps(s, "src/rvos_kit"))
    drivers = {"mutr", "referformer", "soc", "swin", "uninext", "uninext_child"}
    assert {f"stages/rvos/infer/{d}.py" for d in drivers} <= deps
    assert {
        "pipeline/run.py",
        "compute/docker.py",
        "stages/rvos/infer/upstream-c538b0d.tsv",
    } <= deps


# room of a verb's module -> the rooms its stage's code may come from (the room rules,
# applied to what a stage depends on: no stage depends on another stage's code)
LOW = ("__init__.py", "errors.py", "argtypes.py", "helptext.py", "cli.py", "trees/", "compute/")
EXCEPTIONS = {"report": {"stages/audit/__init__.py", "stages/audit/compare.py",
                         "stages/audit/html.py"}}  # fmt: skip


# the code that spells out every stage's command when it runs (``rvos-kit --params P --node
# N`` builds it again from the params file): a dependency of every stage
SPELLED_BY = {codedeps.path_of(m) for m in codedeps.closure(("rvos_kit.pipeline.dag.runtime",))}


@pytest.mark.parametrize("params", ["demo/params.yaml", "params.yaml", "audit/params.yaml"])
def test_no_stage_depends_on_unrelated_code(params):
    for name, s in spelled(REPO / params).items():
        verbs = _verbs(s["cmd"])
        mods = {m for v in verbs for m in codedeps.verb_modules()[v]}
        if any(m.startswith("rvos_kit.pipeline") or ".artifacts" in m for m in mods):
            continue  # preflight, fetch, run: the pipeline's tools may read anything
        own = {"/".join(m.split(".")[1:3]) for m in mods}  # e.g. stages/fusion
        extra = set().union(*(EXCEPTIONS.get(v, set()) for v in verbs))
        root = CODE if params != "params.yaml" else "src/rvos_kit"
        for d in _code_deps(s, root):
            ok = d.startswith(LOW) or d in {"stages/__init__.py", *SPELLED_BY} or d in extra
            ok = ok or any(d == f"{o}.py" or d.startswith(f"{o}/") for o in own)
            assert ok, f"{params}: stage {name} ({' '.join(verbs)}) depends on {d}"


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory) -> tuple[Path, dict]:
    """The demo's params on a smaller sample, its dvc.yaml stages, and the sample."""
    d = tmp_path_factory.mktemp("demo")
    p = yaml.safe_load((REPO / "demo/params.yaml").read_text())
    p["sample"].update(videos=2, frames=4)
    p["paths"].update(lock=str(REPO / "checkpoints.lock"), downloads=str(REPO))
    (d / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    return d, spelled(d / "params.yaml")


@pytest.mark.parametrize(
    "stage",
    ["sample", "keyframes_soc", "vote_soc_mutr_referft", "evaluate_soc_mutr_referft"],
)
def test_what_a_stage_loads_when_it_runs_is_in_its_deps(small_demo, stage):
    """Run the stage's command for real (in order: each needs the one before) and compare
    every kit module Python loaded with the stage's code deps. The ``--params/--node``
    check before the verb is left out (it runs the verb unchanged or refuses: codedeps'
    NOT_FOLLOWED), and so is the CLI's import of every other verb to list it."""
    folder, stages = small_demo
    s = stages[stage]
    (verb,) = _verbs(s["cmd"])
    module = codedeps.verb_modules()[verb][0]
    out = folder / f"{stage}.loaded.json"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    argv = shlex.split(s["cmd"])[1:]
    r = subprocess.run([sys.executable, "-c", LOADED, str(out), module, *argv], cwd=folder,
                       env=env, capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    loaded = {codedeps.path_of(m) for m in json.loads(out.read_text())}
    assert {"cli.py", codedeps.path_of(module), "trees/staging.py"} <= loaded
    deps = set(_code_deps(s))
    assert loaded <= deps, f"{stage}: loaded but not a dep: {sorted(loaded - deps)}"


def test_a_download_depends_on_no_code():
    """``fetch_*``: what it writes is pinned by the lock's sha256 (codedeps.NO_CODE)."""
    stages = spelled(REPO / "audit/params.yaml")
    fetches = [s for n, s in stages.items() if n.startswith("fetch_")]
    assert fetches and all(_code_deps(s) == [] for s in fetches)
    assert "stages/rvos/released.py" in _code_deps(stages["propagate_aot_soc"])  # unzips one
