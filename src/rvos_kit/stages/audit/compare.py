"""The audit's engine: two mask trees compared frame by frame (byte-identical,
pixel-identical, IoU), per expression and per stage (:func:`audit_stage`). The verb and
what it reports are described in ``rvos-kit audit --help`` (:mod:`rvos_kit.stages.audit`).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ...compute import pool
from ...errors import KitError
from ...trees.masktree import decode_mask, decode_values
from ...trees.meta import Meta

WORST_DEFAULT = 20


# ------------------------------------------------------------------------------ reading
def scan_tree(root: str | os.PathLike) -> dict[tuple[str, str], set[str]]:
    """``{(video, exp_id): {frame names}}`` of a mask tree (hidden entries ignored)."""
    root = Path(root)
    if not root.is_dir():
        raise KitError(
            f"{root}: mask tree not found (expected <root>/<video>/<exp_id>/<frame>.png)"
        )
    out: dict[tuple[str, str], set[str]] = {}
    for v in os.scandir(root):
        if v.name.startswith(".") or not v.is_dir():
            continue
        for e in os.scandir(v.path):
            if e.name.startswith(".") or not e.is_dir():
                continue
            out[v.name, e.name] = {
                n[:-4] for n in os.listdir(e.path) if n.endswith(".png") and not n.startswith(".")
            }
    return out


def _exp_key(key: tuple[str, str]):
    v, e = key
    return (v, 0, int(e), e) if e.isdigit() else (v, 1, 0, e)


def _frame_values(data: bytes, where: str) -> tuple[np.ndarray, str]:
    """(pixel array, kind): stored grey values for 8-bit grayscale PNGs, else PIL's."""
    arr = decode_values(data, where)
    if arr is not None:
        return arr, "L"
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return np.asarray(im), im.mode
    except (OSError, ValueError, SyntaxError) as e:
        raise KitError(f"{where}: cannot decode PNG ({e})") from None


