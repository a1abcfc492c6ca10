"""Sharded propagation on a local Ray (rvos_kit.compute.scale): throughput at 1 and 2 workers
and the scheduling overhead per shard, on this machine.

Generates a set of clips (textured objects moving over a textured background, JPEG
frames, one expression per video with its key frame in the middle) and runs the
``flow`` propagation through ``rvos-kit propagate`` as the pipeline does:

- in-process, without Ray (``propagate()`` on one core): the baseline;
- on Ray with 1 worker (2 shards, one at a time) and 2 workers (2 shards at once);
- many tiny videos in as many shards, one worker: (time on Ray - time in process) /
  shards = what a shard costs beyond its work (task scheduling, the child process's
  start-up and imports, committing and merging).

The Ray start-up (``ray.init`` of an embedded single-node Ray, paid once per stage with
``scale.address: local``) is reported apart. The outputs of every run are compared byte
for byte with the baseline.

    python bench/scale.py [--videos 8] [--frames 10] [--size 360x640] [--tiny 16]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from rvos_kit.cli import main  # noqa: E402
from rvos_kit.stages.propagate import make_backend, propagate  # noqa: E402
from rvos_kit.trees.synthetic import moving_object_clip, write_propagation_input  # noqa: E402


def make_clips(root: Path, n_videos: int, n_frames: int, h: int, w: int) -> None:
    rng, k = np.random.default_rng(0), n_frames // 2
    clips = {}
    for v in range(n_videos):
        frames, masks = moving_object_clip(rng, h, w, n_frames, step=(3, 2), sigma=2.0)
        clips[f"video{v:03d}"] = (frames, masks, {"0": (k, "true")})
    write_propagation_input(root, clips)


def tree(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def in_process(data: Path, out: Path) -> float:
    t = time.perf_counter()
    propagate(data / "JPEGImages", data / "Annotations", data / "key_frame.json",
              data / "meta.json", out, make_backend("flow"), workers=1, progress=False)  # fmt: skip
    return time.perf_counter() - t


def on_ray(data: Path, out: Path, shards: int, cpus_per_shard: int) -> float:
    argv = ["propagate", "--images", str(data / "JPEGImages"), "--annotations",
            str(data / "Annotations"), "--keyframes", str(data / "key_frame.json"), "--meta",
            str(data / "meta.json"), "--out", str(out), "--backend", "flow",
            "--shards", str(shards), "--cpus-per-shard", str(cpus_per_shard)]  # fmt: skip
    t = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        rc = main(argv)
    if rc != 0:
        raise SystemExit(f"propagate on Ray failed ({rc})")
    return time.perf_counter() - t


def best(f, repeat: int) -> float:
    return min(f() for _ in range(repeat))


def main_bench() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--size", default="360x640", help="HxW of the frames")
    ap.add_argument("--tiny", type=int, default=16, help="shards in the overhead run")
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()
    h, w = (int(x) for x in a.size.split("x"))
    import ray

    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        tmp = Path(tmp)
        make_clips(tmp / "data", a.videos, a.frames, h, w)
        make_clips(tmp / "tiny", a.tiny, 2, 48, 64)
        t = time.perf_counter()
        ray.init(address="local", num_cpus=2, include_dashboard=False,
                 object_store_memory=128 * 1024 * 1024, logging_level=logging.WARNING)  # fmt: skip
        t_init = time.perf_counter() - t
        try:
            masks = a.videos * a.frames
            runs = {}

            def run(name, f):
                out = tmp / "runs" / name / "out"
                out.parent.mkdir(parents=True, exist_ok=True)

                def once():
                    import shutil

                    shutil.rmtree(out, ignore_errors=True)
                    return f(out)

                runs[name] = (best(once, a.repeat), tree(out))

            run("in process", lambda out: in_process(tmp / "data", out))
            run("ray 1 worker", lambda out: on_ray(tmp / "data", out, 2, 2))
            run("ray 2 workers", lambda out: on_ray(tmp / "data", out, 2, 1))
            run("tiny in process", lambda out: in_process(tmp / "tiny", out))
            run("tiny ray", lambda out: on_ray(tmp / "tiny", out, a.tiny, 2))
            ref = runs["in process"][1]
            assert all(runs[n][1] == ref for n in ("ray 1 worker", "ray 2 workers"))
            assert runs["tiny ray"][1] == runs["tiny in process"][1]
        finally:
            ray.shutdown()
    print(f"sharded flow propagation, {a.videos} videos x {a.frames} frames at {w}x{h}, "
          f"1 expression each ({os.cpu_count()} cores; best of {a.repeat}):")  # fmt: skip
    base = runs["in process"][0]
    for name in ("in process", "ray 1 worker", "ray 2 workers"):
        s = runs[name][0]
        print(f"  {name:14s} {s:6.2f} s  {masks / s:6.1f} masks/s  ({base / s:.2f}x in process)")
    over = (runs["tiny ray"][0] - runs["tiny in process"][0]) / a.tiny
    print(f"  scheduling overhead per shard: {over * 1000:.0f} ms "
          f"({a.tiny} shards of one 2-frame video, 1 worker)")  # fmt: skip
    print(f"  embedded Ray start-up (ray.init, once per stage): {t_init:.1f} s")
    print("  outputs byte-identical to the in-process run: yes")


if __name__ == "__main__":
    main_bench()
