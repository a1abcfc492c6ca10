"""``rvos-kit summarize``: one table of J&F per DAG node from ``evaluate`` metrics files.

Each file's node label is its name without ``.json`` (``soc.aot`` = soc after AOT). Prints
a Markdown table in the order given and writes a CSV (``node,J,F,J&F``) that
``dvc plots`` draws as a bar chart.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ...argtypes import declare_paths
from ...errors import KitError
from ...helptext import md_text
from ...trees.files import atomic_write_bytes
from ...trees.jsonfiles import read_json


def summarize(files) -> list[tuple[str, float, float, float]]:
    rows = []
    for f in files:
        m = read_json(f, "metrics file")
        try:
            rows.append((Path(f).stem, float(m["J"]), float(m["F"]), float(m["J&F"])))
        except (KeyError, TypeError, ValueError):
            raise KitError(f"{f}: not an `rvos-kit evaluate` metrics file (J, F, J&F)") from None
    return rows


def markdown(rows) -> str:
    lines = ["| node | J | F | J&F |", "|---|---:|---:|---:|"]
    lines += [f"| {md_text(n)} | {j:.2f} | {f:.2f} | {jf:.2f} |" for n, j, f, jf in rows]
    return "\n".join(lines)


def csv_text(rows) -> str:
    """``node,J,F,J&F`` (csv module quoting: a node named ``x,y|z`` stays one field)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(("node", "J", "F", "J&F"))
    w.writerows((n, f"{j:.4f}", f"{f:.4f}", f"{jf:.4f}") for n, j, f, jf in rows)
    return buf.getvalue()


def run(args) -> int:
    rows = summarize(args.files)
    if args.csv:
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(args.csv, csv_text(rows).encode())
    table = markdown(rows)
    if args.markdown:
        atomic_write_bytes(args.markdown, (table + "\n").encode())
    print(table)
    return 0


def register(sub) -> None:
    p = sub.add_parser("summarize", help="table of J&F per node from metrics files",
                       description=__doc__)  # fmt: skip
    p.add_argument("files", nargs="+", metavar="METRICS.json")
    p.add_argument("--csv", help="also write node,J,F,J&F to this CSV (for dvc plots)")
    p.add_argument("--markdown", help="also write the table to this Markdown file")
    declare_paths(p, reads=("files",), writes=("csv", "markdown"))
    p.set_defaults(func=run)
