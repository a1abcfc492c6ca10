"""Stage-1/stage-2 vote: byte-identical to a straightforward implementation of contract
sections 6 and 7."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import make_meta_dict, make_tree, tree_bytes, write_meta
from PIL import Image

from rvos_kit.cli import main
from rvos_kit.errors import KitError
from rvos_kit.stages.fusion import VoteRule, vote
from rvos_kit.trees.meta import parse_meta
from rvos_kit.trees.staging import MARK, mark_path


# ------------------------------------------------------------- reference implementation
# Written from the spec's words, independently of rvos_kit: sorted glob, PIL convert('P')
# == 255, float32 sums, Image.fromarray(float32 * 255).convert('L').save().
def ref_read_expression(folder: Path) -> list[np.ndarray]:
    paths = sorted(glob.glob(str(folder / "*.png")))
    return [np.array(Image.open(p).convert("P")) == 255 for p in paths]


def ref_save(mask: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.float32) * 255).convert("L").save(path)


def ref_vote(sources, meta_dict, out: Path, pair_thr, odd, odd_thr=None, odd_from=None):
    for vid, entry in meta_dict["videos"].items():
        exps = list(entry["expressions"])
        frames = entry["frames"]
        for i in range(0, len(exps), 2):
            if i + 1 < len(exps):
                pair = exps[i : i + 2]
                masks = [ref_read_expression(s / vid / e) for s in sources for e in pair]
                for t, f in enumerate(frames):
                    total = np.zeros(masks[0][t].shape, np.float32)
                    for m in masks:
                        total += m[t].astype(np.float32)
                    for e in pair:
                        ref_save(total >= pair_thr, out / vid / e / f"{f}.png")
            else:
                e = exps[i]
                if odd == "first":
                    key = ref_read_expression((odd_from or sources[0]) / vid / e)
                    for t, f in enumerate(frames):
                        ref_save(key[t], out / vid / e / f"{f}.png")
                else:
                    masks = [ref_read_expression(s / vid / e) for s in sources]
                    for t, f in enumerate(frames):
                        total = sum(m[t].astype(np.float32) for m in masks)
                        ref_save(total >= odd_thr, out / vid / e / f"{f}.png")


# ------------------------------------------------------------------------------ fixtures
EXP_COUNTS = [1, 2, 3, 4, 5]
SIZES = {"vid000": (17, 23), "vid001": (40, 64), "vid002": (33, 31), "vid003": (8, 8)}


def build_sources(tmp_path: Path, n_sources: int, exp_counts=EXP_COUNTS, n_frames=4):
    meta_dict = make_meta_dict(exp_counts, n_frames=n_frames)
    meta_path = write_meta(tmp_path / "meta.json", meta_dict)
    sources = [
        make_tree(tmp_path / f"src{i}", meta_dict, seed=10 + i, sizes=SIZES, density=0.1)
        for i in range(n_sources)
    ]
    return meta_dict, meta_path, sources


# --------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("workers", [1, 2])
def test_stage2_byte_identical_to_reference(tmp_path, workers):
    meta_dict, meta_path, sources = build_sources(tmp_path, 4)
    ref_vote(sources, meta_dict, tmp_path / "ref", pair_thr=4, odd="vote", odd_thr=3)
    rc = main(
        [
            "vote",
            "--meta",
            str(meta_path),
            "--out",
            str(tmp_path / "out"),
            "--workers",
            str(workers),
            *map(str, sources),
        ]
    )
    assert rc == 0
    ours, ref = tree_bytes(tmp_path / "out"), tree_bytes(tmp_path / "ref")
    assert len(ref) == sum(EXP_COUNTS) * 4
    assert ours.keys() == ref.keys()
    assert ours == ref
    # The vote is not trivial: fused masks differ from every source somewhere.
    assert any(ours[k] != (sources[0] / k).read_bytes() for k in ours)


def test_stage1_odd_first_byte_identical(tmp_path):
    meta_dict, meta_path, sources = build_sources(tmp_path, 3)
    ref_vote(sources, meta_dict, tmp_path / "ref", pair_thr=3, odd="first")
    rc = main(
        [
            "vote",
            "--meta",
            str(meta_path),
            "--out",
            str(tmp_path / "out"),
            "--pair-threshold",
            "3",
            "--odd",
            "first",
            *map(str, sources),
        ]
    )
    assert rc == 0
    assert tree_bytes(tmp_path / "out") == tree_bytes(tmp_path / "ref")


def test_stage1_odd_from_quirk_tree(tmp_path):
    """Quirk 9.1: odd expressions read from the key model's sigmoid(p) > 0.5 tree, which
    only holds the trailing odd expressions."""
    meta_dict, meta_path, sources = build_sources(tmp_path, 3)
    odd_meta = {"videos": {}}
    for vid, entry in meta_dict["videos"].items():
        exps = list(entry["expressions"])
        if len(exps) % 2:
            odd_meta["videos"][vid] = {
                "expressions": {exps[-1]: {}},
                "frames": entry["frames"],
            }
    quirk = make_tree(tmp_path / "quirk", odd_meta, seed=99, sizes=SIZES, density=0.9)
    ref_vote(sources, meta_dict, tmp_path / "ref", pair_thr=3, odd="first", odd_from=quirk)
    rc = main(
        [
            "vote",
            "--meta",
            str(meta_path),
            "--out",
            str(tmp_path / "out"),
            "--pair-threshold",
            "3",
            "--odd",
            "first",
            "--odd-from",
            str(quirk),
            *map(str, sources),
        ]
    )
    assert rc == 0
    ours = tree_bytes(tmp_path / "out")
    assert ours == tree_bytes(tmp_path / "ref")
    assert ours["vid002/2/00000.png"] == (quirk / "vid002/2/00000.png").read_bytes()


def test_pairing_none_votes_each_expression_alone(tmp_path):
    meta_dict, meta_path, sources = build_sources(tmp_path, 3, exp_counts=[2, 3])
    vote(
        sources,
        tmp_path / "out",
        parse_meta(meta_dict),
        VoteRule(pairing="none", odd_threshold=2),
        progress=False,
    )
    for vid, entry in meta_dict["videos"].items():
        for e in entry["expressions"]:
            masks = [ref_read_expression(s / vid / e) for s in sources]
            got = ref_read_expression(tmp_path / "out" / vid / e)
            for t in range(len(entry["frames"])):
                want = (masks[0][t].astype(int) + masks[1][t] + masks[2][t]) >= 2
                assert np.array_equal(got[t], want)


def test_meta_inferred_from_first_source(tmp_path):
    meta_dict, _, sources = build_sources(tmp_path, 4, exp_counts=[3, 12])
    # numeric expression order: "10" after "9", not after "1"
    ref_vote(sources, meta_dict, tmp_path / "ref", pair_thr=4, odd="vote", odd_thr=3)
    assert main(["vote", "--out", str(tmp_path / "out"), *map(str, sources)]) == 0
    assert tree_bytes(tmp_path / "out") == tree_bytes(tmp_path / "ref")


def test_fast_encoder_same_pixels_different_bytes(tmp_path):
    meta_dict, meta_path, sources = build_sources(tmp_path, 4, exp_counts=[2, 3])
    meta = parse_meta(meta_dict)
    vote(sources, tmp_path / "pil", meta, progress=False)
    vote(sources, tmp_path / "fast", meta, VoteRule(encoder="fast"), progress=False)
    pil, fast = tree_bytes(tmp_path / "pil"), tree_bytes(tmp_path / "fast")
    assert pil.keys() == fast.keys()
    assert any(pil[k] != fast[k] for k in pil)
    for k in pil:
        a = np.array(Image.open(tmp_path / "pil" / k))
        b = np.array(Image.open(tmp_path / "fast" / k))
        assert Image.open(tmp_path / "fast" / k).mode == "L"
        assert np.array_equal(a, b)


def test_foreground_rules_on_other_producers(tmp_path):
    """Value 128 is background under the published rule, object under 'nonzero'; a
    palette PNG is refused under the published rule (defined for 8-bit grey only) and
    read by index under 'nonzero' (DAVIS style: index 1 = the object)."""
    meta_dict = make_meta_dict([1], n_frames=1)
    meta = parse_meta(meta_dict)
    d = tmp_path / "src" / "vid000" / "0"
    d.mkdir(parents=True)
    arr = np.zeros((4, 6), np.uint8)
    arr[0, :3] = 128
    arr[1, :] = 255
    Image.fromarray(arr, "L").save(d / "00000.png")
    vote(
        [tmp_path / "src"],
        tmp_path / "a",
        meta,
        VoteRule(pair_threshold=1, odd_threshold=1),
        progress=False,
    )
    vote(
        [tmp_path / "src"],
        tmp_path / "b",
        meta,
        VoteRule(pair_threshold=1, odd_threshold=1, foreground="nonzero"),
        progress=False,
    )
    a = np.array(Image.open(tmp_path / "a/vid000/0/00000.png"))
    b = np.array(Image.open(tmp_path / "b/vid000/0/00000.png"))
    assert a.sum() == 6 * 255 and b.sum() == 9 * 255
    pal = Image.fromarray(np.where(arr == 255, 1, 0).astype(np.uint8), "P")
    pal.putpalette([0, 0, 0, 200, 0, 0])
    pal.save(d / "00000.png")
    with pytest.raises(KitError, match=r"00000.png: .*mode P.*--foreground nonzero"):
        vote([tmp_path / "src"], tmp_path / "c", meta,
             VoteRule(pair_threshold=1, odd_threshold=1), progress=False)  # fmt: skip
    vote(
        [tmp_path / "src"],
        tmp_path / "c",
        meta,
        VoteRule(pair_threshold=1, odd_threshold=1, foreground="nonzero"),
        progress=False,
    )
    c = np.array(Image.open(tmp_path / "c/vid000/0/00000.png"))
    assert np.array_equal(c, (arr == 255).astype(np.uint8) * 255)


# ---------------------------------------------------------------------------- errors
def _run_expect_error(capsys, argv, *needles):
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if "error:" in line] == [err.splitlines()[-1]]
    for n in needles:
        assert n in err, err
    return err


@pytest.mark.parametrize(
    "damage,needles",
    [
        ("missing_png", ["src2/vid001/1/00005.png", "missing"]),
        ("extra_png", ["src1/vid003/2/00099.png", "not a frame"]),
        ("missing_exp", ["src3/vid002/2", "expression folder missing"]),
        ("size", ["src2/vid001/0/00010.png", "differs"]),
        ("corrupt", ["src1/vid004/4/00000.png", "PNG"]),
    ],
)
def test_bad_input_one_clear_error_nothing_written(tmp_path, capsys, damage, needles):
    meta_dict, meta_path, sources = build_sources(tmp_path, 4)
    out = tmp_path / "out"
    (out / "old").mkdir(parents=True)
    (out / "old" / "keep.txt").write_text("previous result")
    mark_path(out).write_text(MARK)  # a previous output of the kit
    if damage == "missing_png":
        (sources[2] / "vid001/1/00005.png").unlink()
    elif damage == "extra_png":
        Image.new("L", (23, 17)).save(sources[1] / "vid003/2/00099.png")
    elif damage == "missing_exp":
        for p in (sources[3] / "vid002/2").iterdir():
            p.unlink()
        (sources[3] / "vid002/2").rmdir()
    elif damage == "size":
        Image.new("L", (5, 5)).save(sources[2] / "vid001/0/00010.png")
    elif damage == "corrupt":
        p = sources[1] / "vid004/4/00000.png"
        p.write_bytes(p.read_bytes()[:40])
    before = {i: tree_bytes(s) for i, s in enumerate(sources)}
    argv = ["vote", "--meta", str(meta_path), "--out", str(out), *map(str, sources)]
    _run_expect_error(capsys, argv, *needles)
    # the previous output is untouched, nothing staged is left, inputs unchanged
    assert tree_bytes(out) == {"old/keep.txt": b"previous result"}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == [".out.rvos-kit"]
    assert {i: tree_bytes(s) for i, s in enumerate(sources)} == before


def test_argument_errors(tmp_path, capsys):
    meta_dict, meta_path, sources = build_sources(tmp_path, 2, exp_counts=[2])
    s = list(map(str, sources))
    _run_expect_error(
        capsys,
        ["vote", "--out", str(tmp_path / "o"), "--pair-threshold", "5", *s],
        "pair threshold 5 is outside 1..4",
    )
    _run_expect_error(
        capsys, ["vote", "--out", str(sources[0] / "x"), "--odd-threshold", "1", *s], "overlaps"
    )
    _run_expect_error(
        capsys,
        ["vote", "--out", str(tmp_path / "o"), "--odd-from", s[0], *s],
        "--odd-from only applies",
    )
    _run_expect_error(
        capsys,
        ["vote", "--meta", str(tmp_path / "nope.json"), "--out", str(tmp_path / "o"), *s],
        "nope.json",
        "not found",
    )
    with pytest.raises(KitError, match="odd threshold 3 is outside 1..2"):
        vote(sources, tmp_path / "o", rule=VoteRule(odd_threshold=3), progress=False)


def test_kill_during_vote_then_rerun_is_identical(tmp_path):
    """SIGKILL in the middle of a vote: no truncated PNG anywhere, the output root does not
    exist, and a re-run gives exactly the bytes of an uninterrupted run."""
    meta_dict, meta_path, sources = build_sources(tmp_path, 4, exp_counts=[2, 3] * 6, n_frames=30)
    clean = tmp_path / "clean"
    vote(sources, clean, parse_meta(meta_dict), progress=False)
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "rvos_kit",
        "vote",
        "--workers",
        "1",
        "--meta",
        str(meta_path),
        "--out",
        str(out),
        *map(str, sources),
    ]
    proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    deadline = time.time() + 60
    staging = tmp_path / f".out.partial-{proc.pid}"  # per-run staging name
    while time.time() < deadline:
        if staging.exists() and sum(1 for _ in staging.rglob("*.png")) > 200:
            break
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists(), "the vote finished before it could be killed; enlarge the tree"
    written = list(staging.rglob("*.png"))
    assert 0 < len(written) < sum([2, 3] * 6) * 30
    for p in written:  # every visible PNG is complete
        with Image.open(p) as im:
            im.load()
    assert main(cmd[3:]) == 0
    assert tree_bytes(out) == tree_bytes(clean)
    assert not staging.exists()


def test_realistic_masks_with_empty_and_repeated_frames(tmp_path):
    """Masks like real model output (the bench's wavy blobs, PIL default settings: None,
    Sub, Up and Paeth rows), with frames empty in every source, empty in one source, and
    repeated byte for byte (the caches' cases): byte-identical to the reference."""
    from test_pngcodec import load_bench

    bench = load_bench()
    sources, meta_path = bench.make_data(tmp_path / "in", 2, 3, 6, 4, h=180, w=320, seed=5)
    meta_dict = json.loads(meta_path.read_text())
    empty = np.zeros((180, 320), np.uint8)
    for s in sources:
        for e in ("0", "1", "2"):
            d = s / "v000" / e
            Image.fromarray(empty, "L").save(d / "00010.png")  # empty everywhere
            (d / "00015.png").write_bytes((d / "00005.png").read_bytes())  # repeated frame
    Image.fromarray(empty, "L").save(sources[2] / "v001" / "1" / "00020.png")
    assert {0, 1, 2, 4} <= set(
        bench.filter_mix(p.read_bytes() for s in sources for p in s.rglob("*.png"))
    )
    ref_vote(sources, meta_dict, tmp_path / "ref", pair_thr=4, odd="vote", odd_thr=3)
    vote(sources, tmp_path / "out", parse_meta(meta_dict), workers=2, progress=False)
    assert tree_bytes(tmp_path / "out") == tree_bytes(tmp_path / "ref")
