"""What a kit process used, written at its exit when asked (``rvos-kit smoke``).

With ``RVOS_KIT_PROBE_DIR=DIR`` in its environment, every ``rvos-kit`` process (the
runner, the verb, each Ray shard's child) writes ``DIR/<pid>.json`` when it exits::

    {"pid", "argv": first words of its command line,
     "host_peak_kb": the larger of its own ru_maxrss and its waited-for children's
                     (the published UNINEXT script runs as a child of infer),
     "cpu_self_s", "cpu_children_s": its CPU seconds, and its waited-for children's,
     "torch", "cuda" (torch.version.cuda), "device" (the CUDA device's name),
     "gpu_peak_bytes": torch.cuda.max_memory_allocated, largest over the devices,
                       or null where CUDA was never initialised}

torch is read only when the process imported it (the probe imports nothing heavy).
"""

from __future__ import annotations

import atexit
import json
import os
import resource
import sys
from pathlib import Path

ENV = "RVOS_KIT_PROBE_DIR"


_INSTALLED: list[str] = []


def install() -> None:
    """Write the record at exit (once per process), when ``RVOS_KIT_PROBE_DIR`` is set."""
    where = os.environ.get(ENV)
    if where and not _INSTALLED:
        _INSTALLED.append(where)
        atexit.register(write_record, where)


def record() -> dict:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = {
        "pid": os.getpid(),
        "argv": sys.argv[1:3],
        "host_peak_kb": max(me.ru_maxrss, kids.ru_maxrss),  # kB on Linux
        "cpu_self_s": me.ru_utime + me.ru_stime,
        "cpu_children_s": kids.ru_utime + kids.ru_stime,
        "torch": None,
        "cuda": None,
        "device": None,
        "gpu_peak_bytes": None,
    }
    torch = sys.modules.get("torch")
    if torch is None:
        return out
    out["torch"] = str(getattr(torch, "__version__", "?"))
    out["cuda"] = getattr(getattr(torch, "version", None), "cuda", None)
    try:
        if torch.cuda.is_initialized():
            n = torch.cuda.device_count()
            out["gpu_peak_bytes"] = max(torch.cuda.max_memory_allocated(i) for i in range(n))
            out["device"] = torch.cuda.get_device_name(0)
    except Exception as e:  # a probe never fails the run it watches
        out["device"] = f"unknown ({type(e).__name__})"
    return out


def write_record(where: str | os.PathLike | None = None) -> None:
    d = Path(where or os.environ[ENV])
    try:
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f".{os.getpid()}.json.tmp"
        tmp.write_text(json.dumps(record()))
        os.replace(tmp, d / f"{os.getpid()}.json")
    except OSError as e:
        print(f"rvos-kit: probe: cannot write {d}: {e}", file=sys.stderr)


def read_records(where: str | os.PathLike) -> list[dict]:
    d = Path(where)
    if not d.is_dir():
        return []
    return [json.loads(p.read_text()) for p in sorted(d.glob("*.json"))]
