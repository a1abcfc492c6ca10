"""source: infer in the pipeline: the generated DAG for either split (real `dvc dag`),
mutr's two trees (quirk 9.6), the valid-only meta, preflight on a machine without data,
and the audit of the two mutr trees."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import make_meta_dict, make_tree, write_meta

from rvos_kit.cli import main
from rvos_kit.errors import KitError
from rvos_kit.pipeline.dag import render, spelled
from rvos_kit.pipeline.preflight import missing_inputs

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MODELS = ("soc", "mutr", "referformer_ft", "vit_huge", "convnext")


def _project(tmp_path: Path, **data) -> Path:
    """A copy of the real params.yaml (source: infer for all five) with the lock beside."""
    p = yaml.safe_load((REPO / "params.yaml").read_text())
    p["data"].update(data)
    p["data"] = {k: v for k, v in p["data"].items() if v is not None}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    shutil.copy(REPO / "checkpoints.lock", tmp_path / "checkpoints.lock")
    return tmp_path / "params.yaml"


def _stages(params: Path) -> dict:
    """The stages with the commands they run (dvc.yaml's say `--params P --node S` only)."""
    return spelled(params)


def _opt(cmd: str, name: str) -> str:
    words = cmd.split()
    return words[words.index(name) + 1]


def test_real_params_infer_all_five_models():
    p = yaml.safe_load((REPO / "params.yaml").read_text())
    assert {m: p["models"][m]["source"] for m in MODELS} == dict.fromkeys(MODELS, "infer")


@pytest.mark.parametrize("split", ["valid", "test"])
def test_dag_wires_infer_keyframes_propagation_fusion(tmp_path, split):
    if split == "test":
        root = "data/refer_youtube_vos"
        params = _project(tmp_path, split="test", test_meta=None,
                          meta=f"{root}/meta_expressions/test/meta_expressions.json",
                          images=f"{root}/test/JPEGImages")  # fmt: skip
    else:
        params = _project(tmp_path)
    st = _stages(params)
    meta = "outputs/meta/valid_only.json" if split == "valid" else (
        "data/refer_youtube_vos/meta_expressions/test/meta_expressions.json")  # fmt: skip
    assert ("meta_valid_only" in st) == (split == "valid")
    for m in MODELS:
        cmd = st[f"rvos_{m}"]["cmd"]
        assert cmd.startswith(f"rvos-kit run --stage rvos_{m} -- infer --model {m} ")
        assert _opt(cmd, "--split") == split and _opt(cmd, "--meta") == meta
        assert _opt(cmd, "--checkpoint") == f"checkpoints/rvos/{m}.pth"
        assert _opt(cmd, "--out") == f"outputs/rvos/{m}"
        assert st[f"rvos_{m}"]["outs"] == [f"outputs/rvos/{m}"]
        if m != "convnext":  # convnext/DeAOT is not consumed (spec 8): no key frames needed
            assert f"outputs/rvos/{m}/scores.json" in st[f"keyframes_{m}"]["deps"]
        assert ("--png-run" in cmd) == (m == "mutr")
    # quirk 9.6: AOT starts mutr from its PNG-run tree, with key frames from the dump; the
    # stage-1 vote reads the dump-derived tree
    aot = st["propagate_aot_mutr"]["cmd"]
    assert _opt(aot, "--annotations") == "outputs/rvos/mutr/Annotations_pngrun"
    assert _opt(aot, "--keyframes") == "outputs/key_frames/mutr.json"
    assert "outputs/rvos/mutr/Annotations" in st["vote_soc_mutr_referft"]["cmd"].split()
    assert "outputs/rvos/mutr/Annotations_pngrun" not in st["vote_soc_mutr_referft"]["cmd"]
    for m in ("soc", "referformer_ft"):
        assert (
            _opt(st[f"propagate_aot_{m}"]["cmd"], "--annotations")
            == f"outputs/rvos/{m}/Annotations"
        )
    audit = st["audit_mutr_trees"]["cmd"].split()
    assert audit[audit.index("--stage") + 2 :][:2] == [
        "outputs/rvos/mutr/Annotations_pngrun", "outputs/rvos/mutr/Annotations"]  # fmt: skip
    assert "--informational" in audit
    # every stage reads the same meta
    for name, s in st.items():
        if "--meta" in s["cmd"].split() and name != "meta_valid_only":
            assert _opt(s["cmd"], "--meta") == meta, name
    # DVC itself accepts the pipeline (no overlapping outputs, no cycle)
    repo = tmp_path
    (repo / "dvc.yaml").write_text(render(params))
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    for args in (["init", "-q"], ["dag", "--dot"]):
        r = subprocess.run([str(BIN / "dvc"), *args], cwd=repo, capture_output=True, text=True,
                           env=env)  # fmt: skip
        assert r.returncode == 0, r.stderr
    dot = r.stdout
    for edge in ('"rvos_mutr" -> "keyframes_mutr"', '"keyframes_mutr" -> "propagate_aot_mutr"',
                 '"rvos_mutr" -> "propagate_aot_mutr"', '"propagate_aot_mutr" -> "vote_en2"',
                 '"rvos_vit_huge" -> "vote_vit_convnext_soc"',
                 '"vote_final" -> "pack"'):  # fmt: skip
        assert edge in dot, edge
    r = subprocess.run([str(BIN / "rvos-kit"), "dag", "--params", "params.yaml", "--check"],
                       cwd=repo, capture_output=True, text=True, env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr


def test_corrected_mode_propagates_mutr_from_its_dump(tmp_path):
    params = _project(tmp_path)
    p = yaml.safe_load(params.read_text())
    p["compat"] = "corrected"
    params.write_text(yaml.safe_dump(p, sort_keys=False))
    st = _stages(params)
    assert _opt(st["propagate_aot_mutr"]["cmd"], "--annotations") == "outputs/rvos/mutr/Annotations"
    assert "audit_mutr_trees" not in st and "--png-run" not in st["rvos_mutr"]["cmd"]


@pytest.mark.parametrize(
    "change, msg",
    [
        (lambda p: p.pop("infer"), "missing key 'infer'"),
        (lambda p: p["infer"].pop("upstream"), "missing key 'upstream'"),
        (lambda p: p["infer"].update(chunk_videos=0), "chunk_videos"),
        (lambda p: p["data"].update(split="train"), "data.split"),
        (lambda p: p["data"].pop("test_meta"), "test_meta"),
    ],
)
def test_infer_params_errors_are_named(tmp_path, change, msg):
    params = _project(tmp_path)
    p = yaml.safe_load(params.read_text())
    change(p)
    params.write_text(yaml.safe_dump(p, sort_keys=False))
    with pytest.raises(KitError, match=msg):
        render(params)


def test_preflight_without_data_lists_only_real_missing_inputs(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))  # no docker, no nvidia-smi
    params = _project(tmp_path)
    problems = missing_inputs(params)
    text = "\n".join(problems)
    assert "not available yet" not in text
    for m in MODELS:
        line = next(x for x in problems if x.startswith(f"models.{m} "))
        assert f"checkpoints/rvos/{m}.pth" in line
        assert "rvos-kit fetch --params" in line
    assert "roberta-base" in next(x for x in problems if x.startswith("models.mutr "))
    assert "bert-base-uncased" in next(x for x in problems if x.startswith("models.convnext "))
    assert "kinetics400" in next(x for x in problems if x.startswith("models.soc "))
    assert any(x.startswith("Docker:") for x in problems)  # runner.mode: docker, no docker
    downloads = next(x for x in problems if x.startswith("downloads:"))
    for name in ("soc", "vit_huge", "roberta_base_model", "bert_base_uncased_model",
                 "video_swin_base", "aot_swinl"):  # fmt: skip
        assert name in downloads, name
    # now put every file in place: only the GPU and Docker remain
    p = yaml.safe_load(params.read_text())
    for key in ("meta", "test_meta"):
        write_meta(tmp_path / p["data"][key], make_meta_dict([1]))
    (tmp_path / p["data"]["images"]).mkdir(parents=True)
    from rvos_kit.artifacts.lock import load_lock

    for a in load_lock(tmp_path / "checkpoints.lock").artifacts:
        if a.path.startswith("checkpoints/"):
            (tmp_path / a.path).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / a.path).write_bytes(b"x")
    left = missing_inputs(params)
    assert [x.split(":")[0] for x in left] == ["Docker"], left
    # natively: the upstream checkout and a CUDA device are what is left
    p["runner"]["mode"] = "native"
    params.write_text(yaml.safe_dump(p, sort_keys=False))
    left = missing_inputs(params)
    assert all("upstream code" in x for x in left if x.startswith("models."))
    assert len([x for x in left if x.startswith("models.")]) == 5
    assert left[-1].startswith("GPU:")


