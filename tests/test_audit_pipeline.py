"""`make audit` end to end, with generated zips standing in for the authors' released trees
(Google Drive is unreachable here): the real audit/params.yaml pipeline fetches them
(present and hash-verified, so no network), unpacks them, recomputes en2 and final, and
audits both against the "released" ones, one of which has a planted disagreement."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from rvos_kit.pipeline.dag import render
from rvos_kit.stages.data import make_sample
from rvos_kit.stages.fusion import VoteRule, vote
from rvos_kit.trees.digest import sha256_file
from rvos_kit.trees.meta import load_meta

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# released name -> the sample tree standing in for it
STAND_INS = {
    "released_soc_aot": "soc",
    "released_mutr_aot": "mutr",
    "released_referformer_ft_aot": "referformer_ft",
    "released_soc_mutr_referft_aot": "convnext",
    "released_referformer_ft_deaot": "referformer_ft",
    "released_vit_huge_deaot": "vit_huge",
    "released_vit_convnext_soc_deaot": "soc",
}


def _zip_tree(root: Path, out: Path, prefix: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w") as zf:
        for p in sorted(root.rglob("*.png")):
            zf.write(p, f"{prefix}/{p.relative_to(root)}")


def test_make_audit_pipeline_surfaces_a_planted_disagreement(tmp_path):
    repo = tmp_path / "repo"
    sample = make_sample(repo / "sample", seed=7, videos=3, frames=5, progress=False)
    meta = load_meta(sample / "meta_expressions.json")
    models = sample / "models"
    lock = yaml.safe_load((REPO / "checkpoints.lock").read_text())
    by_name = {a["name"]: a for a in lock["artifacts"]}
    downloads = repo / "downloads"

    def place(name: str, tree: Path, prefix: str) -> None:
        dest = downloads / by_name[name]["path"]
        _zip_tree(tree, dest, prefix)
        sha, size = sha256_file(dest)
        by_name[name].update(sha256=sha, size=size)

    for name, model in STAND_INS.items():
        place(name, models / model / "Annotations", "test/Annotations")
    # "their" stage 2, computed the published way, then one planted difference in final
    theirs = tmp_path / "theirs"
    trees = {n: models / m / "Annotations" for n, m in STAND_INS.items()}
    en2 = [trees[f"released_{n}_aot"] for n in ("soc_mutr_referft", "soc", "mutr",
                                                "referformer_ft")]  # fmt: skip
    vote(en2, theirs / "en2", meta, VoteRule(), progress=False)
    final = [trees["released_vit_convnext_soc_deaot"], trees["released_vit_huge_deaot"],
             theirs / "en2", trees["released_referformer_ft_deaot"]]  # fmt: skip
    vote(final, theirs / "final", meta, VoteRule(), progress=False)
    v = meta.videos[1]
    planted = f"{v.name}/{v.exp_ids[0]}"
    png = theirs / "final" / v.name / v.exp_ids[0] / f"{v.frames[2]}.png"
    arr = np.array(Image.open(png))
    arr[: arr.shape[0] // 2] = 255 - arr[: arr.shape[0] // 2]
    Image.fromarray(arr, "L").save(png)
    place("released_en2", theirs / "en2", "en2/Annotations")
    place("released_final", theirs / "final", "Annotations")
    (repo / "checkpoints.lock").write_text(yaml.safe_dump(lock, sort_keys=False))

    p = yaml.safe_load((REPO / "audit/params.yaml").read_text())
    p["data"].update(meta="sample/meta_expressions.json", images="sample/JPEGImages")
    p["paths"].update(lock="checkpoints.lock", downloads="downloads",
                      code=str(REPO / "src/rvos_kit"))  # fmt: skip
    (repo / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    (repo / "dvc.yaml").write_text(render(repo / "params.yaml"))

    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    preflight = subprocess.run([str(BIN / "rvos-kit"), "preflight"], cwd=repo, env=env,
                               capture_output=True, text=True)  # fmt: skip
    assert preflight.returncode == 0, preflight.stderr
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    for args in (["init", "-q"], ["config", "core.analytics", "false"]):
        subprocess.run([str(BIN / "dvc"), *args], cwd=repo, env=env, check=True)
    r = subprocess.run([str(BIN / "dvc"), "repro"], cwd=repo, env=env, capture_output=True,
                       text=True)  # fmt: skip
    out = r.stdout + r.stderr
    # the audit exits 1 on a disagreement, so the pipeline fails at its last stage
    assert r.returncode != 0, out
    assert "Running stage 'audit'" in out and "Running stage 'vote_final'" in out
    assert "Running stage 'fetch_released_final'" in out  # present + verified: no download

    summary = json.loads((repo / "outputs/audit.json").read_text())
    stages = {st["name"]: st for st in summary["stages"]}
    assert summary["identical"] is False
    assert stages["en2"]["identical"] is True
    assert stages["en2"]["frames_compared"] == meta.n_masks
    final_ = stages["final"]
    assert final_["identical"] is False
    assert final_["pixel_identical"] == meta.n_masks - 1
    worst = final_["worst"]
    assert [(w["video"], w["exp_id"], w["worst_frame"]) for w in worst] == [
        (v.name, v.exp_ids[0], v.frames[2])
    ]
    html = (repo / "outputs/report/index.html").read_text()
    md = (repo / "outputs/report/report.md").read_text()
    assert planted in html and planted in md
    # en2 was recomputed exactly; only the planted frame of final differs
    ours_en2 = repo / "outputs/fused/en2"
    for png_path in theirs.joinpath("en2").rglob("*.png"):
        rel = png_path.relative_to(theirs / "en2")
        assert (ours_en2 / rel).read_bytes() == png_path.read_bytes()
    ours_final = repo / "outputs/fused/final"
    differing = [
        q.relative_to(theirs / "final")
        for q in (theirs / "final").rglob("*.png")
        if (ours_final / q.relative_to(theirs / "final")).read_bytes() != q.read_bytes()
    ]
    assert [str(d) for d in differing] == [f"{planted}/{v.frames[2]}.png"]
