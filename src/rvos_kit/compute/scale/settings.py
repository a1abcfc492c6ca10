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

from ...errors import KitError

# What the needs of a stage kind are when params.yaml does not say (scale.needs).
DEFAULT_NEEDS = {
    "flow": {"cpus": 1, "gpus": 0},
    "aot": {"cpus": 2, "gpus": 1},
    "deaot": {"cpus": 2, "gpus": 1},
    "infer": {"cpus": 4, "gpus": 1},
}
SCALE_KEYS = ("address", "shards", "videos_per_shard", "max_retries", "needs", "local")


@dataclass(frozen=True)
class ShardNeeds:
    cpus: float = 1
    gpus: float = 0


@dataclass(frozen=True)
class ScaleSettings:
    """``scale:`` of params.yaml (every key optional)."""

    address: str = "local"
    shards: int | None = None  # None = auto
    videos_per_shard: int | None = None
    max_retries: int = 2
    needs: dict = field(default_factory=lambda: {k: dict(v) for k, v in DEFAULT_NEEDS.items()})
    local_cpus: int | None = None  # embedded Ray: CPUs (default: all) ...
    local_gpus: int | None = None  # ... and GPUs (default: what Ray detects)

    def needs_of(self, kind: str) -> ShardNeeds:
        n = {**DEFAULT_NEEDS.get(kind, {"cpus": 1, "gpus": 0}), **self.needs.get(kind, {})}
        return ShardNeeds(cpus=n["cpus"], gpus=n["gpus"])


def _number(v, key: str, where: str, low: float, integer: bool = False):
    ok = isinstance(v, int) if integer else isinstance(v, (int, float)) and math.isfinite(v)
    if isinstance(v, bool) or not ok or v < low:
        kind = "an integer" if integer else "a finite number"
        raise KitError(f"{where}: scale.{key} must be {kind} >= {low:g}, not {v!r}")
    return v


def scale_settings(p: dict | None, where: str = "params.yaml") -> ScaleSettings:
    """The ``scale`` section of a parsed params file (absent = every default)."""
    s = (p or {}).get("scale") or {}
    if not isinstance(s, dict):
        raise KitError(f"{where}: scale must be a mapping")
    unknown = sorted(set(s) - set(SCALE_KEYS))
    if unknown:
        raise KitError(f"{where}: unknown key scale.{unknown[0]}; allowed: {', '.join(SCALE_KEYS)}")
    address = s.get("address", "local")
    if not isinstance(address, str) or not address.strip():
        raise KitError(f"{where}: scale.address must be local, auto, ray://HOST:PORT or HOST:PORT")
    shards = s.get("shards", "auto")
    if shards == "auto" or shards is None:
        shards = None
    else:
        shards = _number(shards, "shards", where, 1, integer=True)
    vps = s.get("videos_per_shard")
    if vps is not None:
        vps = _number(vps, "videos_per_shard", where, 1, integer=True)
        if shards is not None:
            raise KitError(f"{where}: give scale.shards or scale.videos_per_shard, not both")
    retries = _number(s.get("max_retries", 2), "max_retries", where, 0, integer=True)
    needs = {k: dict(v) for k, v in DEFAULT_NEEDS.items()}
    given = s.get("needs") or {}
    if not isinstance(given, dict):
        raise KitError(f"{where}: scale.needs must map a stage kind to {{cpus, gpus}}")
    for kind, n in given.items():
        if not isinstance(n, dict) or set(n) - {"cpus", "gpus"}:
            raise KitError(f"{where}: scale.needs.{kind} must be {{cpus: N, gpus: N}}")
        for k, v in n.items():
            _number(v, f"needs.{kind}.{k}", where, 0)
        needs[kind] = {**needs.get(kind, {"cpus": 1, "gpus": 0}), **n}
    local = s.get("local") or {}
    if not isinstance(local, dict) or set(local) - {"cpus", "gpus"}:
        raise KitError(f"{where}: scale.local must be {{cpus: N, gpus: N}} (embedded Ray)")
    for k, v in local.items():
        _number(v, f"local.{k}", where, 0, integer=True)
    return ScaleSettings(
        address=address.strip(),
        shards=shards,
        videos_per_shard=vps,
        max_retries=retries,
        needs=needs,
        local_cpus=local.get("cpus"),
        local_gpus=local.get("gpus"),
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
    """``scale`` of a params file."""
    from ...trees.yamlfiles import read_yaml

    path = Path(params)
    if not path.is_file():
        raise KitError(f"{path}: params file not found")
    p = read_yaml(path)  # the one safe reader: no aliases, no duplicate keys
    return scale_settings(p if isinstance(p, dict) else {}, str(path))
