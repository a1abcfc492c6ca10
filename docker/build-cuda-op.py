"""build-cuda-op.py SRC OUT -- build the MultiScaleDeformableAttention CUDA op of the published
code into a wheel in OUT, during `docker build`, where no GPU is visible.

The op's setup.py (identical in soc_test/, MUTR/, ReferFormer/ and UNINEXT's
deformable_detr/ops, inference.md §8) builds only `if torch.cuda.is_available() and
CUDA_HOME is not None` and raises NotImplementedError otherwise; there is no FORCE_CUDA
switch. The upstream file is not edited: this script runs it in-process with
torch.cuda.is_available answering True. That is all the check guards: the CUDA compiler
and headers come from the devel base image (CUDA_HOME), and the target architectures
from TORCH_CUDA_ARCH_LIST, which must be set (without it torch would ask the absent GPU).

The sources are copied first without the build/, dist/ and *.egg-info folders the
published tree commits (soc_test/models/ops holds a stale py3.8 .so), so nothing stale is
packed. Python 3.9 compatible (the uninext image).

With torch's CUDA wheels from PyPI (the modern stack: torch 2.x + CUDA 13), the headers of
the CUDA libraries torch's own headers include (cusparse.h, cublas_v2.h, ...) may be missing
from a minimal toolkit; those wheels ship them (``nvidia/*/include``), so their folders are
added to CPATH, after the toolkit's own (``-I``) folders. No-op where there is no such
package (torch 1.x images).
"""

import glob
import os
import runpy
import shutil
import sys
import tempfile


def _wheel_cuda_headers():
    """CPATH += the include folders of the installed nvidia-* CUDA wheels, if any."""
    try:
        import nvidia
    except ImportError:
        return
    found = sorted(
        d for p in nvidia.__path__ for d in glob.glob(os.path.join(p, "*", "include"))
        if os.path.isdir(d)
    )  # fmt: skip
    if found:
        old = os.environ.get("CPATH")
        os.environ["CPATH"] = os.pathsep.join(([old] if old else []) + found)


def main(argv):
    if len(argv) != 3:
        sys.exit("usage: build-cuda-op.py SRC_DIR WHEEL_DIR")
    src, out = os.path.abspath(argv[1]), os.path.abspath(argv[2])
    if not os.environ.get("TORCH_CUDA_ARCH_LIST"):
        sys.exit("build-cuda-op: set TORCH_CUDA_ARCH_LIST (no GPU to ask for its architecture)")
    import torch
    from torch.utils.cpp_extension import CUDA_HOME

    if torch.version.cuda is not None and CUDA_HOME is None:  # a CUDA torch, no nvcc
        sys.exit("build-cuda-op: no CUDA toolkit (CUDA_HOME); build FROM a -devel CUDA image")
    _wheel_cuda_headers()
    work = tempfile.mkdtemp(prefix="cuda-op-")
    tree = os.path.join(work, "ops")
    shutil.copytree(src, tree, ignore=shutil.ignore_patterns("build", "dist", "*.egg-info",
                                                             "*.so", "*.o", "__pycache__"))
    torch.cuda.is_available = lambda: True  # the one thing setup.py checks
    os.chdir(tree)
    sys.path.insert(0, tree)
    sys.argv = ["setup.py", "bdist_wheel", "--dist-dir", out]
    try:
        runpy.run_path("setup.py", run_name="__main__")
    finally:
        os.chdir("/")
        shutil.rmtree(work, ignore_errors=True)
    wheels = [f for f in os.listdir(out) if f.endswith(".whl")]
    if not wheels:
        sys.exit(f"build-cuda-op: no wheel in {out}")
    print(f"build-cuda-op: {src} -> {', '.join(wheels)}")


if __name__ == "__main__":
    main(sys.argv)
