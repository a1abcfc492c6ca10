"""``rvos-kit smoke``: every GPU stage of a demo-sized params file, on the CPU, through the
real runner, the published code (random weights, tiny text encoders) and the kit's
deaotpy propagation; its report; its refusals; a stage that fails.

The random weights are the session's (``random_weights`` in conftest.py): the
published-code tests built them already, so this test pays only for the smoke runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import UPSTREAM_PYTHON
from PIL import Image

from rvos_kit.cli import main
from rvos_kit.compute import probe
from rvos_kit.errors import KitError
from rvos_kit.pipeline import smoke

REPO = Path(__file__).resolve().parents[1]
# What CI runs: the cheap GPU stages (per-stage CPU seconds in docs/smoke.md). vit_huge
# (ViT-H: ~16 s of CPU per frame here, a 5.24 GB checkpoint) runs in
# test_infer_uninext_upstream.py already; RVOS_KIT_SLOW=1 adds it here.
CI_STAGES = ["soc", "mutr", "referformer_ft", "convnext", "aot", "deaot"]
SLOW = os.environ.get("RVOS_KIT_SLOW") == "1"

PARAMS = """\
compat: challenge2023
data: {{meta: meta.json, images: JPEGImages}}
paths: {{outputs: outputs}}
device: cpu
runner: {{mode: native}}
infer: {{upstream: {upstream}, chunk_videos: 2}}
models:
  soc:            {{kind: logits,        source: infer}}
  mutr:           {{kind: logits,        source: infer}}
  referformer_ft: {{kind: logits,        source: infer}}
  vit_huge:       {{kind: probabilities, source: infer}}
  convnext:       {{kind: probabilities, source: infer}}
  extra:          {{kind: logits,        source: tree, tree: x}}
propagation:
  aot:   {{backend: aot, model: swinl_aotl, scales: [0.8, 1.0, 1.2], flip: true,
          max_long_side: 1040, engine: published_aot_fork, tree: A, nodes: [soc]}}
  deaot: {{backend: deaot, model: swinl_deaotl, scales: [0.8, 1.0, 1.2], flip: true,
          max_long_side: 1040, engine: published_aot_fork, tree: D, nodes: [soc]}}
  flowy: {{backend: flow, tree: F, nodes: [soc]}}
