"""The driver's connection to Ray: :func:`ray_session` joins or starts Ray as
``scale.address`` says, :func:`session_main` is ``python -m rvos_kit.compute.scale -- CMD``
(one local Ray for every stage of CMD, e.g. ``make demo``), and what the cluster offers
(:func:`cluster_slots`, :func:`describe_resources`)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

from ...errors import KitError
from .settings import ScaleSettings, ShardNeeds

# Set by `python -m rvos_kit.compute.scale -- CMD` (make demo): the address of one local Ray that
# every stage of CMD with scale.address: local joins instead of starting its own.
SESSION_ENV = "RVOS_KIT_LOCAL_RAY"


@contextlib.contextmanager
def ray_session(settings: ScaleSettings):
    """Connect to Ray as ``scale.address`` says; an existing connection is used as is."""
    import logging

    import ray

    if ray.is_initialized():
        yield
        return
    common = dict(
        include_dashboard=False,
        configure_logging=True,
        logging_level=logging.WARNING,
        log_to_driver=True,
        namespace="rvos-kit",
    )
    address = settings.address
    if address == "local" and os.environ.get(SESSION_ENV):
        address = os.environ[SESSION_ENV]  # the local Ray of the whole `make` run
    try:
        if address == "local":
            _local_init(settings)
        else:
            ray.init(address=address, **common)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise KitError(
            f"cannot connect to Ray at scale.address {address!r} ({e}); start the cluster "
            "first (docs/scale.md) or use scale.address: local"
        ) from None
    try:
        yield
    finally:
        ray.shutdown()


def _local_init(settings: ScaleSettings) -> None:
    import logging

    import ray

    ray.init(
        address="local",
        num_cpus=settings.local_cpus or os.cpu_count() or 1,
        num_gpus=settings.local_gpus,
        object_store_memory=128 * 1024 * 1024,  # tasks pass no big objects
        include_dashboard=False,
        logging_level=logging.WARNING,
        namespace="rvos-kit",
    )


def session_main(argv: list[str]) -> int:
    """``python -m rvos_kit.compute.scale -- CMD ...``: run CMD with one local Ray that every
    stage with ``scale.address: local`` joins (Ray's start-up, ~10 s on a 2-core machine,
    is then paid once per ``make demo``, not once per stage)."""
    import ray

    cmd = argv[1:] if argv[:1] == ["--"] else argv
    if not cmd:
        print("usage: python -m rvos_kit.compute.scale -- CMD [ARG...]", file=sys.stderr)
        return 2
    _local_init(ScaleSettings())
    try:
        env = {**os.environ, SESSION_ENV: ray.get_runtime_context().gcs_address}
        return subprocess.call(cmd, env=env)
    finally:
        ray.shutdown()


def cluster_slots(needs: ShardNeeds) -> int:
    """How many shards with these needs the cluster runs at once."""
    import ray

    res = ray.cluster_resources()
    slots = []
    if needs.cpus:
        slots.append(int(res.get("CPU", 0) // needs.cpus))
    if needs.gpus:
        slots.append(int(res.get("GPU", 0) // needs.gpus))
    return min(slots) if slots else max(1, int(res.get("CPU", 1)))


def describe_resources() -> str:
    """The cluster in a few words: nodes, CPUs, GPUs."""
    import ray

    res = ray.cluster_resources()
    nodes = sum(1 for x in ray.nodes() if x.get("Alive"))
    return (
        f"cluster: {nodes} node{'s' if nodes != 1 else ''}, {res.get('CPU', 0):g} CPU, "
        f"{res.get('GPU', 0):g} GPU"
    )
