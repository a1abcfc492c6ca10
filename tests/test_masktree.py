"""Mask-tree I/O: PIL-identical bytes, the published read rule, atomic writes, meta checks."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from conftest import make_meta_dict, make_tree
from PIL import Image

from rvos_kit.errors import KitError
from rvos_kit.trees.masktree import (
    StagedTree,
    atomic_write_bytes,
    decode_mask,
    encode_mask,
    expression_files,
    png_size,
    read_mask,
    write_mask,
)
from rvos_kit.trees.meta import infer_meta, parse_meta


@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (720, 1280)])
def test_encode_matches_published_writer(shape, rng):
    m = rng.random(shape) > 0.7
    buf = io.BytesIO()
    Image.fromarray(m.astype(np.float32) * 255).convert("L").save(buf, "PNG")
    assert encode_mask(m) == buf.getvalue()
    assert encode_mask(m.astype(np.uint8) * 255) == buf.getvalue()
    assert np.array_equal(decode_mask(encode_mask(m, "fast")), m)


def test_decode_equals_published_reader_for_all_values(tmp_path):
    """OpenCV fast path == np.array(Image.open(p).convert('P')) == 255 for every L value."""
    arr = np.arange(256, dtype=np.uint8).reshape(16, 16)
    p = tmp_path / "m.png"
    Image.fromarray(arr, "L").save(p)
    want = np.array(Image.open(p).convert("P")) == 255
    assert np.array_equal(read_mask(p), want) and want.sum() == 1
    assert np.array_equal(read_mask(p, "nonzero"), arr != 0)
    assert png_size(p) == (16, 16)
    Image.fromarray(arr, "L").convert("1").save(p)  # bilevel: convert('P') gives 0/255
    assert np.array_equal(read_mask(p), np.array(Image.open(p).convert("P")) == 255)
    for mode in ("RGB", "LA", "RGBA", "P", "I;16"):  # the published rule misreads these
        Image.fromarray(arr, "L").convert(mode).save(p)
        with pytest.raises(KitError, match=f"m.png: mask PNG is PIL mode {re.escape(mode)}"):
            read_mask(p)


def test_bad_png_named(tmp_path):
    p = tmp_path / "x.png"
    p.write_bytes(b"hello")
    with pytest.raises(KitError, match="x.png: not a PNG"):
        read_mask(p)
    with pytest.raises(KitError, match="y.png: mask PNG not found"):
        read_mask(tmp_path / "y.png")


def test_atomic_write_leaves_no_temp(tmp_path):
    p = tmp_path / "a.png"
    write_mask(p, np.ones((3, 3), bool))
    atomic_write_bytes(p, b"new")
    assert p.read_bytes() == b"new"
    assert [q.name for q in tmp_path.iterdir()] == ["a.png"]


def test_expression_files_by_name_not_position(tmp_path):
    meta_dict = make_meta_dict([1], n_frames=3)
    make_tree(tmp_path / "t", meta_dict)
    v = parse_meta(meta_dict).videos[0]
    files = expression_files(tmp_path / "t", v, "0")
    assert [f.name for f in files] == ["00000.png", "00005.png", "00010.png"]
    (tmp_path / "t/vid000/0/00010.png").rename(tmp_path / "t/vid000/0/00011.png")
    with pytest.raises(KitError, match="00010.png: missing"):
        expression_files(tmp_path / "t", v, "0")


def test_staged_tree_commits_or_leaves_old(tmp_path):
    out = tmp_path / "out"
    with StagedTree(out) as s:
        (s.path / "a").write_text("1")
    assert (out / "a").read_text() == "1"
    with pytest.raises(KitError):
        with StagedTree(out) as s:
            (s.path / "b").write_text("2")
            raise KitError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.rvos-kit", "out"]  # the mark
    assert [p.name for p in out.iterdir()] == ["a"]
    with StagedTree(out) as s:
        (s.path / "c").write_text("3")
    assert [p.name for p in out.iterdir()] == ["c"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.rvos-kit", "out"]  # the mark


def test_infer_meta_numeric_order(tmp_path):
    meta_dict = make_meta_dict([11], n_frames=2)
    make_tree(tmp_path / "t", meta_dict)
    m = infer_meta(tmp_path / "t")
    assert m.videos[0].exp_ids == tuple(str(i) for i in range(11))
    assert m.videos[0].frames == ("00000", "00005")
    with pytest.raises(KitError, match="mask tree not found"):
        infer_meta(tmp_path / "nope")


def test_fast_decoder_detects_corruption(rng):
    m = (rng.random((50, 60)) < 0.5).astype(np.uint8) * 255
    data = bytearray(encode_mask(m))
    data[60] ^= 0xFF  # inside IDAT: CRC mismatch -> OpenCV path -> error
    with pytest.raises(KitError, match="corrupt or truncated"):
        decode_mask(bytes(data), "m.png")
    with pytest.raises(KitError, match="corrupt or truncated"):
        decode_mask(encode_mask(m)[:-30], "m.png")
