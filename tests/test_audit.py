"""audit: counts, missing/extra listings, exit status, and the report (HTML, Markdown,
pictures), end to end on generated trees standing in for the released ones."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import make_meta_dict, make_tree, tree_bytes, write_meta
from PIL import Image

from rvos_kit.cli import main
from rvos_kit.stages.audit.compare import audit_stage
from rvos_kit.stages.audit.html import THEIRS_ONLY, overlay_colour
from rvos_kit.trees.meta import parse_meta

SIZES = {"vid000": (72, 128), "vid001": (90, 160), "vid002": (60, 80)}
JPEG_RGB = (200, 180, 160)
PLANTED = "vid001/1"
CHROMIUM = Path("/usr/bin/chromium")


def png_mask(path: Path) -> np.ndarray:
    return np.array(Image.open(path)) == 255


def save_mask(path: Path, mask: np.ndarray) -> None:
    Image.fromarray(mask.astype(np.uint8) * 255, "L").save(path)


def iou(a, b) -> float:
    u = np.sum(a | b)
    return 1.0 if u == 0 else np.sum(a & b) / u


def build(tmp_path: Path, with_jpegs=True):
    """Released stand-ins ``theirs/{en2,final}``, our recomputation ``ours/{en2,final}``.

    en2 carries the planted disagreement (vid001/1, frames 00005 and 00010: a block only
    theirs has), a one-pixel difference (vid002/2/00015), a frame with the same pixels in
    other bytes (vid000/0/00000), a frame and an expression ours lacks and an expression
    meta does not list in theirs. final is identical."""
    meta_dict = make_meta_dict([2, 3, 3], n_frames=5)
    meta_path = write_meta(tmp_path / "meta.json", meta_dict)
    for stage, seed in (("en2", 5), ("final", 6)):
        make_tree(tmp_path / "theirs" / stage, meta_dict, seed=seed, sizes=SIZES, density=0.01)
        shutil.copytree(tmp_path / "theirs" / stage, tmp_path / "ours" / stage)
    t, o = tmp_path / "theirs" / "en2", tmp_path / "ours" / "en2"
    for f in ("00005", "00010"):
        m = png_mask(t / PLANTED / f"{f}.png")
        m[10:70, 20:120] = True
        save_mask(t / PLANTED / f"{f}.png", m)
    m = png_mask(o / "vid002/2/00015.png")
    m[3, 4] = not m[3, 4]
    save_mask(o / "vid002/2/00015.png", m)
    v = np.array(Image.open(o / "vid000/0/00000.png"))
    ok, buf = cv2.imencode(".png", v, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    (o / "vid000/0/00000.png").write_bytes(buf.tobytes())
    (o / "vid002/1/00010.png").unlink()
    shutil.rmtree(o / "vid001/2")
    shutil.copytree(t / "vid000/1", t / "vid000/7")
    jpegs = None
    if with_jpegs:
        jpegs = tmp_path / "JPEGImages"
        for vid, entry in meta_dict["videos"].items():
            (jpegs / vid).mkdir(parents=True)
            h, w = SIZES[vid]
            for f in entry["frames"]:
                Image.new("RGB", (w, h), JPEG_RGB).save(jpegs / vid / f"{f}.jpg", quality=95)
    return meta_dict, meta_path, jpegs


def run_audit(tmp_path, meta_path, jpegs, report, extra=()):
    t, o = tmp_path / "theirs", tmp_path / "ours"
    argv = ["audit", "--meta", str(meta_path), "--workers", "1",
            "--stage", "en2", str(o / "en2"), str(t / "en2"),
            "--stage", "final", str(o / "final"), str(t / "final"),
            "--json", str(tmp_path / "audit.json"), *extra]  # fmt: skip
    if report:
        argv += ["--report", str(report)]
    if jpegs:
        argv += ["--images", str(jpegs)]
    return main(argv)


def near(img: np.ndarray, rgb, tol=3) -> int:
    """Number of pixels of ``img`` within ``tol`` of ``rgb`` on every channel."""
    return int(np.all(np.abs(img[..., :3].astype(int) - np.array(rgb)) <= tol, axis=-1).sum())


# --------------------------------------------------------------------------------- tests
def test_end_to_end_report_surfaces_planted_disagreement(tmp_path, capsys):
    meta_dict, meta_path, jpegs = build(tmp_path)
    # J&F of two nodes, computed by `rvos-kit evaluate` against the released final
    for node in ("en2", "final"):
        assert main(["evaluate", "--gt", str(tmp_path / "theirs/final"), "--workers", "1",
                     "--pred", str(tmp_path / "theirs" / node), "--meta", str(meta_path),
                     "--json", str(tmp_path / f"{node}.json")]) == 0  # fmt: skip
    report = tmp_path / "report"
    rc = run_audit(tmp_path, meta_path, jpegs, report,
                   ["--metrics", f"en2={tmp_path / 'en2.json'}",
                    "--metrics", f"final={tmp_path / 'final.json'}"])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 1
    assert "stage en2: DIFFERENT" in out and "stage final: IDENTICAL" in out

    s = json.loads((tmp_path / "audit.json").read_text())
    assert s == json.loads((report / "audit.json").read_text())
    en2, final = s["stages"]
    n_all = 8 * 5
    assert en2["frames_compared"] == n_all - 5 - 1  # ours lacks vid001/2 and one frame
    assert en2["pixel_identical"] == en2["frames_compared"] - 3
    assert en2["byte_identical"] == en2["pixel_identical"] - 1
    assert en2["missing"]["ours"] == {"expressions": ["vid001/2"], "frames": ["vid002/1/00010"]}
    assert en2["extra"]["theirs"]["expressions"] == ["vid000/7"]
    assert [(w["video"], w["exp_id"]) for w in en2["worst"]] == [("vid001", "1"), ("vid002", "2")]
    # the IoU numbers are those of the masks on disk
    t, o = tmp_path / "theirs/en2", tmp_path / "ours/en2"
    ious = [iou(png_mask(o / PLANTED / f"{f}.png"), png_mask(t / PLANTED / f"{f}.png"))
            for f in meta_dict["videos"]["vid001"]["frames"]]  # fmt: skip
    assert abs(en2["worst"][0]["min_iou"] - min(ious)) < 1e-12
    assert abs(en2["worst"][0]["mean_iou"] - np.mean(ious)) < 1e-12
    assert en2["worst"][0]["pixel_identical"] == 3 and en2["worst"][0]["byte_identical"] == 3
    assert final["identical"] and final["byte_identical"] == final["frames_compared"] == n_all
    assert s["metrics"]["final"]["J&F"] == 100.0 and s["metrics"]["en2"]["J&F"] < 100.0

    # the report names the planted expression in the worst list and on its contact sheet
    page = (report / "index.html").read_text()
    md = (report / "report.md").read_text()
    sheet = report / "img" / "sheet-1-01-en2-vid001-1.png"
    assert sheet.exists()
    assert f'<td class="l">{PLANTED}</td>' in page
    assert f"en2: {PLANTED} (#1 worst)" in page and f"en2: {PLANTED} (#1 worst)" in md
    assert f"| 1 | {PLANTED} |" in md and "](img/sheet-1-01-en2-vid001-1.png)" in md
    assert "vid002/1/00010" in page and "vid000/7" in page and "vid001/2" in md
    assert 'src="http' not in page and "data:image/png;base64," in page  # self-contained
    assert page.count("<figure>") == 2  # two differing expressions in en2, none in final
    assert (report / "img/metrics.png").exists() and "J&amp;F per node" in page
    # the sheet: the JPEG frame under the masks, the block only theirs has in blue
    img = np.array(Image.open(sheet).convert("RGB"))
    assert near(img, overlay_colour(THEIRS_ONLY, 0.85, JPEG_RGB), tol=4) > 500
    assert near(img, JPEG_RGB, tol=4) > 500
    assert near(img, overlay_colour(THEIRS_ONLY, 0.85), tol=2) == 0  # not on plain grey


def test_identical_trees_exit_0(tmp_path, capsys):
    meta_dict = make_meta_dict([2, 1], n_frames=3)
    meta_path = write_meta(tmp_path / "meta.json", meta_dict)
    make_tree(tmp_path / "a", meta_dict, seed=1)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "s.json"
    rc = main(["audit", "--ours", str(a), "--theirs", str(b), "--meta", str(meta_path),
               "--name", "en2", "--json", str(out)])  # fmt: skip
    assert rc == 0
    assert "stage en2: IDENTICAL" in capsys.readouterr().out
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["identical"] and s["stages"][0]["frames_compared"] == 9
    assert s["stages"][0]["worst"] == []


def test_without_meta_union_and_workers(tmp_path):
    """No meta: the expected set is the union of both trees; 2 workers, same answer."""
    meta_dict, meta_path, _ = build(tmp_path, with_jpegs=False)
    a = audit_stage("en2", tmp_path / "ours/en2", tmp_path / "theirs/en2", progress=False)
    b = audit_stage("en2", tmp_path / "ours/en2", tmp_path / "theirs/en2", workers=2,
                    progress=False)  # fmt: skip
    assert a.summary() == b.summary()
    s = a.summary()
    # vid000/7 is now expected (theirs has it), so ours lacks it; nothing is "extra"
    assert s["missing"]["ours"]["expressions"] == ["vid000/7", "vid001/2"]
    assert s["extra"]["theirs"]["expressions"] == []
    assert not a.identical
    m = audit_stage("en2", tmp_path / "ours/en2", tmp_path / "theirs/en2",
                    parse_meta(meta_dict), progress=False).summary()  # fmt: skip
    assert m["extra"]["theirs"]["expressions"] == ["vid000/7"]


def test_unreadable_and_size_mismatch_are_listed(tmp_path, capsys):
    meta_dict = make_meta_dict([1], n_frames=3)
    make_tree(tmp_path / "a", meta_dict, seed=1)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    (tmp_path / "b/vid000/0/00000.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    save_mask(tmp_path / "b/vid000/0/00005.png", np.zeros((5, 5), bool))
    rc = main(["audit", "--ours", str(tmp_path / "a"), "--theirs", str(tmp_path / "b"),
               "--json", str(tmp_path / "s.json"), "--report", str(tmp_path / "r")])  # fmt: skip
    assert rc == 1
    st = json.loads((tmp_path / "s.json").read_text())["stages"][0]
    assert st["frames_compared"] == 3 and st["pixel_identical"] == 1
    assert len(st["problems"]) == 2
    assert "vid000/0/00000: unreadable" in st["problems"][0]
    assert "size differs" in st["problems"][1]
    assert "size differs" in (tmp_path / "r/index.html").read_text()


def test_report_folder_guard_and_replace(tmp_path, capsys):
    meta_dict, meta_path, _ = build(tmp_path, with_jpegs=False)
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    assert run_audit(tmp_path, meta_path, None, precious) == 2
    assert "not an rvos-kit report" in capsys.readouterr().err
    assert tree_bytes(precious) == {"notes.txt": b"keep me"}
    report = tmp_path / "report"
    assert run_audit(tmp_path, meta_path, None, report) == 1
    (report / "img" / "stale.png").write_bytes(b"x")
    assert run_audit(tmp_path, meta_path, None, report, ["--sheets", "1"]) == 1
    assert sorted(p.name for p in (report / "img").iterdir()) == ["sheet-1-01-en2-vid001-1.png"]
    assert [p.name for p in tmp_path.glob(".report*")] == [".report.rvos-kit"]  # no staging


def test_bad_arguments(tmp_path, capsys):
    meta_dict, meta_path, _ = build(tmp_path, with_jpegs=False)
    o, t = str(tmp_path / "ours/en2"), str(tmp_path / "theirs/en2")
    bad_metrics = tmp_path / "m.json"
    bad_metrics.write_text('{"J": 1}')
    for argv, needle in [
        (["audit", "--ours", o], "--ours and --theirs go together"),
        (["audit"], "nothing to audit"),
        (["audit", "--ours", o, "--theirs", str(tmp_path / "nope")], "nope: mask tree not found"),
        (["audit", "--stage", "x", o, t, "--stage", "x", o, t], "'x' given twice"),
        (["audit", "--ours", o, "--theirs", t, "--metrics", f"n={bad_metrics}"], "m.json: not a"),
        (["audit", "--ours", o, "--theirs", t, "--metrics", "nofile"], "NODE=path"),
        (["audit", "--ours", o, "--theirs", t, "--images", str(tmp_path / "x")], "JPEG folder"),
    ]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err, err


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent: "
                    "`apt-get install -y chromium` to check that the report renders")  # fmt: skip
def test_report_renders_in_headless_chromium(tmp_path):
    """The page opens in a browser and its pictures are decoded: the screenshot holds the
    contact sheet's theirs-only colour and the bar chart's bars."""
    _, meta_path, _ = build(tmp_path, with_jpegs=False)
    assert main(["evaluate", "--gt", str(tmp_path / "theirs/final"), "--workers", "1",
                 "--pred", str(tmp_path / "ours/final"), "--meta", str(meta_path),
                 "--json", str(tmp_path / "final.json")]) == 0  # fmt: skip
    report = tmp_path / "report"
    assert run_audit(tmp_path, meta_path, None, report,
                     ["--metrics", f"final={tmp_path / 'final.json'}"]) == 1  # fmt: skip
    shot = tmp_path / "shot.png"
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={tmp_path / 'chromium-profile'}",
           "--hide-scrollbars", "--force-device-scale-factor=1", "--window-size=1300,2600",
           f"--screenshot={shot}", (report / "index.html").as_uri()]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.exists(), r.stderr[-2000:]
    img = np.array(Image.open(shot).convert("RGB"))
    assert img.shape[:2] == (2600, 1300)
    assert near(img, overlay_colour(THEIRS_ONLY, 0.85), tol=3) > 500
    assert near(img, (70, 130, 180), tol=2) > 2000  # the J&F bar
