"""The shared generator of synthetic masks and frames (rvos_kit.trees.synthetic): the
sample it makes is pinned byte for byte, and each function does what its callers rely on."""

from __future__ import annotations

import hashlib
import json

import numpy as np
from PIL import Image

from rvos_kit.stages.data import make_sample
from rvos_kit.trees.masktree import read_mask
from rvos_kit.trees.meta import load_meta
from rvos_kit.trees.synthetic import (
    corrupt,
    ellipse,
    ellipse_d2,
    moving_object_clip,
    probability,
    random_ellipse,
    random_mask,
    wavy_blobs,
    write_propagation_input,
)

# sha256 over (relative path, NUL, bytes) of every file of make_sample(seed=3, videos=4,
# frames=3, 40x56), in sorted path order; computed on the sample code before it drew from
# rvos_kit.trees.synthetic. The demo's outputs in demo/dvc.lock depend on these bytes: a
# change here (numpy calls of the generator, or the pinned Pillow / OpenCV) is a change
# of the demo.
SAMPLE_FILES = 210
SAMPLE_SHA256 = "dec0f698efba5109d4de93f4727059a6ec6a2c5b5f3b3d36a94d87739437791f"


def test_make_sample_bytes_are_pinned(tmp_path):
    out = make_sample(tmp_path / "s", seed=3, videos=4, frames=3, height=40, width=56,
                      progress=False)  # fmt: skip
    files = sorted(p for p in out.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for p in files:
        digest.update(p.relative_to(out).as_posix().encode() + b"\0" + p.read_bytes())
    assert (len(files), digest.hexdigest()) == (SAMPLE_FILES, SAMPLE_SHA256)
    # every kind of file the demo uses is covered: frames, truth, outputs, quirk masks
    kinds = {p.relative_to(out).parts[0] for p in files}
    assert kinds == {"JPEGImages", "gt", "models", "meta_expressions.json"}
    assert any("Annotations_sigmoid_odd" in p.parts for p in files)


def test_ellipse_is_closed_and_matches_its_formula():
    d2 = ellipse_d2(9, 11, 4, 5, 4, 3)
    yy, xx = np.mgrid[0:9, 0:11]
    assert np.array_equal(d2, ((yy - 4) / 4) ** 2 + ((xx - 5) / 3) ** 2)
    m = ellipse(9, 11, 4, 5, 4, 3)
    assert m[0, 5] and m[8, 5] and m[4, 2] and m[4, 8]  # on the boundary: inside
    assert not m[0, 4] and not m[4, 1]
    assert m.sum() == (d2 <= 1).sum() > (d2 < 1).sum()


def test_random_ellipse_draws_centre_then_radii():
    a, b = np.random.default_rng(7), np.random.default_rng(7)
    got = random_ellipse(a, 30, 40, ry=(3, 5), closed=False)
    cy, cx, ry, rx = b.uniform(0, 30), b.uniform(0, 40), b.uniform(3, 5), b.uniform(1, 40)
    assert np.array_equal(got, ellipse_d2(30, 40, cy, cx, ry, rx) < 1)
    assert a.random() == b.random()  # nothing else drawn


def test_random_mask_density_and_shapes():
    rng = np.random.default_rng(0)
    masks = [random_mask(rng, 24, 32) for _ in range(40)]
    assert all(m.shape == (24, 32) and m.dtype == bool for m in masks)
    assert any(not m.any() for m in masks) and any(m.any() for m in masks)
    noisy = random_mask(np.random.default_rng(1), 200, 300, density=0.3)
    assert 0.2 < noisy.mean() < 0.8  # flipped pixels on top of 0-3 rectangles


def test_moving_object_clip_moves_by_step():
    frames, masks = moving_object_clip(np.random.default_rng(0), 64, 96, 4, step=(3, -2))
    assert len(frames) == len(masks) == 4
    assert frames[0].shape == (64, 96, 3) and frames[0].dtype == np.uint8
    for t in range(1, 4):
        moved = np.roll(masks[0], (-2 * t, 3 * t), (0, 1))
        inter, union = (moved & masks[t]).sum(), (moved | masks[t]).sum()
        assert inter / union > 0.97
        # the object's texture moves with it, the background stays
        inside = masks[0] & moved & masks[t]
        shifted = np.roll(frames[0], (-2 * t, 3 * t), (0, 1))
        assert np.array_equal(shifted[inside], frames[t][inside])
        outside = ~masks[0] & ~masks[t]
        assert np.array_equal(frames[0][outside], frames[t][outside])


def test_corrupt_and_probability():
    truth = ellipse(48, 64, 24, 32, 12, 20)
    rng = np.random.default_rng(0)
    assert not corrupt(rng, truth, 2, 0.0, 1.0).any()  # a miss
    assert np.array_equal(corrupt(rng, truth, 0, 0.0, 0.0), truth)
    grown = [corrupt(rng, truth, 3, 0.0, 0.0) for _ in range(30)]
    assert any(g.sum() > truth.sum() for g in grown) and any(g.sum() < truth.sum() for g in grown)
    assert (corrupt(rng, truth, 0, 1.0, 0.0) >= truth).all()  # a false blob only adds
    p = probability(truth)
    assert p.dtype == np.float32 and np.array_equal(p > np.float32(0.5), truth)
    assert 0 < p.min() < 1e-5


def test_wavy_blobs_agree_but_differ():
    rng = np.random.default_rng(5)
    frames = list(wavy_blobs(rng, 20, 3, h=180, w=320))
    full = [ms for ms in frames if ms[0].any()]
    assert 0 < len(frames) - len(full) < 10  # some frames empty (10% on average)
    for ms in full:
        for m in ms[1:]:
            iou = (m & ms[0]).sum() / (m | ms[0]).sum()
            assert 0.8 < iou < 1.0


def test_propagation_input_holds_each_kind_at_its_key_frame(tmp_path):
    frames, masks = moving_object_clip(np.random.default_rng(0), 24, 32, 3)
    exps = {"0": (1, "true"), "1": (2, "empty"), "2": (0, "value")}
    write_propagation_input(tmp_path / "quiet", {"v": (frames, masks, exps)})
    write_propagation_input(tmp_path / "noisy", {"v": (frames, masks, exps)}, noise_seed=7)
    for root in (tmp_path / "quiet", tmp_path / "noisy"):
        meta = load_meta(root / "meta.json")  # the kit's own reader accepts it
        assert list(meta.video("v").frames) == ["00000", "00005", "00010"]
        keys = json.loads((root / "key_frame.json").read_text())
        assert {e: k["index_info"]["class_index"] for e, k in keys["v"].items()} == {
            "0": 1, "1": 2, "2": 0
        }  # fmt: skip
        assert len(list((root / "JPEGImages" / "v").glob("*.jpg"))) == 3
        ann = root / "Annotations" / "v"
        assert np.array_equal(read_mask(ann / "0" / "00005.png"), masks[1])
        assert not read_mask(ann / "1" / "00010.png").any()
        raw = np.asarray(Image.open(ann / "2" / "00000.png"))
        assert set(np.unique(raw)) == {0, 1} and np.array_equal(raw == 1, masks[0])
    quiet_other = read_mask(tmp_path / "quiet" / "Annotations" / "v" / "0" / "00000.png")
    noisy_other = read_mask(tmp_path / "noisy" / "Annotations" / "v" / "0" / "00000.png")
    assert not quiet_other.any() and 0.2 < noisy_other.mean() < 0.4
