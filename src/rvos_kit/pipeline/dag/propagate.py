"""DAG kind ``propagate_<prop>_<node>``: a node's masks propagated from its key frames
(``propagation.<prop>``: AOT / DeAOT networks or optical flow), or the authors' released
propagated tree when the node itself is ``source: released``."""

from __future__ import annotations

import os

from .context import Builder, q


def _lock_sha256(b: Builder, checkpoint: str) -> str | None:
    """The sha256 ``paths.lock`` records for the file at ``checkpoint``, if any."""
    paths = b.p["paths"]
    if not (b.base / paths.get("lock", "checkpoints.lock")).is_file():
        return None
    dest, want = paths.get("downloads", "."), os.path.normpath(checkpoint)
    for a in b.lock().artifacts:
        if os.path.normpath(os.path.join(dest, a.path)) == want:
            return a.sha256
    return None


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
            pin = _lock_sha256(b, c["checkpoint"])
            if pin:  # loaded only if its bytes match (and where torch lacks weights_only)
                args += ["--checkpoint-sha256", pin]
        args += ["--scales", ",".join(str(s) for s in c.get("scales", [0.8, 1.0, 1.2]))]
        args += ["--flip" if c.get("flip", True) else "--no-flip"]
        args += ["--max-long-side", c.get("max_long_side", 1040)]
        args += ["--engine", c.get("engine") or "published_aot_fork"]
        if not c.get("share_encoder", True):
            args += ["--no-share-encoder"]
        # runner.mode docker: the verb runs here and starts each shard's container
    b.stages[f"propagate_{prop}_{node}"] = {
        "cmd": q(args),
        "deps": deps,
        "params": [f"propagation.{prop}", *(["device"] if c["backend"] != "flow" else [])],
        "outs": [out],
    }
