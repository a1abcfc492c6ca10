"""Key frames (contract section 4): first argmax of class_info, published output format."""

from __future__ import annotations

import json

import pytest
from conftest import make_meta_dict, write_meta

from rvos_kit.cli import main
from rvos_kit.errors import KitError
from rvos_kit.stages.keyframes import first_argmax, key_frames
from rvos_kit.trees.meta import parse_meta
from rvos_kit.trees.sidefiles import read_key_frames


def test_first_maximum_wins_ties():
    assert first_argmax([0.1, 0.9, 0.3, 0.9], "x") == 1
    assert first_argmax([-5.0], "x") == 0
    assert first_argmax([3, 3, 3], "x") == 0
    assert first_argmax([0.2, 0.5, 0.5000001], "x") == 2


@pytest.mark.parametrize("bad", [[], [0.1, float("nan")], [0.1, "a"], [True, 0.2], None])
def test_bad_scores_rejected(bad):
    with pytest.raises(KitError):
        first_argmax(bad, "scores.json: v/0")


def test_cli_writes_published_format(tmp_path):
    scores = {"vidA": {"0": [0.1, 0.7, 0.7], "1": [0.9, 0.0, 0.1]}, "vidB": {"0": [0.0, 0.0, 1.0]}}
    (tmp_path / "scores.json").write_text(json.dumps(scores))
    out = tmp_path / "sub" / "key_frame.json"
    assert main(["keyframes", "--scores", str(tmp_path / "scores.json"), "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == {
        "vidA": {"0": {"index_info": {"class_index": 1}}, "1": {"index_info": {"class_index": 0}}},
        "vidB": {"0": {"index_info": {"class_index": 2}}},
    }
    assert read_key_frames(out) == {("vidA", "0"): 1, ("vidA", "1"): 0, ("vidB", "0"): 2}


def test_checked_against_meta(tmp_path, capsys):
    meta_dict = make_meta_dict([2], n_frames=3)
    meta = parse_meta(meta_dict)
    good = {"vid000": {"0": [0, 1, 0], "1": [1, 0, 0]}}
    assert key_frames(good, meta)["vid000"]["0"]["index_info"]["class_index"] == 1
    with pytest.raises(KitError, match="vid000/1 has 2 scores but meta lists 3 frames"):
        key_frames({"vid000": {"0": [0, 1, 0], "1": [1, 0]}}, meta)
    with pytest.raises(KitError, match="no scores for vid000/1"):
        key_frames({"vid000": {"0": [0, 1, 0]}}, meta)
    meta_path = write_meta(tmp_path / "meta.json", meta_dict)
    (tmp_path / "s.json").write_text("{not json")
    rc = main(
        [
            "keyframes",
            "--scores",
            str(tmp_path / "s.json"),
            "--out",
            str(tmp_path / "k"),
            "--meta",
            str(meta_path),
        ]
    )
    assert rc == 2
    assert "s.json: scores file is not valid JSON" in capsys.readouterr().err
    assert not (tmp_path / "k").exists()


def test_read_key_frames_validates(tmp_path):
    meta = parse_meta(make_meta_dict([1], n_frames=3))
    p = tmp_path / "k.json"
    p.write_text(json.dumps({"vid000": {"0": {"index_info": {"class_index": 3}}}}))
    with pytest.raises(KitError, match="outside its 3 frames"):
        read_key_frames(p, meta)
    p.write_text(json.dumps({"vid000": {"0": {"class_index": 1}}}))
    with pytest.raises(KitError, match="not a key-frame file"):
        read_key_frames(p, meta)
