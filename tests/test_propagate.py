"""Propagation stage: the driver (output tree, key-frame copy, empty-key fallback, resume,
bad input) and the optical-flow backend (it must really track), on generated clips written
as real JPEG frames and PNG mask trees. The AOT/DeAOT networks: test_propagate_aot.py."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import tree_bytes
from PIL import Image

from rvos_kit.cli import main
from rvos_kit.errors import KitError
from rvos_kit.stages.propagate import make_backend, propagate
from rvos_kit.stages.propagate.flow_backend import FlowBackend
from rvos_kit.trees.masktree import encode_mask, read_mask
from rvos_kit.trees.synthetic import moving_object_clip, write_propagation_input

# ----------------------------------------------------------------- generated data


def write_png(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255, "L").save(path)


def make_dataset(root: Path, videos: dict, rng_seed: int = 7) -> dict:
    """Write ``root/{JPEGImages,Annotations,meta.json,key_frame.json}``.

    ``videos``: ``{name: {"size": (h, w), "frames": T, "step": (dx, dy), "exps":
    {exp_id: (k, kind)}}}`` with kind ``"true"`` (the key frame holds the true mask, the
    other frames random noise), ``"empty"`` (an empty key-frame mask) or ``"value"`` (the
    true mask stored with value 1, not 255). Returns ``{name: true masks}``."""
    clips = {}
    for vi, (name, spec) in enumerate(videos.items()):
        clip_rng = np.random.default_rng(vi)  # seeded by the video's index
        frames, masks = moving_object_clip(
            clip_rng, *spec["size"], spec["frames"], spec.get("step", (3, 2))
        )
        clips[name] = (frames, masks, spec["exps"])
    write_propagation_input(root, clips, noise_seed=rng_seed)
    return {name: masks for name, (_, masks, _) in clips.items()}


def cli_args(root: Path, out: Path, *extra: str) -> list[str]:
    return [
        "propagate",
        "--images",
        str(root / "JPEGImages"),
        "--annotations",
        str(root / "Annotations"),
        "--keyframes",
        str(root / "key_frame.json"),
        "--meta",
        str(root / "meta.json"),
        "--out",
        str(out),
        *extra,
    ]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


# The CLI runs a whole stage through Ray (rvos_kit.compute.scale): one local cluster per session.
pytestmark = pytest.mark.usefixtures("ray_cluster")


def run_cli(argv) -> int:
    return main(argv)


FLOW_CLIP = {
    # 9 frames, key frame in the middle: 4 steps forward and 4 backward.
    "walk": {"size": (192, 256), "frames": 9, "step": (3, 2), "exps": {"0": (4, "true")}},
    "diag": {"size": (192, 256), "frames": 9, "step": (-2, 3), "exps": {"0": (4, "true")}},
}


# ----------------------------------------------------------------------- flow
def test_flow_tracks_a_moving_object(tmp_path):
    truth = make_dataset(tmp_path, FLOW_CLIP)
    out = tmp_path / "out"
    assert run_cli(cli_args(tmp_path, out, "--backend", "flow", "--workers", "1")) == 0
    for vid, masks in truth.items():
        scores = []
        for t, true in enumerate(masks):
            got = read_mask(out / vid / "0" / f"{5 * t:05d}.png")
            scores.append(iou(got, true))
        # every frame tracked, 4 frames away from the key frame in both directions
        assert min(scores) >= 0.9, (vid, np.round(scores, 3))
        # the input's other frames (noise) are not what came out
        noise = read_mask(tmp_path / "Annotations" / vid / "0" / "00000.png")
        assert iou(noise, masks[0]) < 0.5


def test_flow_output_bytes_deterministic_and_parallel(tmp_path):
    make_dataset(tmp_path, FLOW_CLIP)
    a, b = tmp_path / "a", tmp_path / "b"
    assert run_cli(cli_args(tmp_path, a, "--backend", "flow", "--workers", "1")) == 0
    assert run_cli(cli_args(tmp_path, b, "--backend", "flow", "--workers", "2")) == 0
    ta, tb = tree_bytes(a), tree_bytes(b)
    assert ta == tb
    assert len(ta) == 2 * 9
    # every PNG is exactly what PIL writes for its pixels (the published bytes)
    for rel, data in ta.items():
        assert data == encode_mask(read_mask(a / rel)), rel


def test_flow_step_reverses_itself_on_a_static_clip(tmp_path):
    """No motion: the warp must return the mask unchanged (no drift, no erosion)."""
    make_dataset(
        tmp_path,
        {"still": {"size": (64, 96), "frames": 4, "step": (0, 0), "exps": {"0": (1, "true")}}},
    )
    out = tmp_path / "out"
    assert run_cli(cli_args(tmp_path, out, "--backend", "flow")) == 0
    key = read_mask(out / "still" / "0" / "00005.png")
    for f in ("00000", "00010", "00015"):
        assert np.array_equal(read_mask(out / "still" / "0" / f"{f}.png"), key)


# ------------------------------------------------------------------ the driver
MIXED = {
    "v1": {
        "size": (48, 64),
        "frames": 5,
        "exps": {"0": (2, "true"), "1": (0, "empty"), "2": (4, "value"), "3": (0, "true")},
    },
    "v2": {"size": (40, 56), "frames": 3, "exps": {"0": (1, "true")}},
}


def test_output_tree_contract(tmp_path):
    """Every frame written; key frame copied byte for byte; empty key frame -> input
    copied; a key mask stored as value 1 is the object ('nonzero'); no stray files."""
    make_dataset(tmp_path, MIXED)
    out = tmp_path / "out"
    assert run_cli(cli_args(tmp_path, out, "--backend", "flow")) == 0
    src = tmp_path / "Annotations"
    got = tree_bytes(out)
    assert sorted(got) == sorted(str(p.relative_to(src)) for p in src.rglob("*.png"))
    meta = json.loads((tmp_path / "meta.json").read_text())
    keys = json.loads((tmp_path / "key_frame.json").read_text())
    for vid, entry in meta["videos"].items():
        for e in entry["expressions"]:
            k = keys[vid][e]["index_info"]["class_index"]
            for t, f in enumerate(entry["frames"]):
                rel = f"{vid}/{e}/{f}.png"
                inp = (src / rel).read_bytes()
                if t == k or (vid, e) == ("v1", "1"):
                    assert got[rel] == inp, rel  # copied byte for byte
                else:
                    assert got[rel] != inp, rel  # propagated, not the input's noise
                    assert got[rel] == encode_mask(read_mask(out / rel))
    # the value-1 key mask was propagated as an object (frames next to it are not empty)
    assert read_mask(out / "v1" / "2" / "00015.png").sum() > 100
    assert not list(tmp_path.glob(".out.partial*"))


def test_resume_after_interruption(tmp_path, capsys):
    make_dataset(tmp_path, MIXED)
    full = tmp_path / "full"
    propagate(
        tmp_path / "JPEGImages",
        tmp_path / "Annotations",
        tmp_path / "key_frame.json",
        tmp_path / "meta.json",
        full,
        FlowBackend(),
        progress=False,
    )

    class Killed(FlowBackend):
        """Stops the run in the middle of the third propagated expression."""

        calls = 0

        def propagate(self, frames, k, ref, emit):
            Killed.calls += 1
            if Killed.calls == 3:
                super().propagate(frames, k, ref, lambda t, m: None)
                raise KeyboardInterrupt
            super().propagate(frames, k, ref, emit)

    out = tmp_path / "out"
    args = (tmp_path / "JPEGImages", tmp_path / "Annotations", tmp_path / "key_frame.json")
    with pytest.raises(KeyboardInterrupt):
        propagate(*args, tmp_path / "meta.json", out, Killed(), progress=False)
    staging = tmp_path / ".out.partial"
    assert not out.exists() and staging.is_dir()
    assert (tmp_path / ".out.partial.json").is_file()
    # a temp file left by a write killed half-way
    (staging / "v1" / "0" / ".00000.png.tmp-999").write_bytes(b"half")
    s = propagate(*args, tmp_path / "meta.json", out, FlowBackend(), progress=False)
    # v1/0 (propagated), v1/1 (empty key) and v1/2 were complete; v1/3 was cut short
    assert (s.resumed, s.propagated, s.copied_empty) == (3, 2, 0)
    assert tree_bytes(out) == tree_bytes(full)
    assert not staging.exists() and not (tmp_path / ".out.partial.json").exists()

    # an interrupted run with other settings is not reused
    Killed.calls = 0
    out2 = tmp_path / "out2"
    with pytest.raises(KeyboardInterrupt):
        propagate(*args, tmp_path / "meta.json", out2, Killed(preset="fast"), progress=False)
    s = propagate(*args, tmp_path / "meta.json", out2, FlowBackend(), progress=False)
    assert s.resumed == 0 and "starting afresh" in capsys.readouterr().err
    assert tree_bytes(out2) == tree_bytes(full)


def _expect_error(capsys, argv, *needles):
    assert run_cli(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]  # after the progress bar, if work had started
    assert line.startswith("rvos-kit propagate: error: "), err
    for n in needles:
        assert n in line, line
    return line


def test_bad_inputs_fail_cleanly(tmp_path, capsys):
    make_dataset(tmp_path, MIXED)
    out = tmp_path / "out"
    flow = ("--backend", "flow")

    jpg = tmp_path / "JPEGImages" / "v2" / "00005.jpg"
    jpg.rename(jpg.with_suffix(".bak"))
    _expect_error(capsys, cli_args(tmp_path, out, *flow), "00005.jpg", "frame missing")
    jpg.with_suffix(".bak").rename(jpg)

    jpg.write_bytes(b"not a jpeg")
    _expect_error(capsys, cli_args(tmp_path, out, *flow), "00005.jpg", "cannot decode")
    assert not out.exists() and not list(tmp_path.glob(".out.partial*"))

    # a frame of another size than the masks
    cv2.imwrite(str(jpg), np.zeros((20, 30, 3), np.uint8))
    _expect_error(capsys, cli_args(tmp_path, out, *flow), "30x20", "same size")
    assert not out.exists() and not list(tmp_path.glob(".out.partial*"))

    extra = tmp_path / "Annotations" / "v2" / "0" / "00099.png"
    Image.fromarray(np.zeros((40, 56), np.uint8), "L").save(extra)
    _expect_error(capsys, cli_args(tmp_path, out, *flow), "00099.png")
    extra.unlink()

    keys = json.loads((tmp_path / "key_frame.json").read_text())
    keys["v2"]["0"]["index_info"]["class_index"] = 3
    (tmp_path / "kf.json").write_text(json.dumps(keys))
    argv = cli_args(tmp_path, out, *flow)
    argv[argv.index("--keyframes") + 1] = str(tmp_path / "kf.json")
    _expect_error(capsys, argv, "key frame 3", "outside")

    inside = tmp_path / "Annotations" / "result"
    _expect_error(capsys, cli_args(tmp_path, inside, *flow), "overlaps")
    _expect_error(capsys, cli_args(tmp_path, out, *flow, "--checkpoint", "x.pth"), "aot/deaot only")
    _expect_error(capsys, cli_args(tmp_path, out, "--backend", "aot"), "--checkpoint")
    _expect_error(
        capsys,
        cli_args(tmp_path, out, "--backend", "aot", "--model", "deaott", "--random-weights", "0"),
        "not an AOT model",
    )
    assert not out.exists()


def test_help_and_backend_factory():
    with pytest.raises(SystemExit) as e:
        main(["propagate", "--help"])
    assert e.value.code == 0
    with pytest.raises(KitError, match="unknown backend"):
        make_backend("sam")
    with pytest.raises(KitError, match="preset"):
        make_backend("flow", preset="slow")
