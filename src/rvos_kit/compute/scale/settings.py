"""``scale:`` of params.yaml and its command-line overrides: how a sharded stage asks Ray
for room (address, shard count, needs per shard kind, retries), never what it computes.

Read by :func:`settings_from_args` from the params file of the DVC stage the verb runs
as (:func:`stage_params`), with ``--shards`` / ``--ray-address`` / ``--gpus-per-shard`` /
``--cpus-per-shard`` on top (:func:`add_arguments`)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from ... import catalog
from ...catalog import default
from ...errors import KitError

# What the needs of a stage kind are when params.yaml does not say (scale.needs): one row
# per propagation backend in the backend catalogue, and inference.
DEFAULT_NEEDS = catalog.default_needs()


@dataclass(frozen=True)
class ShardNeeds:
    cpus: float = 1
    gpus: float = 0


@dataclass(frozen=True)
class ScaleSettings:
    """``scale:`` of params.yaml (every key optional)."""

    address: str = default("scale", "address")
    shards: int | None = None  # None = auto
    videos_per_shard: int | None = None
    max_retries: int = default("scale", "max_retries")
    needs: dict = field(default_factory=catalog.default_needs)
    local_cpus: int | None = None  # embedded Ray: CPUs (default: all) ...
    local_gpus: int | None = None  # ... and GPUs (default: what Ray detects)

    def needs_of(self, kind: str) -> ShardNeeds:
        n = {**catalog.default_needs().get(kind, {"cpus": 1, "gpus": 0}),
             **self.needs.get(kind, {})}  # fmt: skip
        return ShardNeeds(cpus=n["cpus"], gpus=n["gpus"])


def scale_settings(p, where: str = "params.yaml") -> ScaleSettings:
    """The ``scale`` section of a loaded params file (:class:`rvos_kit.config.Params`), or
    of a params mapping (checked here against the same schema); absent = every default."""
    if isinstance(p, dict) or p is None:
        from ...config import ScaleSection, check_section  # pydantic: the driver is native

        s = check_section(ScaleSection, (p or {}).get("scale"), "scale", where)
    else:
        s = p.scale
    needs = catalog.default_needs()
    for kind, n in (s.needs or {}).items():
        given = {k: v for k, v in n.model_dump().items() if v is not None}
        needs[kind] = {**needs.get(kind, {"cpus": 1, "gpus": 0}), **given}
    local = s.local
    return ScaleSettings(
        address=s.address.strip(),
        shards=None if s.shards == "auto" else s.shards,
        videos_per_shard=s.videos_per_shard,
        max_retries=s.max_retries,
        needs=needs,
        local_cpus=local.cpus if local else None,
        local_gpus=local.gpus if local else None,
    )


def add_arguments(parser) -> None:
    """The command-line overrides of ``scale.*`` shared by the sharded verbs."""
    from ...argtypes import non_negative, positive_int

    g = parser.add_argument_group("sharding on Ray (defaults: scale.* of ./params.yaml)")
    g.add_argument(
        "--shards",
        dest="scale_shards",
        type=positive_int,
        metavar="N",
        help="split the videos into N shards (scale.shards)",
    )
    g.add_argument(
        "--ray-address",
        dest="scale_address",
        help="local (embedded Ray, default), auto or ray://HOST:PORT (scale.address)",
    )
    g.add_argument(
        "--gpus-per-shard",
        dest="scale_gpus",
        type=non_negative,
        metavar="N",
        help="GPUs a shard asks Ray for (scale.needs.<kind>.gpus)",
    )
    g.add_argument(
        "--cpus-per-shard",
        dest="scale_cpus",
        type=non_negative,
        metavar="N",
        help="CPUs a shard asks Ray for (scale.needs.<kind>.cpus)",
    )


def stage_params(args) -> str | None:
    """The params file of the DVC stage this verb runs as: ``rvos-kit --params FILE``
    (generated stages say it), else ``params.yaml`` of the current folder when DVC runs
    the command (DVC sets DVC_STAGE and runs a stage beside its params file); None for a
    verb typed by hand."""
    given = getattr(args, "dag_params", None)
    if given:
        return given
    if os.environ.get("DVC_STAGE") and Path("params.yaml").is_file():
        return "params.yaml"
    return None


def settings_from_args(args, kind: str) -> ScaleSettings:
    """``scale`` of the stage's params file (:func:`stage_params`; defaults without one)
    with the command line's overrides."""
    params = stage_params(args)
    settings = load_scale(params) if params else ScaleSettings()
    if getattr(args, "scale_shards", None) is not None:
        settings = replace(settings, shards=args.scale_shards, videos_per_shard=None)
    if getattr(args, "scale_address", None) is not None:
        settings = replace(settings, address=args.scale_address)
    needs = {}
    for key, attr in (("gpus", "scale_gpus"), ("cpus", "scale_cpus")):
        v = getattr(args, attr, None)
        if v is not None:
            if not (math.isfinite(v) and v >= 0):  # a caller without the argparse type
                raise KitError(f"--{key}-per-shard must be a finite number >= 0, not {v!r}")
            needs[key] = v
    if needs:
        merged = {**settings.needs, kind: {**settings.needs.get(kind, {}), **needs}}
        settings = replace(settings, needs=merged)
    return settings


def load_scale(params: str | os.PathLike) -> ScaleSettings:
    """``scale`` of a params file (read and checked by :func:`rvos_kit.config.load_params`)."""
    from ...config import load_params  # pydantic: the sharded stage's driver runs natively

    return scale_settings(load_params(params), str(params))
