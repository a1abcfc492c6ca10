"""Container mounts for the paths the published inference code hard-codes.

A driver module that relies on mounts keeps its own table of them (``CONTAINER_PATHS``,
beside the code that relies on them) and turns it into ``(host, container path, mode)``
rows with ``container_mounts(out, pretrained)``; ``rvos-kit run`` asks here, by model
name. Drivers that redirect their paths in-process have no such function: no mounts.
"""

from __future__ import annotations

from .core import load_driver


def container_mounts(model: str, out, pretrained) -> list[tuple[str, str, str]]:
    d = load_driver(model)
    return d.container_mounts(out, pretrained) if hasattr(d, "container_mounts") else []


def prepare_container(model: str, out) -> None:
    """Create the kit-owned work folders a model's mounts need (before ``docker run``)."""
    d = load_driver(model)
    if hasattr(d, "prepare_work"):
        d.prepare_work(out)
