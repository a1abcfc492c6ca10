"""Test-only (tests/faults/ on PYTHONPATH): arm the fault injection of rvos_faults.py in
this process when one of its variables is set; otherwise do nothing."""

import os

if any(os.environ.get(n) for n in ("RVOS_KIT_FAULT_KILL_WORKER", "RVOS_KIT_FAULT_SLOW_VIDEO_S",
                                   "RVOS_KIT_FAULT_PRELOAD")):  # fmt: skip
    import rvos_faults

    rvos_faults.install()
