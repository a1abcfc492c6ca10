"""``rvos-kit audit``: how exactly does our recomputation agree with a released tree?

For each stage (a pair of mask trees, ours and theirs) and each expression, over every
frame present in both trees:

frames compared
    frames that exist in both trees (and in meta, when ``--meta`` is given);
byte-identical
    the two PNG files have the same bytes;
pixel-identical
    same size and same decoded pixel values (the bytes may differ: another encoder);
IoU
    intersection over union of the two foreground masks (``--foreground``), 1 when both
    are empty, 0 when the sizes differ; mean and minimum per expression and overall.

The worst expressions (lowest mean IoU, then lowest minimum IoU, among those with a
frame that is not pixel-identical) are listed. Expressions or frames that one tree lacks,
and (with ``--meta``) those that meta does not list, are reported, not fatal; without
``--meta`` the expected set is the union of both trees. An unreadable PNG is reported
with the frame, not fatal either.

Exit status 0 when every expected frame is in both trees and pixel-identical, 1
otherwise (2 for bad arguments); ``--informational``: 0 unless the arguments are bad.

Several stages go in one call (and one report) with ``--stage NAME OURS THEIRS``
(repeatable), or ``--ours/--theirs/--name`` for one. ``--report DIR`` writes an HTML
page and the same summary as Markdown, with contact sheets of the worst cases and, with
``--metrics NODE=metrics.json`` (from ``rvos-kit evaluate``), a bar chart of J&F per node.
"""

from __future__ import annotations

import argparse
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from . import pool
from .argtypes import count, positive_int
from .errors import KitError
from .jsonfiles import read_json, write_json
from .masktree import FOREGROUND_RULES, decode_mask, decode_values
from .meta import Meta, load_meta

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


# ---------------------------------------------------------------------------- metrics
def read_metrics(spec: str) -> tuple[str, dict]:
    """``NODE=path.json`` -> (node, metrics) from an ``rvos-kit evaluate --json`` file."""
    node, sep, path = spec.partition("=")
    if not sep or not node or not path:
        raise KitError(f"--metrics {spec!r}: expected NODE=path/to/metrics.json")
    m = read_json(path, "metrics file")
    if not isinstance(m, dict) or not all(
        isinstance(m.get(k), (int, float)) and not isinstance(m.get(k), bool)
        for k in ("J", "F", "J&F")
    ):
        raise KitError(
            f'{path}: not a metrics file (needs numeric "J", "F", "J&F"); write it with '
            "rvos-kit evaluate --json"
        )
    return node, m


# --------------------------------------------------------------------------------- CLI
def _fmt(x: float, digits: int = 6) -> str:
    return "n/a" if x != x else f"{x:.{digits}f}"


def print_stage(s: StageAudit, n_worst: int) -> None:
    verdict = "IDENTICAL" if s.identical else "DIFFERENT"
    print(f"stage {s.name}: {verdict}  ({s.ours} vs {s.theirs})")
    print(
        f"  frames compared {s.n_frames}, pixel-identical {s.n_pixel}, byte-identical "
        f"{s.n_byte}, mean IoU {_fmt(s.mean_iou)}, min IoU {_fmt(s.min_iou)}"
    )
    for label, exps, attr in (
        ("missing in ours", s.missing_ours, "missing_ours"),
        ("missing in theirs", s.missing_theirs, "missing_theirs"),
        ("extra in ours (not in meta)", s.extra_ours, "extra_ours"),
        ("extra in theirs (not in meta)", s.extra_theirs, "extra_theirs"),
    ):
        frames = s.frame_list(attr)
        if exps or frames:
            shown = [f"{v}/{e}" for v, e in exps[:5]] + frames[:5]
            more = " ..." if len(exps) > 5 or len(frames) > 5 else ""
            print(
                f"  {label}: {len(exps)} expression(s), {len(frames)} frame(s): "
                f"{', '.join(shown)}{more}"
            )
    for p in s.problems[:10]:
        print(f"  problem: {p}")
    worst = s.worst(n_worst)
    if worst:
        print(f"  worst {len(worst)} expression(s):")
        print(f"    {'expression':<28} {'frames':>6} {'pixel=':>6} {'byte=':>6} "
              f"{'mean IoU':>9} {'min IoU':>9}  worst frame")  # fmt: skip
        for e in worst:
            print(f"    {e.name:<28} {len(e.frames):>6} {e.n_pixel:>6} {e.n_byte:>6} "
                  f"{e.mean_iou:>9.5f} {e.min_iou:>9.5f}  {e.worst_frame}")  # fmt: skip


