"""Stage-2 vote throughput at 720p: the kit vs a naive single-process PIL implementation.

Generates 4 source trees of 720x1280 object masks (ellipses drifting over the frames,
each source a different perturbation), then times, in one run:

- naive: what the published stage-2 script does (PIL decode + convert('P') == 255,
  float32 sums, one PIL encode per output expression), single process;
- kit --encoder pil (byte-identical to naive; checked), 1 and N workers;
- kit --encoder fast (same pixels, OpenCV zlib level 1), N workers.

Prints output masks per second and the speed-up over naive.

    python bench/fusion.py [--videos 4] [--exps 5] [--frames 20] [--workers 2]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from rvos_kit.fusion import VoteRule, vote  # noqa: E402
from rvos_kit.meta import load_meta  # noqa: E402

H, W = 720, 1280


def make_data(root: Path, n_videos: int, n_exps: int, n_frames: int, n_sources: int):
    rng = np.random.default_rng(0)
    meta = {"videos": {}}
    yy, xx = np.mgrid[0:H, 0:W]
    for v in range(n_videos):
        frames = [f"{5 * t:05d}" for t in range(n_frames)]
        vid = f"v{v:03d}"
        meta["videos"][vid] = {
            "expressions": {str(e): {"exp": "x"} for e in range(n_exps)},
            "frames": frames,
        }
        for e in range(n_exps):
            cy, cx = rng.uniform(200, 520), rng.uniform(300, 980)
            ry, rx = rng.uniform(60, 200), rng.uniform(80, 300)
            vy, vx = rng.uniform(-4, 4, size=2)
            for t, f in enumerate(frames):
                truth = ((yy - cy - vy * t) / ry) ** 2 + ((xx - cx - vx * t) / rx) ** 2
                for s in range(n_sources):
                    jitter = rng.uniform(0.85, 1.15)
                    m = truth < jitter
                    d = root / f"src{s}" / vid / str(e)
                    d.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(m.astype(np.uint8) * 255, "L").save(d / f"{f}.png")
    (root / "meta.json").write_text(json.dumps(meta))
    return [root / f"src{s}" for s in range(n_sources)], root / "meta.json"


def naive_vote(sources, meta_path: Path, out: Path, pair_thr=4, odd_thr=3) -> int:
    meta = json.loads(meta_path.read_text())
    n = 0
    for vid, entry in meta["videos"].items():
        exps = list(entry["expressions"])
        for i in range(0, len(exps), 2):
            group = exps[i : i + 2]
            thr = pair_thr if len(group) == 2 else odd_thr
            masks = [
                [
                    np.array(Image.open(p).convert("P")) == 255
                    for p in sorted((s / vid / e).glob("*.png"))
                ]
                for s in sources
                for e in group
            ]
            for t, f in enumerate(entry["frames"]):
                total = np.zeros((H, W), np.float32)
                for m in masks:
                    total += m[t].astype(np.float32)
                for e in group:
                    (out / vid / e).mkdir(parents=True, exist_ok=True)
                    img = Image.fromarray((total >= thr).astype(np.float32) * 255).convert("L")
                    img.save(out / vid / e / f"{f}.png")
                    n += 1
    return n


def digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.png")):
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--exps", type=int, default=5, help="expressions per video (odd: one single)")
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="rvos-bench-fusion-"))
    try:
        t0 = time.perf_counter()
        sources, meta_path = make_data(tmp, args.videos, args.exps, args.frames, 4)
        meta = load_meta(meta_path)
        print(
            f"generated 4 x {meta.n_masks} masks at {W}x{H} in {time.perf_counter() - t0:.1f} s"
            f" ({args.videos} videos x {args.exps} expressions x {args.frames} frames)"
        )

        def timed(label, fn, out):
            t = time.perf_counter()
            n = fn(out)
            dt = time.perf_counter() - t
            return label, n / dt, dt, digest(out)

        rows = [
            timed(
                "naive PIL, 1 process", lambda o: naive_vote(sources, meta_path, o), tmp / "naive"
            )
        ]
        for label, rule, workers in [
            ("kit --encoder pil, 1 worker", VoteRule(), 1),
            (f"kit --encoder pil, {args.workers} workers", VoteRule(), args.workers),
            (f"kit --encoder fast, {args.workers} workers", VoteRule(encoder="fast"), args.workers),
        ]:
            out = tmp / label.replace(" ", "_").replace(",", "")
            rows.append(
                timed(
                    label,
                    lambda o, r=rule, w=workers: (
                        vote(sources, o, meta, r, workers=w, progress=False).masks
                    ),
                    out,
                )
            )
        base = rows[0][1]
        print(f"{'implementation':36s} {'masks/s':>9s} {'seconds':>8s} {'speed-up':>9s}  bytes")
        for label, rate, dt, dg in rows:
            same = "identical to naive" if dg == rows[0][3] else "differ (pixels checked in tests)"
            print(f"{label:36s} {rate:9.1f} {dt:8.2f} {rate / base:8.2f}x  {same}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
