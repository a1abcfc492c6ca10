"""``rvos-kit evaluate``: region similarity J and boundary accuracy F (DAVIS 2017).

Definitions (those of the DAVIS-2017 evaluation, which Ref-YouTube-VOS uses), per frame,
for a predicted mask P and a ground-truth mask G (boolean arrays of one size):

J
    ``|P & G| / |P | G|``; 1 when both masks are empty.
F
    Boundary maps B(P), B(G) by the ``seg2bmap`` construction: a pixel is on the boundary
    when it differs from its right, lower or lower-right neighbour, the last row and the
    last column compared as if the image were extended by repeating them (the corner
    pixel is never a boundary). Each map is dilated by a disk of radius
    ``r = ceil(0.008 * sqrt(H^2 + W^2))`` (the pixels with ``dx^2 + dy^2 <= r^2``).
    precision = ``|B(P) & dil(B(G))| / |B(P)|``, recall = ``|B(G) & dil(B(P))| / |B(G)|``;
    no predicted boundary and some GT boundary: precision 1, recall 0; the reverse:
    precision 0, recall 1; neither: both 1. ``F = 2PR / (P + R)``, 0 when ``P + R = 0``.

Per expression, J and F are the means over every meta frame that has a GT PNG
(``--skip-first-last``: without the first and last of those frames, the semi-supervised
DAVIS convention); ``J&F = (J + F) / 2``. The dataset numbers are the means over
expressions, in percent.

Speed: the result is computed exactly, but only where it can be non-zero. The boundary
map is built on the bounding box of the mask (plus one pixel), and the two boundary maps
are compared on the union of their boxes: outside those boxes both maps are zero, and
OpenCV's dilation treats pixels outside the image as absent, so the counts are the same
as on the full frame. The disk dilation itself is replaced by two fast square dilations
(the square inside the disk and the one around it) plus an exact test of the few
boundary pixels in between (:func:`count_matched`).
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ...argtypes import add_workers, declare_paths
from ...compute import pool
from ...errors import KitError
from ...trees.jsonfiles import write_json
from ...trees.masktree import FOREGROUND_RULES, check_tree, expression_dir, read_mask
from ...trees.meta import Meta, infer_meta, load_meta

BOUND_TH = 0.008

cv2.setNumThreads(1)


# --------------------------------------------------------------------- per-frame metrics
def bound_pix(height: int, width: int, bound_th: float = BOUND_TH) -> int:
    """Dilation radius: ``ceil(bound_th * ||(H, W)||)`` (``bound_th >= 1`` is a radius)."""
    if bound_th >= 1:
        return int(bound_th)
    return math.ceil(bound_th * math.sqrt(height * height + width * width))


@lru_cache(maxsize=16)
def disk_kernel(radius: int) -> np.ndarray:
    """uint8 (2r+1)^2 structuring element: 1 where ``dx^2 + dy^2 <= r^2``."""
    d = np.arange(-radius, radius + 1)
    return ((d[:, None] ** 2 + d[None, :] ** 2) <= radius * radius).astype(np.uint8)


@lru_cache(maxsize=16)
def _square(half: int) -> np.ndarray:
    return np.ones((2 * half + 1, 2 * half + 1), np.uint8)


@lru_cache(maxsize=16)
def _ring(radius: int) -> tuple[int, np.ndarray, np.ndarray]:
    """``(a, dy, dx)``: ``a`` the half-width of the largest square inside the disk
    (``2a^2 <= r^2``), and the disk offsets outside that square."""
    a = int(radius / math.sqrt(2)) + 1
    while 2 * a * a > radius * radius:
        a -= 1
    d = np.arange(-radius, radius + 1)
    dy, dx = np.meshgrid(d, d, indexing="ij")
    ring = (dy * dy + dx * dx <= radius * radius) & ((abs(dy) > a) | (abs(dx) > a))
    return a, dy[ring], dx[ring]


def count_matched(q: np.ndarray, s: np.ndarray, radius: int) -> int:
    """``count(q & dilate(s, disk(radius)))`` for two uint8 0/1 maps of one size, with
    the dilation OpenCV does (nothing outside the map).

    Exact, but cheaper than the disk dilation: the disk contains the square of half-width
    ``a`` and lies inside the square of half-width ``r``, and square dilations are fast
    (separable). A pixel of ``q`` hit by the small square is matched, one missed by the
    big square is not; only the pixels in between are tested against the offsets of the
    disk outside the small square (or, when they are many, by the disk dilation itself).
    """
    a, rdy, rdx = _ring(radius)
    inner = cv2.dilate(s, _square(a)) if a else s
    n = np.count_nonzero(q & inner)
    cand = q & ~inner & cv2.dilate(s, _square(radius))
    n_cand = cv2.countNonZero(cand)
    if n_cand == 0:
        return n
    if n_cand * rdy.size > s.size:
        return np.count_nonzero(q & cv2.dilate(s, disk_kernel(radius)))
    h, w = s.shape
    wp = w + 2 * radius
    padded = np.zeros((h + 2 * radius, wp), np.uint8)
    padded[radius : radius + h, radius : radius + w] = s
    xy = cv2.findNonZero(cand).reshape(-1, 2).astype(np.intp)
    base = (xy[:, 1] + radius) * wp + (xy[:, 0] + radius)
    hit = padded.ravel()[base[:, None] + (rdy * wp + rdx)[None, :]].any(axis=1)
    return n + np.count_nonzero(hit)


def _box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1) bounding box of the True pixels, None when there are none."""
    x, y, w, h = cv2.boundingRect(mask.view(np.uint8))
    if w == 0:
        return None
    return y, y + h, x, x + w


