"""The DAG as a DVC pipeline: generated dvc.yaml, the sample, packing, preflight, and real
`dvc repro` runs in a temporary git repository (only what a change touches re-runs)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import tree_bytes
from PIL import Image

from rvos_kit.cli import main
from rvos_kit.errors import KitError
from rvos_kit.pipeline import codedeps, dag
from rvos_kit.pipeline.dag import render, spelled
from rvos_kit.stages.data import MODELS, make_sample
from rvos_kit.stages.pack import pack
from rvos_kit.trees.meta import load_meta

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.mark.parametrize("params", ["params.yaml", "demo/params.yaml", "audit/params.yaml"])
def test_committed_dvc_yaml_is_generated_from_params(params):
    p = REPO / params
    assert (p.parent / "dvc.yaml").read_text() == render(p), f"run `rvos-kit dag --params {params}`"


# ----------------------------------------------------------------------------- sample
@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return make_sample(tmp_path_factory.mktemp("s") / "sample", seed=3, videos=5, frames=6,
                       progress=False)  # fmt: skip


def test_sample_is_deterministic_and_shaped(sample, tmp_path):
    again = make_sample(tmp_path / "again", seed=3, videos=5, frames=6, progress=False)
    assert tree_bytes(sample) == tree_bytes(again)
    other = make_sample(tmp_path / "other", seed=4, videos=5, frames=6, progress=False)
    assert tree_bytes(other) != tree_bytes(sample)
    meta = load_meta(sample / "meta_expressions.json")
    counts = [len(v.exp_ids) for v in meta]
    assert any(c % 2 for c in counts) and any(c % 2 == 0 for c in counts)
    for v in meta:
        assert len(list((sample / "JPEGImages" / v.name).glob("*.jpg"))) == len(v.frames)
    for m, kind in MODELS.items():
        assert (sample / "models" / m / "scores.json").is_file()
        quirk = sample / "models" / m / "Annotations_sigmoid_odd"
        assert quirk.is_dir() == (kind == "probabilities")
    # quirk 9.1: sigmoid(p) > 0.5 on probabilities is practically the whole frame
    v = next(v for v in meta if len(v.exp_ids) % 2)
    q = np.array(Image.open(sample / "models/vit_huge/Annotations_sigmoid_odd" / v.name /
                            v.exp_ids[-1] / f"{v.frames[0]}.png"))  # fmt: skip
    assert (q == 255).mean() > 0.95


# ------------------------------------------------------------------------------- pack
def test_pack_is_deterministic_and_complete(sample, tmp_path):
    meta = load_meta(sample / "meta_expressions.json")
    a = pack(sample / "gt", tmp_path / "a.zip", meta, progress=False)
    os.utime(next((sample / "gt").rglob("*.png")), (1, 1))  # mtimes must not matter
    b = pack(sample / "gt", tmp_path / "b.zip", meta, progress=False)
    assert a == b and (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()
    with zipfile.ZipFile(tmp_path / "a.zip") as zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        assert len(names) == meta.n_masks
        want = [f"Annotations/{v.name}/{e}/{f}.png" for v in meta for e in v.exp_ids
                for f in v.frames]  # fmt: skip
        assert names == want
        assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
        assert {i.external_attr >> 16 for i in infos} == {0o100644}
        assert zf.read(want[0]) == (sample / "gt" / want[0].split("/", 1)[1]).read_bytes()


def test_pack_refuses_incomplete_tree(sample, tmp_path, capsys):
    tree = tmp_path / "tree"
    shutil.copytree(sample / "gt", tree)
    victim = next(tree.rglob("*.png"))
    victim.unlink()
    (tmp_path / "sub.zip").write_bytes(b"previous")
    rc = main(["pack", str(tree), "--out", str(tmp_path / "sub.zip"),
               "--meta", str(sample / "meta_expressions.json")])  # fmt: skip
    assert rc == 2
    assert f"{victim.name}: missing" in capsys.readouterr().err
    assert (tmp_path / "sub.zip").read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub.zip", "tree"]


# -------------------------------------------------------------------------- preflight
def test_reproduce_without_inputs_says_what_is_missing(tmp_path):
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    r = subprocess.run([str(BIN / "rvos-kit"), "preflight", "--params", "params.yaml"],
                       cwd=REPO, capture_output=True, text=True, env=env)  # fmt: skip
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "meta_expressions.json not found" in r.stderr
    assert "models.vit_huge (source: infer) lacks" in r.stderr
    # the lock pins no sha256 yet: every fetch hint says --record (else fetch refuses)
    hints = re.findall(r"`rvos-kit fetch --params params.yaml[^`]*`", r.stderr)
    assert len(hints) >= 6 and all(h.endswith(" --record`") for h in hints), hints
    assert "not available yet" not in r.stderr
    assert "rvos-kit fetch --params params.yaml" in r.stderr and "aot_swinl" in r.stderr
    # the demo generates its own inputs
    r = subprocess.run([str(BIN / "rvos-kit"), "preflight", "--params", "demo/params.yaml"],
                       cwd=REPO, capture_output=True, text=True, env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr


def test_params_errors_are_named(tmp_path):
    p = yaml.safe_load((REPO / "demo/params.yaml").read_text())
    p["paths"]["lock"] = str(REPO / "checkpoints.lock")
    p["fusion"]["en2"]["members"][1] = "soc/nope"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    with pytest.raises(KitError, match=r"fusion.en2.members: 'soc/nope'"):
        render(tmp_path / "params.yaml")
    p["fusion"]["en2"]["members"][1] = "soc/aot"
    p["models"]["vit_huge"]["source"] = "released"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    with pytest.raises(KitError, match="quirk 9.1"):
        render(tmp_path / "params.yaml")


# ------------------------------------------------------------------- the DAG builder
def _every_kind_params(tmp_path) -> list[Path]:
    """The committed params files, and params.yaml varied so that the sources the
    committed ones never use appear: an imported model, a released model (and so its
    released propagated trees), a released fusion node, and ground truth (evaluate,
    summary, report)."""
    p = yaml.safe_load((REPO / "params.yaml").read_text())
    p["paths"]["lock"] = str(REPO / "checkpoints.lock")
    p["data"]["gt"] = "gt"
    p["models"]["soc"].update(source="imported", dumps=["soc.pth"])
    p["models"]["referformer_ft"]["source"] = "released"
    p["fusion"]["en2"]["source"] = "released"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    committed = [REPO / x for x in ("params.yaml", "demo/params.yaml", "audit/params.yaml")]
    return [*committed, tmp_path / "params.yaml"]


def test_dag_builder_emits_every_stage_kind_with_its_code(tmp_path):
    """Every stage kind the builder knows is generated from some params file, each stage
    depends on the code its verb runs (so a code change re-runs it; test_codedeps.py), and
    no module of the builder is over 150 lines (one small builder per stage kind)."""
    seen: dict[str, set[str]] = {}  # verb -> stage names
    for params in _every_kind_params(tmp_path):
        doc = dag.spelled(params)  # the commands the stages run
        code = yaml.safe_load(params.read_text())["paths"]["code"]
        for name, s in doc.items():
            words = shlex.split(s["cmd"])[1:]  # after `rvos-kit`
            verb = words[words.index("--") + 1] if "--" in words else words[0]
            seen.setdefault(verb, set()).add(name)
            want = [f"{code}/{f}" for f in codedeps.stage_code(sorted({words[0], verb}))]
            assert set(want) <= set(s["deps"]) and bool(want) == (verb != "fetch"), name
    emitted = {"make-sample", "valid-meta", "fetch", "import-zip", "import-pth", "infer",
               "keyframes", "propagate", "vote", "pack", "evaluate", "summarize", "report",
               "audit", "preflight"}  # fmt: skip
    assert set(seen) == emitted
    # the stage names of each kind, as their modules write them
    prefixes = {n.split("_")[0] for names in seen.values() for n in names}
    assert prefixes == {"preflight", "sample", "meta", "rvos", "audit", "keyframes", "vote",
                        "propagate", "pack", "evaluate", "summary", "report", "fetch",
                        "import"}  # fmt: skip
    # model, fusion node and propagated tree: each kind may also unpack a released tree
    released = {n.split("_")[0] for n in seen["import-zip"]}
    assert released == {"rvos", "vote", "propagate", "import"}
    assert {"rvos_soc"} == seen["import-pth"] and "audit_mutr_trees" in seen["audit"]
    assert "vote_vit_convnext_soc" in seen["vote"] and "propagate_aot_soc" in seen["propagate"]
    # one small builder module per stage kind
    sizes = {
        f.name: len(f.read_text().splitlines()) for f in Path(dag.__file__).parent.glob("*.py")
    }
    assert len(sizes) >= 8 and max(sizes.values()) <= 150, sizes


def _gpu_stages(doc: dict) -> set[str]:
    """The stages that run a network: a model's inference, AOT/DeAOT propagation."""
    return {
        n
        for n, s in doc.items()
        if " run --stage " in s["cmd"]
        or (" propagate " in s["cmd"] and "--backend flow" not in s["cmd"])
    }


