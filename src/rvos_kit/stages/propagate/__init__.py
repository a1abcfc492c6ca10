"""Propagation post-processing (contract section 5): every expression's masks re-derived from
its key frame by a semi-supervised VOS model.

For each (video, expression) of meta:

1. Reference = the input tree's mask at the key frame ``k`` (``key_frame.json``); any value
   > 0 is the object. An empty reference: the expression's input PNGs are copied unchanged.
2. The backend carries the reference forward over frames k+1 .. T-1, then backward over
   k-1 .. 0 (``aot`` / ``deaot``: the published AOT/DeAOT inference with 6-view test-time
   augmentation, see :mod:`rvos_kit.stages.propagate.aot_backend`; ``flow``: OpenCV optical flow
   on the CPU, see :mod:`rvos_kit.stages.propagate.flow_backend`).
3. Output ``<out>/<video>/<exp_id>/<frame>.png``: the key frame's PNG copied byte for byte
   from the input; every other frame = the propagated mask x 255, written as PIL writes an
   ``L`` image (the published bytes).

Inputs are checked before anything runs: meta vs. the input tree (missing or extra PNG),
key frames (one per expression, in range), a JPEG for every frame; then, per expression,
the frames must have the mask's size.

Resuming: a killed run resumes where it stopped when started again with the same inputs
(:mod:`.resume`).

Modules: :mod:`.engine` (:func:`propagate` over a mask tree, one video at a time),
:mod:`.resume` (staging folder, resume record), :mod:`.verb` (``rvos-kit propagate``,
sharded on Ray), :mod:`.frames` (JPEG frames), the backends :mod:`.aot_backend` (with
:mod:`.aot_model`) and :mod:`.flow_backend`.
"""

from __future__ import annotations

from .engine import BACKENDS, PropagateSummary, check_inputs, make_backend, propagate, select_videos
from .resume import resume_key, shared_key
from .verb import register, run

__all__ = [
    "BACKENDS",
    "PropagateSummary",
    "check_inputs",
    "make_backend",
    "propagate",
    "register",
    "resume_key",
    "run",
    "select_videos",
    "shared_key",
]
