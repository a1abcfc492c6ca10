"""Propagation throughput at 720p on this machine: frames per second of each backend.

Generates one 1280x720 clip (a textured object moving over a textured background, JPEG
frames), one expression whose key frame is in the middle (so both passes run), and times
``rvos_kit.stages.propagate.propagate`` end to end -- JPEG decoding, the backend, PNG writing --
after the network is built (model build time is reported apart). Each backend runs in its
own process, so the peak memory (max RSS) is its own.

Backends: ``flow`` (OpenCV DIS), and ``aot`` / ``deaot`` with random weights: the tiny
``aott`` / ``deaott`` models and, with ``--swinl``, the published Swin-L models, all with
the published test-time augmentation (6 views, long side <= 1040). Random weights cost
the same time as the released ones.

    python bench/propagate.py [--frames 9] [--net-frames 3] [--swinl] [--threads N]
                              [--backends flow,aot:aott,...]

``--share``: the shared encoder (issue 25) instead: Swin-L AOT-L and DeAOT-L with random
weights on 3 videos x 4 expressions x 8 frames at a small size (``--share-size``), each
run with and without sharing in this process, one thread: wall time, encoder calls, the
encoder's share of the unshared run's time (what bounds the ratio) and whether the output
bytes are equal.

    python bench/propagate.py --share [--share-size 96x128] [--backends aot:swinl_aotl]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from rvos_kit.stages.propagate import make_backend, propagate  # noqa: E402
from rvos_kit.trees.synthetic import moving_object_clip, write_propagation_input  # noqa: E402

H, W = 720, 1280


def make_clip(root: Path, n_frames: int) -> None:
    frames, masks = moving_object_clip(
        np.random.default_rng(0), H, W, n_frames, step=(8, 5), centre=(300, 400),
        radii=(160, 220), sigma=2.0,
    )  # fmt: skip
    write_propagation_input(root, {"v": (frames, masks, {"0": (n_frames // 2, "true")})})


def one(spec: str, n_frames: int, threads: int | None) -> dict:
    """Run one backend (``flow`` or ``aot:MODEL`` / ``deaot:MODEL``) in this process."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_clip(root, n_frames)
        name, _, model = spec.partition(":")
        if name == "flow":
            backend = make_backend("flow")
        else:
            backend = make_backend(name, model=model, random_seed=0, device="cpu")
        t0 = time.perf_counter()
        backend.prepare()
        build = time.perf_counter() - t0
        t0 = time.perf_counter()
        s = propagate(
            root / "JPEGImages",
            root / "Annotations",
            root / "key_frame.json",
            root / "meta.json",
            root / "out",
            backend,
            workers=1,
            progress=False,
        )
        wall = time.perf_counter() - t0
    frames = s.masks - s.propagated  # the key frame is copied, not propagated
    return {
        "backend": spec,
        "frames": frames,
        "build_s": round(build, 2),
        "wall_s": round(wall, 2),
        "fps": round(frames / wall, 3),
        "s_per_frame": round(wall / frames, 2),
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def share_bench(spec: str, size: tuple[int, int]) -> dict:
    """Shared vs unshared encoder for one backend (module docstring, ``--share``)."""
    import torch

    torch.set_num_threads(1)
    name, _, model = spec.partition(":")
    h, w = size
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rng = np.random.default_rng(0)
        clips = {}
        for v in range(3):
            frames, masks = moving_object_clip(rng, h, w, 8)
            exps = {str(e): (k, "true") for e, k in enumerate((0, 3, 5, 7))}
            clips[f"v{v}"] = (frames, masks, exps)
        write_propagation_input(root, clips)
        out = {}
        for share in (False, True):
            backend = make_backend(name, model=model, random_seed=0, device="cpu",
                                   share_encoder=share)  # fmt: skip
            backend.prepare()
            enc_time = [0.0]
            real = backend.model.encode_image

            def timed(img, real=real, enc_time=enc_time):
                t0 = time.perf_counter()
                r = real(img)
                enc_time[0] += time.perf_counter() - t0
                return r

            backend.model.encode_image = timed
            t0 = time.perf_counter()
            d = root / f"out{share}"
            propagate(root / "JPEGImages", root / "Annotations", root / "key_frame.json",
                      root / "meta.json", d, backend, workers=1, progress=False)  # fmt: skip
            wall = time.perf_counter() - t0
            data = {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*.png"))}
            out[share] = (wall, backend.encoder_calls, enc_time[0], data)
    (w0, c0, e0, d0), (w1, c1, _, d1) = out[False], out[True]
    return {
        "backend": spec, "size": f"{w}x{h}", "unshared_s": round(w0, 1),
        "shared_s": round(w1, 1), "ratio": round(w0 / w1, 2), "calls_unshared": c0,
        "calls_shared": c1, "encoder_share": round(e0 / w0, 3), "identical": d0 == d1,
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=9, help="clip length for flow")
    ap.add_argument("--net-frames", type=int, default=3, help="clip length for aot/deaot")
    ap.add_argument("--swinl", action="store_true", help="also the Swin-L models (slow)")
    ap.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    ap.add_argument(
        "--backends",
        help="comma-separated subset, e.g. flow,aot:aott,deaot:swinl_deaotl (default: all)",
    )
    ap.add_argument("--share", action="store_true", help="shared vs unshared encoder")
    ap.add_argument("--share-size", default="96x128", help="HxW of the --share clips")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.n, args.threads)))
        return
    if args.share:
        size = tuple(int(x) for x in args.share_size.split("x"))
        specs = (args.backends or "aot:swinl_aotl,deaot:swinl_deaotl").split(",")
        print("shared encoder, CPU, one thread, 3 videos x 4 expressions x 8 frames, 6 views")
        print("| backend | size | unshared s | shared s | ratio | encoder calls | "
              "encoder share | bytes equal |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|")
        for spec in specs:
            r = share_bench(spec, size)
            print(f"| {r['backend']} | {r['size']} | {r['unshared_s']} | {r['shared_s']} | "
                  f"{r['ratio']} | {r['calls_unshared']} -> {r['calls_shared']} | "
                  f"{r['encoder_share']:.0%} | {r['identical']} |", flush=True)  # fmt: skip
        return
    specs = [
        ("flow", args.frames),
        ("aot:aott", args.net_frames),
        ("deaot:deaott", args.net_frames),
    ]
    if args.swinl:
        specs += [("aot:swinl_aotl", args.net_frames), ("deaot:swinl_deaotl", args.net_frames)]
    if args.backends:
        want = args.backends.split(",")
        specs = [(b, args.frames if b == "flow" else args.net_frames) for b in want]
    print(f"propagation at {W}x{H}, CPU, 6 views (0.8/1.0/1.2 x flip, long side <= 1040)")
    print("| backend | frames | build s | s/frame | frames/s | max RSS MB |")
    print("|---|---|---|---|---|---|")
    for spec, n in specs:
        cmd = [sys.executable, __file__, "--one", spec, "--n", str(n)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        print(
            f"| {r['backend']} | {r['frames']} | {r['build_s']} | {r['s_per_frame']} | "
            f"{r['fps']} | {r['max_rss_mb']} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