def boundary_crop(mask: np.ndarray) -> tuple[np.ndarray, int, int] | None:
    """The seg2bmap boundary of ``mask``, cropped: ``(b, y0, x0)`` with ``b`` the boundary
    map of the rows ``y0 ..`` and columns ``x0 ..`` (zero everywhere else), or None when
    the mask is empty.

    A boundary pixel is next to a foreground pixel, so the crop is the mask's bounding box
    grown by one pixel up and left (a background pixel whose right/lower neighbour is
    foreground) and by one row/column down and right (the neighbours the box's last row
    and column are compared with). That extra row/column is background unless it is the
    image edge, which seg2bmap extends by repetition: either way extending the crop by
    repetition gives seg2bmap's values inside it."""
    box = _box(mask)
    if box is None:
        return None
    h, w = mask.shape
    y0, y1, x0, x1 = box
    y0, x0 = max(y0 - 1, 0), max(x0 - 1, 0)
    y1, x1 = min(y1 + 1, h), min(x1 + 1, w)
    s = mask[y0:y1, x0:x1]
    ch, cw = s.shape
    ext = np.empty((ch + 1, cw + 1), np.bool_)
    ext[:ch, :cw] = s
    ext[ch, :cw] = s[-1]
    ext[:ch, cw] = s[:, -1]
    ext[ch, cw] = s[-1, -1]
    b = (s ^ ext[:ch, 1:]) | (s ^ ext[1:, :cw]) | (s ^ ext[1:, 1:])
    return b, y0, x0


def seg2bmap(mask: np.ndarray) -> np.ndarray:
    """Full-size boolean boundary map (the seg2bmap construction, same size as the mask)."""
    out = np.zeros(mask.shape, np.bool_)
    crop = boundary_crop(mask)
    if crop is not None:
        b, y0, x0 = crop
        out[y0 : y0 + b.shape[0], x0 : x0 + b.shape[1]] = b
    return out


def region_j(pred: np.ndarray, gt: np.ndarray) -> float:
    """IoU of two boolean masks; 1.0 when both are empty."""
    union = np.count_nonzero(pred | gt)
    if union == 0:
        return 1.0
    return np.count_nonzero(pred & gt) / union


