"""J&F throughput at 720p: rvos-kit evaluate vs the PyPI vos-benchmark, same run.

Generates a GT tree and a prediction tree of 720x1280 object masks (ellipses of many
sizes drifting over the frames, the prediction a perturbed copy with a few stray
blobs), then times, at the same worker count:

- vos-benchmark (``vos_benchmark.benchmark``: the DAVIS-2017 code, one process per
  sequence; every expression is given to it as one sequence through a folder of links);
- ``rvos_kit.stages.evaluate.jf.evaluate``.

Prints frames per second of both, the speed-up, and the largest difference between the
two per-expression J and F (every GT frame holds the object, so both average the same
frames).

    python bench/evaluate.py [--videos 4] [--exps 4] [--frames 20] [--workers 1 2] [--noise 0]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from rvos_kit.stages.evaluate.jf import evaluate  # noqa: E402
from rvos_kit.trees.meta import load_meta  # noqa: E402
from rvos_kit.trees.synthetic import ellipse_d2  # noqa: E402

H, W = 720, 1280


def make_data(root: Path, n_videos: int, n_exps: int, n_frames: int, noise: float = 0.0):
    rng = np.random.default_rng(0)
    meta = {"videos": {}}
    for v in range(n_videos):
        frames = [f"{5 * t:05d}" for t in range(n_frames)]
        vid = f"v{v:03d}"
        meta["videos"][vid] = {
            "expressions": {str(e): {"exp": "x"} for e in range(n_exps)},
            "frames": frames,
        }
        for e in range(n_exps):
            cy, cx = rng.uniform(150, 570), rng.uniform(200, 1080)
            ry, rx = rng.uniform(20, 250), rng.uniform(20, 400)
            vy, vx = rng.uniform(-4, 4, size=2)
            for t, f in enumerate(frames):
                d2 = ellipse_d2(H, W, cy + vy * t, cx + vx * t, ry, rx)
                gt = d2 < 1
                pred = d2 < rng.uniform(0.8, 1.2)
                if rng.random() < 0.3:  # a stray false-positive blob
                    sy, sx = rng.integers(0, H - 40), rng.integers(0, W - 40)
                    pred[sy : sy + 30, sx : sx + 35] = True
                if noise:  # isolated wrong pixels all over the frame: no small box to crop
                    pred ^= rng.random((H, W)) < noise
                for name, m in (("gt", gt), ("pred", pred)):
                    d = root / name / vid / str(e)
                    d.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(m.astype(np.uint8) * 255, "L").save(d / f"{f}.png")
    (root / "meta.json").write_text(json.dumps(meta))
    # vos-benchmark layout: <root>/<sequence>/<frame>.png, one sequence per expression
    for name in ("gt", "pred"):
        flat = root / f"flat_{name}"
        flat.mkdir()
        for vid, entry in meta["videos"].items():
            for e in entry["expressions"]:
                os.symlink(root / name / vid / e, flat / f"{vid}__{e}")
    return root / "meta.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--exps", type=int, default=4)
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument(
        "--noise",
        type=float,
        default=0.0,
        help="flip this fraction of prediction pixels at random (worst case for cropping)",
    )
    args = ap.parse_args()
    try:
        from vos_benchmark.benchmark import benchmark
    except ImportError:
        sys.exit("bench/evaluate.py needs vos-benchmark: pip install --no-deps vos-benchmark "
                 "scikit-image")  # fmt: skip

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        print(f"generating {args.videos} videos x {args.exps} expressions x {args.frames} "
              f"frames at {W}x{H} ...", flush=True)  # fmt: skip
        meta = load_meta(make_data(root, args.videos, args.exps, args.frames, args.noise))
        n = args.videos * args.exps * args.frames
        for workers in args.workers:
            t0 = time.perf_counter()
            _, _, _, objs = benchmark([str(root / "flat_gt")], [str(root / "flat_pred")],
                                      num_processes=workers, verbose=False,
                                      skip_first_and_last=False)  # fmt: skip
            t_ref = time.perf_counter() - t0
            t0 = time.perf_counter()
            res = evaluate(root / "gt", root / "pred", meta, workers=workers, progress=False)
            t_kit = time.perf_counter() - t0
            diff = 0.0
            for e in res.expressions:
                iou, bf = objs[0][f"{e.video}__{e.exp_id}"]
                diff = max(diff, abs(100 * e.mean_j - iou[255]), abs(100 * e.mean_f - bf[255]))
            print(f"workers={workers}: vos-benchmark {n / t_ref:7.1f} frames/s | "
                  f"rvos-kit {n / t_kit:7.1f} frames/s | speed-up x{t_ref / t_kit:.2f} | "
                  f"J&F {res.jf:.3f} | max |per-expression diff| {diff:.2e}",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
