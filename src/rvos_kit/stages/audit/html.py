"""The audit report: ``index.html`` (self-contained: pictures as data: URIs) and
``report.md`` (the same summary; pictures as PNG files in ``img/``), plus ``audit.json``.

Pictures, drawn with PIL and numpy:

contact sheet
    for each of the worst expressions of a stage, its worst frames (lowest IoU first,
    shown in frame order), each with both masks over the JPEG frame (or a neutral grey
    background): green where both trees have the object, orange where only ours has it,
    blue where only theirs has it, and each mask's outline on top (ours yellow, theirs
    cyan), so a fill over a busy frame is still readable. A white box frames the
    disagreement (it can be a few pixels at 720p). Tiles are 320 pixels wide. The title
    names the stage and expression (and its text, when the caller gives it).
bar chart
    J&F per node, from the metrics files of ``rvos-kit evaluate --json``.

The report folder is built beside its destination and moved into place when complete;
an existing folder is replaced only when it holds a previous report (marker file
``.rvos-kit-report``).
"""

from __future__ import annotations

import base64
import html
import io
import re
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ...errors import KitError
from ...helptext import md_text
from ...trees.jsonfiles import write_json
from ...trees.masktree import StagedTree, read_mask

AGREE = (40, 200, 80)
OURS_ONLY = (255, 140, 0)
THEIRS_ONLY = (30, 110, 255)
NEUTRAL = (96, 96, 96)
ALPHA_AGREE = 0.45
ALPHA_DIFF = 0.85
TILE_W = 320
FRAMES_PER_SHEET = 8
MARKER = ".rvos-kit-report"
OURS_LINE = (255, 235, 0)
THEIRS_LINE = (0, 235, 255)
LEGEND = (
    ("agreement (both)", AGREE),
    ("ours only", OURS_ONLY),
    ("theirs only", THEIRS_ONLY),
    ("outline of ours", OURS_LINE),
    ("outline of theirs", THEIRS_LINE),
)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # pragma: no cover - Pillow without FreeType
        return ImageFont.load_default()


# ------------------------------------------------------------------------------ drawing
def overlay(ours: np.ndarray, theirs: np.ndarray, image: np.ndarray | None = None) -> np.ndarray:
    """RGB uint8 picture of two boolean masks over ``image`` (RGB, same size) or grey."""
    h, w = ours.shape
    if image is None:
        out = np.empty((h, w, 3), np.float32)
        out[:] = NEUTRAL
    else:
        out = image.astype(np.float32)
    for m, colour, alpha in (
        (ours & theirs, AGREE, ALPHA_AGREE),
        (ours & ~theirs, OURS_ONLY, ALPHA_DIFF),
        (~ours & theirs, THEIRS_ONLY, ALPHA_DIFF),
    ):
        out[m] = out[m] * (1 - alpha) + np.asarray(colour, np.float32) * alpha
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def overlay_colour(colour, alpha: float, background=NEUTRAL) -> tuple[int, int, int]:
    """The colour :func:`overlay` gives a pixel of ``colour`` over a uniform background."""
    return tuple(
        int(np.rint(b * (1 - alpha) + c * alpha)) for b, c in zip(background, colour, strict=True)
    )


def _tile(ours, theirs, image, caption: str) -> Image.Image:
    pic = Image.fromarray(overlay(ours, theirs, image))
    h, w = ours.shape
    scale = TILE_W / w  # every tile TILE_W wide: small frames are enlarged (nearest)
    tw, th = TILE_W, max(1, round(h * scale))
    if (tw, th) != (w, h):
        pic = pic.resize((tw, th), Image.BOX if scale < 1 else Image.NEAREST)
    if ours.any() or theirs.any():  # outlines at tile size: 2 pixels whatever the frame
        arr = np.asarray(pic).copy()
        for m, colour in ((theirs, THEIRS_LINE), (ours, OURS_LINE)):
            small = np.asarray(Image.fromarray(m.view(np.uint8)).resize((tw, th), Image.NEAREST))
            arr[(small > 0) & (cv2.erode(small, np.ones((5, 5), np.uint8)) == 0)] = colour
        pic = Image.fromarray(arr)
    x, y, bw, bh = cv2.boundingRect((ours ^ theirs).view(np.uint8))
    draw = ImageDraw.Draw(pic)
    if bw:
        x0, y0 = x * scale - 3, y * scale - 3
        x1, y1 = (x + bw) * scale + 2, (y + bh) * scale + 2
        draw.rectangle([x0, y0, x1, y1], outline=(255, 255, 255), width=2)
    tile = Image.new("RGB", (tw, th + 20), (255, 255, 255))
    tile.paste(pic, (0, 0))
    ImageDraw.Draw(tile).text((3, th + 3), caption, fill=(0, 0, 0), font=_font(13))
    return tile


