"""DAG kind ``audit`` (params ``audit``): each listed node's tree against the tree the
authors released for it (fetched and unpacked by ``import_<release>``), with an HTML
report and a JSON summary."""

from __future__ import annotations

from .context import Builder, q


def add(b: Builder) -> None:
    a = b.p.audit
    if not a:
        return
    args = ["rvos-kit", "audit"]
    deps = [b.meta]
    for node, release in a.stages.items():
        theirs = f"{b.out}/released/{node}"
        b.released(release, theirs, f"import_{release}")
        args += ["--stage", node, b.tree(node), theirs]
        deps += [b.tree(node), theirs]
    report, summary = a.report or f"{b.out}/audit", f"{b.out}/audit.json"
    args += ["--meta", b.meta, "--report", report, "--json", summary]
    if b.p.data.images:
        args += ["--images", b.p.data.images]
        deps.append(b.p.data.images)
    b.stages["audit"] = {
        "cmd": q(args),
        "deps": deps,
        "params": ["audit"],
        "outs": [{report: {"cache": False}}, {summary: {"cache": False}}],
    }
