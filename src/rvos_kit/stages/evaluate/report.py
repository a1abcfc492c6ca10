"""``rvos-kit report``: the run report, J&F per node as an SVG chart and the fusion nodes'
worst expressions drawn against the ground truth, in one self-contained ``index.html``.

It draws with the audit's pictures and compares with the audit's engine: the one
documented import between stages (:mod:`rvos_kit.stages.audit.html`,
:func:`rvos_kit.stages.audit.compare.audit_stage`).
"""

from __future__ import annotations

import html
from pathlib import Path

from ...errors import KitError
from ..audit.html import (
    AGREE,
    CSS,
    OURS_LINE,
    OURS_ONLY,
    THEIRS_LINE,
    THEIRS_ONLY,
    _h,
    _html_table,
    _img_tag,
    _png,
    _safe,
    _write_folder,
    check_report_dir,
    expression_sheet,
)

RUN_DOC = """\
An HTML report of a pipeline run that has ground truth (the demo): J&F per node as a
bar chart drawn here as SVG (jf.svg; no script, no font or network fetch), a table of J,
F and J&F, and for each --overlay node the frames of its worst expressions with the
prediction drawn over the JPEG frame against the ground truth. Everything is inside
index.html (pictures as data: URIs), so it opens offline, from anywhere.

Overlay colours: green where prediction and ground truth agree, orange where only the
prediction has the object, blue where only the ground truth has it; the prediction's
outline in yellow, the ground truth's in cyan; a white box frames the disagreement. Each
sheet names the expression by its text (from --meta). Nodes given with --paired fuse
expressions in pairs (contract section 6): both expressions of a pair get one voted
mask, so their panels can look alike; the captions name each expression's partner.
DIR is written beside its destination and moved into place when complete; an existing
DIR is replaced only when it holds a previous report.
"""

BAR = "#4682b4"  # (70, 130, 180), the same blue as the PNG bar chart
BAR_FUSED = "#2e7d32"  # fusion nodes (the fused trees and their propagations)
RUN_LEGEND = (
    ("prediction and ground truth", AGREE),
    ("prediction only", OURS_ONLY),
    ("ground truth only", THEIRS_ONLY),
    ("outline of the prediction", OURS_LINE),
    ("outline of the ground truth", THEIRS_LINE),
)


def partners(meta_obj: dict | None) -> dict[tuple[str, str], str]:
    """(video, exp_id) -> the other expression of its pair under consecutive pairing:
    (0, 1), (2, 3), ... in meta order; a trailing odd expression has none."""
    out = {}
    for video, entry in (meta_obj or {}).get("videos", {}).items():
        ids = list(entry.get("expressions", {}))
        for i in range(0, len(ids) - 1, 2):
            out[(video, ids[i])], out[(video, ids[i + 1])] = ids[i + 1], ids[i]
    return out


def shown_path(path) -> str:
    """``path`` from the root of the DVC repository holding it (``demo/params.yaml``
    whatever the folder a stage runs in), or as given outside one."""
    p = Path(path).resolve()
    for d in p.parents:
        if (d / ".dvc").is_dir():
            return p.relative_to(d).as_posix()
    return str(path)


def _texts(meta_obj: dict | None) -> dict[tuple[str, str], str]:
    return {
        (video, e): str((d or {}).get("exp", "")) if isinstance(d, dict) else ""
        for video, entry in (meta_obj or {}).get("videos", {}).items()
        for e, d in entry.get("expressions", {}).items()
    }


