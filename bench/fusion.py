"""Stage-2 vote at 720x1280 on masks shaped like real model output, side by side.

Data (seeded, ``rvos_kit.trees.synthetic.wavy_blobs``): per video, pairs of expressions
that refer to one object, each a smooth blob with a wavy boundary (12 harmonics) drifting
over the frames; every source and expression gets its own small boundary perturbation, so
sources agree at IoU ~0.92. 10% of the frames of an object are empty (the object is not
visible). Masks are saved by PIL with default settings (~3 KB each), so PIL's adaptive
filter writes None, Sub, Up and Paeth rows, as in real output. The script prints the
measured mix.

Timed in rounds (default 3), each round in this order, on the same trees:

- published: what the published stage-2 script does (PIL decode + convert('P') == 255,
  float32 sums, one PIL encode per output expression), single process;
- kit --encoder pil (byte-identical to published; checked), 1 and N workers;
- kit --encoder fast (same pixels, not PIL's bytes), N workers.

Then, in this process, the kit's per-mask cost of decode, vote and encode, and the
floor: libdeflate inflate + one copy of the rows (a lower bound of any unfiltering) of
the 4 inputs of every output mask, plus one PIL encode per expression pair; and the
share of input PNGs the fast decode path took.

    python bench/fusion.py [--videos 4] [--exps 5] [--frames 10] [--workers 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import deflate
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from rvos_kit.stages.fusion import VoteRule, _Fuser, groups, vote  # noqa: E402
from rvos_kit.trees import pngcodec  # noqa: E402
from rvos_kit.trees.meta import load_meta  # noqa: E402
from rvos_kit.trees.synthetic import wavy_blobs  # noqa: E402

H, W = 720, 1280


# ---------------------------------------------------------------------------------- data
def make_data(root: Path, n_videos, n_exps, n_frames, n_sources, h=H, w=W, seed=0):
    """Source trees ``root/src<i>`` and ``root/meta.json``; returns (sources, meta path)."""
    rng = np.random.default_rng(seed)
    meta = {"videos": {}}
    sources = [root / f"src{s}" for s in range(n_sources)]
    for v in range(n_videos):
        vid = f"v{v:03d}"
        frames = [f"{5 * t:05d}" for t in range(n_frames)]
        exps = [str(e) for e in range(n_exps)]
        meta["videos"][vid] = {"expressions": {e: {"exp": "x"} for e in exps}, "frames": frames}
        for i in range(0, n_exps, 2):
            group = exps[i : i + 2]  # a pair refers to one object
            for f, masks in zip(
                frames, wavy_blobs(rng, n_frames, n_sources * len(group), h, w), strict=True
            ):
                for j, m in enumerate(masks):
                    d = sources[j % n_sources] / vid / group[j // n_sources]
                    d.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(m.view(np.uint8) * np.uint8(255), "L").save(d / f"{f}.png")
    (root / "meta.json").write_text(json.dumps(meta))
    return sources, root / "meta.json"


def filter_mix(pngs) -> Counter:
    """Rows per PNG filter type (0 None .. 4 Paeth) over 8-bit grey PNGs."""
    mix = Counter()
    for data in pngs:
        w, h, _, _ = pngcodec.png_header(data)
        raw = deflate.zlib_decompress(pngcodec._idat(data), h * (w + 1))
        mix.update(np.frombuffer(raw, np.uint8)[:: w + 1].tolist())
    return mix


# ------------------------------------------------------------------------------- contenders
def published_vote(sources, meta_path: Path, out: Path, pair_thr=4, odd_thr=3) -> int:
    """The published stage-2 loop: sorted glob, convert('P') == 255, float32, PIL save."""
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
                total = np.zeros(masks[0][t].shape, np.float32)
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


# ------------------------------------------------------------------------------ cost split
def cost_split(sources, meta, rule: VoteRule) -> dict[str, float]:
    """CPU ms per output mask of the kit's decode / vote / encode (the same calls, caches
    and order as ``fusion._vote_video``, minus file I/O), and of the floor."""
    cpu = time.process_time
    t = dict.fromkeys(("decode", "vote", "encode", "inflate", "copy", "pil_encode"), 0.0)
    outputs = inputs = fast = 0
    for video in meta:
        encode = pngcodec.EncodeCache(rule.encoder)
        fuse = _Fuser(rule.foreground)
        for group in groups(video, rule.pairing):
            thr = rule.pair_threshold if len(group) == 2 else rule.odd_threshold
            for frame in video.frames:
                paths = [s / video.name / e / f"{frame}.png" for s in sources for e in group]
                blobs = [p.read_bytes() for p in paths]
                outputs += len(group)
                inputs += len(blobs)
                # floor: inflate + one copy of the rows per input, one PIL encode per group
                for data in blobs:
                    w, h, _, _ = pngcodec.png_header(data)
                    t0 = cpu()
                    raw = deflate.zlib_decompress(pngcodec._idat(data), h * (w + 1))
                    t1 = cpu()
                    np.frombuffer(raw, np.uint8).reshape(h, w + 1)[:, 1:].copy()
                    t["inflate"] += t1 - t0
                    t["copy"] += cpu() - t1
                    fast += pngcodec.fast_decode(data) is not None
                # the kit: decode (distinct inputs) + count and threshold, encode (cached)
                t0 = cpu()
                for data, path in dict(zip(blobs, paths, strict=True)).items():
                    pngcodec.decode_values(data, path, padded=True)
                t1 = cpu()
                fused = fuse(blobs, paths, thr)
                t2 = cpu()
                encode(fused)
                t3 = cpu()
                pngcodec.encode_mask(fused)
                t["pil_encode"] += cpu() - t3
                t["decode"] += t1 - t0
                t["vote"] += (t2 - t1) - (t1 - t0)  # fuse() decodes the same PNGs again
                t["encode"] += t3 - t2
    ms = {k: v * 1e3 / outputs for k, v in t.items()}
    ms["fast_share"] = fast / inputs
    ms["floor"] = ms["inflate"] + ms["copy"] + ms["pil_encode"]
    return ms


# ------------------------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--exps", type=int, default=5, help="expressions per video (odd: one single)")
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds (median and range)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="rvos-bench-fusion-"))
    try:
        t0 = time.perf_counter()
        sources, meta_path = make_data(tmp, args.videos, args.exps, args.frames, 4, seed=args.seed)
        meta = load_meta(meta_path)
        pngs = [p.read_bytes() for s in sources for p in sorted(s.rglob("*.png"))]
        mix = filter_mix(pngs)
        rows = sum(mix.values())
        names = ["None", "Sub", "Up", "Average", "Paeth"]
        print(
            f"{platform.node()} ({os.cpu_count()} cores), load average "
            f"{os.getloadavg()[0]:.1f}; generated 4 x {meta.n_masks} masks at {W}x{H} in "
            f"{time.perf_counter() - t0:.1f} s ({args.videos} videos x {args.exps} "
            f"expressions x {args.frames} frames)"
        )
        print(
            f"inputs: mean {statistics.mean(map(len, pngs)) / 1e3:.1f} KB per PNG; PNG rows "
            + ", ".join(f"{names[k]} {100 * mix[k] / rows:.1f}%" for k in range(5))
        )
        print(f"        {agreement(sources, meta)}")

        contenders = [("published-style (PIL), 1 process", None, 1)]
        contenders += [
            ("kit --encoder pil, 1 worker", VoteRule(), 1),
            (f"kit --encoder pil, {args.workers} workers", VoteRule(), args.workers),
            (f"kit --encoder fast, {args.workers} workers", VoteRule(encoder="fast"), args.workers),
        ]
        times = {label: [] for label, _, _ in contenders}
        cpus = {label: [] for label, _, _ in contenders}
        digests = {}
        loads = [os.getloadavg()[0]]
        for _ in range(args.rounds):
            for label, rule, workers in contenders:
                out = tmp / f"out{len(digests)}"
                c = cpu_seconds()
                t = time.perf_counter()
                if rule is None:
                    n = published_vote(sources, meta_path, out)
                else:
                    n = vote(sources, out, meta, rule, workers=workers, progress=False).masks
                times[label].append(time.perf_counter() - t)
                cpus[label].append(cpu_seconds() - c)
                digests[label] = digest(out)
                shutil.rmtree(out)
            loads.append(os.getloadavg()[0])
        print(
            f"\n{n} output masks, {args.rounds} rounds; load average (1 min) during the rounds "
            f"{min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} cores. Medians [min-max];"
            "\nspeed-up = published / kit of the same round; CPU = this process + its workers"
        )
        print(
            f"{'implementation':36s} {'wall s':>17s} {'masks/s':>8s} {'speed-up':>17s}"
            f" {'CPU s':>6s} {'CPU speed-up':>17s}  bytes"
        )
        label0 = contenders[0][0]
        for label, _, _ in contenders:
            ts, cs = times[label], cpus[label]
            ups = [b / x for b, x in zip(times[label0], ts, strict=True)]
            cups = [b / x for b, x in zip(cpus[label0], cs, strict=True)]
            same = (
                "identical to published"
                if digests[label] == digests[label0]
                else "differ (same pixels: tests)"
            )
            print(
                f"{label:36s} {spread(ts, '.2f')} {n / statistics.median(ts):8.0f}"
                f" {spread(ups, '.1f', 'x')} {statistics.median(cs):6.2f} "
                f"{spread(cups, '.1f', 'x')}  {same}"
            )

        ms = cost_split(sources, meta, VoteRule())
        msf = cost_split(sources, meta, VoteRule(encoder="fast"))
        print(
            f"\nper output mask, CPU ms in one process (4 inputs per mask; fast decode path "
            f"took {100 * ms['fast_share']:.0f}% of the input PNGs):"
        )
        print(
            f"  kit:   decode {ms['decode']:.2f} + vote {ms['vote']:.2f} + encode "
            f"{ms['encode']:.2f} (pil, cached) = {ms['decode'] + ms['vote'] + ms['encode']:.2f}"
            f"   [--encoder fast: encode {msf['encode']:.2f}]"
        )
        print(
            f"  floor: inflate {ms['inflate']:.2f} + row copy {ms['copy']:.2f} + one PIL encode "
            f"per pair {ms['pil_encode']:.2f} = {ms['floor']:.2f}"
        )
        pub = statistics.median(cpus[label0]) * 1e3 / n
        print(
            f"  published-style: {pub:.1f} ms CPU per mask -> bound set by the floor "
            f"{pub / ms['floor']:.1f}x (pil), {pub / (ms['inflate'] + ms['copy']):.0f}x "
            "(decode only)"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cpu_seconds() -> float:
    """CPU time of this process and of its finished child processes (pool workers)."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def spread(xs, fmt: str, unit: str = "") -> str:
    lo, mid, hi = min(xs), statistics.median(xs), max(xs)
    return f"{mid:6{fmt}}{unit} [{lo:{fmt}}-{hi:{fmt}}]".rjust(17)


def agreement(sources, meta) -> str:
    """Mean pairwise IoU between sources (non-empty masks) and the empty-frame share."""
    ious, empty, total = [], 0, 0
    for video in meta:
        for e in video.exp_ids:
            for f in video.frames:
                ms = [
                    pngcodec.decode_values((s / video.name / e / f"{f}.png").read_bytes()) == 255
                    for s in sources
                ]
                total += 1
                empty += not any(m.any() for m in ms)
                for i in range(len(ms)):
                    for j in range(i + 1, len(ms)):
                        union = np.count_nonzero(ms[i] | ms[j])
                        if union:
                            ious.append(np.count_nonzero(ms[i] & ms[j]) / union)
    return (
        f"sources agree at mean pairwise IoU {statistics.mean(ious):.3f}; "
        f"{100 * empty / total:.0f}% of the frames are empty"
    )


if __name__ == "__main__":
    main()