def test_stack_is_a_param_of_every_gpu_stage_and_modern_runs_them_in_one_image(
    tmp_path, monkeypatch, capsys
):
    """issue 22: runner.stack is a params key of exactly the GPU stages (so DVC never takes
    a tree of one stack for the other's); absent, it is no key and the commands are the
    same; with stack modern every `rvos-kit run` stage's dry run names the modern image,
    and infer.msda reaches the infer command."""
    p = yaml.safe_load((REPO / "params.yaml").read_text())
    p["paths"]["lock"] = str(REPO / "checkpoints.lock")
    f = tmp_path / "params.yaml"

    def doc(params: dict) -> dict:
        f.write_text(yaml.safe_dump(params, sort_keys=False))
        return spelled(f)  # each command spelled out, as the stage runs it

    published = doc(p)
    gpu = _gpu_stages(published)
    assert len(gpu) == 12 and {"rvos_soc", "rvos_convnext", "propagate_deaot_vit_huge"} <= gpu
    for name, s in published.items():
        assert ("runner.stack" in s.get("params", [])) == (name in gpu), name
    del p["runner"]["stack"]
    absent = doc(p)
    assert all("runner.stack" not in s.get("params", []) for s in absent.values())
    assert {n: s["cmd"] for n, s in absent.items()} == {n: s["cmd"] for n, s in published.items()}
    p["runner"]["stack"], p["infer"]["msda"] = "modern", "pytorch"
    modern = doc(p)
    assert _gpu_stages(modern) == gpu
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    runs = 0
    for name in sorted(gpu):
        words = shlex.split(modern[name]["cmd"])
        if name.startswith("rvos_"):
            assert words[words.index("--msda") + 1] == "pytorch", name
        if "run" not in words:
            continue  # propagate: the verb runs here and puts its shards in the image
        words.insert(words.index("run") + 1, "--dry-run")  # (no stale-stage check then)
        assert main(words[words.index("run") :]) == 0, name
        argv = shlex.split(capsys.readouterr().out)
        assert argv[argv.index("--workdir") + 2] == "rvos-kit/modern:0.1.0", name
        runs += 1
    assert runs == 5