def jf_svg(rows, fused=frozenset(), title: str = "J&F per node (%)") -> str:
    """A horizontal bar chart of J&F per node as a standalone SVG document; ``rows`` =
    (node, J, F, J&F); nodes in ``fused`` get the fusion colour."""
    label_w, bar_w, row_h, top, bottom = 220, 440, 26, 40, 34
    width, height = label_w + bar_w + 180, top + row_h * len(rows) + bottom
    x0, y_axis = label_w, top + row_h * len(rows)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Arial, sans-serif" '
        'font-size="13">',
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="8" y="22" font-size="16" font-weight="bold">{html.escape(title)}</text>',
    ]
    for tick in range(0, 101, 25):
        x = x0 + bar_w * tick / 100
        out.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{y_axis}" '
                   'stroke="#d7d7d7"/>')  # fmt: skip
        out.append(f'<text x="{x:.1f}" y="{y_axis + 18}" text-anchor="middle" '
                   f'fill="#5a5a5a" font-size="11">{tick}</text>')  # fmt: skip
    for i, (node, j, f, jf) in enumerate(rows):
        y = top + i * row_h
        w = bar_w * max(0.0, min(jf, 100.0)) / 100
        colour = BAR_FUSED if node.split(".")[0] in fused else BAR
        out += [
            f'<text x="8" y="{y + 17}">{html.escape(node[:30])}</text>',
            f'<rect x="{x0}" y="{y + 4}" width="{w:.1f}" height="{row_h - 8}" fill="{colour}">'
            f"<title>{html.escape(node)}: J&amp;F {jf:.2f}</title></rect>",
            f'<text x="{x0 + w + 6:.1f}" y="{y + 17}" font-size="12">{jf:.2f}  '
            f"(J {j:.1f}, F {f:.1f})</text>",
        ]
    out.append(f'<line x1="{x0}" y1="{top - 4}" x2="{x0}" y2="{y_axis}" stroke="#000000"/>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write_run_report(
    out_dir, rows, overlays, images=None, n_sheets=3, title="", meta_obj=None, paired=()
) -> None:
    """``rows`` = (node, J, F, J&F); ``overlays`` = [(node, StageAudit of prediction vs
    ground truth)]; ``meta_obj``: the parsed meta (expression texts and order);
    ``paired``: the nodes that fuse expressions in pairs. Writes index.html, jf.svg and
    img/ (the overlay sheets as PNG)."""
    texts, pair_of = _texts(meta_obj), partners(meta_obj)
    check_report_dir(out_dir)
    images = Path(images) if images else None
    fused = {name for name, _ in overlays}
    svg = jf_svg(rows, fused)
    pictures: list[tuple[str, bytes]] = []
    body = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>rvos-kit report</title>',
        f"<style>{CSS}</style></head><body>",
        "<h1>rvos-kit report</h1>",
        f"<p>{_h(title)}</p>" if title else "",
        "<h2>J&amp;F per node</h2>",
        "<p>Blue: single models and their propagations; green: fusion nodes.</p>",
        svg.replace('<svg xmlns="http://www.w3.org/2000/svg" ', "<svg ", 1),
        _html_table(
            ("node", "J", "F", "J&F"),
            [(n, f"{j:.2f}", f"{f:.2f}", f"{jf:.2f}") for n, j, f, jf in rows],
        ),  # fmt: skip
    ]
    legend = "".join(
        f'<span class="sw" style="background:rgb{c}"></span>{_h(n)}' for n, c in RUN_LEGEND
    )
    for si, (name, stage) in enumerate(overlays, 1):
        body.append(f"<h2>Overlays: {_h(name)} against the ground truth</h2>")
        body.append(f"<p>Legend:{legend}; white box: the disagreement. The "
                    f"{n_sheets} expressions with the lowest mean IoU, their worst "
                    "frames.</p>")  # fmt: skip
        if name in paired:
            body.append(
                f"<p>{_h(name)} fuses expressions in pairs (contract section 6): in each "
                "video, expressions 0 and 1, 2 and 3, ... (meta order) get one mask voted "
                "over both, so the two expressions of a pair show the same prediction, "
                "each against its own ground truth. A trailing odd expression keeps the "
                "key model's mask.</p>"
            )
        shown = 0
        for rank, e in enumerate(stage.worst(n_sheets), 1):
            text = texts.get((e.video, e.exp_id), "")
            im = expression_sheet(stage, e, images, "255", text)
            if im is None:
                continue
            png = _png(im)
            rel = f"img/{si:02d}-{_safe(name)}-{rank:02d}-{_safe(e.video)}-{_safe(e.exp_id)}.png"
            pictures.append((rel, png))
            words = f' "{text}"' if text else ""
            cap = f"{name}: {e.name}{words}, mean IoU {e.mean_iou:.4f}"
            mate = pair_of.get((e.video, e.exp_id)) if name in paired else None
            if mate is not None:
                said = texts.get((e.video, mate), "")
                cap += (
                    f"; paired with expression {mate}" + (f' "{said}"' if said else "")
                    + ": the pair vote gives both one mask"
                )  # fmt: skip
            body.append(f"<figure>{_img_tag(png, cap)}<figcaption>{_h(cap)}</figcaption></figure>")
            shown += 1
        if not shown:
            body.append("<p>Every frame matches the ground truth.</p>")
    body.append("</body></html>")
    texts = {"jf.svg": svg, "index.html": "\n".join(x for x in body if x) + "\n"}
    _write_folder(out_dir, pictures, texts, "rvos-kit report")


