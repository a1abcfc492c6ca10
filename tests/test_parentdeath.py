"""A pooled verb's worker and a shard's child die with their parent
(:func:`rvos_kit.compute.parentdeath.die_with_parent`, Linux PR_SET_PDEATHSIG): real
processes, the parent SIGKILLed, the child gone within seconds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"),
                                                    os.environ.get("PYTHONPATH", "")])}  # fmt: skip
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux prctl")

# A parent that starts two pool workers; each writes its pid and sleeps.
POOL = """
import os, sys, time
from rvos_kit.compute.pool import imap
def job(x):
    open(os.path.join(sys.argv[1], str(os.getpid())), "w").close()
    time.sleep(120)
list(imap(job, [1, 2], workers=2))
"""
# A parent that starts one shard child (as the Ray task does: its pid in the environment).
SHARD = """
import os, subprocess, sys
child = "from rvos_kit.compute.scale.child import child_setup; child_setup(); " \\
        "import os, sys, time; open(os.path.join(sys.argv[1], str(os.getpid())), 'w').close(); " \\
        "time.sleep(120)"
env = {**os.environ, "RVOS_KIT_SHARD_PARENT": str(os.getpid())}
subprocess.run([sys.executable, "-c", child, sys.argv[1]], env=env)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")  # a zombie has died (waiting for its reaper)


def _children_die_with(script: str, n: int, tmp_path: Path) -> None:
    parent = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], env=ENV)
    try:
        deadline = time.monotonic() + 60
        while len(list(tmp_path.iterdir())) < n and time.monotonic() < deadline:
            assert parent.poll() is None, "the parent ended early"
            time.sleep(0.05)
        pids = [int(p.name) for p in tmp_path.iterdir()]
        assert len(pids) == n and all(map(_alive, pids))
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10
        while any(map(_alive, pids)) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = [p for p in pids if _alive(p)]
        for p in left:
            os.kill(p, signal.SIGKILL)
        assert not left, f"children outlived their SIGKILLed parent: {left}"
    finally:
        parent.kill()


def test_pool_workers_die_with_their_parent(tmp_path):
    _children_die_with(POOL, 2, tmp_path)


def test_a_shard_child_dies_with_its_parent(tmp_path):
    _children_die_with(SHARD, 1, tmp_path)


def test_a_parent_gone_before_the_request_means_exit_at_once():
    """The parent may die before prctl takes effect: then no signal comes, so the child
    checks and leaves with the given status; with its real parent it carries on."""
    code = (
        "import os, sys\n"
        "from rvos_kit.compute.parentdeath import die_with_parent\n"
        "die_with_parent(int(sys.argv[1]), 137)\n"
        "print('carried on')\n"
    )
    gone = subprocess.run([sys.executable, "-c", code, "1"], env=ENV, capture_output=True,
                          text=True)  # fmt: skip
    assert gone.returncode == 137 and gone.stdout == ""
    mine = subprocess.run([sys.executable, "-c", code, str(os.getpid())], env=ENV,
                          capture_output=True, text=True)  # fmt: skip
    assert mine.returncode == 0 and mine.stdout == "carried on\n", mine.stderr
