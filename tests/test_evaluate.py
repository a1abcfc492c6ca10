"""J and F: per-frame values equal to the DAVIS-2017 formulas, dataset means, the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import make_meta_dict, make_tree, write_meta
from PIL import Image

import rvos_kit.stages.evaluate.metric as ev
from rvos_kit.cli import main
from rvos_kit.stages.evaluate.jf import evaluate
from rvos_kit.stages.evaluate.metric import bound_pix, count_matched, frame_jf, seg2bmap
from rvos_kit.trees.meta import parse_meta
from rvos_kit.trees.synthetic import random_ellipse


# ------------------------------------------------------------- reference implementation
# Written from the DAVIS-2017 definitions with plain numpy, full frame, no OpenCV, no
# cropping: the kit's evaluate must agree with this to 1e-9 on every frame.
def ref_seg2bmap(seg: np.ndarray) -> np.ndarray:
    seg = seg.astype(bool)
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = 0
    return b


def ref_dilate_disk(b: np.ndarray, r: int) -> np.ndarray:
    """OR of the map shifted by every (dy, dx) with dy^2 + dx^2 <= r^2, zero outside."""
    h, w = b.shape
    pad = np.zeros((h + 2 * r, w + 2 * r), bool)
    pad[r : r + h, r : r + w] = b
    out = np.zeros_like(b)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if dy * dy + dx * dx <= r * r:
                out |= pad[r + dy : r + dy + h, r + dx : r + dx + w]
    return out


def ref_j(pred, gt) -> float:
    inter = np.sum(pred & gt)
    union = np.sum(pred | gt)
    return 1.0 if union == 0 else inter / union


def ref_f(pred, gt) -> float:
    r = int(np.ceil(0.008 * np.linalg.norm(pred.shape)))
    fb, gb = ref_seg2bmap(pred), ref_seg2bmap(gt)
    fg_match = np.sum(fb & ref_dilate_disk(gb, r))
    gt_match = np.sum(gb & ref_dilate_disk(fb, r))
    n_fg, n_gt = np.sum(fb), np.sum(gb)
    if n_fg == 0 and n_gt > 0:
        p, rc = 1, 0
    elif n_fg > 0 and n_gt == 0:
        p, rc = 0, 1
    elif n_fg == 0 and n_gt == 0:
        p, rc = 1, 1
    else:
        p, rc = fg_match / float(n_fg), gt_match / float(n_gt)
    return 0.0 if p + rc == 0 else 2 * p * rc / (p + rc)


# ------------------------------------------------------------------------- test masks
def blob(rng, h, w):
    """An ellipse of radii 1 px up to the frame's size, centred up to 20% past its edges."""
    cy, cx = (-0.2 * h, 1.2 * h), (-0.2 * w, 1.2 * w)
    return random_ellipse(rng, h, w, cy=cy, cx=cx, closed=False)


def mask_pairs(rng):
    """Hand-made edge cases, then random pairs: blobs, noise, thin lines, borders."""
    h, w = 37, 53
    z, o = np.zeros((h, w), bool), np.ones((h, w), bool)
    px = z.copy()
    px[h - 1, w - 1] = True  # only the corner: its own boundary is empty
    row = z.copy()
    row[h - 1, :] = True
    col = z.copy()
    col[:, 0] = True
    yield from [(z, z), (z, o), (o, z), (o, o), (px, z), (z, px), (row, col), (row, o), (px, px)]
    sizes = [(1, 1), (1, 9), (9, 1), (2, 2), (6, 7), (30, 40), (61, 97), (120, 250)]
    # radius 1 up to 12 (720p, the Ref-YouTube-VOS frame size)
    for size, n in [*((s, 6) for s in sizes), ((300, 420), 4), ((720, 1280), 4)]:
        for _ in range(n):
            kind = rng.integers(0, 4)
            gt = blob(rng, *size)
            if kind == 0:  # near miss
                pred = blob(rng, *size) | gt & (rng.random(size) < 0.9)
            elif kind == 1:  # salt and pepper
                pred = gt ^ (rng.random(size) < 0.05)
            elif kind == 2:  # disjoint / shifted
                pred = np.roll(gt, (rng.integers(-9, 9), rng.integers(-9, 9)), (0, 1))
            else:  # pure noise
                pred, gt = rng.random(size) < 0.3, rng.random(size) < rng.uniform(0, 0.2)
            yield pred, gt