def run(args) -> int:
    from ...trees.jsonfiles import read_json
    from ...trees.meta import load_meta
    from ..audit.compare import audit_stage
    from .summary import summarize

    rows = summarize(args.metrics)
    meta = load_meta(args.meta) if args.meta else None
    meta_obj = read_json(args.meta) if args.meta else None
    unknown = sorted(set(args.paired or ()) - {n for n, _ in args.overlay or []})
    if unknown:
        raise KitError(f"--paired {unknown[0]}: not a node given with --overlay")
    check_report_dir(args.out)
    if args.images and not Path(args.images).is_dir():
        raise KitError(
            f"{args.images}: JPEG folder not found (expected <root>/<video>/<frame>.jpg)"
        )
    if args.overlay and not args.gt:
        raise KitError("--overlay draws a node against the ground truth: give --gt GT_ROOT")
    for root in [*([args.gt] if args.overlay else []), *(p for _, p in args.overlay or [])]:
        if not Path(root).is_dir():
            raise KitError(f"{root}: mask tree not found")
    overlays = [
        (name, audit_stage(name, pred, args.gt, meta, workers=args.workers, progress=False))
        for name, pred in args.overlay or []
    ]
    title = args.title or ""
    if args.pipeline:
        title = f"{shown_path(args.pipeline)}: {title}" if title else shown_path(args.pipeline)
    write_run_report(args.out, rows, overlays, args.images, args.sheets, title,
                     meta_obj, frozenset(args.paired or ()))  # fmt: skip
    print(
        f"report: {Path(args.out) / 'index.html'} (J&F chart also in {Path(args.out) / 'jf.svg'})"
    )
    return 0


def register(sub) -> None:

    from ...argtypes import add_workers, count, declare_paths

    p = sub.add_parser(
        "report",
        help="HTML report of a run: J&F per node (SVG) and overlays against the ground truth",
        description=RUN_DOC,
    )
    p.add_argument("metrics", nargs="+", metavar="METRICS.json",
                   help="`rvos-kit evaluate --json` files; the node is the file name")  # fmt: skip
    p.add_argument("--out", required=True, metavar="DIR", help="report folder to write")
    p.add_argument("--gt", metavar="GT_ROOT", help="ground-truth mask tree (for --overlay)")
    p.add_argument("--overlay", nargs=2, action="append", metavar=("NODE", "PRED_ROOT"),
                   help="draw this node's worst expressions against --gt (repeatable)")  # fmt: skip
    p.add_argument("--meta", help="meta_expressions.json: the expressions and frames compared")
    p.add_argument("--images", metavar="JPEG_ROOT",
                   help="frames <JPEG_ROOT>/<video>/<frame>.jpg under the masks "
                   "(default: a grey background)")  # fmt: skip
    p.add_argument("--sheets", type=count, default=3, help="worst expressions shown per node")
    p.add_argument("--paired", action="append", metavar="NODE",
                   help="an --overlay node that fuses expressions in pairs (consecutive "
                   "pairing): captions name each expression's partner (repeatable)")  # fmt: skip
    p.add_argument("--title", help="a line under the heading (default: none)")
    p.add_argument("--pipeline", metavar="PARAMS_YAML",
                   help="the params file of the run, named in the heading by its path from "
                   "the DVC repository's root, e.g. demo/params.yaml (default: none)")  # fmt: skip
    add_workers(p)
    declare_paths(p, reads=("metrics", "gt", "overlay:1", "meta", "images"), writes=("out",))
    p.set_defaults(func=run)
