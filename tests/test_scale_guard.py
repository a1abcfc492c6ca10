"""Sharded stages keep the kit's promises when used wrongly (issue 21): one writer per
output from start to commit (a second run fails at once, sharded or not, infer too),
video ids that hold commas, merges checked against meta, an unreachable Ray address
refused within seconds. Real processes, the session's real local Ray."""

from __future__ import annotations

import dataclasses
import fcntl
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import tree_bytes
from faults import rvos_faults
from test_infer import data, fake_driver  # noqa: F401 (a fixture)
from test_propagate import cli_args, make_dataset
from test_scale import six  # noqa: F401 (a fixture)

from rvos_kit.cli import main
from rvos_kit.compute.scale import tree_merge
from rvos_kit.errors import KitError
from rvos_kit.stages.propagate import propagate
from rvos_kit.stages.propagate.flow_backend import FlowBackend
from rvos_kit.stages.rvos.infer import core
from rvos_kit.trees.meta import load_meta

pytestmark = pytest.mark.usefixtures("ray_cluster")
BUSY = "another rvos-kit run is writing this output right now"


def _kit(*argv: str) -> list[str]:
    return [sys.executable, "-m", "rvos_kit", *argv]


# ------------------------------------------------------------------ case 1: one writer
def test_second_sharded_run_on_the_same_out_fails_at_once(six, tmp_path, ray_cluster):  # noqa: F811
    """Two sharded propagations on one --out, the second started while the first's
    shards run: the second fails at once naming the output, touches nothing, and the
    first commits the complete tree."""
    root, ref = six
    out = tmp_path / "out"
    argv = cli_args(root, out, "--backend", "flow", "--shards", "2", "--ray-address", ray_cluster)
    env = rvos_faults.subprocess_env(**{rvos_faults.SLOW_VIDEO: "1.5"})  # >= 1.5 s a video
    first = subprocess.Popen(_kit(*argv), env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    shards = tmp_path / ".out.shards"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and first.poll() is None:
        if shards.is_dir() and any(".attempt-" in p.name for p in shards.iterdir()):
            break
        time.sleep(0.05)
    assert first.poll() is None, first.communicate()
    t0 = time.monotonic()
    second = subprocess.run(_kit(*argv), env=env, capture_output=True, text=True, timeout=300)
    took = time.monotonic() - t0
    assert second.returncode == 2, second.stderr
    assert BUSY in second.stderr and str(out) in second.stderr, second.stderr
    assert "on Ray" not in second.stderr  # refused before Ray or any shard
    assert took < 30, took  # a Python start-up and the lock, nothing more
    stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    assert tree_bytes(out) == ref


@pytest.fixture
def lock_held_elsewhere():
    """Another process holding the kit's lock of an output (what a running rvos-kit run
    holds: an exclusive flock on ``.<name>.rvos-kit`` beside it)."""
    procs = []

    def hold(out: Path) -> None:
        mark = out.with_name(f".{out.name}.rvos-kit")
        code = ("import fcntl, os, sys, time\n"
                "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)\n"
                "fcntl.flock(fd, fcntl.LOCK_EX)\n"
                "print('held', flush=True)\n"
                "time.sleep(300)\n")  # fmt: skip
        p = subprocess.Popen([sys.executable, "-c", code, str(mark)], stdout=subprocess.PIPE,
                             text=True)  # fmt: skip
        procs.append(p)
        assert p.stdout.readline().strip() == "held"
        with open(mark, "rb") as f, pytest.raises(BlockingIOError):
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)

    yield hold
    for p in procs:
        p.kill()
        p.wait()


def test_every_verb_refuses_an_output_another_run_holds(
    six,  # noqa: F811
    data,  # noqa: F811
    upstream,
    tmp_path,
    monkeypatch,
    capsys,
    lock_held_elsewhere,
):
    """While another process holds an output's lock, propagate and infer (sharded on Ray,
    or one shard in process) and infer-merge fail at once naming the output, before any
    shard runs: no .<out>.shards is made, nothing is written."""
    root, _ = six
    tests = Path(__file__).resolve().parent
    monkeypatch.setenv(rvos_faults.PRELOAD, f"{tests}:shard_preload_infer")
    rvos_faults.install(monkeypatch)
    monkeypatch.setitem(sys.modules, "rvos_kit.stages.rvos.infer._fake", fake_driver("logits"))
    monkeypatch.setitem(core.MODELS, "soc", dataclasses.replace(core.MODELS["soc"], driver="_fake"))
    infer = ["infer", "--model", "soc", "--meta", str(data.meta), "--images", str(data.images),
             "--split", "test", "--upstream", str(upstream), "--checkpoint", str(data.ckpt),
             "--pretrained", str(data.pretrained), "--device", "cpu"]  # fmt: skip
    assert main([*infer, "--shard", "1/1", "--out", str(tmp_path / "shard")]) == 0
    runs = {
        "propagate sharded": lambda o: cli_args(root, o, "--backend", "flow", "--shards", "2"),
        "propagate one shard": lambda o: cli_args(root, o, "--backend", "flow", "--videos", "v1"),
        "infer sharded": lambda o: [
            *infer,
            "--out",
            str(o),
            "--shards",
            "2",
            "--gpus-per-shard",
            "1",
            "--cpus-per-shard",
            "1",
        ],  # fmt: skip
        "infer one shard": lambda o: [*infer, "--shard", "1/2", "--out", str(o)],
        "infer-merge": lambda o: [
            "infer-merge",
            str(tmp_path / "shard"),
            "--meta",
            str(data.meta),
            "--out",
            str(o),
        ],  # fmt: skip
    }
    for name, argv in runs.items():
        out = tmp_path / name.replace(" ", "-")
        lock_held_elsewhere(out)
        capsys.readouterr()
        t0 = time.monotonic()
        assert main(argv(out)) == 2, name
        took = time.monotonic() - t0
        err = capsys.readouterr().err
        assert BUSY in err and str(out) in err, (name, err)
        assert took < 5, (name, took)
        assert not out.exists(), name
        left = sorted(p.name for p in tmp_path.glob(f".{out.name}.*"))
        assert left == [f".{out.name}.rvos-kit"], (name, left)