def contact_sheet(title: str, tiles: list[Image.Image], cols: int = 4) -> Image.Image:
    """Tiles in rows of ``cols`` under a title bar."""
    cols = max(1, min(cols, len(tiles)))
    rows = [tiles[i : i + cols] for i in range(0, len(tiles), cols)]
    gap, head = 6, 30
    width = max(sum(t.width for t in r) + gap * (len(r) + 1) for r in rows) if rows else 400
    width = max(width, 400)
    height = head + sum(max(t.height for t in r) + gap for r in rows) + gap
    sheet = Image.new("RGB", (width, height), (235, 235, 235))
    draw = ImageDraw.Draw(sheet)
    draw.rectangle([0, 0, width, head - 1], fill=(40, 40, 40))
    draw.text((8, 7), title, fill=(255, 255, 255), font=_font(15))
    y = head + gap
    for r in rows:
        x = gap
        for t in r:
            sheet.paste(t, (x, y))
            x += t.width + gap
        y += max(t.height for t in r) + gap
    return sheet


def bar_chart(rows: list[tuple[str, float, float, float]]) -> Image.Image:
    """Horizontal bars of J&F (percent) per node; ``rows`` = (node, J, F, J&F)."""
    label_w, bar_w, row_h, top, bottom = 210, 480, 30, 34, 28
    width = label_w + bar_w + 170
    height = top + row_h * len(rows) + bottom
    im = Image.new("RGB", (width, height), (255, 255, 255))
    d = ImageDraw.Draw(im)
    font, small = _font(14), _font(12)
    d.text((8, 8), "J&F per node (%)", fill=(0, 0, 0), font=_font(16))
    y_axis = top + row_h * len(rows)
    for tick in range(0, 101, 25):
        x = label_w + bar_w * tick / 100
        d.line([x, top - 4, x, y_axis], fill=(215, 215, 215), width=1)
        d.text((x - 8, y_axis + 6), str(tick), fill=(90, 90, 90), font=small)
    for i, (node, j, f, jf) in enumerate(rows):
        y = top + i * row_h
        d.text((8, y + 7), node[:28], fill=(0, 0, 0), font=font)
        x1 = label_w + bar_w * max(0.0, min(jf, 100.0)) / 100
        d.rectangle([label_w, y + 5, x1, y + row_h - 5], fill=(70, 130, 180))
        d.text((x1 + 6, y + 7), f"{jf:.2f}  (J {j:.1f}, F {f:.1f})", fill=(0, 0, 0), font=small)
    d.line([label_w, top - 4, label_w, y_axis], fill=(0, 0, 0), width=1)
    return im


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:60] or "_"


# ---------------------------------------------------------------------------- sheets
def _jpeg(images: Path | None, video: str, frame: str, shape) -> tuple[np.ndarray | None, str]:
    if images is None:
        return None, ""
    p = images / video / f"{frame}.jpg"
    try:
        with Image.open(p) as im:
            # a header may claim any size (20000x20000: 1.2 GB decoded): nothing much
            # larger than the mask is decoded, and Pillow's own bomb check is caught
            if im.width * im.height > max(64 * shape[0] * shape[1], 1 << 24):
                return None, " (frame unreadable)"
            rgb = im.convert("RGB")
    except FileNotFoundError:
        return None, " (no JPEG)"
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None, " (frame unreadable)"
    note = ""
    if rgb.size != (shape[1], shape[0]):
        rgb = rgb.resize((shape[1], shape[0]), Image.BILINEAR)
        note = " (JPEG resized)"
    return np.asarray(rgb), note


