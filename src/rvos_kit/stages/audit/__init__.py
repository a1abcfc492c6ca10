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

from pathlib import Path

from ...argtypes import add_workers, count, declare_paths
from ...errors import KitError
from ...trees.jsonfiles import read_json, write_json
from ...trees.masktree import FOREGROUND_RULES
from ...trees.meta import load_meta
from .compare import WORST_DEFAULT, StageAudit, audit_stage


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
        from .html import check_report_dir

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
        from .html import write_report

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
    add_workers(p)
    declare_paths(p, reads=("ours", "theirs", "stage:1,2", "meta", "images", "metrics="),
                  writes=("report", "json"))  # fmt: skip
    p.set_defaults(func=run)