def _stages_from_args(args) -> list[tuple[str, str, str]]:
    stages = [tuple(s) for s in args.stage or []]
    if args.ours or args.theirs:
        if not (args.ours and args.theirs):
            raise KitError("--ours and --theirs go together (or use --stage NAME OURS THEIRS)")
        stages.insert(0, (args.name or Path(args.theirs).name or "stage", args.ours, args.theirs))
    if not stages:
        raise KitError(
            "nothing to audit: give --ours ROOT --theirs ROOT or --stage NAME OURS THEIRS"
        )
    names = [s[0] for s in stages]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise KitError(f"stage name {dup[0]!r} given twice; name each stage differently (--name)")
    return stages


def run(args) -> int:
    stages_spec = _stages_from_args(args)
    meta = load_meta(args.meta) if args.meta else None
    metrics = [read_metrics(m) for m in args.metrics or []]
    if args.images and not Path(args.images).is_dir():
        raise KitError(
            f"{args.images}: JPEG folder not found (expected <root>/<video>/<frame>.jpg)"
        )
    if args.report:
        from .report import check_report_dir

        check_report_dir(args.report)
    for _, ours, theirs in stages_spec:  # every tree exists before any work starts
        for root in (ours, theirs):
            if not Path(root).is_dir():
                raise KitError(f"{root}: mask tree not found")
    stages = [
        audit_stage(n, o, t, meta, workers=args.workers, foreground=args.foreground)
        for n, o, t in stages_spec
    ]
    if not any(s.n_frames for s in stages):
        raise KitError(
            "no frame was compared (the trees hold no PNG in common); nothing is identical "
            "to nothing: check the tree paths and --meta"
        )
    for s in stages:
        print_stage(s, args.worst)
    summary = {
        "identical": all(s.identical for s in stages),
        "stages": [s.summary(args.worst) for s in stages],
        "metrics": {node: {k: m[k] for k in ("J", "F", "J&F")} for node, m in metrics},
    }
    if args.json:
        write_json(args.json, summary, indent=1)
    if args.report:
        from .report import write_report

        write_report(
            args.report,
            stages,
            summary,
            metrics=metrics,
            images=args.images,
            n_worst=args.worst,
            n_sheets=args.sheets,
            foreground=args.foreground,
        )
        print(f"report: {Path(args.report) / 'index.html'} and {Path(args.report) / 'report.md'}")
    return 0 if summary["identical"] or args.informational else 1


def register(sub) -> None:
    p = sub.add_parser(
        "audit",
        help="compare our mask trees with released ones: identical frames, IoU, report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--ours", metavar="ROOT", help="our mask tree (one stage; see --stage)")
    p.add_argument("--theirs", metavar="ROOT", help="the released mask tree to compare with")
    p.add_argument("--name", metavar="STAGE", help="name of the --ours/--theirs stage")
    p.add_argument(
        "--stage",
        nargs=3,
        action="append",
        metavar=("NAME", "OURS", "THEIRS"),
        help="one more stage to audit (repeatable): a table per stage in the report",
    )
    p.add_argument(
        "--meta",
        help="meta_expressions.json: the expressions and frames every tree must hold; "
        "default: the union of the two trees",
    )
    p.add_argument(
        "--report",
        metavar="DIR",
        help="write DIR/index.html (self-contained) and DIR/report.md with pictures; DIR "
        "is replaced when it holds a previous report, refused when it holds anything else",
    )
    p.add_argument(
        "--images",
        metavar="JPEG_ROOT",
        help="frames <JPEG_ROOT>/<video>/<frame>.jpg to draw the masks on (default: a "
        "neutral background)",
    )
    p.add_argument(
        "--metrics",
        action="append",
        metavar="NODE=JSON",
        help="J&F of a node from `rvos-kit evaluate --json` (repeatable): bar chart + table",
    )
    p.add_argument("--json", metavar="OUT.json", help="write the audit summary as JSON")
    p.add_argument(
        "--informational",
        action="store_true",
        help="exit 0 even when the trees differ (trees known to differ, e.g. mutr's PNG run "
        "and its dump, quirk 9.6: the numbers are the point)",
    )
    p.add_argument("--worst", type=count, default=WORST_DEFAULT, help="worst expressions listed")
    p.add_argument("--sheets", type=count, default=6, help="contact sheets per stage in the report")
    p.add_argument(
        "--foreground",
        choices=FOREGROUND_RULES,
        default="255",
        help="foreground rule for the IoU: '255' (published reading) or 'nonzero'",
    )
    p.add_argument(
        "--workers",
        type=positive_int,
        default=os.cpu_count() or 1,
        help="processes (default: cores)",
    )
    p.set_defaults(func=run)
