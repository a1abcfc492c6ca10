"""import-zip (real zip archives, zip-slip guards) and import-pth (real torch dumps, the
exact spec-3 binarisation, the 9.1 odd-expression tree, split chunks, peak memory)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_meta_dict, make_tree, tree_bytes, write_meta
from PIL import Image

from rvos_kit.cli import main
from rvos_kit.errors import KitError
from rvos_kit.stages.rvos.dumps import import_pth, odd_expressions
from rvos_kit.trees.meta import load_meta
from rvos_kit.trees.staging import MARK, mark_path


def published_png(mask: np.ndarray) -> bytes:
    """What the published scripts write for a binary mask (contract section 2)."""
    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.float32) * 255).convert("L").save(buf, "PNG")
    return buf.getvalue()


# ----------------------------------------------------------------------------- import-zip
def zip_tree(zpath: Path, root: Path, prefix: str, extra=()) -> Path:
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in extra:
            zf.writestr(name, data)
        for p in sorted(root.rglob("*.png")):
            zf.writestr(prefix + p.relative_to(root).as_posix(), p.read_bytes())
    return zpath


@pytest.fixture
def tree(tmp_path):
    meta = make_meta_dict([2, 1], n_frames=3)
    return make_tree(tmp_path / "src", meta, size=(12, 16)), write_meta(
        tmp_path / "meta.json", meta
    )


@pytest.mark.parametrize("prefix", ["", "Annotations/", "test/soc/Annotations/", "./Annotations/"])
def test_import_zip_any_nesting_gives_the_canonical_tree(tmp_path, tree, prefix):
    src, meta = tree
    junk = [
        ("__MACOSX/Annotations/._x.png", b"junk"),
        (prefix + "key_frame.json", b"{}"),
        (prefix + "vid000/.DS_Store", b"junk"),
    ]
    z = zip_tree(tmp_path / "a.zip", src, prefix, junk)
    out = tmp_path / "out"
    assert main(["import-zip", str(z), "--out", str(out), "--meta", str(meta)]) == 0
    assert tree_bytes(out) == tree_bytes(src)
    assert not list(tmp_path.glob(".out.partial"))


def test_import_zip_backslash_names(tmp_path, tree):
    """Zips written on Windows sometimes use backslashes: still the same tree."""
    src, _ = tree
    z = tmp_path / "w.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for p in sorted(src.rglob("*.png")):
            zf.writestr(
                "Annotations\\" + str(p.relative_to(src)).replace("/", "\\"), p.read_bytes()
            )
    assert main(["import-zip", str(z), "--out", str(tmp_path / "out")]) == 0
    assert tree_bytes(tmp_path / "out") == tree_bytes(src)


def _symlink_entry(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = 0o120777 << 16
    return info, target.encode()


@pytest.mark.parametrize(
    "evil",
    [
        "../evil.png",
        "Annotations/vid000/0/../../../../evil.png",
        "/tmp/evil/vid000/0/00000.png",
        "C:/evil/vid000/0/00000.png",
        "..\\..\\evil.png",
        "symlink",
    ],
)
def test_import_zip_refuses_zip_slip(tmp_path, tree, evil):
    src, _ = tree
    z = tmp_path / "evil.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for p in sorted(src.rglob("*.png")):
            zf.writestr("Annotations/" + p.relative_to(src).as_posix(), p.read_bytes())
        if evil == "symlink":
            zf.writestr(*_symlink_entry("Annotations/vid001/0/00015.png", "/etc/passwd"))
        else:
            zf.writestr(evil, b"\x89PNG")
    out = tmp_path / "work" / "out"
    out.mkdir(parents=True)
    (out / "keep.txt").write_text("previous tree")
    with pytest.raises(KitError, match="refusing the archive"):
        from rvos_kit.stages.rvos.released import import_zip

        import_zip(z, out)
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["out"]  # no staging left
    assert (out / "keep.txt").read_text() == "previous tree"
    assert not (tmp_path / "evil.png").exists()
    assert main(["import-zip", str(z), "--out", str(out)]) == 2


def test_import_zip_several_trees_needs_inner(tmp_path, tree, capsys):
    src, meta = tree
    z = tmp_path / "two.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for p in sorted(src.rglob("*.png")):
            rel = p.relative_to(src).as_posix()
            zf.writestr("soc/Annotations/" + rel, p.read_bytes())
            zf.writestr("soc/Annotations_AOT_class_index/" + rel, b"not this one")
    out = tmp_path / "out"
    assert main(["import-zip", str(z), "--out", str(out)]) == 2
    assert "--inner" in capsys.readouterr().err and not out.exists()
    args = ["import-zip", str(z), "--out", str(out), "--inner", "soc/Annotations", "--meta"]
    assert main([*args, str(meta)]) == 0
    assert tree_bytes(out) == tree_bytes(src)


def test_import_zip_meta_mismatch_leaves_previous_tree(tmp_path, tree, capsys):
    src, meta = tree
    (src / "vid000" / "1" / "00005.png").unlink()  # a frame missing in the archive
    z = zip_tree(tmp_path / "a.zip", src, "Annotations/")
    out = tmp_path / "out"
    out.mkdir()
    (out / "old").write_text("x")
    mark_path(out).write_text(MARK)  # a previous output of the kit
    assert main(["import-zip", str(z), "--out", str(out), "--meta", str(meta)]) == 2
    assert "00005.png: missing" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["old"]
    assert not list(tmp_path.glob(".out.partial*"))


def test_import_zip_not_an_annotations_archive(tmp_path):
    z = tmp_path / "flat.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("00000.png", b"\x89PNG")
    with pytest.raises(KitError, match="not inside <video>/<exp_id>/"):
        from rvos_kit.stages.rvos.released import import_zip

        import_zip(z, tmp_path / "out")
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(KitError, match="not a readable zip"):
        import_zip(tmp_path / "junk.zip", tmp_path / "out")


# ----------------------------------------------------------------------------- import-pth
def make_dump(meta_dict, kind, seed=0, size=(6, 8), boundary=True, class_info="list"):
    """{video: {exp: {"mask_logits": [T,H,W] float32, "class_info": [T]}}} with a few
    values on the spec-3 boundaries."""
    g = torch.Generator().manual_seed(seed)
    dump = {}
    for vid, entry in meta_dict["videos"].items():
        dump[vid] = {}
        for e in entry["expressions"]:
            T = len(entry["frames"])
            if kind == "logits":
                x = torch.randn(T, *size, generator=g) * 3
                if boundary:  # > 0, but sigmoid(x) rounds to exactly 0.5 in float32
                    x[0, 0, :4] = torch.tensor([1e-9, 1e-8, -1e-9, 0.0])
            else:
                x = torch.rand(T, *size, generator=g)
                if boundary:  # exactly 0.5 is background; sigmoid(tiny) == 0.5
                    x[0, 0, :4] = torch.tensor([0.5, 1e-9, 0.0, 0.3])
            ci = torch.rand(T, generator=g)
            ci = {"list": ci.tolist(), "tensor": ci, "numpy": [np.float32(v) for v in ci]}[
                class_info
            ]
            dump[vid][e] = {"mask_logits": x, "class_info": ci}
    return dump


def expected_masks(dump, kind):
    out = {}
    for vid, exps in dump.items():
        for e, r in exps.items():
            x = r["mask_logits"]
            m = torch.sigmoid(x.float()) > 0.5 if kind == "logits" else x > 0.5
            out[vid, e] = m.numpy()
    return out


def check_tree_bytes(root: Path, meta_dict, masks: dict):
    n = 0
    for vid, entry in meta_dict["videos"].items():
        for e in entry["expressions"]:
            files = sorted(p.name for p in (root / vid / e).iterdir())
            assert files == [f + ".png" for f in entry["frames"]]
            for t, f in enumerate(entry["frames"]):
                assert (root / vid / e / f"{f}.png").read_bytes() == published_png(masks[vid, e][t])
                n += 1
    return n


def test_import_pth_logits_sigmoid_not_x_gt_0(tmp_path):
    meta_d = make_meta_dict([2, 3], n_frames=3)
    meta = write_meta(tmp_path / "meta.json", meta_d)
    dump = make_dump(meta_d, "logits")
    torch.save(dump, tmp_path / "soc.pth")
    out = tmp_path / "soc"
    args = ["import-pth", str(tmp_path / "soc.pth"), "--kind", "logits", "--out", str(out)]
    assert main([*args, "--meta", str(meta)]) == 0
    masks = expected_masks(dump, "logits")
    assert check_tree_bytes(out / "Annotations", meta_d, masks) == 15
    # the boundary: 1e-9 and 1e-8 are > 0 but background under sigmoid(x) > 0.5
    first = np.asarray(Image.open(out / "Annotations" / "vid000" / "0" / "00000.png"))
    assert first[0, :4].tolist() == [0, 0, 0, 0]
    assert (dump["vid000"]["0"]["mask_logits"][0, 0, :2] > 0).all()
    assert not (out / "Annotations_sigmoid_odd").exists()
    scores = json.loads((out / "scores.json").read_text())
    assert list(scores) == ["vid000", "vid001"] and list(scores["vid001"]) == ["0", "1", "2"]
    for vid, exps in dump.items():
        for e, r in exps.items():
            assert scores[vid][e] == r["class_info"]  # the same Python floats


def test_import_pth_probabilities_and_odd_sigmoid_tree(tmp_path):
    meta_d = make_meta_dict([3, 2, 1], n_frames=2)
    meta = write_meta(tmp_path / "meta.json", meta_d)
    dump = make_dump(meta_d, "probabilities", seed=1, class_info="tensor")
    torch.save(dump, tmp_path / "vit.pth")
    out = tmp_path / "vit_huge"
    import_pth([tmp_path / "vit.pth"], "probabilities", out, load_meta(meta))
    (out / "Annotations_sigmoid_odd" / "stale").mkdir()  # replaced with the whole folder
    r = import_pth([tmp_path / "vit.pth"], "probabilities", out, load_meta(meta))
    assert r == {"videos": 3, "masks": 12, "odd": 2}
    check_tree_bytes(out / "Annotations", meta_d, expected_masks(dump, "probabilities"))
    first = np.asarray(Image.open(out / "Annotations" / "vid000" / "0" / "00000.png"))
    assert first[0, :4].tolist() == [0, 0, 0, 0]  # 0.5 itself is not > 0.5

    odd = out / "Annotations_sigmoid_odd"
    assert odd_expressions(load_meta(meta)) == {("vid000", "2"), ("vid002", "0")}
    got = sorted(p.relative_to(odd).as_posix() for p in odd.rglob("*.png"))
    assert got == [
        f"{v}/{e}/{f}.png"
        for v, e in (("vid000", "2"), ("vid002", "0"))
        for f in ("00000", "00005")
    ]
    for vid, e in (("vid000", "2"), ("vid002", "0")):
        p = dump[vid][e]["mask_logits"]
        for t, f in enumerate(("00000", "00005")):
            want = (torch.sigmoid(p[t].float()) > 0.5).numpy()
            assert (odd / vid / e / f"{f}.png").read_bytes() == published_png(want)
    # the quirk in numbers: sigmoid(p) > 0.5 for every p above ~6e-8, so nearly all pixels
    m = np.asarray(Image.open(odd / "vid002" / "0" / "00000.png"))
    assert m[0, :4].tolist() == [255, 0, 0, 255]  # 0.5 -> on, 1e-9 -> off, 0 -> off, 0.3 -> on
    p = dump["vid002"]["0"]["mask_logits"]
    assert (m == 255).sum() == int((torch.sigmoid(p[0]) > 0.5).sum()) > (p[0] > 0.5).sum()
    scores = json.loads((out / "scores.json").read_text())
    assert scores["vid000"]["0"] == dump["vid000"]["0"]["class_info"].double().tolist()

    # a logit import into the same folder drops the (probability-only) odd tree
    torch.save(make_dump(meta_d, "logits"), tmp_path / "l.pth")
    import_pth([tmp_path / "l.pth"], "logits", out, load_meta(meta))
    assert not odd.exists()


def test_import_pth_split_chunks_equal_one_dump(tmp_path):
    meta_d = make_meta_dict([1, 2, 3, 2, 1], n_frames=2)
    meta = load_meta(write_meta(tmp_path / "meta.json", meta_d))
    dump = make_dump(meta_d, "logits", seed=3, class_info="numpy")
    torch.save(dump, tmp_path / "all.pth")
    vids = sorted(dump)
    chunks = [vids[0:2], vids[2:3], vids[3:]]
    paths = []
    for i, c in enumerate(chunks):
        paths.append(tmp_path / f"soc{i}.pth")
        torch.save({v: dump[v] for v in c}, paths[-1])
    import_pth([tmp_path / "all.pth"], "logits", tmp_path / "one", meta)
    import_pth(paths[::-1], "logits", tmp_path / "split", meta)
    assert tree_bytes(tmp_path / "one") == tree_bytes(tmp_path / "split")

    # a video in two chunks is an error; so is a missing chunk
    torch.save({vids[2]: dump[vids[2]]}, tmp_path / "dup.pth")
    with pytest.raises(KitError, match="also in"):
        import_pth([*paths, tmp_path / "dup.pth"], "logits", tmp_path / "x", meta)
    with pytest.raises(KitError, match="pass every split chunk"):
        import_pth(paths[:2], "logits", tmp_path / "x", meta)
    assert not (tmp_path / "x").exists()


def test_import_pth_bad_dumps_are_clear_errors(tmp_path, capsys):
    meta_d = make_meta_dict([2, 1], n_frames=3)
    meta_p = write_meta(tmp_path / "meta.json", meta_d)
    meta = load_meta(meta_p)
    out = tmp_path / "m"
    (out / "Annotations").mkdir(parents=True)
    (out / "Annotations" / "old").write_text("previous")
    mark_path(out).write_text(MARK)  # a previous output of the kit

    def fails(dump, match):
        torch.save(dump, tmp_path / "d.pth")
        with pytest.raises(KitError, match=match):
            import_pth([tmp_path / "d.pth"], "logits", out, meta)
        assert (out / "Annotations" / "old").read_text() == "previous"

    good = make_dump(meta_d, "logits")
    short = make_dump(make_meta_dict([2, 1], n_frames=2), "logits")
    fails({**good, "vid000": short["vid000"]}, "has 2 frames but meta lists 3")
    fails({**good, "vid001": {}}, "lacks expression '0'")
    fails({**good, "zzz": good["vid000"]}, "not in meta")
    bad_ci = {"vid000": {**good["vid000"], "1": {**good["vid000"]["1"], "class_info": [1.0]}}}
    fails({**good, **bad_ci}, "class_info has 1 scores")
    nan = {"mask_logits": good["vid001"]["0"]["mask_logits"], "class_info": [float("nan")] * 3}
    fails({**good, "vid001": {"0": nan}}, "class_info holds nan")
    fails(
        {**good, "vid001": {"0": {"mask_logits": torch.zeros(3, 4)}}}, r"float tensor \[T, H, W\]"
    )

    # not loadable with weights_only: refused, with the reason
    torch.save(
        {"vid000": {"0": {"mask_logits": torch.zeros(3, 2, 2), "class_info": Path("x")}}},
        tmp_path / "obj.pth",
    )
    args = ["import-pth", str(tmp_path / "obj.pth"), "--kind", "logits", "--out", str(out)]
    assert main([*args, "--meta", str(meta_p)]) == 2
    assert "weights_only" in capsys.readouterr().err
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(KitError, match="cannot be memory-mapped"):
        import_pth([tmp_path / "junk.pth"], "logits", out, meta)


PEAK_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch, tqdm, PIL.PngImagePlugin  # imported before the baseline
    from rvos_kit.stages.rvos.dumps import import_pth
    from rvos_kit.trees.meta import load_meta

    def status_kb(key):  # VmHWM: peak RSS of this process image (ru_maxrss survives exec)
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith(key + ":"))

    meta = load_meta(sys.argv[1])
    torch.zeros(4, 4).sigmoid()  # warm up the kernels before the baseline
    base = status_kb("VmRSS")
    import_pth(sys.argv[3:], "logits", sys.argv[2], meta)
    print(json.dumps({"base_kb": base, "peak_kb": status_kb("VmHWM")}))
    """
)


