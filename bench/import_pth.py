"""Peak memory and speed of `rvos-kit import-pth` on a generated dump larger than RAM budget.

Generates (in a child process) a dump shaped like the original RVOS dumps,
``{video: {exp_id: {"mask_logits": float32[T, H, W], "class_info": [T]}}}`` at 720x1280,
of about ``--gb`` GiB (optionally as ``--chunks`` split files), then runs the import in a
fresh child process and reports its resident memory: baseline after imports, peak
(VmHWM), and the growth. ``--compare`` runs it a second time with the per-frame page
release switched off, to show what reading the whole mmap'ed dump costs.

    nice .venv/bin/python bench/import_pth.py --gb 2.5 [--chunks 5] [--compare]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GEN = r"""
import json, sys, torch
out, n_videos, n_frames, h, w, chunks = sys.argv[1], *map(int, sys.argv[2:7])
meta = {"videos": {}}
yy = torch.linspace(-4, 4, h)[:, None]
xx = torch.linspace(-4, 4, w)[None, :]
vids = [f"v{i:04d}" for i in range(n_videos)]
for c in range(chunks):
    part = vids[c::chunks]
    dump = {}
    for i, v in enumerate(part):
        dump[v] = {}
        for e in ("0", "1"):
            x = torch.empty(n_frames, h, w)
            for t in range(n_frames):
                x[t] = yy * (1 + t % 3) + torch.sin(xx * (i % 5 + 1 + int(e))) * 2 - 0.5
            dump[v][e] = {"mask_logits": x, "class_info": [0.01 * t for t in range(n_frames)]}
        meta["videos"][v] = {"expressions": {"0": {"exp": "a"}, "1": {"exp": "b"}},
                             "frames": [f"{5 * t:05d}" for t in range(n_frames)]}
    torch.save(dump, f"{out}/dump{c}.pth")
    del dump
meta["videos"] = dict(sorted(meta["videos"].items()))
json.dump(meta, open(f"{out}/meta.json", "w"))
"""

RUN = r"""
import json, sys, time
import torch, tqdm, PIL.PngImagePlugin
from rvos_kit.stages.rvos import dumps as importers
from rvos_kit.trees.meta import load_meta

def kb(key):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(key + ":"))

meta_path, out, release, *dumps = sys.argv[1:]
if release == "off":
    importers._PageReleaser.__call__ = lambda self, t: None
meta = load_meta(meta_path)
torch.zeros(4, 4).sigmoid()
base = kb("VmRSS")
t0 = time.perf_counter()
r = importers.import_pth(dumps, "logits", out, meta)
dt = time.perf_counter() - t0
print(json.dumps({"base_kb": base, "peak_kb": kb("VmHWM"), "seconds": dt, **r}))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--gb", type=float, default=2.5, help="dump size in GiB (default 2.5)")
    ap.add_argument("--chunks", type=int, default=1, help="split the dump into N files")
    ap.add_argument("--frames", type=int, default=10, help="frames per expression")
    ap.add_argument("--compare", action="store_true", help="also run without page release")
    ap.add_argument("--workdir", help="where to put the dump (default: a temp folder)")
    args = ap.parse_args()

    h, w = 720, 1280
    per_video = 2 * args.frames * h * w * 4
    n_videos = max(args.chunks, round(args.gb * 2**30 / per_video))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-c",
                GEN,
                str(tmp),
                str(n_videos),
                str(args.frames),
                str(h),
                str(w),
                str(args.chunks),
            ],
            check=True,
            env=env,
        )
        dumps = sorted(str(p) for p in tmp.glob("dump*.pth"))
        size = sum(os.path.getsize(p) for p in dumps)
        print(
            f"dump: {size / 2**20:.0f} MiB in {len(dumps)} file(s), {n_videos} videos x 2 "
            f"expressions x {args.frames} frames of {h}x{w} (generated in "
            f"{time.perf_counter() - t0:.0f} s)"
        )
        for release in ("on", "off") if args.compare else ("on",):
            r = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    RUN,
                    str(tmp / "meta.json"),
                    str(tmp / f"out_{release}"),
                    release,
                    *dumps,
                ],
                check=True,
                env=env,
                capture_output=True,
                text=True,
            )
            m = json.loads(r.stdout.strip().splitlines()[-1])
            base, peak = m["base_kb"] / 1024, m["peak_kb"] / 1024
            print(
                f"page release {release:>3}: baseline RSS {base:.0f} MiB, peak RSS {peak:.0f} MiB "
                f"(+{peak - base:.0f} MiB = {100 * (peak - base) * 2**20 / size:.1f}% of the "
                f"dump), {m['masks']} masks in {m['seconds']:.1f} s "
                f"({m['masks'] / m['seconds']:.0f} masks/s, "
                f"{size / 2**20 / m['seconds']:.0f} MiB/s)"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
