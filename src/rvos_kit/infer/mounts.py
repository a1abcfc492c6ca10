"""Container mounts for the paths the published inference code hard-codes.

Each driver module keeps its own table of them (``CONTAINER_PATHS``, beside the code that
relies on them) and turns it into ``(host, container path, mode)`` rows with
``container_mounts(out, pretrained)``; ``rvos-kit run`` asks here, by model name.
"""

from __future__ import annotations

import importlib

# model -> driver module (in rvos_kit.infer) that owns its hard-coded-path table
DRIVER_MODULES = {"vit_huge": "uninext", "convnext": "uninext"}


def _driver(model: str):
    name = DRIVER_MODULES.get(model)
    if name is None:
        return None  # drivers that redirect their paths in-process need no mounts
    return importlib.import_module(f"rvos_kit.infer.{name}")


def container_mounts(model: str, out, pretrained) -> list[tuple[str, str, str]]:
    d = _driver(model)
    return [] if d is None else d.container_mounts(out, pretrained)


def prepare_container(model: str, out) -> None:
    """Create the kit-owned work folders a model's mounts need (before ``docker run``)."""
    d = _driver(model)
    if d is not None:
        d.prepare_work(out)
