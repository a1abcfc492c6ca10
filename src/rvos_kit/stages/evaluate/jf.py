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

import os
import sys
from pathlib import Path

from tqdm import tqdm

from ...argtypes import add_workers, declare_paths
from ...compute import pool
from ...errors import KitError
from ...trees.jsonfiles import write_json
from ...trees.masktree import FOREGROUND_RULES, check_tree, expression_dir, read_mask
from ...trees.meta import Meta, infer_meta, load_meta
from .metric import BOUND_TH, EvalResult, ExpressionResult, frame_jf


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