def expression_sheet(
    stage, e, images: Path | None, foreground: str, text: str = ""
) -> Image.Image | None:
    """Contact sheet of one expression's worst frames, None when none can be drawn;
    ``text``: the expression's words, shown in the title."""
    worst = set(e.worst_frames(FRAMES_PER_SHEET))
    iou = dict(zip(e.frames, e.iou, strict=True))
    tiles = []
    for fr in (f for f in e.frames if f in worst):
        try:
            a = read_mask(Path(stage.ours) / e.video / e.exp_id / f"{fr}.png", foreground)
            b = read_mask(Path(stage.theirs) / e.video / e.exp_id / f"{fr}.png", foreground)
        except KitError:
            continue
        if a.shape != b.shape:
            continue
        image, note = _jpeg(images, e.video, fr, a.shape)
        tiles.append(_tile(a, b, image, f"{fr}  IoU {iou[fr]:.4f}{note}"))
    if not tiles:
        return None
    words = f' "{text[:57]}..."' if len(text) > 60 else (f' "{text}"' if text else "")
    title = (
        f"{stage.name}: {e.name}{words}   mean IoU {e.mean_iou:.4f}   "
        f"{e.n_differing} of {len(e.frames)} frames differ"
    )
    return contact_sheet(title, tiles)


# ---------------------------------------------------------------------------- writing
def check_report_dir(path) -> None:
    """Refuse a destination that exists and is not a previous report."""
    p = Path(path)
    if p.exists() or p.is_symlink():
        if not p.is_dir() or p.is_symlink():
            raise KitError(f"{p}: --report must be a folder (it exists and is not one)")
        if any(p.iterdir()) and not (p / MARKER).exists():
            raise KitError(
                f"{p}: exists and is not an rvos-kit report (no {MARKER}); it would be "
                "replaced: choose a new --report folder"
            )


def _f(x, digits: int = 6) -> str:
    return "n/a" if x is None or x != x else f"{x:.{digits}f}"


def _stage_rows(st: dict) -> list[tuple[str, str]]:
    def count(kind: str, side: str) -> str:
        d = st[kind][side]
        return f"{len(d['expressions'])} expressions, {len(d['frames'])} frames"

    return [
        ("verdict", "IDENTICAL" if st["identical"] else "DIFFERENT"),
        ("ours", st["ours"]),
        ("theirs", st["theirs"]),
        ("expressions compared", str(st["expressions_compared"])),
        ("expressions pixel-identical", str(st["expressions_identical"])),
        ("frames compared", str(st["frames_compared"])),
        ("frames pixel-identical", str(st["pixel_identical"])),
        ("frames byte-identical", str(st["byte_identical"])),
        ("mean IoU", _f(st["mean_iou"])),
        ("min IoU", _f(st["min_iou"])),
        ("missing in ours", count("missing", "ours")),
        ("missing in theirs", count("missing", "theirs")),
        ("extra in ours (not in meta)", count("extra", "ours")),
        ("extra in theirs (not in meta)", count("extra", "theirs")),
        ("unreadable / size mismatch", str(len(st["problems"]))),
    ]


def _listings(st: dict, limit: int = 50) -> list[tuple[str, list[str], int]]:
    out = []
    for kind, label in (("missing", "missing in"), ("extra", "not in meta, in")):
        for side in ("ours", "theirs"):
            items = st[kind][side]["expressions"] + st[kind][side]["frames"]
            if items:
                out.append((f"{label} {side}", items[:limit], len(items)))
    if st["problems"]:
        out.append(("unreadable or size mismatch", st["problems"][:limit], len(st["problems"])))
    return out


WORST_HEAD = ("#", "expression", "frames", "pixel-identical", "byte-identical", "mean IoU",
              "min IoU", "worst frame")  # fmt: skip


