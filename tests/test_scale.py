"""Sharded stages on a real local Ray (rvos_kit.compute.scale): the bytes do not depend on the
shard count, a killed worker costs a retry, an interrupted stage resumes shard by shard.

Ray is started once per session (conftest.ray_cluster: 2 CPUs, 2 logical GPUs)."""

from __future__ import annotations

import dataclasses
import re
import shutil
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from conftest import tree_bytes
from faults import rvos_faults
from test_infer import data, fake_driver  # noqa: F401 (a fixture)
from test_propagate import cli_args, make_dataset

from rvos_kit.cli import main
from rvos_kit.compute.docker import Settings, docker_argv
from rvos_kit.compute.scale import (
    ScaleSettings,
    ShardFailed,
    partition,
    scale_settings,
    settings_from_args,
    shard_command,
    shard_key,
    stage_params,
)
from rvos_kit.errors import KitError
from rvos_kit.pipeline.params import check_params
from rvos_kit.stages.propagate import propagate
from rvos_kit.stages.propagate.flow_backend import FlowBackend
from rvos_kit.stages.rvos.infer import core

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("ray_cluster")

# Six videos of different lengths and expression counts (so that frame-balanced shards
# differ from equal-count ones), small frames: a shard takes a fraction of a second.
SIX = {
    f"v{i}": {
        "size": (72, 96),
        "frames": 4 + 2 * (i % 3),
        "step": (2 + i % 2, 1),
        "exps": {str(e): ((e + i) % (4 + 2 * (i % 3)), "true") for e in range(1 + i % 2)},
    }
    for i in range(6)
}


@pytest.fixture(scope="module")
def six(tmp_path_factory):
    root = tmp_path_factory.mktemp("six")
    make_dataset(root, SIX)
    ref = root / "unsharded"
    propagate(
        root / "JPEGImages",
        root / "Annotations",
        root / "key_frame.json",
        root / "meta.json",
        ref,
        FlowBackend(),
        progress=False,
    )
    return root, tree_bytes(ref)


# ------------------------------------------------------------------------ partition
def test_partition_contiguous_balanced_and_complete():
    w = [("c", 10), ("a", 1), ("b", 1), ("d", 1), ("e", 1), ("f", 6)]
    for n in range(1, 8):
        parts = partition(w, n, None)
        assert [v for p in parts for v in p] == sorted(x for x, _ in w)  # sorted, contiguous
        assert len(parts) == min(n, 6) and all(parts)
    # balanced by weight, not by count: the heavy "c" sits alone-ish
    assert partition(w, 2, None) == [["a", "b", "c"], ["d", "e", "f"]]
    assert partition(w, 3, None) == [["a", "b", "c"], ["d", "e"], ["f"]]
    assert partition(w, None, 4) == [["a", "b", "c", "d"], ["e", "f"]]
    assert partition([], 3, None) == []
    # the key of a shard: its videos and the record, nothing else
    assert shard_key({"x": 1}, ["a"]) == shard_key({"x": 1}, ["a"])
    assert shard_key({"x": 1}, ["a"]) != shard_key({"x": 2}, ["a"])
    assert shard_key({"x": 1}, ["a"]) != shard_key({"x": 1}, ["a", "b"])


def test_scale_settings_checked():
    s = scale_settings({"scale": {"address": "auto", "shards": 4, "max_retries": 1}})
    assert (s.address, s.shards, s.max_retries) == ("auto", 4, 1)
    assert scale_settings({}) == ScaleSettings()
    s = scale_settings({"scale": {"needs": {"aot": {"gpus": 2}}, "local": {"gpus": 2}}})
    assert (s.needs_of("aot").gpus, s.needs_of("aot").cpus, s.local_gpus) == (2, 2, 2)
    for bad, needle in (
        ({"shards": 0}, "scale.shards"),
        ({"shards": 2, "videos_per_shard": 3}, "not both"),
        ({"max_retries": -1}, "max_retries"),
        ({"needs": {"flow": {"ram": 3}}}, "needs.flow"),
        ({"sharts": 2}, "scale.sharts: unknown key"),
        ({"address": ""}, "scale.address"),
    ):
        with pytest.raises(KitError, match=needle):
            scale_settings({"scale": bad})


# ---------------------------------------------------------------- identical bytes
def test_bytes_identical_for_1_2_3_shards_and_unsharded(six, tmp_path, capsys):
    root, ref = six
    for n in (1, 2, 3):
        out = tmp_path / f"out{n}"
        assert main(cli_args(root, out, "--backend", "flow", "--shards", str(n))) == 0
        assert tree_bytes(out) == ref, n
        left = [p.name for p in tmp_path.glob(f".out{n}.*") if not p.name.endswith(".rvos-kit")]
        assert not left, "shards/staging folders left behind"
        io = capsys.readouterr()
        assert f"6 videos in {n} shard" in io.err
        assert f"in {n} shard{'s' if n > 1 else ''} ({n} run)" in io.out


