"""Build UNINEXT's bundled detectron2 from the published archive, CPU-only, once per
machine, and install the wheel into the running environment (``make upstream-venv``).

    .venv-upstream/bin/python tools/build_detectron2.py [ARCHIVE_OR_CHECKOUT]

The source is ``UNINEXT/`` of the published archive
(``upstream/iccv2023_RVOS_Challenge-*.tar.gz`` in the ``shared`` folder beside the clone, as
the tests read it), or of ``$RVOS_UPSTREAM_DIR``, a checkout of the pinned commit. The
wheel is cached under ``$RVOS_KIT_CACHE`` (default ``~/.cache/rvos-kit``)
``/wheels/detectron2-<key>/``, ``<key>`` = sha256 of every file of ``UNINEXT/setup.py``,
``UNINEXT/detectron2/`` and ``UNINEXT/configs/`` (names and bytes), the torch version it
is built against and the Python tag: a second ``make`` on the same machine installs the
cached wheel without compiling. The build: ``pip wheel --no-deps --no-build-isolation``
with ``FORCE_CUDA=0``, no ``CUDA_HOME`` and no visible GPU, so ``setup.py`` L66-67 picks
the C++-only extension (``detectron2/layers/csrc/**/*.cpp``, no nvcc), at ``nice`` and
at most 2 jobs.

Without the archive (a user who has not got it) it says so and does nothing: the tests
that need it skip outside CI, as the Swin ones do.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARCHIVES = REPO.parent / "shared" / "upstream"
SOURCE = ("UNINEXT/setup.py", "UNINEXT/detectron2/", "UNINEXT/configs/")


def _wanted(rel: str) -> bool:
    return rel == SOURCE[0] or rel.startswith(SOURCE[1:])


def source_files(src: Path) -> dict[str, bytes]:
    """``{path under the repository: bytes}`` of the build's source, from an archive or a
    checkout."""
    out = {}
    if src.is_file():
        with tarfile.open(src) as tf:
            for m in tf.getmembers():
                rel = m.name.split("/", 1)[1] if "/" in m.name else ""
                if m.isfile() and _wanted(rel):
                    out[rel] = tf.extractfile(m).read()
    else:
        for p in sorted((src / "UNINEXT").rglob("*")):
            rel = p.relative_to(src).as_posix()
            built = "__pycache__" in rel or rel.endswith(".so")
            if p.is_file() and _wanted(rel) and not built:
                out[rel] = p.read_bytes()
    return out


def cache_key(files: dict[str, bytes]) -> str:
    import torch

    h = hashlib.sha256()
    for rel in sorted(files):
        h.update(rel.encode() + b"\0" + hashlib.sha256(files[rel]).digest())
    tag = f"torch={torch.__version__};py={sys.implementation.cache_tag}"
    h.update(tag.encode())
    return h.hexdigest()[:16]


def build(files: dict[str, bytes], into: Path) -> Path:
    with tempfile.TemporaryDirectory(prefix="d2-build-") as tmp:
        root = Path(tmp) / "UNINEXT"
        for rel, data in files.items():
            p = Path(tmp) / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        # setup.py maps detectron2.projects.uninext to this folder: an empty one is enough
        # for the extension (the run imports that package from the published tree)
        (root / "projects/UNINEXT/uninext").mkdir(parents=True)
        (root / "projects/UNINEXT/uninext/__init__.py").write_text("")
        env = {k: v for k, v in os.environ.items() if k != "CUDA_HOME"}
        # no visible GPU either: setup.py L66 builds the CUDA extension when torch sees one
        env.update(FORCE_CUDA="0", MAX_JOBS="2", CUDA_VISIBLE_DEVICES="")
        out = Path(tmp) / "wheel"
        t0 = time.monotonic()
        subprocess.run(
            ["nice", "-n", "10", sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
             "--no-build-isolation", "-w", str(out), str(root)],
            check=True, env=env,
        )  # fmt: skip
        (whl,) = out.glob("detectron2-*.whl")
        into.mkdir(parents=True, exist_ok=True)
        part = into / (whl.name + ".partial")
        shutil.copyfile(whl, part)
        os.replace(part, into / whl.name)
        print(f"detectron2: built in {time.monotonic() - t0:.0f} s -> {into / whl.name}")
        return into / whl.name


def main(argv: list[str]) -> int:
    if argv:
        src = Path(argv[0])
    elif os.environ.get("RVOS_UPSTREAM_DIR"):
        src = Path(os.environ["RVOS_UPSTREAM_DIR"])
    else:
        found = sorted(ARCHIVES.glob("iccv2023_RVOS_Challenge-*.tar.gz"))
        if not found:
            print(f"detectron2: no published archive in {ARCHIVES} and no RVOS_UPSTREAM_DIR: "
                  "not built (the UNINEXT CPU tests will skip)")  # fmt: skip
            return 0
        src = found[0]
    files = source_files(src)
    if SOURCE[0] not in files:
        print(f"{src}: has no {SOURCE[0]}", file=sys.stderr)
        return 1
    cache = Path(os.environ.get("RVOS_KIT_CACHE", Path.home() / ".cache" / "rvos-kit"))
    into = cache / "wheels" / f"detectron2-{cache_key(files)}"
    wheels = sorted(into.glob("detectron2-*.whl"))
    whl = wheels[0] if wheels else build(files, into)
    if wheels:
        print(f"detectron2: cached wheel {whl}")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(whl)],
        check=True,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