# ---------------------------------------------------------------------- dvc end to end
def _dvc(repo: Path, *args) -> str:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    r = subprocess.run([str(BIN / "dvc"), *args], cwd=repo, capture_output=True, text=True,
                       env=env)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def _ran(out: str) -> set[str]:
    return set(re.findall(r"Running stage '(?:pipe/dvc\.yaml:)?([^']+)'", out))


@pytest.fixture(scope="module")
def dvc_repo(tmp_path_factory, ray_cluster):
    """A git + DVC repository holding the demo pipeline on a smaller sample, already run.
    Its propagate stages join the session's Ray (scale.address) instead of each starting
    one."""
    repo = tmp_path_factory.mktemp("repo")
    p = yaml.safe_load((REPO / "demo/params.yaml").read_text())
    p["sample"].update(videos=3, frames=5)
    p["scale"]["address"] = ray_cluster
    p["paths"]["lock"] = "checkpoints.lock"
    p["paths"]["code"] = str(REPO / "src/rvos_kit")
    (repo / "pipe").mkdir()
    (repo / "pipe/params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    shutil.copy(REPO / "checkpoints.lock", repo / "pipe/checkpoints.lock")
    (repo / "pipe/dvc.yaml").write_text(render(repo / "pipe/params.yaml"))
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    _dvc(repo, "init", "-q")
    _dvc(repo, "config", "core.analytics", "false")
    out = _dvc(repo, "repro", "pipe/dvc.yaml")
    stages = set(yaml.safe_load((repo / "pipe/dvc.yaml").read_text())["stages"])
    assert _ran(out) == stages
    return repo


def test_changing_a_stage2_threshold_reruns_only_downstream(dvc_repo):
    """A value lives in params.yaml only: dvc.yaml stays as it is (no `rvos-kit dag`), DVC
    re-runs the stages that declare the key and what follows, dvc.lock records it."""
    repo = dvc_repo
    params = repo / "pipe/params.yaml"
    before = (repo / "pipe/outputs/submission.zip").read_bytes()
    keep = {n: tree_bytes(repo / "pipe/outputs/fused" / n) for n in ("en2", "soc_mutr_referft")}
    p = yaml.safe_load(params.read_text())
    p["fusion"]["final"]["pair_threshold"] = 2
    params.write_text(yaml.safe_dump(p, sort_keys=False))
    assert render(params) == (repo / "pipe/dvc.yaml").read_text()
    out = _dvc(repo, "repro", "pipe/dvc.yaml")
    # preflight re-checks the inputs whenever the params file changes (cheap, same output)
    assert _ran(out) == {"preflight", "vote_final", "pack", "evaluate_final", "summary",
                         "report"}  # fmt: skip
    assert (repo / "pipe/outputs/submission.zip").read_bytes() != before
    for n, b in keep.items():
        assert tree_bytes(repo / "pipe/outputs/fused" / n) == b
    rec = yaml.safe_load((repo / "pipe/dvc.lock").read_text())["stages"]["vote_final"]
    assert rec["params"]["params.yaml"]["fusion.final"]["pair_threshold"] == 2
    assert _ran(_dvc(repo, "repro", "pipe/dvc.yaml")) == set()


def test_changing_a_stage1_member_reruns_its_branch(dvc_repo):
    repo = dvc_repo
    params = repo / "pipe/params.yaml"
    p = yaml.safe_load(params.read_text())
    p["fusion"]["soc_mutr_referft"]["members"] = ["soc", "convnext", "referformer_ft"]
    params.write_text(yaml.safe_dump(p, sort_keys=False))
    (repo / "pipe/dvc.yaml").write_text(render(params))
    ran = _ran(_dvc(repo, "repro", "pipe/dvc.yaml"))
    downstream = {
        "vote_soc_mutr_referft", "evaluate_soc_mutr_referft",
        "propagate_aot_soc_mutr_referft", "evaluate_soc_mutr_referft_aot",
        "vote_en2", "evaluate_en2", "vote_final", "evaluate_final", "pack", "summary",
        "preflight", "report",
    }  # fmt: skip
    # nothing outside the branch runs; the nodes whose inputs changed all do (DVC skips a
    # stage whose inputs came out byte-identical, e.g. pack when final did not change)
    assert ran <= downstream
    assert {"vote_soc_mutr_referft", "propagate_aot_soc_mutr_referft", "vote_en2",
            "vote_final"} <= ran  # fmt: skip
    assert _ran(_dvc(repo, "repro", "pipe/dvc.yaml")) == set()


def test_a_structural_edit_without_dag_is_refused_before_anything_is_deleted(dvc_repo):
    """A node's members are the DAG's shape: edited without `rvos-kit dag`, the preflight
    stage (first whenever the params file changes) refuses, naming the params file and
    the command that rewrites its dvc.yaml, typed from where `dvc` runs; nothing is
    deleted, dvc.lock keeps its record; a stage run by hand refuses too. Following the
    message fixes it."""
    repo = dvc_repo
    params, lock = repo / "pipe/params.yaml", repo / "pipe/dvc.lock"
    lock_before = lock.read_text()
    fused = {n: tree_bytes(repo / "pipe/outputs/fused" / n) for n in ("en2", "final")}
    p = yaml.safe_load(params.read_text())
    p["fusion"]["en2"]["members"] = p["fusion"]["en2"]["members"][:-1]
    params.write_text(yaml.safe_dump(p, sort_keys=False))
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    r = subprocess.run([str(BIN / "dvc"), "repro", "pipe/dvc.yaml"], cwd=repo,
                       capture_output=True, text=True, env=env)  # fmt: skip
    msg = r.stdout + r.stderr
    assert r.returncode != 0, msg
    assert "pipe/dvc.yaml is stale: pipe/params.yaml now gives the pipeline another shape" in msg
    assert "stage vote_en2: deps" in msg
    assert "run `rvos-kit dag --params pipe/params.yaml` from the repository root" in msg
    assert _ran(msg) == {"preflight"}
    assert lock.read_text() == lock_before
    for n, b in fused.items():
        assert tree_bytes(repo / "pipe/outputs/fused" / n) == b
    # the stage itself refuses too (the second guard), whatever its caller
    r = subprocess.run([str(BIN / "rvos-kit"), "--params", "params.yaml", "--node", "vote_final"],
                       cwd=repo / "pipe", capture_output=True, text=True, env=env)  # fmt: skip
    assert r.returncode == 2 and "pipe/dvc.yaml is stale" in r.stderr, r.stderr
    assert r.stderr.startswith("rvos-kit stage vote_final: error: ")
    assert tree_bytes(repo / "pipe/outputs/fused/final") == fused["final"]
    # the command the message gives, run from the repository root, rewrites pipe/dvc.yaml
    root_yaml = repo / "dvc.yaml"
    assert not root_yaml.exists()
    cmd = ["rvos-kit", "dag", "--params", "pipe/params.yaml"]
    subprocess.run(cmd, cwd=repo, env=env, check=True, capture_output=True)
    assert not root_yaml.exists() and (repo / "pipe/dvc.yaml").read_text() == render(params)
    assert "vote_en2" in _ran(_dvc(repo, "repro", "pipe/dvc.yaml"))


def test_changing_scale_reruns_nothing(dvc_repo):
    """The shard count, the Ray address and the needs change how propagation runs, not
    its bytes: no stage depends on them, dvc.yaml does not change, nothing re-runs."""
    repo = dvc_repo
    params = repo / "pipe/params.yaml"
    dvc_yaml = (repo / "pipe/dvc.yaml").read_text()
    p = yaml.safe_load(params.read_text())
    p["scale"].update(shards=3, max_retries=5, needs={"flow": {"cpus": 2}})
    params.write_text(yaml.safe_dump(p, sort_keys=False))
    assert render(params) == dvc_yaml
    # only the preflight check, which depends on the whole params file, runs again
    assert _ran(_dvc(repo, "repro", "pipe/dvc.yaml")) <= {"preflight"}
    assert "up to date" in _dvc(repo, "status", "pipe/dvc.yaml")
    # and a forced re-run with 3 shards writes the same bytes (DVC checks the hashes)
    before = tree_bytes(repo / "pipe/outputs/propagated/aot/soc")
    out = _dvc(repo, "repro", "--force", "--single-item", "pipe/dvc.yaml:propagate_aot_soc")
    assert "in 3 shards" in out
    assert tree_bytes(repo / "pipe/outputs/propagated/aot/soc") == before
    assert "up to date" in _dvc(repo, "status", "pipe/dvc.yaml")


def _exps(repo: Path) -> list[dict]:
    """Every experiment of ``dvc exp show --json``: {name, params of pipe/params.yaml}."""
    shown = json.loads(_dvc(repo, "exp", "show", "--json"))
    found = []
    for commit in shown:
        for exp in commit.get("experiments") or []:
            for rev in exp.get("revs") or []:
                data = rev.get("data") or {}
                params = data.get("params", {}).get("pipe/params.yaml", {}).get("data", {})
                found.append({"name": rev.get("name") or exp.get("name"), "params": params})
    return found


def test_dvc_exp_run_sets_a_value_and_exp_show_lists_it(dvc_repo):
    """DVC's own way to try a value: `dvc exp run -S file:key=value` edits the params file
    (dvc.yaml untouched), only the stages that declare the key and their downstream run,
    and `dvc exp show` lists the run with its value; a propagation value too."""
    repo = dvc_repo
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    for args in (["config", "user.name", "t"], ["config", "user.email", "t@example.com"],
                 ["add", "-A"], ["commit", "-q", "-m", "baseline"]):  # fmt: skip
        subprocess.run([*git, *args], cwd=repo, check=True, capture_output=True)
    dvc_yaml = (repo / "pipe/dvc.yaml").read_text()
    out = _dvc(repo, "exp", "run", "pipe/dvc.yaml", "-n", "pt3", "-S",
               "pipe/params.yaml:fusion.final.pair_threshold=3")  # fmt: skip
    assert _ran(out) == {"preflight", "vote_final", "pack", "evaluate_final", "summary",
                         "report"}  # fmt: skip
    assert (repo / "pipe/dvc.yaml").read_text() == dvc_yaml
    rec = yaml.safe_load((repo / "pipe/dvc.lock").read_text())["stages"]["vote_final"]
    assert rec["params"]["params.yaml"]["fusion.final"]["pair_threshold"] == 3
    # a propagation value (`+`: a key the file leaves at its default): flow reads none of
    # the TTA keys, so its trees come out the same and DVC stops there (the stages re-ran
    # because they declare propagation.aot)
    before = tree_bytes(repo / "pipe/outputs/propagated/aot/soc")
    out = _dvc(repo, "exp", "run", "pipe/dvc.yaml", "-n", "mls", "-S",
               "pipe/params.yaml:+propagation.aot.max_long_side=640")  # fmt: skip
    assert _ran(out) == {"preflight", "propagate_aot_soc", "propagate_aot_mutr",
                         "propagate_aot_referformer_ft",
                         "propagate_aot_soc_mutr_referft"}  # fmt: skip
    assert tree_bytes(repo / "pipe/outputs/propagated/aot/soc") == before
    exps = {e["name"]: e["params"] for e in _exps(repo)}
    assert exps["pt3"]["fusion"]["final"]["pair_threshold"] == 3
    assert exps["mls"]["propagation"]["aot"]["max_long_side"] == 640