def measure_import_peak(tmp_path, meta_path, dumps) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            PEAK_SCRIPT,
            str(meta_path),
            str(tmp_path / "out"),
            *map(str, dumps),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc, ru_maxrss in kB")
def test_import_pth_peak_memory_stays_far_below_dump_size(tmp_path):
    """A ~130 MB dump (36 frames of 720x1280 float32): the import's peak RSS grows by a
    few frames, not by the dump (mmap + per-frame page release)."""
    n_frames, h, w = 6, 720, 1280
    meta_d = make_meta_dict([2, 2, 2], n_frames=n_frames)
    meta = write_meta(tmp_path / "meta.json", meta_d)
    yy = torch.linspace(-4, 4, h)[:, None]
    xx = torch.linspace(-4, 4, w)[None, :]
    dump = {
        vid: {
            e: {
                "mask_logits": torch.stack(
                    [yy * (1 + t) + torch.sin(xx * (k + 1)) * 2 for t in range(n_frames)]
                ),
                "class_info": [0.1 * t for t in range(n_frames)],
            }
            for k, e in enumerate(entry["expressions"])
        }
        for vid, entry in meta_d["videos"].items()
    }
    torch.save(dump, tmp_path / "big.pth")
    del dump
    size_mb = (tmp_path / "big.pth").stat().st_size / 2**20
    assert size_mb > 120
    r = measure_import_peak(tmp_path, meta, [tmp_path / "big.pth"])
    growth_mb = (r["peak_kb"] - r["base_kb"]) / 1024
    assert growth_mb < 40, (growth_mb, size_mb)  # reading it all would add ~130 MB
    assert len(list((tmp_path / "out" / "Annotations").rglob("*.png"))) == 36