def boundary_f(pred: np.ndarray, gt: np.ndarray, bound_th: float = BOUND_TH) -> float:
    """Boundary F-measure of two boolean masks of one size (module docstring)."""
    fb = boundary_crop(pred)
    gb = boundary_crop(gt)
    n_fg = 0 if fb is None else np.count_nonzero(fb[0])
    n_gt = 0 if gb is None else np.count_nonzero(gb[0])
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        (bf, fy, fx), (bg, gy, gx) = fb, gb
        y0, x0 = min(fy, gy), min(fx, gx)
        y1 = max(fy + bf.shape[0], gy + bg.shape[0])
        x1 = max(fx + bf.shape[1], gx + bg.shape[1])
        f_win = np.zeros((y1 - y0, x1 - x0), np.uint8)
        g_win = np.zeros((y1 - y0, x1 - x0), np.uint8)
        f_win[fy - y0 : fy - y0 + bf.shape[0], fx - x0 : fx - x0 + bf.shape[1]] = bf
        g_win[gy - y0 : gy - y0 + bg.shape[0], gx - x0 : gx - x0 + bg.shape[1]] = bg
        radius = bound_pix(*pred.shape, bound_th)
        fg_match = count_matched(f_win, g_win, radius)
        gt_match = count_matched(g_win, f_win, radius)
        precision = fg_match / float(n_fg)
        recall = gt_match / float(n_gt)
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def frame_jf(pred: np.ndarray, gt: np.ndarray, bound_th: float = BOUND_TH) -> tuple[float, float]:
    """(J, F) of one frame."""
    if pred.shape != gt.shape:
        raise ValueError(f"mask sizes differ: {pred.shape} vs {gt.shape}")
    return float(region_j(pred, gt)), float(boundary_f(pred, gt, bound_th))


# -------------------------------------------------------------------------- per dataset
@dataclass(frozen=True)
class ExpressionResult:
    video: str
    exp_id: str
    frames: tuple[str, ...]  # the frames evaluated
    j: tuple[float, ...]  # per frame, 0..1
    f: tuple[float, ...]

    @property
    def mean_j(self) -> float:
        return float(np.mean(self.j))

    @property
    def mean_f(self) -> float:
        return float(np.mean(self.f))


@dataclass(frozen=True)
class EvalResult:
    expressions: tuple[ExpressionResult, ...]
    ignored_gt: int  # GT PNGs of frames meta does not list

    @property
    def n_frames(self) -> int:
        return sum(len(e.frames) for e in self.expressions)

    @property
    def j(self) -> float:
        return 100.0 * float(np.mean([e.mean_j for e in self.expressions]))

    @property
    def f(self) -> float:
        return 100.0 * float(np.mean([e.mean_f for e in self.expressions]))

    @property
    def jf(self) -> float:
        return (self.j + self.f) / 2

    def metrics(self) -> dict:
        """The metrics JSON: percent, per expression in meta order."""
        per = []
        for e in self.expressions:
            j, f = 100.0 * e.mean_j, 100.0 * e.mean_f
            per.append({"video": e.video, "exp_id": e.exp_id, "J": j, "F": f, "J&F": (j + f) / 2})
        return {
            "J": self.j,
            "F": self.f,
            "J&F": self.jf,
            "n_expressions": len(self.expressions),
            "n_frames": self.n_frames,
            "per_expression": per,
        }


def _gt_frames(gt_root: Path, video, exp_id: str) -> tuple[list[str], int]:
    """Meta frames of one expression that have a GT PNG, and the count of GT PNGs that
    are not meta frames."""
    d = expression_dir(gt_root, video.name, exp_id)
    try:
        names = {n[:-4] for n in os.listdir(d) if n.endswith(".png") and not n.startswith(".")}
    except FileNotFoundError:
        raise KitError(
            f"{d}: no ground truth for {video.name}/{exp_id}, which meta lists; pass a --meta "
            "that lists only the annotated videos"
        ) from None
    except NotADirectoryError:
        raise KitError(f"{d}: expected a GT expression folder, found a file") from None
    frames = [f for f in video.frames if f in names]
    if not frames:
        raise KitError(
            f"{d}: none of the {len(video.frames)} frames meta lists for {video.name}/{exp_id} "
            "has a GT PNG; check --gt and --meta"
        )
    return frames, len(names) - len(frames)


def _eval_expression(job) -> ExpressionResult:
    video, exp_id, frames, gt_root, pred_root, gt_fg, pred_fg, bound_th = job
    js, fs = [], []
    for fr in frames:
        gp = gt_root / video / exp_id / f"{fr}.png"
        pp = pred_root / video / exp_id / f"{fr}.png"
        gt = read_mask(gp, gt_fg)
        pred = read_mask(pp, pred_fg)
        if gt.shape != pred.shape:
            raise KitError(
                f"{pp}: prediction is {pred.shape[1]}x{pred.shape[0]} but the ground truth "
                f"{gp} is {gt.shape[1]}x{gt.shape[0]}; masks must be at the original frame size"
            )
        j, f = frame_jf(pred, gt, bound_th)
        js.append(j)
        fs.append(f)
    return ExpressionResult(video, exp_id, tuple(frames), tuple(js), tuple(fs))


