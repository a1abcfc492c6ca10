"""DAG kind ``propagate_<prop>_<node>``: a node's masks propagated from its key frames
(``propagation.<prop>``: AOT / DeAOT networks or optical flow), or the authors' released
propagated tree when the node itself is ``source: released``."""

from __future__ import annotations

import os

from ...catalog import default
from .context import Builder, q


def _lock_sha256(b: Builder, checkpoint: str) -> str | None:
    """The sha256 ``paths.lock`` records for the file at ``checkpoint``, if any."""
    if not (b.base / b.p.paths.lock).is_file():
        return None
    dest, want = b.p.paths.downloads, os.path.normpath(checkpoint)
    for a in b.lock().artifacts:
        if os.path.normpath(os.path.join(dest, a.path)) == want:
            return a.sha256
    return None


def network_args(c) -> list[str]:
    """The ``propagate`` options of a network backend's settings ``c``
    (:class:`rvos_kit.config.PropagationSection`) after ``--model``/``--device``: the
    test-time views, the engine, the encoder sharing and its cache caps (also what
    ``rvos-kit smoke`` passes)."""
    args = ["--scales", ",".join(str(s) for s in c.scales)]
    args += ["--flip" if c.flip else "--no-flip"]
    args += ["--max-long-side", str(c.max_long_side)]
    args += ["--engine", c.engine or default("propagation", "engine")]
    if not c.share_encoder:
        args += ["--no-share-encoder"]
    for key in ("encoder_cache_mb", "host_cache_mb"):  # given: caps on the measured
        if getattr(c, key) is not None:
            args += ["--" + key.replace("_", "-"), str(getattr(c, key))]
    return args


def add(b: Builder, prop: str, node: str) -> None:
    c = b.props[prop]
    out = b.tree(f"{node}/{prop}")
    spec = b.models.get(node) or b.fusion.get(node)
    source = spec.source if spec is not None else None
    if source == "released":
        b.released(f"released_{node}_{prop}", out, f"propagate_{prop}_{node}")
        return
    images = b.p.data.images
    start = b.png_run_tree(node) or b.tree(node)  # quirk 9.6: mutr's PNG run
    args = ["rvos-kit", "propagate", "--images", images, "--annotations", start,
            "--keyframes", b.key_frames(node), "--meta", b.meta, "--out", out,
            "--backend", c.backend]  # fmt: skip
    deps = [images, start, b.key_frames(node), b.meta]
    if c.row.takes_model:  # a network (AOT / DeAOT): its model, weights and settings
        args += ["--model", c.network, "--device", b.p.device]
        if c.checkpoint:
            args += ["--checkpoint", c.checkpoint]
            deps.append(c.checkpoint)
            pin = _lock_sha256(b, c.checkpoint)
            if pin:  # loaded only if its bytes match (and where torch lacks weights_only)
                args += ["--checkpoint-sha256", pin]
        args += network_args(c)
        # runner.mode docker: the verb runs here and starts each shard's container
    b.stages[f"propagate_{prop}_{node}"] = {
        "cmd": q(args),
        "deps": deps,
        "params": [
            f"propagation.{prop}",
            *(["device", *b.stack_params()] if c.row.takes_model else []),
        ],
        "outs": [out],
    }
