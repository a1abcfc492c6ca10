"""``rvos-kit audit-engine`` (contract section 5.7) on generated data: a "released" DeAOT tree
made by the kit under one --engine setting is recognised as that setting, with key frames
read off the two trees. Real deaotpy networks (DeAOT-T, random weights from a fixed seed)
on the CPU; the released tree is the kit's own output, standing in for the authors'."""

from __future__ import annotations

import json

import pytest
from conftest import tree_bytes
from test_propagate import make_dataset

from rvos_kit.cli import main
from rvos_kit.errors import KitError
from rvos_kit.pipeline.engine_audit import key_frames_from_copies
from rvos_kit.stages.propagate import make_backend, propagate
from rvos_kit.trees.meta import load_meta

torch = pytest.importorskip("torch")

VIDEOS = {
    "v1": {"size": (36, 52), "frames": 7, "exps": {"0": (3, "true"), "1": (6, "true"),
                                                  "2": (2, "empty")}},
    "v2": {"size": (40, 56), "frames": 4, "exps": {"0": (0, "true")}},
}  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("truth", ["published_aot_fork", "aot_benchmark"])
def test_the_engine_that_made_the_tree_is_named(tmp_path, truth, capsys):
    make_dataset(tmp_path, VIDEOS)
    released = tmp_path / "released"
    backend = make_backend("deaot", model="deaott", random_seed=0, device="cpu", engine=truth)
    d = tmp_path
    propagate(d / "JPEGImages", d / "Annotations", d / "key_frame.json", d / "meta.json",
              released, backend, progress=False)  # fmt: skip
    before = tree_bytes(released)

    argv = ["audit-engine", "--images", str(d / "JPEGImages"), "--input", str(d / "Annotations"),
            "--released", str(released), "--meta", str(d / "meta.json"),
            "--out", str(d / "audit"), "--model", "deaott", "--random-weights", "0",
            "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    r = json.loads((d / "audit" / "engine_audit.json").read_text())
    assert r["verdict"] == {"engine": truth, "how": "matches"}, out
    assert f"verdict: {truth} matches" in out
    assert r["expressions"] == 3 and r["left_out"] == {"copied": 1, "ambiguous": 0}
    other = next(e for e in r["engines"] if e != truth)
    s, o = r["engines"][truth], r["engines"][other]
    assert s["byte_identical"] == s["frames"] == 7 + 7 + 4  # key frames included
    assert o["byte_identical"] < o["frames"]  # the other setting gives other masks here
    keys = json.loads((d / "audit" / "key_frame.json").read_text())
    assert keys == {"v1": {"0": {"index_info": {"class_index": 3}},
                           "1": {"index_info": {"class_index": 6}}},
                    "v2": {"0": {"index_info": {"class_index": 0}}}}  # fmt: skip
    assert tree_bytes(released) == before  # the released tree is only read


def test_key_frames_need_one_copied_non_empty_frame(tmp_path):
    make_dataset(tmp_path, VIDEOS)
    meta = load_meta(tmp_path / "meta.json")
    # the input tree against itself: every frame is a copy -> all expressions "copied"
    keys, left = key_frames_from_copies(tmp_path / "Annotations", tmp_path / "Annotations", meta)
    assert keys == {} and left == {"copied": 4, "ambiguous": 0}
    with pytest.raises(KitError, match="is it the DeAOT tree made from that tree"):
        from rvos_kit.pipeline.engine_audit import audit_engines

        audit_engines(tmp_path / "JPEGImages", tmp_path / "Annotations",
                      tmp_path / "Annotations", tmp_path / "meta.json", tmp_path / "a",
                      model="deaott", random_seed=0, device="cpu")  # fmt: skip
