"""``python -m rvos_kit.compute.scale -- CMD ...``: run CMD with one local Ray that every
stage with ``scale.address: local`` joins (:func:`~rvos_kit.compute.scale.session_main`;
the Makefile's ONE_RAY)."""

from __future__ import annotations

import sys

from .session import session_main

if __name__ == "__main__":  # importing this module (a test imports every module) runs nothing
    sys.exit(session_main(sys.argv[1:]))
