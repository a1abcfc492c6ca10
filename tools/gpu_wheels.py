"""Download what `make smoke-gpu` installs on a GPU machine without network.

    python tools/gpu_wheels.py [--out wheels/gpu] [--python 3.12] [--part-mib 64]

``pip download`` of ``tools/gpu-wheels.txt`` (with dependencies) as binary wheels for
CPython ``--python`` on manylinux x86_64 (the few published only as source, pure Python:
:data:`SDIST_ONLY` at the pins of ``constraints-upstream.txt``, are built into
``py3-none-any`` wheels here first), then imgaug 0.4.0 and deaotpy (from
``requirements-nodeps.txt``, hash-checked) without dependencies, as the Makefile's
upstream venv installs them. torch and its CUDA libraries are never downloaded (the GPU
machine has its own): a dependency on them is left out. The files are then packed into
``OUT/part1``, ``OUT/part2``, ... of at most ``--part-mib`` MiB each (one transfer to the
machine each); a single wheel over that limit stops it, naming the file. ``OUT/parts.txt``
lists the parts with their sizes.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REQS = HERE / "gpu-wheels.txt"
NODEPS = HERE.parent / "requirements-nodeps.txt"
LOCK = HERE.parent / "constraints-upstream.txt"
# on PyPI as source only, pure Python: built into py3-none-any wheels here
SDIST_ONLY = ("fvcore", "fairscale", "iopath")
# torch, torchvision's torch and the CUDA runtime wheels torch pulls in: the machine's own
SKIP = re.compile(r"^(torch|nvidia_|triton|cuda_)", re.I)


def pip_download(args: list[str], dest: Path, python: str) -> None:
    abi = "cp" + python.replace(".", "")
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(dest),
           "--only-binary=:all:", "--python-version", python, "--implementation", "cp",
           "--abi", abi, "--abi", "abi3", "--abi", "none",
           "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
           "--platform", "manylinux2014_x86_64", "--platform", "any", *args]  # fmt: skip
    subprocess.run(cmd, check=True)


def pack(files: list[Path], out: Path, limit: int) -> list[tuple[str, int]]:
    """First-fit decreasing into part folders of at most ``limit`` bytes."""
    parts: list[tuple[Path, int]] = []
    for f in sorted(files, key=lambda p: p.stat().st_size, reverse=True):
        size = f.stat().st_size
        if size > limit:
            sys.exit(f"gpu_wheels: {f.name} is {size / 2**20:.1f} MiB, over one transfer")
        for i, (d, used) in enumerate(parts):
            if used + size <= limit:
                parts[i] = (d, used + size)
                break
        else:
            d = out / f"part{len(parts) + 1}"
            d.mkdir(parents=True)
            parts.append((d, size))
            i = len(parts) - 1
        shutil.copy2(f, parts[i][0] / f.name)
    return [(d.name, used) for d, used in parts]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    ap.add_argument("--out", type=Path, default=Path("wheels/gpu"))
    ap.add_argument("--python", default="3.12")
    ap.add_argument("--part-mib", type=int, default=64)
    a = ap.parse_args()
    if a.out.exists() and any(a.out.iterdir()):
        sys.exit(f"gpu_wheels: {a.out} is not empty; remove it first")
    with tempfile.TemporaryDirectory() as tmp:
        dl = Path(tmp)
        pins = dict(ln.split("==", 1) for ln in LOCK.read_text().splitlines() if "==" in ln)
        built = [f"{n}=={pins[n]}" for n in SDIST_ONLY]
        cmd = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(dl)]
        subprocess.run([*cmd, *built], check=True)
        pip_download(["--find-links", str(dl), "-r", str(REQS)], dl, a.python)
        pip_download(["--no-deps", "imgaug==0.4.0"], dl, a.python)
        pip_download(["--no-deps", "--require-hashes", "-r", str(NODEPS)], dl, a.python)
        files = [f for f in dl.iterdir() if not SKIP.match(f.name)]
        parts = pack(files, a.out, a.part_mib * 2**20)
    lines = [f"{name}\t{used / 2**20:.1f} MiB" for name, used in parts]
    (a.out / "parts.txt").write_text("\n".join(lines) + "\n")
    print(f"gpu_wheels: {len(files)} wheels in {len(parts)} parts under {a.out}:")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
