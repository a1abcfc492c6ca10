"""The driver's connection to Ray: :func:`ray_session` joins or starts Ray as
``scale.address`` says, :func:`session_main` is ``python -m rvos_kit.compute.scale -- CMD``
(one local Ray for every stage of CMD, e.g. ``make demo``), and what the cluster offers
(:func:`cluster_slots`, :func:`describe_resources`).

Joining a cluster by address (``HOST:PORT``, ``ray://HOST:PORT``) first probes it
(:func:`probe_address`): a TCP connect and an HTTP/2 handshake (Ray's head and its
client server speak gRPC), each bounded by :data:`PROBE_TIMEOUT_S`. Nothing listening,
or a listener that does not answer as gRPC, fails within seconds naming the address;
Ray alone retried for 822 s there. Ray's own connection retries are bounded as well
(:data:`RAY_CONNECT_ENV`), for a head that answers the probe but not Ray."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys

from ...errors import KitError
from .settings import ScaleSettings, ShardNeeds

# Set by `python -m rvos_kit.compute.scale -- CMD` (make demo): the address of one local Ray that
# every stage of CMD with scale.address: local joins instead of starting its own.
SESSION_ENV = "RVOS_KIT_LOCAL_RAY"
# Seconds the probe of scale.address waits for a connection, then for the gRPC answer.
PROBE_TIMEOUT_S = 5.0
# Ray's connection attempts to a cluster's GCS when joining one (each ~30 s against a
# server that is not Ray; Ray's default is 20): set for the join unless already set.
RAY_CONNECT_ENV = {"RAY_gcs_server_port_wait_time_s": "2"}
# The HTTP/2 client preface and an empty SETTINGS frame: a gRPC server answers with a
# frame of its own, its SETTINGS (the server connection preface of RFC 9113).
_H2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of ``HOST:PORT`` or ``ray://HOST:PORT``; None for other forms."""
    rest = address[len("ray://") :] if address.startswith("ray://") else address
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def probe_address(address: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Refuse (:class:`KitError`, within ~2 x ``timeout`` seconds) a cluster address
    where nothing listens or where the listener does not answer an HTTP/2 handshake as a
    gRPC server (Ray's GCS and client server) does. Other forms (``auto``) pass."""
    hp = _host_port(address)
    if hp is None:
        return
    fix = "start the cluster first (docs/scale.md) or use scale.address: local"
    try:
        conn = socket.create_connection(hp, timeout=timeout)
    except OSError as e:
        why = f"no answer within {timeout:g} s" if isinstance(e, TimeoutError) else e.strerror
        raise KitError(
            f"scale.address {address!r}: nothing answers there ({why or e}); " + fix
        ) from None
    with conn:
        try:
            conn.settimeout(timeout)
            conn.sendall(_H2_HELLO)
            head = b""
            while len(head) < 9:
                block = conn.recv(9 - len(head))
                if not block:
                    break
                head += block
        except OSError:
            head = b""
    if len(head) < 9 or head[3] != 4:  # the first frame a gRPC server sends: SETTINGS
        raise KitError(
            f"scale.address {address!r}: something listens there but it is not a Ray head "
            f"(no gRPC answer within {timeout:g} s); check the host and port, {fix}"
        )


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
            # auto joins RAY_ADDRESS when set (Slurm recipe): that address is probed
            probe_address(os.environ.get("RAY_ADDRESS", "") if address == "auto" else address)
            saved = {k: os.environ.get(k) for k in RAY_CONNECT_ENV}
            os.environ.update({k: v for k, v in RAY_CONNECT_ENV.items() if saved[k] is None})
            try:
                ray.init(address=address, **common)
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
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
