"""Voting fusion over mask trees (contract sections 6, 7 and 9).

For each video, expressions in meta order are grouped in consecutive pairs (0,1), (2,3),
... A pair's masks of every source, for BOTH expressions, are counted per pixel and the
fused mask ``count >= --pair-threshold`` is written to both expressions. A trailing odd
expression (or, with ``--pairing none``, every expression) follows the odd rule:

``--odd vote``
    ``count over the sources' masks of that expression >= --odd-threshold`` (stage 2).
``--odd first``
    the first (key) source's own mask, no vote (stage 1). With ``--odd-from ROOT`` the mask
    is read from ROOT instead: that is how the ``challenge2023`` mode reproduces quirk 9.1,
    where the published stage-1 odd branch applied ``sigmoid(p) > 0.5`` to vit_huge's
    *probabilities*. ``rvos-kit import-pth --kind probabilities`` writes exactly those
    masks to ``<model>/Annotations_sigmoid_odd``; ``vote --odd first --odd-from`` that
    tree reproduces the published masks bit for bit. Without ``--odd-from`` (the
    ``corrected`` mode) the key model's properly binarised mask is used.

Published defaults: stage 1 = pair 3 (of 2 x 3 masks), odd first; stage 2 = pair 4 (of
2 x 4), odd vote 3.

Exactness and speed. The output PNG bytes are those of PIL saving the uint8 ``L`` mask
with default settings, as the published scripts do. The speed comes from the decoder
(:mod:`rvos_kit.trees.pngcodec`: libdeflate + numpy, ~4x faster than OpenCV on mask PNGs),
counting in uint8 in reused arrays, and skipping work the bytes do not need: a pair's
fused mask is encoded once and written to both expressions, byte-identical inputs of a
frame are decoded once, a frame whose inputs repeat an earlier frame's byte for byte
reuses its output, and identical fused masks (empty ones, repeated frames) are encoded
once (keyed by content). One worker process per video (memory: one frame of masks per
worker). ``--encoder fast`` writes the same pixels unfiltered with ISA-L deflate level
1: not byte-identical to the published files, ~25x faster to encode. Numbers:
``bench/fusion.py``.

Inputs are validated by name against meta before anything is written (missing or extra
PNG, missing expression folder), and by size while voting (all masks of one frame must
have the same size). The output is built in a staging folder and moved into place only
when every video succeeded, so a failed or killed run never leaves a half-written tree.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .. import catalog
from ..argtypes import add_workers, declare_paths, positive_int
from ..compute import pool
from ..errors import KitError
from ..trees.masktree import (
    FOREGROUND_RULES,
    StagedTree,
    atomic_write_bytes,
    check_tree,
    decode_mask,
    expression_files,
    read_png_bytes,
)
from ..trees.meta import Meta, Video, agreed_meta, load_meta
from ..trees.pngcodec import ENCODERS, EncodeCache, decode_values, png_header
from ..trees.staging import check_outputs

PAIRINGS = catalog.PAIRINGS
ODD_RULES = catalog.ODD_RULES
_D = catalog.DEFAULTS["fusion"]


@dataclass(frozen=True)
class VoteRule:
    pairing: str = _D["pairing"]
    pair_threshold: int = _D["pair_threshold"]
    odd: str = _D["odd"]
    odd_threshold: int = _D["odd_threshold"]
    foreground: str = "255"
    encoder: str = catalog.default("", "encoder")

    def check(self, n_sources: int, odd_from: Path | None) -> None:
        if self.pairing not in PAIRINGS:
            raise KitError(f"unknown pairing {self.pairing!r}; use one of {PAIRINGS}")
        if self.odd not in ODD_RULES:
            raise KitError(f"unknown odd rule {self.odd!r}; use one of {ODD_RULES}")
        if self.foreground not in FOREGROUND_RULES:
            raise KitError(f"unknown foreground rule {self.foreground!r}")
        if self.encoder not in ENCODERS:
            raise KitError(f"unknown encoder {self.encoder!r}; use one of {ENCODERS}")
        if odd_from is not None and self.odd != "first":
            raise KitError("--odd-from only applies with --odd first")
        if not 1 <= self.pair_threshold <= 2 * n_sources:
            raise KitError(
                f"pair threshold {self.pair_threshold} is outside 1..{2 * n_sources} "
                f"(2 expressions x {n_sources} sources)"
            )
        if self.odd == "vote" and not 1 <= self.odd_threshold <= n_sources:
            raise KitError(f"odd threshold {self.odd_threshold} is outside 1..{n_sources}")


def groups(video: Video, pairing: str) -> list[tuple[str, ...]]:
    """Expression groups of a video in meta order: pairs, then a trailing single."""
    ids = video.exp_ids
    if pairing == "none":
        return [(e,) for e in ids]
    out = [ids[i : i + 2] for i in range(0, len(ids) - 1, 2)]
    if len(ids) % 2:
        out.append((ids[-1],))
    return out


class _Fuser:
    """``count >= threshold`` over the foregrounds of one frame's PNGs.

    Byte-identical PNGs (empty masks, mostly) are decoded once and counted as often as
    they occur. The count and mask arrays are reused from frame to frame (a fresh 0.9 MB
    array per mask costs page faults), so the returned mask is only valid until the
    next call. They have the decoder's padded (h, w + 1) layout (column 0 is not pixel
    data and is dropped at the end): every whole-array step runs on contiguous memory."""

    def __init__(self, foreground: str):
        self.foreground = foreground
        self._buffers: dict[tuple[int, int], tuple[np.ndarray, ...]] = {}

    def __call__(self, blobs: list[bytes], paths: list[Path], threshold: int) -> np.ndarray:
        distinct: dict[bytes, list] = {}
        for data, path in zip(blobs, paths, strict=True):
            if data in distinct:
                distinct[data][1] += 1
            else:
                distinct[data] = [path, 1]
        size = None
        for data, (path, n) in distinct.items():
            w, h, _, _ = png_header(data, path)
            if size is None:
                size = (w, h, path)
                if (h, w) not in self._buffers:
                    self._buffers[h, w] = tuple(
                        np.empty((h, w + 1), t) for t in (np.uint8, bool, bool)
                    )
                count, scratch, fused = self._buffers[h, w]
                first = True
            elif (w, h) != size[:2]:
                raise KitError(
                    f"{path}: size {w}x{h} differs from {size[2]} ({size[0]}x{size[1]}) for "
                    "the same frame; all sources must share each frame's size"
                )
            values = decode_values(data, path, padded=True)
            if values is None:  # not 8-bit grey: PIL's conversion, as published
                mask = decode_mask(data, path, self.foreground)
                if mask.shape != (h, w):  # pragma: no cover - PIL checks the header
                    raise KitError(f"{path}: corrupt PNG (pixels do not match its header)")
                fg = scratch
                fg[:, 0] = False
                fg[:, 1:] = mask
            else:  # decode_mask's rules, into a reused array (at first, the count itself)
                fg = count.view(bool) if first else scratch
                if self.foreground == "255":
                    np.equal(values, 255, out=fg)
                else:
                    np.not_equal(values, 0, out=fg)
            if first:
                if values is None or n > 1:
                    np.multiply(fg, np.uint8(n), out=count)
                first = False
            elif n == 1:
                np.add(count, fg, out=count)
            else:
                count += fg.view(np.uint8) * np.uint8(n)
        return np.greater_equal(count, threshold, out=fused)[:, 1:]


def _vote_video(job) -> int:
    """Fuse one video into the staging tree; returns the number of PNGs written.

    Work the bytes do not need is skipped: a pair's fused mask is encoded once and
    written to both expressions; a frame whose input PNGs repeat an earlier frame's byte
    for byte reuses its output; identical fused masks (empty ones, repeated frames) are
    encoded once (:class:`EncodeCache`, keyed by content)."""
    video, sources, odd_from, staging, rule = job
    encode = EncodeCache(rule.encoder)
    fuse = _Fuser(rule.foreground)
    by_inputs: OrderedDict[tuple, bytes] = OrderedDict()
    written = 0
    for group in groups(video, rule.pairing):
        single = len(group) == 1
        if single and rule.odd == "first":
            members = [odd_from if odd_from is not None else sources[0]]
            threshold = 1
        else:
            members = sources
            threshold = rule.odd_threshold if single else rule.pair_threshold
        files = [expression_files(root, video, e) for root in members for e in group]
        out_dirs = [staging / video.name / e for e in group]
        for d in out_dirs:
            d.mkdir(parents=True, exist_ok=True)
        for i, frame in enumerate(video.frames):
            paths = [f[i] for f in files]
            blobs = [read_png_bytes(path) for path in paths]
            key = (threshold, *blobs)
            data = by_inputs.get(key)
            if data is None:
                data = by_inputs[key] = encode(fuse(blobs, paths, threshold))
                if len(by_inputs) > 16:
                    by_inputs.popitem(last=False)
            for d in out_dirs:
                atomic_write_bytes(d / f"{frame}.png", data)
                written += 1
    return written


@dataclass
class VoteSummary:
    videos: int
    masks: int


def vote(
    sources,
    out,
    meta: Meta | None = None,
    rule: VoteRule = VoteRule(),
    odd_from=None,
    workers: int = 1,
    progress: bool = True,
) -> VoteSummary:
    """Fuse ``sources`` (mask-tree roots, key model first) into the tree ``out``."""
    sources = [Path(s) for s in sources]
    out = Path(out)
    odd_from = Path(odd_from) if odd_from is not None else None
    if not sources:
        raise KitError("vote needs at least one source tree")
    if meta is None:  # without --meta every source must hold the same videos
        meta = agreed_meta(sources)
    rule.check(len(sources), odd_from)
    reads = [("SOURCE_ROOT", str(s)) for s in sources]  # the CLI checked these; the API too
    check_outputs([*reads, *([("--odd-from", str(odd_from))] if odd_from else [])],
                  [("--out", str(out))])  # fmt: skip

    # Names first, for every tree, before a single byte is written.
    if rule.odd == "first":
        paired = {
            v.name: [e for g in groups(v, rule.pairing) if len(g) == 2 for e in g] for v in meta
        }
        check_tree(sources[0], meta, None if odd_from is None else paired)
        for s in sources[1:]:
            check_tree(s, meta, paired)
        if odd_from is not None:
            singles = {v.name: [g[0] for g in groups(v, rule.pairing) if len(g) == 1] for v in meta}
            check_tree(odd_from, meta, singles)
    else:
        for s in sources:
            check_tree(s, meta, None)

    total = meta.n_masks
    masks = 0
    with StagedTree(out) as staged:
        jobs = [(v, sources, odd_from, staged.path, rule) for v in meta]
        bar = tqdm(total=len(jobs), unit="video", desc=f"vote -> {out.name}", disable=not progress)
        with bar:
            if workers <= 1 or len(jobs) <= 1:
                for job in jobs:
                    masks += _vote_video(job)
                    bar.update()
            else:
                for n in pool.imap(_vote_video, jobs, workers, lambda j: f"video {j[0].name}"):
                    masks += n
                    bar.update()
        if masks != total:  # pragma: no cover - guards the grouping logic
            raise KitError(f"internal error: wrote {masks} masks, meta lists {total}")
    return VoteSummary(videos=len(meta), masks=masks)


# --------------------------------------------------------------------------------- CLI
def run(args) -> int:
    rule = VoteRule(
        pairing=args.pairing,
        pair_threshold=args.pair_threshold,
        odd=args.odd,
        odd_threshold=args.odd_threshold,
        foreground=args.foreground,
        encoder=args.encoder,
    )
    meta = load_meta(args.meta) if args.meta else None
    s = vote(args.sources, args.out, meta, rule, args.odd_from, args.workers)
    print(f"voted {s.masks} masks over {s.videos} videos -> {args.out}")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "vote",
        help="pair vote over mask trees (stage-1 and stage-2 fusion)",
        description=__doc__,
    )
    p.add_argument("sources", nargs="+", metavar="SOURCE_ROOT", help="mask trees, key model first")
    p.add_argument("--out", required=True, help="output tree (replaced atomically on success)")
    p.add_argument(
        "--meta",
        help="meta_expressions.json; default: videos, expressions (numeric order) and frames "
        "read off the first source tree",
    )
    p.add_argument(
        "--pair-threshold",
        type=positive_int,
        default=_D["pair_threshold"],
        help="pair: count >= N (default %(default)s)",
    )
    p.add_argument(
        "--odd",
        choices=ODD_RULES,
        default=_D["odd"],
        help="single expressions: 'vote' (count >= --odd-threshold, stage 2) or 'first' "
        "(the first source's mask, stage 1)",
    )
    p.add_argument("--odd-threshold", type=positive_int, default=_D["odd_threshold"],
                   help="odd vote: count >= N")  # fmt: skip
    p.add_argument(
        "--odd-from",
        metavar="ROOT",
        help="with --odd first: take single expressions' masks from ROOT (quirk 9.1: "
        "<model>/Annotations_sigmoid_odd written by import-pth)",
    )
    p.add_argument(
        "--pairing",
        choices=PAIRINGS,
        default=_D["pairing"],
        help="'consecutive' pairs (0,1),(2,3)... as published; 'none' votes every "
        "expression alone with the odd rule (data where neighbours are different objects)",
    )
    p.add_argument(
        "--foreground",
        choices=FOREGROUND_RULES,
        default="255",
        help="'255': pixel == 255 is the object (published rule); 'nonzero' for other producers",
    )
    p.add_argument(
        "--encoder",
        choices=ENCODERS,
        default=catalog.default("", "encoder"),
        help="'pil': bytes identical to the published PNGs; 'fast': same pixels, ISA-L deflate "
        "level 1, not byte-identical",
    )
    add_workers(p)
    declare_paths(p, reads=("sources", "meta", "odd_from"), writes=("out",))
    p.set_defaults(func=run)