def test_valid_meta_is_valid_minus_test(tmp_path, capsys):
    valid = make_meta_dict([2, 1, 3, 1])
    test = {"videos": {k: v for i, (k, v) in enumerate(valid["videos"].items()) if i in (1, 3)}}
    write_meta(tmp_path / "valid.json", valid)
    write_meta(tmp_path / "test.json", test)
    assert main(["valid-meta", "--valid", str(tmp_path / "valid.json"), "--test",
                 str(tmp_path / "test.json"), "--out", str(tmp_path / "o.json")]) == 0  # fmt: skip
    out = json.loads((tmp_path / "o.json").read_text())
    assert list(out["videos"]) == ["vid000", "vid002"]
    assert out["videos"]["vid002"] == valid["videos"]["vid002"]
    write_meta(tmp_path / "all.json", valid)
    assert main(["valid-meta", "--valid", str(tmp_path / "valid.json"), "--test",
                 str(tmp_path / "all.json"), "--out", str(tmp_path / "e.json")]) == 2  # fmt: skip
    assert "no video left" in capsys.readouterr().err
    assert not (tmp_path / "e.json").exists()


def test_audit_reports_how_much_the_two_mutr_trees_differ(tmp_path):
    meta = make_meta_dict([2, 1], n_frames=3)
    write_meta(tmp_path / "meta.json", meta)
    make_tree(tmp_path / "png", meta, seed=1)
    make_tree(tmp_path / "dump", meta, seed=1)
    changed = next((tmp_path / "dump").rglob("*.png"))
    shutil.copy(next((tmp_path / "png").rglob("*.png")), changed)  # a 1-frame difference
    make_tree(tmp_path / "x", meta, seed=2)
    shutil.copy(tmp_path / "x" / changed.relative_to(tmp_path / "dump"), changed)
    args = ["audit", "--stage", "mutr_png_run_vs_dump", str(tmp_path / "png"),
            str(tmp_path / "dump"), "--meta", str(tmp_path / "meta.json"), "--json",
            str(tmp_path / "t.json"), "--workers", "1"]  # fmt: skip
    assert main(args) == 1  # a plain audit fails on any difference
    assert main([*args, "--informational"]) == 0  # the pipeline's report does not
    s = json.loads((tmp_path / "t.json").read_text())
    assert s["identical"] is False
    assert s["stages"][0]["name"] == "mutr_png_run_vs_dump"