def _foreground(values: np.ndarray, kind: str, data: bytes, where: str, rule: str) -> np.ndarray:
    if kind == "L":  # the same rule read_mask applies to grayscale PNGs
        return values == 255 if rule == "255" else values != 0
    return decode_mask(data, where, rule)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks; 1 when both are empty."""
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


# ------------------------------------------------------------------------------ results
@dataclass(frozen=True)
class ExpressionAudit:
    video: str
    exp_id: str
    frames: tuple[str, ...]  # compared, in expected order
    iou: tuple[float, ...]  # per compared frame
    pixel: tuple[bool, ...]  # per compared frame: pixel-identical
    byte: tuple[bool, ...]  # per compared frame: byte-identical
    problems: tuple[tuple[str, str], ...] = ()  # (frame, what): size mismatch, unreadable
    missing_ours: tuple[str, ...] = ()  # expected frames absent from ours
    missing_theirs: tuple[str, ...] = ()
    extra_ours: tuple[str, ...] = ()  # frames meta does not list
    extra_theirs: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.video}/{self.exp_id}"

    @property
    def n_pixel(self) -> int:
        return sum(self.pixel)

    @property
    def n_byte(self) -> int:
        return sum(self.byte)

    @property
    def n_differing(self) -> int:
        return len(self.frames) - self.n_pixel

    @property
    def mean_iou(self) -> float:
        return float(np.mean(self.iou)) if self.iou else float("nan")

    @property
    def min_iou(self) -> float:
        return float(min(self.iou)) if self.iou else float("nan")

    @property
    def worst_frame(self) -> str | None:
        if not self.iou:
            return None
        return self.frames[int(np.argmin(self.iou))]

    def worst_frames(self, n: int) -> list[str]:
        """Up to ``n`` frames that are not pixel-identical, lowest IoU first."""
        diff = [i for i, p in enumerate(self.pixel) if not p]
        diff.sort(key=lambda i: (self.iou[i], i))
        return [self.frames[i] for i in diff[:n]]

    def summary(self) -> dict:
        return {
            "video": self.video,
            "exp_id": self.exp_id,
            "frames": len(self.frames),
            "pixel_identical": self.n_pixel,
            "byte_identical": self.n_byte,
            "mean_iou": _num(self.mean_iou),
            "min_iou": _num(self.min_iou),
            "worst_frame": self.worst_frame,
        }


def _num(x: float):
    return None if x != x else x  # NaN -> null in JSON


@dataclass
class StageAudit:
    name: str
    ours: str
    theirs: str
    expressions: list[ExpressionAudit] = field(default_factory=list)
    missing_ours: list[tuple[str, str]] = field(default_factory=list)  # whole expressions
    missing_theirs: list[tuple[str, str]] = field(default_factory=list)
    extra_ours: list[tuple[str, str]] = field(default_factory=list)  # not in meta
    extra_theirs: list[tuple[str, str]] = field(default_factory=list)

    @property
    def n_frames(self) -> int:
        return sum(len(e.frames) for e in self.expressions)

    @property
    def n_pixel(self) -> int:
        return sum(e.n_pixel for e in self.expressions)

    @property
    def n_byte(self) -> int:
        return sum(e.n_byte for e in self.expressions)

    @property
    def all_iou(self) -> list[float]:
        return [x for e in self.expressions for x in e.iou]

    @property
    def mean_iou(self) -> float:
        ious = self.all_iou
        return float(np.mean(ious)) if ious else float("nan")

    @property
    def min_iou(self) -> float:
        ious = self.all_iou
        return float(min(ious)) if ious else float("nan")

    def frame_list(self, attr: str) -> list[str]:
        """``video/exp/frame`` of every frame listed under ``attr`` of the expressions."""
        return [f"{e.name}/{f}" for e in self.expressions for f in getattr(e, attr)]

    @property
    def problems(self) -> list[str]:
        return [f"{e.name}/{f}: {what}" for e in self.expressions for f, what in e.problems]

    @property
    def identical(self) -> bool:
        """Every expected frame present in both trees and pixel-identical."""
        return (
            self.n_pixel == self.n_frames
            and not (self.missing_ours or self.missing_theirs)
            and not (self.extra_ours or self.extra_theirs)
            and not any(
                e.missing_ours or e.missing_theirs or e.extra_ours or e.extra_theirs
                for e in self.expressions
            )
        )

    def worst(self, n: int = WORST_DEFAULT) -> list[ExpressionAudit]:
        diff = [e for e in self.expressions if e.n_differing]
        diff.sort(
            key=lambda e: (e.mean_iou, e.min_iou, -e.n_differing, _exp_key((e.video, e.exp_id)))
        )
        return diff[:n]

    def summary(self, n_worst: int = WORST_DEFAULT) -> dict:
        def names(keys):
            return [f"{v}/{e}" for v, e in keys]

        return {
            "name": self.name,
            "ours": self.ours,
            "theirs": self.theirs,
            "identical": self.identical,
            "expressions_compared": sum(1 for e in self.expressions if e.frames),
            "expressions_identical": sum(
                1 for e in self.expressions if e.frames and e.n_differing == 0
            ),
            "frames_compared": self.n_frames,
            "pixel_identical": self.n_pixel,
            "byte_identical": self.n_byte,
            "mean_iou": _num(self.mean_iou),
            "min_iou": _num(self.min_iou),
            "missing": {
                "ours": {
                    "expressions": names(self.missing_ours),
                    "frames": self.frame_list("missing_ours"),
                },
                "theirs": {
                    "expressions": names(self.missing_theirs),
                    "frames": self.frame_list("missing_theirs"),
                },
            },
            "extra": {
                "ours": {
                    "expressions": names(self.extra_ours),
                    "frames": self.frame_list("extra_ours"),
                },
                "theirs": {
                    "expressions": names(self.extra_theirs),
                    "frames": self.frame_list("extra_theirs"),
                },
            },
            "problems": self.problems,
            "worst": [e.summary() for e in self.worst(n_worst)],
            "per_expression": [e.summary() for e in self.expressions],
        }


# ----------------------------------------------------------------------------- compare
def _audit_expression(job) -> ExpressionAudit:
    video, exp_id, frames, ours, theirs, rule, sets = job
    names, ious, pixel, byte, problems = [], [], [], [], []
    for fr in frames:
        pa = ours / video / exp_id / f"{fr}.png"
        pb = theirs / video / exp_id / f"{fr}.png"
        names.append(fr)
        try:
            da, db = pa.read_bytes(), pb.read_bytes()
        except OSError as e:
            problems.append((fr, f"unreadable: {e}"))
            ious.append(0.0)
            pixel.append(False)
            byte.append(False)
            continue
        if da == db:
            ious.append(1.0)
            pixel.append(True)
            byte.append(True)
            continue
        byte.append(False)
        try:
            va, ka = _frame_values(da, str(pa))
            vb, kb = _frame_values(db, str(pb))
            if va.shape[:2] != vb.shape[:2]:
                problems.append((fr, f"size differs: ours {va.shape[1]}x{va.shape[0]}, "
                                     f"theirs {vb.shape[1]}x{vb.shape[0]}"))  # fmt: skip
                ious.append(0.0)
                pixel.append(False)
                continue
            pixel.append(ka == kb and np.array_equal(va, vb))
            ma = _foreground(va, ka, da, str(pa), rule)
            mb = _foreground(vb, kb, db, str(pb), rule)
            ious.append(float(mask_iou(ma, mb)))
        except KitError as e:
            problems.append((fr, f"unreadable: {e}"))
            ious.append(0.0)
            pixel.append(False)
    return ExpressionAudit(video, exp_id, tuple(names), tuple(ious), tuple(pixel), tuple(byte),
                           tuple(problems), *sets)  # fmt: skip


def audit_stage(
    name: str,
    ours,
    theirs,
    meta: Meta | None = None,
    workers: int = 1,
    foreground: str = "255",
    progress: bool = True,
) -> StageAudit:
    """Compare the trees ``ours`` and ``theirs`` (module docstring)."""
    ours, theirs = Path(ours), Path(theirs)
    so, st = scan_tree(ours), scan_tree(theirs)
    stage = StageAudit(name, str(ours), str(theirs))
    if meta is not None:
        expected = {(v.name, e): list(v.frames) for v in meta for e in v.exp_ids}
        stage.extra_ours = sorted(set(so).difference(expected), key=_exp_key)
        stage.extra_theirs = sorted(set(st).difference(expected), key=_exp_key)
    else:
        keys = sorted(set(so) | set(st), key=_exp_key)
        expected = {k: sorted(so.get(k, set()) | st.get(k, set())) for k in keys}
    jobs = []
    for (vid, exp), frames in expected.items():
        if (vid, exp) not in so:
            stage.missing_ours.append((vid, exp))
        if (vid, exp) not in st:
            stage.missing_theirs.append((vid, exp))
        if (vid, exp) not in so or (vid, exp) not in st:
            continue
        fo, ft = so[vid, exp], st[vid, exp]
        want = set(frames)
        sets = (
            tuple(f for f in frames if f not in fo),
            tuple(f for f in frames if f not in ft),
            tuple(sorted(fo - want)),
            tuple(sorted(ft - want)),
        )
        common = [f for f in frames if f in fo and f in ft]
        jobs.append((vid, exp, common, ours, theirs, foreground, sets))
    total = sum(len(j[2]) for j in jobs)
    with tqdm(total=total, unit="frame", desc=f"audit {name}", disable=not progress) as bar:
        if workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                stage.expressions.append(_audit_expression(job))
                bar.update(len(job[2]))
        else:
            name = lambda j: f"expression {j[0]}/{j[1]}"  # noqa: E731
            for r in pool.imap(_audit_expression, jobs, workers, name):
                stage.expressions.append(r)
                bar.update(len(r.frames))
    return stage
