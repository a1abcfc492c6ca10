"""DAG kinds against the ground truth (only when ``data.gt`` is set):
``evaluate_<ref>`` (J&F of one tree: each model, propagated tree and fusion node),
``summary`` (the table of them, plotted by DVC) and ``report`` (J&F per node as SVG and
the fusion nodes' worst expressions drawn against the ground truth, offline HTML)."""

from __future__ import annotations

from .context import Builder, q


def add(b: Builder, refs: list[str]) -> None:
    """Evaluate every tree in ``refs``, then the summary and the report of them all."""
    gt = b.p.data.gt
    if not gt:
        return
    files = [_evaluate(b, gt, ref) for ref in refs]
    _summary(b, files)
    _report(b, gt, files)


def _evaluate(b: Builder, gt: str, ref: str) -> str:
    m = f"{b.out}/metrics/{b.label(ref)}.json"
    b.stages[f"evaluate_{b.label(ref).replace('.', '_')}"] = {
        "cmd": q(
            [
                "rvos-kit",
                "evaluate",
                "--gt",
                gt,
                "--pred",
                b.tree(ref),
                "--meta",
                b.meta,
                "--json",
                m,
            ]
        ),  # fmt: skip
        "deps": [gt, b.tree(ref), b.meta],
        "metrics": [{m: {"cache": False}}],
    }
    return m


def _summary(b: Builder, files: list[str]) -> None:
    csv = f"{b.out}/metrics/summary.csv"
    md = f"{b.out}/metrics/summary.md"
    b.stages["summary"] = {
        "cmd": q(["rvos-kit", "summarize", *files, "--csv", csv, "--markdown", md]),
        "deps": files,
        "outs": [{md: {"cache": False}}],
        "plots": [
            {csv: {"cache": False, "x": "J&F", "y": "node", "template": "bar_horizontal"}}
        ],  # fmt: skip
    }


def _report(b: Builder, gt: str, files: list[str]) -> None:
    # Something to look at, offline: J&F per node as SVG and the fusion nodes' worst
    # expressions drawn against the ground truth (stages/evaluate/report.py).
    report = f"{b.out}/report"
    title = f"J&F per node and overlays against {gt}"
    args = ["rvos-kit", "report", *files, "--out", report, "--gt", gt, "--meta", b.meta,
            "--title", title, "--pipeline", b.params_name]  # fmt: skip
    deps = [*files, gt, b.meta]
    if b.p.data.images:
        args += ["--images", b.p.data.images]
        deps.append(b.p.data.images)
    for node in b.fusion:
        args += ["--overlay", node, b.tree(node)]
        deps.append(b.tree(node))
    for node, f in b.fusion.items():  # pair-voted nodes: captions name the partner
        if f.pairing == "consecutive":
            args += ["--paired", node]
    params = {"params": ["fusion"]} if b.fusion else {}  # the captions: each node's pairing
    b.stages["report"] = {"cmd": q(args), "deps": deps, **params,
                          "outs": [{report: {"cache": False}}]}  # fmt: skip