"""


def write_params(d: Path, upstream) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    p = d / "params.yaml"
    p.write_text(PARAMS.format(upstream=upstream))
    return p


def kit(*args, python=sys.executable, cwd=None):
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    return subprocess.run([str(python), "-m", "rvos_kit", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True)  # fmt: skip


# ------------------------------------------------------------------- fast: no model runs


def test_the_gpu_stages_of_a_params_file_and_the_stages_option(tmp_path):
    from rvos_kit.config import load_params

    p = load_params(write_params(tmp_path, "/nowhere"))
    names = [s["name"] for s in smoke.plan_stages(p, "P", None)]
    assert names == ["soc", "mutr", "referformer_ft", "vit_huge", "convnext", "aot", "deaot"]
    assert [s["name"] for s in smoke.plan_stages(p, "P", ["deaot", "soc"])] == ["soc", "deaot"]
    with pytest.raises(KitError, match="'flowy' is not a GPU stage of P"):
        smoke.plan_stages(p, "P", ["flowy"])
    with pytest.raises(KitError, match="no GPU stage"):
        smoke.plan_stages(p.model_copy(update={"models": {}, "propagation": None}), "P", None)


def test_the_tree_check_refuses_a_missing_frame_a_stray_file_and_a_wrong_size(tmp_path):
    root = smoke.make_clip(tmp_path / "clip", (20, 24), 2, 0)
    meta = json.loads((root / "meta.json").read_text())["videos"]
    assert len(meta) == 2 and all(len(v["expressions"]) == 2 for v in meta.values())
    tree = root / "Annotations"  # the start tree: a complete tree of the clip
    smoke.check_complete(tree, root / "meta.json", (20, 24))
    with pytest.raises(smoke.StageFailed, match="24x20 PNG, the clip is 30x20"):
        smoke.check_complete(tree, root / "meta.json", (20, 30))
    stray = tree / "005e0c1a2b" / "0" / "00099.png"
    Image.fromarray(np.zeros((20, 24), np.uint8)).save(stray)
    with pytest.raises(KitError, match="00099.png"):
        smoke.check_complete(tree, root / "meta.json", (20, 24))
    stray.unlink()
    (tree / "005e0c1a2b" / "1" / "00005.png").unlink()
    with pytest.raises(KitError, match="00005"):
        smoke.check_complete(tree, root / "meta.json", (20, 24))


def test_a_kit_process_reports_its_peaks_at_exit(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "rvos_kit", "--version"],
        env=dict(os.environ, PYTHONPATH=str(REPO / "src"), **{probe.ENV: str(tmp_path)}),
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    (rec,) = probe.read_records(tmp_path)
    assert rec["host_peak_kb"] > 10_000 and rec["gpu_peak_bytes"] is None
    assert rec["cpu_self_s"] > 0


def test_in_docker_mode_the_weights_are_made_in_the_models_image_and_report_back(
    tmp_path, monkeypatch, capsys
):
    """smoke-weights goes through the runner like the stage: in docker mode, into the
    model's image; the probe folder (under outputs, mounted read-write) is passed in."""
    (tmp_path / "params.yaml").write_text(
        "data: {meta: meta.json}\npaths: {outputs: out}\nmodels: {}\nrunner: {mode: docker}\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(probe.ENV, str(tmp_path / "out" / "smoke" / "probe" / "w"))
    monkeypatch.setattr(probe, "install", lambda: None)  # not this test process's exit
    for model, image in (("convnext", "rvos-kit/uninext:"), ("soc", "rvos-kit/rvos:")):
        argv = smoke.Smoke.runner(
            type("S", (), {"python": sys.executable, "params": Path("params.yaml")})(),
            f"rvos_{model}", ["smoke-weights", "--model", model, "--upstream", "/opt/up",
                              "--out", str(tmp_path / "out" / "smoke" / "weights" / model)],
        )  # fmt: skip
        assert main(argv[3:4] + ["--dry-run"] + argv[4:]) == 0
        line = capsys.readouterr().out
        assert f" {image}" in line and f"--env {probe.ENV}={tmp_path}/out/smoke/probe/w " in line
        assert f"--volume {tmp_path}/out:{tmp_path}/out:rw" in line


def test_failed_stages_are_reported_every_stage_is_tried_and_the_exit_is_not_zero(tmp_path):
    """An upstream folder that is not the published code: both infer stages fail (their
    weights cannot be built), each with its error; the JSON says so; exit 1."""
    (tmp_path / "up").mkdir()
    params = write_params(tmp_path / "p", tmp_path / "up")
    out = tmp_path / "smoke.json"
    r = kit("smoke", "--params", params, "--device", "cpu", "--stages", "soc,convnext",
            "--compare-msda", "--out", out, "--work", tmp_path / "work")  # fmt: skip
    assert r.returncode == 1, r.stderr
    rep = json.loads(out.read_text())
    assert not rep["ok"] and [s["stage"] for s in rep["stages"]] == ["soc", "convnext"]
    for s in rep["stages"]:
        assert not s["ok"] and "smoke-weights exited 2" in s["error"]
        assert "no soc_test/ folder" in s["error"] or "no UNINEXT/ folder" in s["error"]
    assert r.stdout.count("FAILED") == 2
    assert "--compare-msda not available: no compiled op" in r.stdout
    # --fail-fast: the first failure ends the run; the rest are listed as skipped
    r = kit("smoke", "--params", params, "--device", "cpu", "--stages", "soc,convnext",
            "--fail-fast", "--out", out, "--work", tmp_path / "work")  # fmt: skip
    assert r.returncode == 1
    rep = json.loads(out.read_text())
    assert [s["stage"] for s in rep["stages"]] == ["soc"] and rep["skipped"] == ["convnext"]


def test_refusals_name_the_file_and_the_fix(tmp_path, capsys):
    params = write_params(tmp_path, "/nowhere")
    assert main(["smoke", "--params", str(params), "--stages", "flowy"]) == 2
    assert "'flowy' is not a GPU stage" in capsys.readouterr().err
    assert main(["smoke", "--params", str(tmp_path / "none.yaml")]) == 2
    assert "params file not found" in capsys.readouterr().err


# ------------------------------------------------------- the real stages, on the CPU


@pytest.fixture(scope="module")
def smoke_run(upstream, random_weights, tmp_path_factory):
    stages = CI_STAGES + (["vit_huge"] if SLOW else [])
    for m in stages:
        if m in smoke.INFER_MODELS:
            random_weights(m)  # made once per session (the published-code tests did)
    d = tmp_path_factory.mktemp("smoke")
    params = write_params(d / "p", upstream)
    out = d / "smoke.json"
    r = kit("smoke", "--params", params, "--device", "cpu", "--stages", ",".join(stages),
            "--out", out, "--work", random_weights.work, "--compare-msda",
            "--infer-python", UPSTREAM_PYTHON)  # fmt: skip
    print(r.stdout)
    return r, out, stages


def test_every_selected_gpu_stage_runs_on_the_cpu_and_writes_its_report(smoke_run):
    r, out, stages = smoke_run
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    rep = json.loads(out.read_text())
    assert rep["ok"] and rep["device"] == "cpu" and rep["size"] == [48, 48]
    assert [s["stage"] for s in rep["stages"]] == stages and rep["skipped"] == []
    for s in rep["stages"]:
        assert s["ok"] and s["error"] is None, s
        assert s["frames"] == 4 and s["seconds_per_frame"] > 0 and s["cpu_seconds"] > 0
        assert s["gpu_peak_bytes"] is None  # no CUDA here
        assert s["host_peak_bytes"] > 100 * 2**20  # torch and a network at least
        if s["kind"] == "infer":
            assert s["weights"] == "cached"  # the session's: built once
            assert s["msda_agreement"] == "not available: no compiled op (--device cpu)"
    env = rep["environment"]
    assert env["torch"] and env["device"].startswith("CPU") and env["python"]
    for name in stages:
        assert f"  {name}" in r.stdout and "ok" in r.stdout
