"""DAG kind ``propagate_<prop>_<node>``: a node's masks propagated from its key frames
(``propagation.<prop>``: AOT / DeAOT networks or optical flow), or the authors' released
propagated tree when the node itself is ``source: released``."""

from __future__ import annotations

from .context import Builder, q

# The module(s) each verb emitted here runs (collected in :data:`rvos_kit.pipeline.dag.CODE`).
CODE = {
    "propagate": ["stages/propagate", "trees/masktree.py", "trees/pngcodec.py",
                  "trees/_unfilter.c", "trees/sidefiles.py", "compute/scale"],
}  # fmt: skip


def add(b: Builder, prop: str, node: str) -> None:
    c = b.props[prop]
    out = b.tree(f"{node}/{prop}")
    source = (b.models.get(node) or b.fusion.get(node) or {}).get("source")
    if source == "released":
        b.released(f"released_{node}_{prop}", out, f"propagate_{prop}_{node}")
        return
    images = b.p["data"]["images"]
    start = b.png_run_tree(node) or b.tree(node)  # quirk 9.6: mutr's PNG run
    args = ["rvos-kit", "propagate", "--images", images, "--annotations", start,
            "--keyframes", b.key_frames(node), "--meta", b.meta, "--out", out,
            "--backend", c["backend"]]  # fmt: skip
    deps = [images, start, b.key_frames(node), b.meta]
    if c["backend"] != "flow":
        from ...stages.propagate.aot_model import DEFAULT_MODEL

        model = c.get("model") or DEFAULT_MODEL[c["backend"]]  # no model: the verb's default
        args += ["--model", model, "--device", b.p.get("device", "cuda")]
        if c.get("checkpoint"):
            args += ["--checkpoint", c["checkpoint"]]
            deps.append(c["checkpoint"])
        args += ["--scales", ",".join(str(s) for s in c.get("scales", [0.8, 1.0, 1.2]))]
        args += ["--flip" if c.get("flip", True) else "--no-flip"]
        args += ["--max-long-side", c.get("max_long_side", 1040)]
        # runner.mode docker: the verb runs here and starts each shard's container
    b.stages[f"propagate_{prop}_{node}"] = {
        "cmd": q(args),
        "deps": deps,
        "params": [f"propagation.{prop}", *(["device"] if c["backend"] != "flow" else [])],
        "outs": [out],
    }