def test_seg2bmap_matches_reference(rng):
    for pred, gt in mask_pairs(rng):
        for m in (pred, gt):
            assert np.array_equal(seg2bmap(m), ref_seg2bmap(m))


def test_frame_values_equal_reference_formulas(rng):
    n = 0
    seen_f = set()
    for pred, gt in mask_pairs(rng):
        j, f = frame_jf(pred, gt)
        assert abs(j - ref_j(pred, gt)) <= 1e-9, (pred.shape, j)
        assert abs(f - ref_f(pred, gt)) <= 1e-9, (pred.shape, f)
        seen_f.add(round(f, 3))
        n += 1
    assert n > 50 and len(seen_f) > 20  # the cases are not all trivial


def test_count_matched_equals_disk_dilation(rng, monkeypatch):
    """Both ways of counting boundary matches (offsets outside the inner square for a
    few candidates, the disk dilation for many) equal the plain disk dilation."""
    calls = []
    real = ev.disk_kernel
    monkeypatch.setattr(ev, "disk_kernel", lambda r: calls.append(r) or real(r))
    ring_path = 0
    for radius in range(1, 13):
        for dq, ds in ((0.002, 0.002), (0.01, 0.01), (0.05, 0.05), (0.5, 0.5), (1, 0.003)):
            h, w = rng.integers(1, 90, size=2)
            q = (rng.random((h, w)) < dq).astype(np.uint8)
            s = (rng.random((h, w)) < ds).astype(np.uint8)
            before = len(calls)
            got = count_matched(q, s, radius)
            ring_path += len(calls) == before
            assert got == np.sum(q.astype(bool) & ref_dilate_disk(s.astype(bool), radius))
    assert calls and ring_path > 10  # both ways were taken


def test_radius_and_edge_conventions():
    assert bound_pix(720, 1280) == math.ceil(0.008 * math.hypot(720, 1280)) == 12
    assert bound_pix(1, 1) == 1
    z = np.zeros((10, 12), bool)
    o = np.ones((10, 12), bool)
    assert frame_jf(z, z) == (1.0, 1.0)
    # a full mask has no seg2bmap boundary: F is 1 against an empty mask, J is 0
    assert frame_jf(o, z) == (0.0, 1.0)
    half = z.copy()
    half[:, :6] = True
    assert frame_jf(half, z) == (0.0, 0.0)  # boundary vs none: P 0, R 1 -> F 0
    assert frame_jf(z, half) == (0.0, 0.0)
    assert frame_jf(half, half) == (1.0, 1.0)


def test_agrees_with_vos_benchmark(rng):
    """The PyPI vos-benchmark (DAVIS-2017 code) gives the same per-frame J and F."""
    ev_mod = pytest.importorskip("vos_benchmark.evaluator", reason="vos-benchmark not installed")
    for pred, gt in mask_pairs(rng):
        ev = ev_mod.Evaluator()
        ev.objects_in_gt.add(255)  # so that a frame where both are empty still counts
        ev.feed_frame(pred.astype(np.uint8) * 255, gt.astype(np.uint8) * 255)
        j, f = frame_jf(pred, gt)
        assert abs(j - ev.object_iou[255][0]) <= 1e-9
        assert abs(f - ev.boundary_f[255][0]) <= 1e-9


# ---------------------------------------------------------------------- dataset level
def build(tmp_path: Path, exp_counts=(2, 3), n_frames=5, gt_keep=None):
    """meta, pred tree and GT tree (GT optionally with only some frames)."""
    meta_dict = make_meta_dict(exp_counts, n_frames=n_frames)
    meta_path = write_meta(tmp_path / "meta.json", meta_dict)
    sizes = {"vid000": (40, 56), "vid001": (33, 47)}
    pred = make_tree(tmp_path / "pred", meta_dict, seed=1, sizes=sizes, density=0.02)
    gt = make_tree(tmp_path / "gt", meta_dict, seed=2, sizes=sizes, density=0.02)
    if gt_keep is not None:
        for p in list(gt.rglob("*.png")):
            if p.stem not in gt_keep:
                p.unlink()
    return meta_dict, meta_path, pred, gt


