"""Container mounts for the paths the published inference code hard-codes.

A driver module that relies on mounts keeps its own table of them (``CONTAINER_PATHS``,
beside the code that relies on them) and turns it into ``(host, container path, mode)``
rows with ``container_mounts(out, pretrained)``; ``rvos-kit run`` and the sharded infer
stage in docker mode ask here, by model name (:func:`mounts_for_args`). Drivers that
redirect their paths in-process have no such function: no mounts.
"""

from __future__ import annotations

from ....compute.docker import option_value
from .core import load_driver


def container_mounts(model: str, out, pretrained) -> list[tuple[str, str, str]]:
    d = load_driver(model)
    return d.container_mounts(out, pretrained) if hasattr(d, "container_mounts") else []


def prepare_container(model: str, out) -> None:
    """Create the kit-owned work folders a model's mounts need (before ``docker run``)."""
    d = load_driver(model)
    if hasattr(d, "prepare_work"):
        d.prepare_work(out)


def mounts_for_args(args: list[str]) -> list[tuple[str, str, str]]:
    """``infer`` arguments -> ``(host, container path, mode)`` for the paths the published
    code hard-codes (empty unless --model, --out and --pretrained are all given)."""
    model = option_value(args, "--model")
    out, pretrained = option_value(args, "--out"), option_value(args, "--pretrained")
    if model is None or out is None or pretrained is None:
        return []
    return container_mounts(model, out, pretrained)
