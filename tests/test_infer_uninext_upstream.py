"""UNINEXT's published ``projects/UNINEXT/train_net.py`` itself, run by ``rvos-kit infer``
on the CPU with random weights (issue 20): ``vit_huge`` and ``convnext`` with their
published configs, from the shared archive of the pinned commit, unmodified, in the
upstream environment (``.venv-upstream``, with UNINEXT's detectron2 built from the archive
by ``make``), driven from outside (:mod:`rvos_kit.stages.rvos.infer.uninext_child`).

Inputs (``tests/uninext_fixtures.py``; the weights: ``rvos-kit smoke-weights``, the
session's ``random_weights``, shared with test_smoke.py), per backbone: two videos of
48x48 frames (convnext: two frames, the first video with two expressions and the second
with one, so quirk 9.1's odd tree is not empty; vit_huge: one frame and one expression
each, as ViT-H costs ~16 s of CPU per frame here), a tiny random BERT in the ``bert-
base-uncased`` layout, and ``{"model": state_dict}`` of the model ``train_net.py``
builds, random from a fixed seed.

Per backbone: run 1, one chunk (``--chunk-videos 2``), keeping the dump the published
evaluator saved; for convnext also run 2, ``--chunk-videos 1`` (two ``train_net.py``
processes; the chunking is the kit's code, the same for both backbones, and each ViT-H
process costs ~40 s of load and build here). Both model
folders sit side by side under one ``rvos/`` folder. Asserts: every meta frame present;
each mask == the dump's probability ``> 0.5`` (as ``soc_test/test_swap_*.py`` L109-144
binarise ``vit_huge``/``convnext``); ``scores.json`` == ``class_info``;
``Annotations_sigmoid_odd/`` == ``sigmoid(p) > 0.5`` for the trailing odd expression only;
run 2 == run 1 byte for byte and its peak RSS (per chunk) not above run 1's (convnext);
the two backbones' work folders are distinct and gone.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import UPSTREAM_PYTHON, tree_bytes
from uninext_fixtures import write_video_data

from rvos_kit.stages.rvos.infer import uninext
from rvos_kit.trees.masktree import check_tree, read_mask
from rvos_kit.trees.meta import load_meta

MODELS = ("convnext", "vit_huge")
SMALL = ("vit_huge",)  # one frame, one expression per video: ~16 s of CPU per ViT-H frame
# Run 2 (one chunk per video) for these only: the chunking is the kit's code, the same for
# both backbones; each further ViT-H train_net.py process costs ~40 s here (5.24 GB loaded).
CHUNKED = ("convnext",)

# Runs a command; prints its peak RSS in kB (the largest of it and every descendant it
# waited for: the kit and each train_net.py process).
PEAK = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.run(sys.argv[1:]).returncode\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(rc)\n"
)


def _run(cmd, cwd: Path, what: str) -> tuple[str, int]:
    """Run a child under PEAK; return 'wall/cpu seconds' and its peak RSS in kB."""
    t0, c0 = time.monotonic(), resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(
        [sys.executable, "-c", PEAK, *[str(c) for c in cmd]],
        cwd=cwd, capture_output=True, text=True,
    )  # fmt: skip
    if r.returncode != 0:
        pytest.fail(f"{what} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}")
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime
    peak = int(r.stderr.strip().splitlines()[-1])
    return f"{time.monotonic() - t0:.0f}s wall/{cpu:.0f}s cpu", peak


@pytest.fixture(scope="module")
def rvos(tmp_path_factory):
    """One parent for both backbones' model folders (and so their work folders), and what
    each run left there: ``{model: tree bytes}``."""
    return tmp_path_factory.mktemp("both") / "rvos", {}


@pytest.fixture(scope="module", params=MODELS)
def model_run(request, upstream, rvos, random_weights, tmp_path_factory):
    model, d = request.param, tmp_path_factory.mktemp(request.param)
    parent, trees = rvos
    times, peaks = {}, {}
    t0 = time.monotonic()
    write_video_data(d, model in SMALL)
    w = random_weights(model)  # shared with test_smoke.py: made once per session
    ckpt = w / "checkpoint.pth"
    times["fixtures"] = f"{time.monotonic() - t0:.0f}s wall"
    base = [UPSTREAM_PYTHON, "-m", "rvos_kit", "infer", "--model", model,
            "--meta", d / "meta.json", "--images", d / "JPEGImages", "--split", "valid",
            "--upstream", upstream, "--checkpoint", ckpt, "--pretrained", w / "pretrained",
            "--device", "cpu"]  # fmt: skip
    try:
        one, two = parent / model, d / "chunked" / "rvos" / model
        times["one chunk"], peaks["one chunk"] = _run(
            [*base, "--out", one, "--chunk-videos", "2", "--keep-dumps", d / f"dumps-{model}"],
            d, "rvos-kit infer (one chunk)",
        )  # fmt: skip
        if model in CHUNKED:
            times["two chunks"], peaks["two chunks"] = _run(
                [*base, "--out", two, "--chunk-videos", "1"], d, "rvos-kit infer (two chunks)"
            )
    finally:
        if model in SMALL:  # vit_huge's 5.24 GB, which test_smoke.py does not run
            random_weights.drop(model)
    rss = ", ".join(f"{k} {v / 1024**2:.2f} GB" for k, v in peaks.items())
    print(f"\n{model}: " + ", ".join(f"{k} {v}" for k, v in times.items()) + f"; peak RSS {rss}")
    trees[model] = tree_bytes(one)
    return model, d, one, peaks


def test_every_meta_frame_is_in_the_model_folder(model_run):
    model, d, one, _ = model_run
    meta = load_meta(d / "meta.json")
    assert {p.name for p in one.iterdir()} == {
        "Annotations", "Annotations_sigmoid_odd", "scores.json"}  # fmt: skip
    check_tree(one / "Annotations", meta)


def test_masks_scores_and_odd_tree_are_the_published_evaluators_dump(model_run):
    model, d, one, _ = model_run
    meta = load_meta(d / "meta.json")
    scores = json.loads((one / "scores.json").read_text())
    assert list(scores) == [v.name for v in meta]
    (dump_file,) = sorted((d / f"dumps-{model}").iterdir())  # one chunk: one train_net.py run
    dump = torch.load(dump_file, weights_only=True)
    assert list(dump) == [v.name for v in meta]  # sorted videos, as the evaluator merged them
    odd = {(v.name, v.exp_ids[-1]) for v in meta if len(v.exp_ids) % 2}
    assert odd  # the fixtures make at least one: the tree is checked, not just empty
    fg = []
    for v in meta:
        assert list(dump[v.name]) == list(v.exp_ids)
        for e, entry in dump[v.name].items():
            p = entry["mask_logits"]  # sigmoid probabilities (uninext_vid.py L1345)
            assert p.dtype == torch.float32 and tuple(p.shape) == (len(v.frames), 48, 48)
            assert 0 <= float(p.min()) and float(p.max()) <= 1
            assert scores[v.name][e] == entry["class_info"]
            assert len(entry["class_info"]) == len(v.frames)
            for t, frame in enumerate(v.frames):
                want = (p[t] > 0.5).numpy()
                got = read_mask(one / "Annotations" / v.name / e / f"{frame}.png")
                assert np.array_equal(got, want), (v.name, e, frame)
                fg.append(want.mean())
                odd_png = one / "Annotations_sigmoid_odd" / v.name / e / f"{frame}.png"
                if (v.name, e) in odd:
                    want_odd = (torch.sigmoid(p[t]) > 0.5).numpy()
                    assert np.array_equal(read_mask(odd_png), want_odd), (v.name, e, frame)
                else:
                    assert not odd_png.exists()
    assert 0 < np.mean(fg) < 1, fg  # random weights still give both labels: a real comparison


def _chunked(model: str) -> None:
    if model not in CHUNKED:
        pytest.skip(f"run 2 (one chunk per video) runs for {', '.join(CHUNKED)} only")


def test_one_chunk_per_video_gives_the_same_bytes(model_run):
    model, d, one, _ = model_run
    _chunked(model)
    assert tree_bytes(d / "chunked" / "rvos" / model) == tree_bytes(one)


def test_peak_memory_does_not_grow_with_the_number_of_chunks(model_run):
    model, *_, peaks = model_run
    _chunked(model)
    assert peaks["two chunks"] <= peaks["one chunk"] * 1.02, peaks


def test_backbones_work_apart(model_run, rvos):
    """Both model folders share one parent: distinct work folders (upstream names both
    dumps vit_huge.pth), each removed after its run, and no run touched another's model
    folder (each is still what its own run wrote, which its own dump checks above)."""
    parent, trees = rvos
    works = {uninext.work_dir(parent / m) for m in MODELS}
    assert len(works) == len(MODELS)
    assert not any(w.exists() for w in works)
    # what is left: the model folders and the kit's marker of each (.<name>.rvos-kit)
    assert {p.name for p in parent.iterdir()} == set(trees) | {f".{m}.rvos-kit" for m in trees}
    for m, tree in trees.items():
        assert tree_bytes(parent / m) == tree, m
