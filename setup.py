"""The kit's one compiled part: rvos_kit.trees._unfilter (PNG row unfiltering, see pngcodec.py).

Everything else is declared in pyproject.toml. The extension is optional: where it does not
compile (no C compiler or Python headers) the build goes on without it and pngcodec uses
its numpy path, which gives the same pixels. RVOS_KIT_PURE=1 skips it (a pure-Python
wheel: the uninext image builds its wheel with CPython 3.10 and installs it on 3.9).
"""

import os

from setuptools import Extension, setup

ext_modules = []
if os.environ.get("RVOS_KIT_PURE") != "1":
    ext_modules.append(
        Extension(
            "rvos_kit.trees._unfilter",
            sources=["src/rvos_kit/trees/_unfilter.c"],
            extra_compile_args=["-O3", "-std=c99"],
            optional=True,
        )
    )

setup(ext_modules=ext_modules)
