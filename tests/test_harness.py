"""The test harness itself: a disk too full for the suite stops it at once, naming the
folder and what to do (a full disk once failed 230 tests at setup with no cause named)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _collect(tmp_path: Path, need: int) -> subprocess.CompletedProcess:
    env = dict(os.environ, RVOS_TEST_TEMP_NEEDED=str(need))
    cmd = [sys.executable, "-m", "pytest", "-q", "--co", "-p", "no:cacheprovider",
           "--basetemp", str(tmp_path / "base"), "tests/test_synthetic.py"]  # fmt: skip
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)


def test_a_disk_too_full_for_the_suite_stops_it_naming_the_folder(tmp_path):
    r = _collect(tmp_path, 10**18)  # an exabyte: more than any disk has free
    assert r.returncode == 1, r.stdout + r.stderr
    out = r.stdout + r.stderr
    assert f"free under {tmp_path}" in out and "the suite needs" in out
    assert "collected" not in out  # stopped before collecting anything


def test_enough_room_lets_it_run(tmp_path):
    r = _collect(tmp_path, 1)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "tests collected" in r.stdout