def test_killed_worker_is_retried_and_reported(six, tmp_path, capsys, monkeypatch):
    root, ref = six
    marker = tmp_path / "kill-once"
    marker.touch()
    monkeypatch.setenv(rvos_faults.KILL_WORKER, str(marker))
    rvos_faults.install(monkeypatch)
    out = tmp_path / "out"
    assert main(cli_args(root, out, "--backend", "flow", "--shards", "2")) == 0
    assert not marker.exists(), "the fault was never injected"
    assert tree_bytes(out) == ref
    io = capsys.readouterr()
    assert "retried after a lost worker, done on attempt 2" in io.err
    assert "1 retried" in io.out


def test_interrupted_stage_reruns_only_unfinished_shards(six, tmp_path, ray_cluster):
    root, ref = six
    out = tmp_path / "out"
    argv = cli_args(root, out, "--backend", "flow", "--shards", "3", "--ray-address", ray_cluster)
    # 2 CPUs for 3 shards: while shard 3 waits, the driver is interrupted as soon as a
    # shard is committed (a slowed-down child keeps the others busy meanwhile)
    env = rvos_faults.subprocess_env(**{rvos_faults.SLOW_VIDEO: "0.4"})
    proc = subprocess.Popen(
        [sys.executable, "-m", "rvos_kit", *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    shards = tmp_path / ".out.shards"
    deadline = time.monotonic() + 120
    committed: list[Path] = []
    while time.monotonic() < deadline and proc.poll() is None:
        if shards.is_dir():
            committed = [p for p in shards.iterdir() if not p.name.startswith(".")]
            if committed:
                break
        time.sleep(0.05)
    assert committed, proc.communicate()
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and not out.exists()
    kept = sorted(p.name for p in shards.iterdir() if not p.name.startswith("."))
    assert 1 <= len(kept) <= 2, kept

    r = subprocess.run([sys.executable, "-m", "rvos_kit", *argv], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"{len(kept)} shard(s) already done, reused" in r.stderr
    assert f"({3 - len(kept)} run, {len(kept)} reused from an interrupted run)" in r.stdout
    assert tree_bytes(out) == ref
    assert not shards.exists()


def test_failed_shard_names_its_videos_and_the_error(six, tmp_path, capsys):
    root, _ = six
    work = tmp_path / "data"
    shutil.copytree(root, work, ignore=shutil.ignore_patterns("unsharded"))
    # a frame of another size than its masks: found only when v4 is processed
    cv2.imwrite(str(work / "JPEGImages" / "v4" / "00000.jpg"), np.zeros((20, 30, 3), np.uint8))
    out = tmp_path / "out"
    assert main(cli_args(work, out, "--backend", "flow", "--shards", "3")) == 2
    err = capsys.readouterr().err
    # weights (frames x expressions) 4 12 8 | 8 6 | 16: v4 is in the second shard
    assert "FAILED shard 2/3 (2 videos: v3 .. v4): videos v3, v4" in err, err
    assert "masks and frames must have the same size" in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("rvos-kit propagate: error: ") and "30x20" in last, last
    assert "the 2 other shard(s) are kept" in last
    assert not out.exists()


def test_gpu_shards_get_the_gpu_ray_assigned(six, tmp_path, capsys):
    """A stage that needs a GPU per shard (logical GPUs here): each shard's child runs with
    CUDA_VISIBLE_DEVICES = the GPU Ray gave its task; the bytes do not change."""
    root, ref = six
    out = tmp_path / "out"
    per_shard = ("--gpus-per-shard", "1", "--cpus-per-shard", "1")
    assert main(cli_args(root, out, "--backend", "flow", "--shards", "2", *per_shard)) == 0
    assert tree_bytes(out) == ref
    err = capsys.readouterr().err
    assert "(1 GPU + 1 CPU each; cluster: 1 node, 2 CPU, 2 GPU)" in err
    ran = [x for x in err.splitlines() if " ran on " in x]
    assert len(ran) == 2 and all(re.search(r"GPU [01] in", x) for x in ran), ran


def test_shard_command_native_and_docker():
    spec = {"argv": ["propagate", "--backend", "aot"], "videos": ["a", "b"], "gpus": 1,
            "key": "0123456789abcdef0123", "cwd": "/proj", "env": {}}  # fmt: skip
    argv, env = shard_command(spec, 1, Path("/o/.k.attempt-1"), ["1"], 42)
    # the videos as a JSON list: no id (commas included) can change it
    assert argv[1:] == ["-m", "rvos_kit", "propagate", "--backend", "aot", "--videos-json",
                        '["a", "b"]', "--out", "/o/.k.attempt-1"]  # fmt: skip
    assert env == {"CUDA_VISIBLE_DEVICES": "1", "RVOS_KIT_SHARD_PARENT": "42"}

    spec.update(image="rvos-kit/rvos:0.1.0", runner=Settings(base=Path("/proj")))
    argv, env = shard_command(spec, 2, Path("/proj/outputs/.k.attempt-2"), ["3"], 42)
    assert argv[:4] == ["docker", "run", "--name", "rvos-kit-0123456789ab-a2"]
    assert argv[argv.index("--gpus") + 1] == "device=3"
    i = argv.index("rvos-kit/rvos:0.1.0")
    assert argv[i + 1 :] == ["python", "-m", "rvos_kit", "propagate", "--backend", "aot",
                             "--videos-json", '["a", "b"]', "--out",
                             "/proj/outputs/.k.attempt-2"]  # fmt: skip
    assert "CUDA_VISIBLE_DEVICES" not in env  # docker maps the device; inside it is GPU 0
    with pytest.raises(ShardFailed, match="no GPU"):
        shard_command(spec, 1, Path("/w"), [], 42)
    # a device list keeps its commas through Docker's CSV parsing of --gpus
    argv = docker_argv("img", ["x"], mounts=[], workdir="/w", user="1:1", gpus="device=0,3")
    assert argv[argv.index("--gpus") + 1] == '"device=0,3"'


# ------------------------------------------------------------------------ inference
def test_infer_gpu_shards_identical(data, upstream, tmp_path, monkeypatch):  # noqa: F811
    """`rvos-kit infer` over all videos runs as GPU shards on Ray (logical GPUs here), each
    the real infer code with test_infer's synthetic driver standing in for the model;
    the merged model folder (trees, scores.json) is byte-identical to one run in process,
    at 1, 2 and 3 shards."""
    common = ["infer", "--model", "soc", "--meta", str(data.meta), "--images", str(data.images),
              "--split", "test", "--upstream", str(upstream), "--checkpoint", str(data.ckpt),
              "--pretrained", str(data.pretrained), "--device", "cpu"]  # fmt: skip
    tests = Path(__file__).resolve().parent
    monkeypatch.setenv(rvos_faults.PRELOAD, f"{tests}:shard_preload_infer")
    rvos_faults.install(monkeypatch)
    # the same stand-in in this process, for the in-process reference run
    monkeypatch.setitem(sys.modules, "rvos_kit.stages.rvos.infer._fake", fake_driver("logits"))
    monkeypatch.setitem(core.MODELS, "soc", dataclasses.replace(core.MODELS["soc"], driver="_fake"))
    assert main([*common, "--shard", "1/1", "--out", str(tmp_path / "one")]) == 0
    ref = tree_bytes(tmp_path / "one")
    assert "scores.json" in ref and any(k.startswith("Annotations/") for k in ref)
    for n in (1, 2, 3):
        out = tmp_path / f"sharded{n}"
        per_shard = ["--shards", str(n), "--gpus-per-shard", "1", "--cpus-per-shard", "1"]
        assert main([*common, "--out", str(out), *per_shard]) == 0
        assert tree_bytes(out) == ref, n


def test_stage_params_only_for_generated_stages(tmp_path, monkeypatch):
    """A verb typed by hand ignores a params.yaml lying in the current folder; a DVC stage
    (DVC_STAGE set, run beside its params file) or `rvos-kit --params` reads it."""
    (tmp_path / "params.yaml").write_text(
        "data: {meta: m.json}\npaths: {outputs: o}\nmodels: {}\nscale: {shards: 5}\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_STAGE", raising=False)
    hand = types.SimpleNamespace()
    assert stage_params(hand) is None and settings_from_args(hand, "flow").shards is None
    monkeypatch.setenv("DVC_STAGE", "dvc.yaml:propagate_aot_soc")
    assert settings_from_args(hand, "flow").shards == 5
    over = types.SimpleNamespace(scale_shards=2, scale_gpus=1.0, scale_cpus=None)
    s = settings_from_args(over, "flow")
    assert (s.shards, s.needs_of("flow").gpus, s.needs_of("flow").cpus) == (2, 1.0, 1)


def test_params_schema_knows_scale():
    """The strict params schema accepts the scale section of the shipped params files and
    names a bad key or value in it."""
    base = yaml.safe_load((REPO / "demo/params.yaml").read_text())
    assert check_params(base) is not None and base["scale"]["address"] == "local"
    for bad, needle in (
        ({"shards": 0}, "shards"),
        ({"shards": 2, "videos_per_shard": 3}, "not both"),
        ({"needs": {"aot": {"gpus": -1}}}, "gpus"),
        ({"retries": 1}, "retries"),
    ):
        with pytest.raises(KitError, match=needle):
            check_params({**base, "scale": bad})