def _worst_rows(st: dict) -> list[tuple[str, ...]]:
    return [
        (str(i), f"{w['video']}/{w['exp_id']}", str(w["frames"]), str(w["pixel_identical"]),
         str(w["byte_identical"]), _f(w["mean_iou"]), _f(w["min_iou"]), str(w["worst_frame"]))
        for i, w in enumerate(st["worst"], 1)
    ]  # fmt: skip


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#222;
max-width:1400px}
h1{margin:0 0 4px}h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:36px}
table{border-collapse:collapse;margin:8px 0 16px}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;font-size:14px}
th{background:#f0f0f0}td.l,th.l{text-align:left}
.ok{color:#11772b;font-weight:bold}.bad{color:#b3261e;font-weight:bold}
.sw{display:inline-block;width:14px;height:14px;margin:0 4px -2px 12px;border:1px solid #555}
figure{margin:12px 0 24px}figcaption{font-size:14px;margin-top:4px}
img{max-width:100%;border:1px solid #bbb}code{font-size:13px}ul{font-size:14px}
"""


def _h(x) -> str:
    return html.escape(str(x))


def _html_table(head, rows, left=(0,)) -> str:
    def cell(tag, i, v):
        cls = ' class="l"' if i in left else ""
        return f"<{tag}{cls}>{_h(v)}</{tag}>"

    out = ["<table>", "<tr>" + "".join(cell("th", i, v) for i, v in enumerate(head)) + "</tr>"]
    for r in rows:
        out.append("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(r)) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _md_table(head, rows) -> str:
    lines = ["| " + " | ".join(md_text(h) for h in head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(md_text(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def write_report(
    out_dir,
    stages,
    summary: dict,
    metrics=(),
    images=None,
    n_worst: int = 20,
    n_sheets: int = 6,
    foreground: str = "255",
) -> None:
    """Write ``out_dir`` (index.html, report.md, audit.json, img/) atomically."""
    check_report_dir(out_dir)
    images = Path(images) if images else None
    pictures: list[tuple[str, bytes]] = []  # (relative path, PNG bytes)
    chart = None
    metric_rows = [(n, float(m["J"]), float(m["F"]), float(m["J&F"])) for n, m in metrics]
    if metric_rows:
        chart = ("img/metrics.png", _png(bar_chart(metric_rows)))
        pictures.append(chart)
    sheets = []  # per stage: [(expression name, relative path, caption)]
    for si, stage in enumerate(stages):
        mine = []
        for rank, e in enumerate(stage.worst(n_worst)[:n_sheets], 1):
            im = expression_sheet(stage, e, images, foreground)
            if im is None:
                continue
            stem = "-".join(_safe(x) for x in (stage.name, e.video, e.exp_id))
            rel = f"img/sheet-{si + 1}-{rank:02d}-{stem}.png"
            cap = (
                f"{stage.name}: {e.name} (#{rank} worst): mean IoU {e.mean_iou:.6f}, "
                f"min IoU {e.min_iou:.6f}, {e.n_differing} of {len(e.frames)} frames differ"
            )
            pictures.append((rel, _png(im)))
            mine.append((e.name, rel, cap))
        sheets.append(mine)
    data = dict(pictures)
    verdict = "every frame of every stage is pixel-identical" if summary["identical"] else (
        "DIFFERENCES FOUND")  # fmt: skip

    # ------------------------------------------------------------------- HTML
    def img_tag(rel: str, alt: str) -> str:
        return _img_tag(data[rel], alt)

    legend = "".join(
        f'<span class="sw" style="background:rgb{c}"></span>{_h(n)}' for n, c in LEGEND
    )
    overview_head = ("stage", "verdict", "frames", "pixel-identical", "byte-identical",
                     "mean IoU", "min IoU", "missing", "extra")  # fmt: skip
    overview = []
    for st in summary["stages"]:
        miss = sum(
            len(st["missing"][s][k]) for s in ("ours", "theirs") for k in ("expressions", "frames")
        )
        extra = sum(
            len(st["extra"][s][k]) for s in ("ours", "theirs") for k in ("expressions", "frames")
        )
        overview.append((st["name"], "IDENTICAL" if st["identical"] else "DIFFERENT",
                         st["frames_compared"], st["pixel_identical"], st["byte_identical"],
                         _f(st["mean_iou"]), _f(st["min_iou"]), miss, extra))  # fmt: skip
    cls = "ok" if summary["identical"] else "bad"
    h = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>rvos-kit audit</title>',
        f"<style>{CSS}</style></head><body>",
        "<h1>rvos-kit audit</h1>",
        f'<p>Verdict: <span class="{cls}">{_h(verdict)}</span> ({len(stages)} stage(s)).</p>',
        _html_table(overview_head, overview, left=(0, 1)),
    ]
    md = [
        "# rvos-kit audit",
        "",
        f"Verdict: **{verdict}** ({len(stages)} stage(s)).",
        "",
        _md_table(overview_head, overview),
        "",
    ]
    if metric_rows:
        head = ("node", "J", "F", "J&F")
        rows = [(n, f"{j:.2f}", f"{f:.2f}", f"{jf:.2f}") for n, j, f, jf in metric_rows]
        h += [
            "<h2>J&amp;F per node</h2>",
            img_tag(chart[0], "J&F per node"),
            _html_table(head, rows),
        ]
        md += ["## J&F per node", "", f"![J&F per node]({chart[0]})", "", _md_table(head, rows), ""]
    for st, mine in zip(summary["stages"], sheets, strict=True):
        h += [
            f"<h2>Stage {_h(st['name'])}</h2>",
            _html_table(("", "value"), _stage_rows(st), left=(0, 1)),
        ]
        md += [f"## Stage {md_text(st['name'])}", "", _md_table(("", "value"), _stage_rows(st)),
               ""]  # fmt: skip
        for label, items, total in _listings(st):
            more = f" (first {len(items)} of {total})" if total > len(items) else ""
            lis = "".join(f"<li><code>{_h(x)}</code></li>" for x in items)
            h.append(f"<h3>{_h(label)}{_h(more)}</h3><ul>{lis}</ul>")
            md += [f"### {label}{more}", "", *(f"- {md_text(x)}" for x in items), ""]
        if st["worst"]:
            h += [f"<h3>Worst {len(st['worst'])} expression(s)</h3>",
                  _html_table(WORST_HEAD, _worst_rows(st), left=(1, 7))]  # fmt: skip
            md += [f"### Worst {len(st['worst'])} expression(s)", "",
                   _md_table(WORST_HEAD, _worst_rows(st)), ""]  # fmt: skip
        else:
            h.append("<p>No expression differs.</p>")
            md += ["No expression differs.", ""]
        if mine:
            h.append(f"<h3>Contact sheets</h3><p>Legend:{legend}; white box: the "
                     "disagreement.</p>")  # fmt: skip
            md += ["### Contact sheets", "",
                   "Green: both trees; orange: ours only; blue: theirs only; outlines: "
                   "ours yellow, theirs cyan; white box: the disagreement.", ""]  # fmt: skip
            for name, rel, cap in mine:
                h.append(f"<figure>{img_tag(rel, name)}<figcaption>{_h(cap)}</figcaption></figure>")
                md += [f"![{md_text(name)}]({rel})", "", f"*{md_text(cap)}*", ""]
    h.append("</body></html>")

    texts = {"index.html": "\n".join(h) + "\n", "report.md": "\n".join(md) + "\n"}
    _write_folder(out_dir, pictures, texts, "rvos-kit audit --report",
                  lambda root: write_json(root / "audit.json", summary, indent=1))  # fmt: skip


def _img_tag(png: bytes, alt: str) -> str:
    """An <img> carrying its PNG inline: the page needs no other file."""
    b64 = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{b64}" alt="{_h(alt)}">'


def _write_folder(out_dir, pictures, texts: dict, who: str, more=None) -> None:
    """A report folder (img/ with ``pictures``, ``texts`` by file name, the marker),
    built beside ``out_dir`` and moved into place when complete."""
    with StagedTree(out_dir) as staged:
        root = staged.path
        (root / "img").mkdir()
        for rel, png in pictures:
            (root / rel).write_bytes(png)
        for name, text in texts.items():
            (root / name).write_text(text, encoding="utf-8")
        if more is not None:
            more(root)
        (root / MARKER).write_text(f"written by {who}\n")


# ------------------------------------------------------------------ the run report verb
