"""UNINEXT driver (rvos_kit.stages.rvos.infer.uninext): json generation against the published
conversion scripts, the train_net.py command line, the hard-coded-path table, and the
chunked dump handling.

The published train_net.py itself runs in tests/test_infer_uninext_upstream.py (both
backbones, on the CPU). Here the chunk loop is driven with a stand-in that receives the
exact argv and writes a dump in the published format, for what the real run cannot reach
cheaply: three chunks of uneven videos, a --videos subset, a failing run (its log kept, no
model folder), a modified upstream file; everything around it (json files, work folders,
dump -> masks + scores, cleanup) is the real code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rvos_kit.errors import KitError
from rvos_kit.stages.rvos.infer import uninext

PYTHON = sys.executable  # before any test swaps uninext.sys.executable
ARCHIVE = Path(__file__).resolve().parents[1] / "../shared/upstream"
TARBALL = "iccv2023_RVOS_Challenge-c538b0d.tar.gz"


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    """The published repository, unpacked from the shared archive (UNINEXT/ only)."""
    tar = ARCHIVE.resolve() / TARBALL
    if not tar.is_file():
        pytest.fail(f"{tar}: the shared upstream archive is missing")
    dest = tmp_path_factory.mktemp("upstream")
    with tarfile.open(tar) as tf:
        members = [m for m in tf.getmembers() if m.name.split("/")[1:2] == ["UNINEXT"]]
        tf.extractall(dest, members=members, filter="data")
    return dest / "iccv2023_RVOS_Challenge"


def _jpeg(path: Path, h: int, w: int, exif_orientation: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new("RGB", (w, h), (h % 255, w % 255, 7))
    if exif_orientation is None:
        im.save(path, quality=90)
    else:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        im.save(path, quality=90, exif=exif.tobytes())


def _dataset(root: Path) -> tuple[dict, dict]:
    """A Ref-YouTube-VOS-shaped folder with the split sizes the scripts assert: the valid
    meta lists 202 valid-only + 305 test videos, the test meta the 305. One JPEG per video
    (the first meta frame: all the scripts read), sizes varying; expressions 1-3 with
    non-ASCII text and out-of-order ids."""
    rng = np.random.default_rng(5)
    valid, test = {}, {}
    for i in range(507):
        vid = f"{rng.integers(0, 16**8):08x}{i:03d}"
        n_exp = int(rng.integers(1, 4))
        ids = [str(e) for e in range(n_exp)][::-1] if i % 7 == 0 else [str(e) for e in range(n_exp)]
        exps = {
            e: {"exp": f'the {["red", "café", "ñandú"][int(e) % 3]} thing {e} "q"'} for e in ids
        }
        frames = [f"{5 * j:05d}" for j in range(int(rng.integers(1, 5)))]
        entry = {"expressions": exps, "frames": frames}
        valid[vid] = entry
        split = "test" if i >= 202 else "valid"
        if split == "test":
            test[vid] = entry
        h, w = [(720, 1280), (1080, 1920), (480, 640), (360, 640)][i % 4]
        _jpeg(root / split / "JPEGImages" / vid / f"{frames[0]}.jpg", h // 40, w // 40)
    for split, videos in (("valid", valid), ("test", test)):
        p = root / "meta_expressions" / split / "meta_expressions.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps({"videos": videos}))
    return valid, test


def test_json_is_byte_identical_to_the_published_conversion_scripts(upstream, tmp_path):
    data = tmp_path / "ref-youtube-vos"
    valid, test = _dataset(data)
    for split, script in (("valid", "convert_refytvos2ytvis_val.py"),
                          ("test", "convert_refytvos2ytvis_test.py")):  # fmt: skip
        r = subprocess.run(
            [sys.executable, str(upstream / "UNINEXT/conversion" / script),
             "--data_dir", str(data)],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr[-2000:]
        theirs = (data / f"{split}.json").read_bytes()
        videos = {v: e for v, e in valid.items() if v not in test} if split == "valid" else test
        ours = uninext.json_bytes(uninext.conversion_json(videos, data / split / "JPEGImages"))
        assert ours == theirs, split
        # a chunk/shard file is the same entries, ids kept
        doc = json.loads(theirs)
        some = sorted(videos)[3:9]
        sub = uninext.subset(uninext.conversion_json(videos, data / split / "JPEGImages"), some)
        assert sub["videos"] == [e for e in doc["videos"] if e["video"] in some]
        assert sub["categories"] == doc["categories"]


def test_frame_size_follows_cv2_with_exif_orientation(tmp_path):
    import cv2

    for orientation in (None, 1, 3, 6, 8):
        p = tmp_path / f"o{orientation}.jpg"
        _jpeg(p, 12, 20, orientation)
        assert uninext.frame_size(p) == cv2.imread(str(p)).shape[:-1], orientation
    with pytest.raises(KitError, match="not found"):
        uninext.frame_size(tmp_path / "missing.jpg")


def test_command_line_overrides_only(upstream, tmp_path):
    argv = uninext.command_line("convnext", upstream, "/ck/convnext.pth", "/w/run", python="py")
    root = upstream / "UNINEXT"
    assert argv[:11] == ["py", "-m", uninext.CHILD, str(root / "projects/UNINEXT/train_net.py"),
                         "--num-gpus", "1", "--eval-only", "--uni", "1", "--config-file",
                         str(root / "projects/UNINEXT/configs/eval-vid/"
                             "video_joint_convnext_large_eval_rvos.yaml")]  # fmt: skip
    opts = argv[11:]
    assert dict(zip(opts[::2], opts[1::2], strict=True)) == {
        "DATASETS.TEST": '("rvos-refytb-val",)',
        "OUTPUT_DIR": "/w/run",
        "MODEL.WEIGHTS": "/ck/convnext.pth",
        "SEED": "42",
        "DATALOADER.NUM_WORKERS": "2",
    }
    assert "--resume" not in argv
    for model in uninext.MODELS:  # the configs exist at the pinned commit
        assert uninext.config_file(upstream, model).is_file()
    # the ytvis.py test.json path is one the config chain actually reads
    ytvis = (root / "projects/UNINEXT/uninext/data/datasets/ytvis.py").read_text()
    evaluator = (root / "detectron2/evaluation/evaluator.py").read_text()
    vid = (root / "projects/UNINEXT/uninext/uninext_vid.py").read_text()
    bert = (root / "projects/UNINEXT/uninext/models/deformable_detr/bert_model.py").read_text()
    assert f'"{uninext.DATASET_ROOT}/test.json"' in ytvis
    assert f'"{uninext.DATASET_ROOT}/test/JPEGImages"' in ytvis
    assert f'"{uninext.DUMP_DIR}/{uninext.DUMP_NAME}"' in evaluator
    assert f'"{uninext.BERT}"' in vid
    # bert_model.py formats the same folder with MODEL_TYPE = "bert-base-uncased"
    assert '"' + os.path.dirname(uninext.BERT) + '/%s"' in bert
    with pytest.raises(KitError, match="not a UNINEXT model"):
        uninext.command_line("soc", upstream, "c", "o")


def test_each_backbone_has_its_own_work_folder_and_mounts(tmp_path):
    a = uninext.container_mounts(tmp_path / "rvos/vit_huge", tmp_path / "pre")
    b = uninext.container_mounts(tmp_path / "rvos/convnext", tmp_path / "pre")
    dump_a = next(h for h, c, _ in a if c == uninext.DUMP_DIR)
    dump_b = next(h for h, c, _ in b if c == uninext.DUMP_DIR)
    assert dump_a != dump_b and "vit_huge" in dump_a and "convnext" in dump_b
    assert {c for _, c, _ in a} == {p for p, *_ in uninext.CONTAINER_PATHS}
    assert (str(tmp_path / "pre/bert-base-uncased"), uninext.BERT, "ro") in a
    # the work folder is beside the model folder, never inside it (DVC owns --out)
    assert not dump_a.startswith(str(tmp_path / "rvos/vit_huge") + "/")
    # natively the child maps each published path to where the mount would put it
    native = uninext.native_paths(tmp_path / "rvos/vit_huge", tmp_path / "pre")
    assert native == {c: h for h, c, _ in a}
    env = uninext.child_env(tmp_path / "up", native)
    assert json.loads(env[uninext.PATHS_ENV]) == native
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(tmp_path / "up/UNINEXT")
    assert uninext.PATHS_ENV not in uninext.child_env(tmp_path / "up")  # in a container


STAND_IN = r'''
"""Stand-in for UNINEXT's child + train_net.py: checks the argv, reads the chunk's test.json and
writes a dump in the published format ({video: {exp: {mask_logits: probs [T,H,W],
class_info: [T floats]}}}) where evaluator.py would."""
import json, os, sys
import torch
args = sys.argv[1:]
assert args[:2] == ["-m", "rvos_kit.stages.rvos.infer.uninext_child"], args
args = args[2:]
assert args[0].endswith("projects/UNINEXT/train_net.py"), args
assert args[1:7] == ["--num-gpus", "1", "--eval-only", "--uni", "1", "--config-file"], args
opts = dict(zip(args[8::2], args[9::2]))
assert opts["DATASETS.TEST"] == '("rvos-refytb-val",)' and opts["SEED"] == "42"
# bytecode only under the kit's work folder: no __pycache__ of the checked tree is read
work = os.path.dirname(os.environ["STAND_IN_DATASET"])
assert (sys.pycache_prefix or "").startswith(work + os.sep), sys.pycache_prefix
os.makedirs(opts["OUTPUT_DIR"])
doc = json.load(open(os.path.join(os.environ["STAND_IN_DATASET"], "test.json")))
out = {}
for e in doc["videos"]:
    g = torch.Generator().manual_seed(e["id"])
    probs = torch.rand(e["length"], e["height"], e["width"], generator=g)
    scores = torch.rand(e["length"], generator=g).tolist()
    out.setdefault(e["video"], {})[e["exp_id"]] = {"mask_logits": probs, "class_info": scores}
with open(os.environ["STAND_IN_CALLS"], "a") as f:
    f.write(json.dumps(sorted(out)) + "\n")
torch.save(out, os.path.join(os.environ["STAND_IN_DUMP"], "vit_huge.pth"))
'''


def _inputs(tmp_path: Path, videos: dict) -> dict:
    """Frames for every meta frame, a checkpoint file, a pretrained folder, the meta."""
    rng = np.random.default_rng(0)
    for vid, entry in videos.items():
        h, w = (int(x) for x in rng.integers(5, 12, size=2))
        for f in entry["frames"]:
            _jpeg(tmp_path / "JPEGImages" / vid / f"{f}.jpg", h, w)
    (tmp_path / "pre" / "bert-base-uncased").mkdir(parents=True, exist_ok=True)
    (tmp_path / "ckpt.pth").write_bytes(b"weights")
    (tmp_path / "meta.json").write_text(json.dumps({"videos": videos}))
    return dict(meta=tmp_path / "meta.json", images=tmp_path / "JPEGImages", split="test",
                checkpoint=tmp_path / "ckpt.pth", pretrained=tmp_path / "pre")  # fmt: skip


def _run_stand_in(upstream, tmp_path, out, inputs, chunk, monkeypatch, videos=None):
    from rvos_kit.stages.rvos.infer import infer_videos

    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    wrapper = tmp_path / "python"
    wrapper.write_text(f'#!/bin/sh\nexec {PYTHON} {script} "$@"\n')
    wrapper.chmod(0o755)
    work = uninext.work_dir(out)
    calls = tmp_path / f"calls-{len(list(tmp_path.glob('calls-*')))}.jsonl"
    monkeypatch.setenv("STAND_IN_DATASET", str(work / "dataset"))
    monkeypatch.setenv("STAND_IN_DUMP", str(work / "model_pth"))
    monkeypatch.setenv("STAND_IN_CALLS", str(calls))
    monkeypatch.setenv("RVOS_KIT_IN_CONTAINER", "1")  # the mounts are the runner's business
    monkeypatch.setattr(uninext.sys, "executable", str(wrapper))
    r = infer_videos("vit_huge", videos, upstream=upstream, out_dir=out, chunk=chunk, **inputs)
    return r, [json.loads(x) for x in calls.read_text().splitlines()]


def test_chunked_dump_handling(upstream, tmp_path, monkeypatch):
    from conftest import tree_bytes

    videos = {}
    for i, (n_exp, n_frames) in enumerate([(3, 2), (2, 3), (1, 2)]):
        frames = [f"{5 * j:05d}" for j in range(n_frames)]
        videos[f"v{i}"] = {"expressions": {str(e): {"exp": f"x{e}"} for e in range(n_exp)},
                           "frames": frames}  # fmt: skip
    inputs = _inputs(tmp_path, videos)
    one = tmp_path / "a/rvos/vit_huge"
    r, calls = _run_stand_in(upstream, tmp_path, one, inputs, 2, monkeypatch)
    assert r["videos"] == 3 and calls == [["v0", "v1"], ["v2"]]
    assert not uninext.work_dir(one).exists()  # scratch removed after success
    assert sorted(p.name for p in one.iterdir()) == [
        "Annotations", "Annotations_sigmoid_odd", "scores.json"]  # fmt: skip
    # masks == dump > 0.5, scores == class_info, the trailing odd expression's sigmoid tree
    import torch

    scores = json.loads((one / "scores.json").read_text())
    assert list(scores) == ["v0", "v1", "v2"]
    doc = uninext.conversion_json(videos, inputs["images"])
    for e in doc["videos"]:
        g = torch.Generator().manual_seed(e["id"])
        probs = torch.rand(e["length"], e["height"], e["width"], generator=g)
        assert scores[e["video"]][e["exp_id"]] == torch.rand(e["length"], generator=g).tolist()
        for t, frame in enumerate(videos[e["video"]]["frames"]):
            png = np.array(
                Image.open(one / "Annotations" / e["video"] / e["exp_id"] / f"{frame}.png")
            )
            assert np.array_equal(png == 255, (probs[t] > 0.5).numpy())
    odd = sorted(str(p.relative_to(one / "Annotations_sigmoid_odd")) for p in
                 (one / "Annotations_sigmoid_odd").glob("*/*"))  # fmt: skip
    assert odd == ["v0/2", "v2/0"]
    # one video per chunk: the same bytes; a subset of videos writes only those
    other = tmp_path / "b/rvos/vit_huge"
    _, calls = _run_stand_in(upstream, tmp_path, other, inputs, 1, monkeypatch)
    assert calls == [["v0"], ["v1"], ["v2"]]
    assert tree_bytes(one) == tree_bytes(other)
    part = tmp_path / "c/rvos/vit_huge"
    _run_stand_in(upstream, tmp_path, part, inputs, 5, monkeypatch, videos=["v1"])
    assert list(json.loads((part / "scores.json").read_text())) == ["v1"]


def test_refusals_leave_no_model_folder(upstream, tmp_path, monkeypatch):
    from rvos_kit.stages.rvos.infer import infer_videos

    inputs = _inputs(tmp_path, {"v0": {"expressions": {"0": {"exp": "a"}}, "frames": ["00000"]}})
    out = tmp_path / "rvos/vit_huge"
    monkeypatch.setenv("RVOS_KIT_IN_CONTAINER", "1")
    monkeypatch.setattr(uninext.sys, "executable", "/bin/false")
    with pytest.raises(KitError, match="exited with 1"):
        infer_videos("vit_huge", None, upstream=upstream, out_dir=out, **inputs)
    assert not out.exists()
    assert (uninext.work_dir(out) / "train_net.log").is_file()  # kept for the user
    # a modified upstream file is refused before anything runs
    ev = upstream / "UNINEXT/detectron2/evaluation/evaluator.py"
    saved = ev.read_bytes()
    try:
        ev.write_bytes(saved + b"\n")
        with pytest.raises(KitError, match="differs from the pinned commit"):
            infer_videos("vit_huge", None, upstream=upstream, out_dir=out, **inputs)
    finally:
        ev.write_bytes(saved)
    assert not out.exists()
