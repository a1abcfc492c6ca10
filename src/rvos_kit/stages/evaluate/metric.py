"""The metric of ``rvos-kit evaluate`` (its help and :mod:`.jf` give the definitions):
region similarity J and boundary accuracy F of one frame (:func:`frame_jf`), and their
means per expression and over a dataset (:class:`ExpressionResult`, :class:`EvalResult`).
Pure functions of arrays: no files, no arguments, no output; the verb (:mod:`.jf`) walks
the trees, reads the PNGs and writes the metrics JSON.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

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
