"""`rvos-kit infer` in the kit's own environment: the upstream check against the shared
archive, video selection and shards, and the model-folder writer fed by a synthetic
driver that writes dumps in the published format (the real upstream code runs in
tests/test_infer_upstream.py, in its own environment)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
from conftest import make_meta_dict, tree_bytes, write_meta
from PIL import Image

from rvos_kit.catalog import ModelRow
from rvos_kit.cli import main
from rvos_kit.errors import KitError
from rvos_kit.stages.rvos.infer import core, infer_videos, merge_shards, shard_videos
from rvos_kit.stages.rvos.infer.upstream import PINNED_COMMIT, git_blob_id, verify_upstream
from rvos_kit.trees.masktree import read_mask


def test_git_blob_id_matches_git(tmp_path):
    p = tmp_path / "f.py"
    p.write_bytes(b"print('x')\n\0binary")
    got = subprocess.run(["git", "hash-object", str(p)], capture_output=True, text=True)
    assert git_blob_id(p) == got.stdout.strip()


def test_verify_upstream_blob_ids(upstream, tmp_path):
    assert "match" in verify_upstream(upstream, ("soc_test", "MUTR"))
    # one byte changed in one needed file: refused, naming it
    f = upstream / "MUTR" / "opts.py"
    orig = f.read_bytes()
    try:
        f.write_bytes(orig + b"\n")
        with pytest.raises(KitError, match="MUTR/opts.py differs"):
            verify_upstream(upstream, ("MUTR",))
        verify_upstream(upstream, ("soc_test",))  # other codebases unaffected
        f.unlink()
        with pytest.raises(KitError, match="MUTR/opts.py is missing"):
            verify_upstream(upstream, ("MUTR",))
    finally:
        f.write_bytes(orig)
    with pytest.raises(KitError, match="no UNINEXT/ folder"):
        verify_upstream(tmp_path, ("UNINEXT",))


def test_verify_upstream_git_head(tmp_path):
    (tmp_path / "MUTR").mkdir()
    (tmp_path / "MUTR" / "a.py").write_text("x = 1\n")
    git = ["git", "-C", str(tmp_path)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"],
                   check=True)  # fmt: skip
    with pytest.raises(KitError, match=f"not the pinned commit {PINNED_COMMIT[:12]}"):
        verify_upstream(tmp_path, ("MUTR",))


def test_shards_partition_in_order():
    names = [f"v{i}" for i in range(7)]
    for n in (1, 2, 3, 7, 9):
        parts = [shard_videos(names, i, n) for i in range(1, n + 1)]
        assert sum(parts, []) == names
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    with pytest.raises(KitError):
        shard_videos(names, 0, 3)


# ----------------------------------------------------------------- synthetic driver
def _logits(video: str, exp_id: str, t: int, h: int, w: int) -> torch.Tensor:
    seed = int.from_bytes(hashlib.sha256(f"{video}/{exp_id}/{t}".encode()).digest()[:4], "big")
    g = torch.Generator().manual_seed(seed)
    return torch.randn(h, w, generator=g) * 3


def fake_driver(kind_of_output="logits", drop=None, calls=None):
    """A driver module that writes, per chunk, a dump in the published format."""
    mod = types.ModuleType("rvos_kit.stages.rvos.infer._fake")

    def run(req, videos, out):
        for part in core.chunks(videos, req.chunk):
            if calls is not None:
                calls.append([v.name for v in part])
            dump = {}
            for v in part:
                if v.name == drop:
                    continue
                w, h = Image.open(req.images / v.name / f"{v.frames[0]}.jpg").size
                dump[v.name] = {}
                for e in v.exp_ids:
                    x = torch.stack([_logits(v.name, e, t, h, w) for t in range(len(v.frames))])
                    if kind_of_output == "probabilities":
                        x = x.sigmoid()
                    dump[v.name][e] = {"mask_logits": x, "class_info": x.mean((1, 2)).tolist()}
            path = req.work / f"chunk-{part[0].name}.pth"
            torch.save(dump, path)
            out.add_dump(path)

    mod.run = run
    return mod


@pytest.fixture
def fake(monkeypatch):
    def install(kind="logits", **kw):
        mod = fake_driver(kind, **kw)
        monkeypatch.setitem(sys.modules, "rvos_kit.stages.rvos.infer._fake", mod)
        row = ModelRow("fake", kind, "_fake", "", upstream=("soc_test",))
        monkeypatch.setitem(core.MODELS, "fake", row)
        return mod

    return install


@pytest.fixture
def data(tmp_path):
    meta = make_meta_dict([1, 3, 2, 1], n_frames=3)
    meta_path = write_meta(tmp_path / "meta.json", meta)
    images = tmp_path / "JPEGImages"
    for i, (vid, entry) in enumerate(meta["videos"].items()):
        (images / vid).mkdir(parents=True)
        for f in entry["frames"]:
            Image.new("RGB", (20 + i, 12)).save(images / vid / f"{f}.jpg")
    ckpt = tmp_path / "ckpt.pth"
    ckpt.write_bytes(b"x")
    (tmp_path / "pretrained").mkdir()
    return types.SimpleNamespace(meta=meta_path, meta_dict=meta, images=images, ckpt=ckpt,
                                 pretrained=tmp_path / "pretrained", tmp=tmp_path)  # fmt: skip


def _run(d, upstream, out, videos=None, model="fake", **kw):
    return infer_videos(
        model, videos, meta=d.meta, images=d.images, split="valid", upstream=upstream,
        checkpoint=d.ckpt, pretrained=d.pretrained, out_dir=out, device="cpu", **kw,
    )  # fmt: skip


@pytest.mark.parametrize("kind", ["logits", "probabilities"])
def test_model_folder_matches_dump_and_shards_merge_byte_identical(fake, data, upstream, kind):
    fake(kind)
    keep = data.tmp / "dumps"
    r = _run(data, upstream, data.tmp / "one", chunk=2, keep_dumps=keep)
    assert r["videos"] == 4 and r["masks"] == 7 * 3
    one = data.tmp / "one"
    want = {"Annotations", "scores.json"} | (
        {"Annotations_sigmoid_odd"} if kind != "logits" else set()
    )
    assert {p.name for p in one.iterdir()} == want
    # masks == binarised dump, scores == class_info, in meta order
    scores = json.loads((one / "scores.json").read_text())
    assert list(scores) == list(data.meta_dict["videos"])
    for vid, entry in data.meta_dict["videos"].items():
        for e in entry["expressions"]:
            x = torch.stack(
                [_logits(vid, e, t, 12, 20 + list(scores).index(vid)) for t in range(3)]
            )
            p = x.sigmoid()
            assert scores[vid][e] == (p if kind != "logits" else x).mean((1, 2)).tolist()
            for t, f in enumerate(entry["frames"]):
                got = read_mask(one / "Annotations" / vid / e / f"{f}.png")
                assert np.array_equal(got, (p[t] > 0.5).numpy())
    # every chunk's dump was handed over (kept here), 4 videos in chunks of 2
    assert sorted(p.name for p in keep.iterdir()) == ["chunk-vid000.pth", "chunk-vid002.pth"]
    # three shards, merged == one run, byte for byte; a second run too
    shards = []
    for i in (1, 2, 3):
        names = [v for v in shard_videos(list(data.meta_dict["videos"]), i, 3)]
        _run(data, upstream, data.tmp / f"s{i}", videos=names)
        shards.append(data.tmp / f"s{i}")
    merge_shards(shards, data.meta, data.tmp / "merged")
    assert tree_bytes(data.tmp / "merged") == tree_bytes(one)
    _run(data, upstream, data.tmp / "again", chunk=3)
    assert tree_bytes(data.tmp / "again") == tree_bytes(one)


def test_chunks_bound_each_worker_call(fake, data, upstream):
    calls = []
    fake(calls=calls)
    _run(data, upstream, data.tmp / "o", chunk=1)
    assert calls == [[v] for v in data.meta_dict["videos"]]


def test_missing_video_in_dump_writes_nothing(fake, data, upstream):
    fake(drop="vid002")
    out = data.tmp / "o"
    with pytest.raises(KitError, match="no dump for 1 of the 4 videos.*vid002"):
        _run(data, upstream, out)
    assert not out.exists() and not list(data.tmp.glob(".o*"))


def test_refuses_bad_inputs(fake, data, upstream):
    fake()
    (data.images / "vid001" / "00005.jpg").unlink()
    with pytest.raises(KitError, match="vid001/00005.jpg: frame missing"):
        _run(data, upstream, data.tmp / "o")
    with pytest.raises(KitError, match="--videos: 'nope' is not in meta"):
        _run(data, upstream, data.tmp / "o", videos=["nope"])
    foreign = data.tmp / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("keep me")
    with pytest.raises(KitError, match="not a model folder the kit wrote"):
        _run(data, upstream, foreign, videos=["vid000"])
    assert (foreign / "thesis.tex").read_text() == "keep me"
    with pytest.raises(KitError, match="not available yet|unknown model"):
        _run(data, upstream, data.tmp / "o", model="nope")


def test_upstream_checked_before_driver_runs(fake, data, upstream, tmp_path):
    calls = []
    fake(calls=calls)
    (tmp_path / "empty-upstream").mkdir()
    with pytest.raises(KitError, match="no soc_test/ folder"):
        _run(data, tmp_path / "empty-upstream", data.tmp / "o")
    assert calls == []


def test_cli_shard_and_merge(fake, data, upstream, monkeypatch, capsys):
    fake()
    fake = dataclasses.replace(core.MODELS["soc"], driver="_fake")
    monkeypatch.setitem(core.MODELS, "soc", fake)
    common = ["--model", "soc", "--meta", str(data.meta), "--images", str(data.images),
              "--split", "test", "--upstream", str(upstream), "--checkpoint", str(data.ckpt),
              "--pretrained", str(data.pretrained), "--device", "cpu"]  # fmt: skip
    for i in (1, 2):
        assert main(["infer", *common, "--shard", f"{i}/2", "--out", str(data.tmp / f"c{i}")]) == 0
    assert main(["infer", *common, "--shard", "1/1", "--out", str(data.tmp / "all")]) == 0
    assert main(["infer-merge", str(data.tmp / "c1"), str(data.tmp / "c2"), "--meta",
                 str(data.meta), "--out", str(data.tmp / "m")]) == 0  # fmt: skip
    assert tree_bytes(data.tmp / "m") == tree_bytes(data.tmp / "all")
    # merging an incomplete set of shards is refused
    assert main(["infer-merge", str(data.tmp / "c1"), "--meta", str(data.meta), "--out",
                 str(data.tmp / "m2")]) == 2  # fmt: skip
    assert "hold no video" in capsys.readouterr().err


def test_merge_refuses_inconsistent_shards(fake, data, upstream):
    """infer-merge of shards that overlap or hold junk: a video in a second shard's tree
    with other PNGs (not in its scores.json), a stray file among the PNGs or beside the
    trees, a truncated scores list. Each is refused naming the shard(s); nothing is
    written."""
    fake()
    names = list(data.meta_dict["videos"])  # vid000 .. vid003
    _run(data, upstream, data.tmp / "s1", videos=names[:2])
    _run(data, upstream, data.tmp / "s2", videos=names[2:])
    merge_shards([data.tmp / "s1", data.tmp / "s2"], data.meta, data.tmp / "good")

    def overlap(s1, s2):  # s2 also holds vid000, with other masks
        shutil.copytree(s1 / "Annotations" / "vid000", s2 / "Annotations" / "vid000")
        png = s2 / "Annotations" / "vid000" / "0" / "00000.png"
        png.write_bytes((s2 / "Annotations" / "vid002" / "0" / "00000.png").read_bytes())

    def truncate(s1, s2):
        scores = json.loads((s2 / "scores.json").read_text())
        scores["vid002"]["1"] = scores["vid002"]["1"][:-1]
        (s2 / "scores.json").write_text(json.dumps(scores))

    def notes(s1, s2):
        (s2 / "Annotations" / "vid002" / "0" / "notes.txt").write_text("x")

    cases = {
        "overlap": (overlap, r"video 'vid000' is in two shards, \S*/s1 .* and \S*/s2"),
        "notes": (notes, r"shard \S*/s2 \(Annotations/\).* 1 not in meta .*vid002/0/notes.txt"),
        "beside": (
            lambda s1, s2: (s1 / "notes.txt").write_text("x"),
            r"s1/notes.txt: not part of a model folder",
        ),  # fmt: skip
        "truncated": (truncate, r"s2/scores.json: vid002/1 holds 2 scores, not 3"),
    }
    for tag, (damage, needle) in cases.items():
        s1, s2 = data.tmp / f"{tag}1", data.tmp / f"{tag}2"
        shutil.copytree(data.tmp / "s1", s1)
        shutil.copytree(data.tmp / "s2", s2)
        damage(s1, s2)
        out = data.tmp / f"out-{tag}"
        needle = needle.replace("s1", f"{tag}1").replace("s2", f"{tag}2")
        with pytest.raises(KitError, match=needle):
            merge_shards([s1, s2], data.meta, out)
        assert not out.exists() and not list(data.tmp.glob(f".out-{tag}*")), tag


# ----------------------------------------------------------------- infer.msda (issue 22)
def test_msda_path_follows_the_device_unless_given(fake, data, upstream):
    """Absent: the pure-PyTorch reference on the CPU (as before) and the compiled op on a
    GPU; --msda pytorch takes the reference anywhere; compiled on the CPU is refused
    before anything runs."""
    seen = []
    mod = fake()
    real = mod.run
    mod.run = lambda req, videos, out: (seen.append(req.msda_path), real(req, videos, out))
    _run(data, upstream, data.tmp / "a")
    _run(data, upstream, data.tmp / "b", msda="pytorch")
    assert tree_bytes(data.tmp / "a") == tree_bytes(data.tmp / "b")
    with pytest.raises(KitError, match="--msda compiled needs --device cuda"):
        _run(data, upstream, data.tmp / "c", msda="compiled")
    with pytest.raises(KitError, match="unknown msda path 'cuda'"):
        _run(data, upstream, data.tmp / "c", msda="cuda")
    assert seen == ["pytorch", "pytorch"] and not (data.tmp / "c").exists()
    paths = dict.fromkeys(("images", "upstream", "checkpoint", "pretrained"), data.tmp)
    req = core.Request(model="soc", meta=None, meta_videos={}, split="test", **paths)
    assert req.msda_path == "compiled"  # device cuda, no msda
    req.msda = "pytorch"
    assert req.msda_path == "pytorch"


def test_msda_pytorch_reaches_the_swin_drivers_and_the_uninext_child(monkeypatch, tmp_path):
    from rvos_kit.stages.rvos.infer import msda_cpu, swin, uninext, uninext_child

    name = "MultiScaleDeformableAttention"
    monkeypatch.setitem(sys.modules, name, None)  # restored after the test
    monkeypatch.setattr(msda_cpu, "_root", None)
    monkeypatch.setattr(msda_cpu, "_functions", msda_cpu._functions)
    swin._install_msda("pytorch", tmp_path)
    assert sys.modules[name] is msda_cpu and msda_cpu._root == tmp_path.resolve()
    monkeypatch.setitem(sys.modules, name, None)  # `import` of a None entry fails
    with pytest.raises(KitError, match="--msda pytorch"):
        swin._install_msda("compiled", tmp_path)
    uninext_child.pytorch_msda(tmp_path)
    assert sys.modules[name] is msda_cpu and msda_cpu._functions == uninext_child.MSDA_FUNCTIONS
    assert uninext.MSDA_ENV == uninext_child.MSDA_ENV
    monkeypatch.setenv(uninext.MSDA_ENV, "pytorch")  # a stale value never leaks to a child
    assert uninext.MSDA_ENV not in uninext.child_env(tmp_path)
    assert uninext.MSDA_ENV not in uninext.child_env(tmp_path, msda="compiled")
    assert uninext.child_env(tmp_path, msda="pytorch")[uninext.MSDA_ENV] == "pytorch"
