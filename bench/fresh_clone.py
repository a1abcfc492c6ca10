"""Time a newcomer's first commands on a fresh clone: `make venv`, `make demo` (and,
with --with-test, `make test`), and count the DVC stages the demo ran.

Writes bench/results/fresh-clone.json, which README.md quotes (tools/readme.py). The
clone is made from the given git repository (default: this one, at HEAD) into a temp
folder and deleted afterwards. The numbers depend on the machine and on pip's cache:
both are recorded beside them.

    python bench/fresh_clone.py [--ref HEAD] [--with-test] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def machine() -> dict:
    mem = cpu = ""
    try:
        mem = re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1)
        mem = f"{int(mem) / 2**20:.0f} GiB"
        cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text()).group(1)
    except (OSError, AttributeError):
        pass
    return {
        "cores": os.cpu_count(),
        "memory": mem,
        "cpu": cpu.strip(),
        "python": platform.python_version(),
        "load_1min_at_start": round(os.getloadavg()[0], 2),
    }


def timed(cmd: list[str], cwd: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    dt_s = time.perf_counter() - t0
    if r.returncode:
        sys.exit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-3000:]}{r.stderr[-3000:]}")
    return dt_s, r.stdout + r.stderr


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", default=str(REPO), help="git repository to clone (default: this)")
    ap.add_argument("--ref", default="HEAD", help="commit to check out (default: HEAD)")
    ap.add_argument("--with-test", action="store_true", help="also time `make test`")
    ap.add_argument(
        "--out",
        default=str(REPO / "bench/results/fresh-clone.json"),
        help="result file (default: bench/results/fresh-clone.json)",
    )
    args = ap.parse_args()
    commit = subprocess.run(["git", "-C", args.repo, "rev-parse", args.ref], check=True,
                            capture_output=True, text=True).stdout.strip()  # fmt: skip
    result = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "machine": machine(),
        "pip": "warm pip cache; torch 2.13.0 CPU wheel from local disk",
        "seconds": {},
    }
    tmp = Path(tempfile.mkdtemp(prefix="rvos-kit-clone-"))
    try:
        clone = tmp / "rvos-kit"
        subprocess.run(["git", "clone", "-q", args.repo, str(clone)], check=True)
        subprocess.run(["git", "-C", str(clone), "checkout", "-q", commit], check=True)
        s, _ = timed(["make", "venv"], clone)
        result["seconds"]["make venv"] = round(s, 1)
        du = subprocess.run(["du", "-sm", str(clone / ".venv")], capture_output=True, text=True)
        result["venv_mib"] = int(du.stdout.split()[0])
        s, out = timed(["make", "demo"], clone)
        result["seconds"]["make demo"] = round(s, 1)
        ran = re.findall(r"^Running stage '(?:demo/dvc\.yaml:)?([^']+)'", out, re.M)
        import yaml

        stages = list(yaml.safe_load((clone / "demo/dvc.yaml").read_text())["stages"])
        result["demo_stages_run"] = len(ran)
        result["demo_stages_total"] = len(stages)
        result["demo_stages_skipped"] = [s for s in stages if s not in ran]
        if args.with_test:
            s, out = timed(["make", "test"], clone)
            result["seconds"]["make test"] = round(s, 1)
            m = re.search(r"(\d+) passed", out)
            result["tests_passed"] = int(m.group(1)) if m else None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