def ref_dataset(meta_dict, pred: Path, gt: Path, skip=False):
    per = []
    for vid, entry in meta_dict["videos"].items():
        for e in entry["expressions"]:
            frames = [f for f in entry["frames"] if (gt / vid / e / f"{f}.png").exists()]
            if skip:
                frames = frames[1:-1]
            js, fs = [], []
            for f in frames:
                g = np.array(Image.open(gt / vid / e / f"{f}.png")) > 0
                p = np.array(Image.open(pred / vid / e / f"{f}.png")) == 255
                js.append(ref_j(p, g))
                fs.append(ref_f(p, g))
            per.append((vid, e, 100 * np.mean(js), 100 * np.mean(fs)))
    j = np.mean([x[2] for x in per])
    f = np.mean([x[3] for x in per])
    return j, f, per


@pytest.mark.parametrize("workers", [1, 2])
def test_cli_json_matches_reference(tmp_path, workers):
    keep = {"00000", "00010", "00020"}  # GT on 3 of the 5 meta frames
    meta_dict, meta_path, pred, gt = build(tmp_path, gt_keep=keep)
    out = tmp_path / "m" / "metrics.json"
    rc = main(["evaluate", "--gt", str(gt), "--pred", str(pred), "--meta", str(meta_path),
               "--json", str(out), "--workers", str(workers)])  # fmt: skip
    assert rc == 0
    m = json.loads(out.read_text())
    j, f, per = ref_dataset(meta_dict, pred, gt)
    assert abs(m["J"] - j) < 1e-9 and abs(m["F"] - f) < 1e-9
    assert abs(m["J&F"] - (j + f) / 2) < 1e-9
    assert m["n_frames"] == 5 * 3 and m["n_expressions"] == 5
    assert [(x["video"], x["exp_id"]) for x in m["per_expression"]] == [x[:2] for x in per]
    for x, (_, _, pj, pf) in zip(m["per_expression"], per, strict=True):
        assert set(x) == {"video", "exp_id", "J", "F", "J&F"}
        assert abs(x["J"] - pj) < 1e-9 and abs(x["F"] - pf) < 1e-9
        assert abs(x["J&F"] - (pj + pf) / 2) < 1e-9
    assert 0 < m["J&F"] < 100
    assert not list(out.parent.glob(".*"))  # no temp file left behind


def test_skip_first_last_and_perfect_prediction(tmp_path):
    meta_dict, meta_path, pred, gt = build(tmp_path, exp_counts=(1,), n_frames=5)
    res = evaluate(gt, pred, parse_meta(meta_dict), skip_first_last=True, progress=False)
    assert res.expressions[0].frames == ("00005", "00010", "00015")
    j, f, _ = ref_dataset(meta_dict, pred, gt, skip=True)
    assert abs(res.j - j) < 1e-9 and abs(res.f - f) < 1e-9
    # GT against itself: 100 (GT read as nonzero, written 0/255, so identical masks)
    res = evaluate(gt, gt, parse_meta(meta_dict), progress=False)
    assert res.jf == 100.0


def test_meta_inferred_from_pred(tmp_path):
    meta_dict, meta_path, pred, gt = build(tmp_path)
    a = evaluate(gt, pred, None, progress=False).metrics()
    b = evaluate(gt, pred, parse_meta(meta_dict), progress=False).metrics()
    assert a == b


def _expect_error(capsys, argv, *needles):
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    for n in needles:
        assert n in err, err


def test_bad_inputs_give_one_clear_error(tmp_path, capsys):
    meta_dict, meta_path, pred, gt = build(tmp_path)
    base = ["evaluate", "--gt", str(gt), "--pred", str(pred), "--meta", str(meta_path),
            "--workers", "1"]  # fmt: skip
    (pred / "vid001/2/00010.png").unlink()
    _expect_error(capsys, base, "vid001/2/00010.png", "missing")
    make_tree(tmp_path / "pred", meta_dict, seed=1, sizes={"vid000": (40, 56), "vid001": (33, 47)})
    # prediction at the wrong size
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(pred / "vid000/1/00005.png")
    _expect_error(capsys, base, "vid000/1/00005.png", "10x10", "56x40")
    Image.fromarray(np.zeros((40, 56), np.uint8)).save(pred / "vid000/1/00005.png")
    # an expression without any GT
    for p in (gt / "vid000/1").glob("*.png"):
        p.unlink()
    _expect_error(capsys, base, "vid000/1", "GT PNG")
    (gt / "vid000/1").rmdir()
    _expect_error(capsys, base, "vid000/1", "no ground truth")
    out = tmp_path / "metrics.json"
    _expect_error(capsys, [*base, "--json", str(out)], "no ground truth")
    assert not out.exists()