# ------------------------------------------------------------ case 2: ids with commas
COMMA = {
    name: {"size": (48, 64), "frames": 4, "step": (2, 1), "exps": {"0": (1, "true")}}
    for name in ("a", "b", "a,b")
}


def test_video_ids_with_commas_are_propagated(tmp_path):
    """Meta videos ``a``, ``b`` and ``a,b``: every shard gets its own videos (as a JSON
    list), the output holds all three, byte-identical to one run in process."""
    root = tmp_path / "data"
    make_dataset(root, COMMA)
    ref = tmp_path / "ref"
    propagate(root / "JPEGImages", root / "Annotations", root / "key_frame.json",
              root / "meta.json", ref, FlowBackend(), progress=False)  # fmt: skip
    assert sorted(os.listdir(ref)) == ["a", "a,b", "b"]
    for n in ("2", "3"):
        out = tmp_path / f"out{n}"
        assert main(cli_args(root, out, "--backend", "flow", "--shards", n)) == 0
        assert tree_bytes(out) == tree_bytes(ref), n


def test_tree_merge_checks_the_result_against_meta(tmp_path):
    """The Ray tree merge commits only a tree that holds exactly meta's masks: a shard
    that lacks a frame, holds a stray file or a video of another shard is refused,
    naming it, and nothing is written."""
    root = tmp_path / "data"
    make_dataset(root, COMMA)
    meta = load_meta(root / "meta.json")
    full = tmp_path / "full"
    propagate(root / "JPEGImages", root / "Annotations", root / "key_frame.json",
              root / "meta.json", full, FlowBackend(), progress=False)  # fmt: skip

    def shards(tag: str) -> list[Path]:
        dirs = []
        for i, videos in enumerate((["a", "a,b"], ["b"])):
            d = tmp_path / tag / f"s{i}"
            for v in videos:
                shutil.copytree(full / v, d / v)
            dirs.append(d)
        return dirs

    good = shards("good")
    tree_merge(good, tmp_path / "merged", meta)
    assert tree_bytes(tmp_path / "merged") == tree_bytes(full)

    cases = {
        "missing": (
            lambda d: (d[1] / "b" / "0" / "00010.png").unlink(),
            "1 missing.*b/0/00010.png",
        ),  # fmt: skip
        "stray": (
            lambda d: (d[0] / "a" / "0" / "notes.txt").write_text("x"),
            "1 not in meta.*a/0/notes.txt",
        ),  # fmt: skip
        "dropped": (lambda d: shutil.rmtree(d[0] / "a,b"), "4 missing.*a,b/0/00000.png"),
        "twice": (lambda d: shutil.copytree(d[1] / "b", d[0] / "b"), "video 'b' is in two shards"),
    }
    for tag, (damage, needle) in cases.items():
        dirs = shards(tag)
        damage(dirs)
        out = tmp_path / f"out-{tag}"
        with pytest.raises(KitError, match=needle):
            tree_merge(dirs, out, meta)
        assert not out.exists(), tag


# ------------------------------------------------------- case 12: unreachable Ray
@pytest.fixture
def silent_server():
    """A TCP server on 127.0.0.1 that accepts connections and never answers."""
    s = socket.create_server(("127.0.0.1", 0))
    conns = []

    def serve():
        while True:
            try:
                conns.append(s.accept()[0])
            except OSError:
                return

    threading.Thread(target=serve, daemon=True).start()
    yield f"127.0.0.1:{s.getsockname()[1]}"
    s.close()
    for c in conns:
        c.close()


def test_unreachable_ray_address_fails_within_seconds(six, tmp_path, silent_server):  # noqa: F811
    """scale.address with nothing listening, or a listener that is not a Ray head: the
    stage fails within seconds naming the address (Ray alone waited 822 s)."""
    root, _ = six
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        free = f"127.0.0.1:{s.getsockname()[1]}"
    for address, needle in ((free, "nothing answers"), (silent_server, "not a Ray head"),
                            (f"ray://{free}", "nothing answers")):  # fmt: skip
        out = tmp_path / "out"
        argv = cli_args(root, out, "--backend", "flow", "--ray-address", address)
        t0 = time.monotonic()
        r = subprocess.run(_kit(*argv), capture_output=True, text=True, timeout=120)
        took = time.monotonic() - t0
        assert r.returncode == 2, (address, r.stderr)
        last = r.stderr.strip().splitlines()[-1]
        assert address in last and needle in last, (address, last)
        assert took < 30, (address, took)
        assert not out.exists() and not (tmp_path / ".out.shards").exists()
