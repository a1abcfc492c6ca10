"""AOT / DeAOT checkpoints where ``torch.load`` has no ``weights_only`` (issue 21, case 6):
the rvos image's torch 1.11 unpickles a file in full, and a pickle can run code. Played
here with that signature (``torch.load(f, map_location=None, pickle_module=pickle,
**pickle_load_args)``, loading as 1.11 does: everything) around the real torch, through
the real CLI, with a checkpoint whose unpickling creates a file."""

from __future__ import annotations

import hashlib
import pickle
import shlex
from pathlib import Path

import pytest
import yaml
from test_propagate import cli_args, make_dataset

from rvos_kit.cli import main

torch = pytest.importorskip("torch")
aot_backend = pytest.importorskip("rvos_kit.stages.propagate.aot_backend")
REPO = Path(__file__).resolve().parents[1]


class Plant:
    """Pickled as ``open(marker, "w")``: loading the checkpoint creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def torch_1_11(monkeypatch):
    real = torch.load

    def load(f, map_location=None, pickle_module=pickle, **pickle_load_args):
        return real(f, map_location=map_location, pickle_module=pickle_module,
                    weights_only=False, **pickle_load_args)  # fmt: skip

    monkeypatch.setattr(torch, "load", load)


@pytest.fixture
def case(tmp_path):
    """A one-video dataset and an aott checkpoint (the real network's state dict) that
    also holds a :class:`Plant`."""
    torch.set_num_threads(1)
    make_dataset(tmp_path, {"v": {"size": (36, 52), "frames": 3, "exps": {"0": (1, "true")}}})
    net, _ = aot_backend.build_network("aott", seed=3)
    marker = tmp_path / "code-ran"
    ckpt = tmp_path / "aott.pth"
    torch.save({"state_dict": net.state_dict(), "extra": Plant(marker)}, ckpt)
    sha = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    return tmp_path, ckpt, marker, sha


def _propagate(root: Path, out: str, ckpt: Path, *extra: str) -> int:
    argv = cli_args(root, root / out, "--backend", "aot")
    return main([*argv, "--model", "aott", "--checkpoint", str(ckpt), "--scales", "1.0",
                 "--device", "cpu", "--videos", "v", *extra])  # fmt: skip


def test_an_unpinned_checkpoint_is_not_unpickled_without_weights_only(case, torch_1_11, capsys):
    root, ckpt, marker, _ = case
    assert _propagate(root, "out", ckpt) == 2
    err = capsys.readouterr().err
    assert "not sha256-pinned" in err and "--trust-checkpoint" in err and str(ckpt) in err
    assert not marker.exists()  # no code of the file ran
    assert not (root / "out").exists()


def test_a_pinned_or_trusted_checkpoint_loads_there(case, torch_1_11, capsys):
    root, ckpt, marker, sha = case
    assert _propagate(root, "bad", ckpt, "--checkpoint-sha256", "0" * 64) == 2
    assert "pinned as " + "0" * 64 in capsys.readouterr().err
    assert not marker.exists() and not (root / "bad").exists()
    assert _propagate(root, "pinned", ckpt, "--checkpoint-sha256", sha.upper()) == 0
    assert marker.exists()  # the pinned file is what the lock records: it was unpickled
    marker.unlink()
    assert _propagate(root, "trusted", ckpt, "--trust-checkpoint") == 0
    assert marker.exists()


def test_with_weights_only_a_pin_is_still_checked_and_objects_still_refused(case, capsys):
    root, ckpt, marker, sha = case
    assert _propagate(root, "bad", ckpt, "--checkpoint-sha256", "1" * 64) == 2
    assert "pinned as " + "1" * 64 in capsys.readouterr().err
    assert _propagate(root, "pinned", ckpt, "--checkpoint-sha256", sha) == 2
    assert "holds Python objects besides tensors" in capsys.readouterr().err
    assert not marker.exists()
    assert _propagate(root, "odd", ckpt, "--checkpoint-sha256", "xyz") == 2
    assert "not 64 hex digits" in capsys.readouterr().err


def test_the_pipeline_passes_the_lock_pin(tmp_path):
    """dvc.yaml: a propagation checkpoint whose lock entry has a sha256 gets it as
    ``--checkpoint-sha256``; an unpinned one (the committed lock: null) gets none."""
    from rvos_kit.pipeline.dag import spelled

    p = yaml.safe_load((REPO / "params.yaml").read_text())
    lock = yaml.safe_load((REPO / "checkpoints.lock").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    (tmp_path / p["paths"]["lock"]).write_text(yaml.safe_dump(lock, sort_keys=False))

    def cmds():
        stages = spelled(tmp_path / "params.yaml")  # the commands the stages run
        return {k: shlex.split(v["cmd"]) for k, v in stages.items() if k.startswith("propagate_")}

    assert not any("--checkpoint-sha256" in c for c in cmds().values())
    pin = "ab" * 32
    for a in lock["artifacts"]:
        if a["name"] == "aot_swinl":
            a["sha256"] = pin
    (tmp_path / p["paths"]["lock"]).write_text(yaml.safe_dump(lock, sort_keys=False))
    got = cmds()
    aot = [c for c in got.values() if "swinl_aotl" in c]
    assert aot and all(c[c.index("--checkpoint-sha256") + 1] == pin for c in aot)
    deaot = [c for c in got.values() if "swinl_deaotl" in c]
    assert deaot and not any("--checkpoint-sha256" in c for c in deaot)


def test_every_shard_gets_the_pin():
    """The sharded stage starts one child per shard with the backend's options: the pin
    goes with them (the child is where the checkpoint is loaded)."""
    from rvos_kit.cli import build_parser
    from rvos_kit.stages.propagate.verb import _backend_args

    base = ["propagate", "--images", "i", "--annotations", "a", "--keyframes", "k",
            "--meta", "m", "--out", "o", "--backend", "aot", "--checkpoint", "c.pth"]  # fmt: skip
    args = build_parser().parse_args([*base, "--checkpoint-sha256", "ab" * 32])
    got = _backend_args(args)
    assert got[got.index("--checkpoint-sha256") + 1] == "ab" * 32
    assert "--checkpoint-sha256" not in _backend_args(build_parser().parse_args(base))