def evaluate(
    gt_root,
    pred_root,
    meta: Meta | None = None,
    workers: int = 1,
    skip_first_last: bool = False,
    gt_foreground: str = "nonzero",
    pred_foreground: str = "255",
    bound_th: float = BOUND_TH,
    progress: bool = True,
) -> EvalResult:
    """J and F of the tree ``pred_root`` against ``gt_root`` (module docstring)."""
    gt_root, pred_root = Path(gt_root), Path(pred_root)
    if not gt_root.is_dir():
        raise KitError(f"{gt_root}: ground-truth tree not found")
    if meta is None:
        meta = infer_meta(pred_root)
    check_tree(pred_root, meta)
    jobs, ignored = [], 0
    for v in meta:
        for e in v.exp_ids:
            frames, extra = _gt_frames(gt_root, v, e)
            ignored += extra
            if skip_first_last:
                if len(frames) < 3:
                    raise KitError(
                        f"{expression_dir(gt_root, v.name, e)}: --skip-first-last needs at "
                        f"least 3 GT frames, {v.name}/{e} has {len(frames)}"
                    )
                frames = frames[1:-1]
            jobs.append(
                (v.name, e, frames, gt_root, pred_root, gt_foreground, pred_foreground, bound_th)
            )
    if not jobs:
        raise KitError("meta lists no expressions: nothing to evaluate")
    results = []
    total = sum(len(j[2]) for j in jobs)
    with tqdm(total=total, unit="frame", desc="evaluate", disable=not progress) as bar:
        if workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                results.append(_eval_expression(job))
                bar.update(len(job[2]))
        else:
            name = lambda j: f"expression {j[0]}/{j[1]}"  # noqa: E731
            for r in pool.imap(_eval_expression, jobs, workers, name):
                results.append(r)
                bar.update(len(r.frames))
    return EvalResult(tuple(results), ignored)


# --------------------------------------------------------------------------------- CLI
def run(args) -> int:
    meta = load_meta(args.meta) if args.meta else None
    res = evaluate(
        args.gt,
        args.pred,
        meta,
        workers=args.workers,
        skip_first_last=args.skip_first_last,
        gt_foreground=args.gt_foreground,
        pred_foreground=args.foreground,
    )
    if res.ignored_gt:
        print(
            f"note: {res.ignored_gt} GT PNG(s) are of frames meta does not list; ignored",
            file=sys.stderr,
        )
    if args.json:
        write_json(args.json, res.metrics(), indent=1)
    print(
        f"J&F {res.jf:.2f}  J {res.j:.2f}  F {res.f:.2f}  "
        f"({len(res.expressions)} expressions, {res.n_frames} frames)"
    )
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="J, F and J&F of a mask tree against ground truth (DAVIS-2017 definitions)",
        description=__doc__,
    )
    p.add_argument(
        "--gt",
        required=True,
        metavar="GT_ROOT",
        help="ground-truth mask tree <GT_ROOT>/<video>/<exp_id>/<frame>.png; may hold fewer "
        "frames than meta (only frames with a GT PNG are evaluated)",
    )
    p.add_argument(
        "--pred",
        required=True,
        metavar="PRED_ROOT",
        help="predicted mask tree: every meta expression and frame, nothing else",
    )
    p.add_argument(
        "--meta",
        help="meta_expressions.json of the evaluated videos; default: read off --pred",
    )
    p.add_argument(
        "--json",
        metavar="OUT.json",
        help='write the metrics (DVC metrics file): "J", "F", "J&F" in percent and '
        '"per_expression" [{"video", "exp_id", "J", "F", "J&F"}]',
    )
    add_workers(p)
    p.add_argument(
        "--skip-first-last",
        action="store_true",
        help="leave out the first and last GT frame of every expression (semi-supervised "
        "DAVIS convention; not used for referring segmentation)",
    )
    p.add_argument(
        "--foreground",
        choices=FOREGROUND_RULES,
        default="255",
        help="prediction foreground rule: '255' (published reading) or 'nonzero'",
    )
    p.add_argument(
        "--gt-foreground",
        choices=FOREGROUND_RULES,
        default="nonzero",
        help="ground-truth foreground rule (default 'nonzero': any object id)",
    )
    declare_paths(p, reads=("gt", "pred", "meta"), writes=("json",))
    p.set_defaults(func=run)
