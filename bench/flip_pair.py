"""Is encoding a scale's flip pair in ONE encoder call (a batch of 2) bit-identical to two
calls (batch 1 each)? The question behind batching the flip pair (issue 25).

Builds the published Swin-L AOT-L and DeAOT-L networks (deaotpy, random weights), makes
one random 8-bit frame per size, prepares its unflipped and flipped views exactly as the
propagation does (``view_image``), and compares every encoder output (the Swin-L levels and
the projected last level) of ``encode_image(cat([x, flip(x)]))`` with
``encode_image(x)`` and ``encode_image(flip(x))``: bit for bit (``torch.equal``) and by
the largest absolute difference; as a control, ``encode_image(x)`` is run again and
compared with the first call (so a difference is the batch's, not run-to-run noise).
Sizes: the frames of ``bench/propagate.py --share`` (96x64), an odd size (101x75), and
with ``--big`` a 1280x720 frame at the published long side (1040 px: views up to
1248x704). CPU float32 with ``--threads`` intra-op threads,
or ``--device cuda`` (with ``--amp``: under float16 autocast, as the propagation runs
there) -- the check a GPU needs before the flip pair may be batched.

    python bench/flip_pair.py [--threads 1] [--big] [--models swinl_aotl,swinl_deaotl]
                              [--device cuda [--amp]]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from rvos_kit.stages.propagate.aot_backend import (  # noqa: E402
    build_network,
    model_config,
    view_image,
    view_size,
)


def check(model_name: str, sizes, threads: int, device: str = "cpu", amp=False) -> list[dict]:
    import contextlib

    import torch

    torch.set_num_threads(threads)
    net, _ = build_network(model_name, seed=0)
    net = net.to(device).eval()
    autocast = torch.autocast("cuda", dtype=torch.float16) if amp else contextlib.nullcontext()

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    align = model_config(model_name).MODEL_ALIGN_CORNERS
    rng = np.random.default_rng(0)
    rows = []
    for w, h in sizes:
        bgr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        for scale in (0.8, 1.0, 1.2):
            size = view_size(h, w, scale, 1040.0, align)
            x = torch.from_numpy(view_image(bgr, size, False)[None]).to(device)
            xf = torch.from_numpy(view_image(bgr, size, True)[None]).to(device)
            with torch.no_grad(), autocast:
                sync()
                t0 = time.perf_counter()
                a, b = net.encode_image(x), net.encode_image(xf)
                sync()
                t1 = time.perf_counter()
                pair = net.encode_image(torch.cat([x, xf]))
                sync()
                t2 = time.perf_counter()
                again = net.encode_image(x)  # control: is one call repeatable at all?
            equal, worst = True, 0.0
            for one, other, level in zip(a, b, pair, strict=True):
                for single, batched in ((one, level[0:1]), (other, level[1:2])):
                    equal &= bool(torch.equal(single, batched))
                    worst = max(worst, float((single.float() - batched.float()).abs().max()))
            repeat = all(torch.equal(u, v) for u, v in zip(a, again, strict=True))
            rows.append({
                "model": model_name, "frame": f"{w}x{h}", "view": f"{size[1]}x{size[0]}",
                "scale": scale, "equal": equal, "max_abs": worst, "repeat": repeat,
                "two_calls_s": round(t1 - t0, 3), "batch_s": round(t2 - t1, 3),
            })  # fmt: skip
            print(rows[-1], file=sys.stderr, flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--big", action="store_true", help="also a 1280x720 frame (slow)")
    ap.add_argument("--models", default="swinl_aotl,swinl_deaotl")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--amp", action="store_true", help="cuda: float16 autocast")
    args = ap.parse_args()
    sizes = [(96, 64), (101, 75)] + [(1280, 720)] * args.big
    how = "float16 autocast" if args.amp else "float32"
    print(f"flip pair in one encoder call vs two, {args.device} {how}, {args.threads} thread(s)")
    print("| model | frame | view | batch bit-identical | max abs diff | one call repeatable "
          "| 2 calls s | batch s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for m in args.models.split(","):
        for r in check(m, sizes, args.threads, args.device, args.amp):
            print(f"| {r['model']} | {r['frame']} | {r['view']} | {r['equal']} | "
                  f"{r['max_abs']:.3g} | {r['repeat']} | {r['two_calls_s']} | {r['batch_s']} |",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
