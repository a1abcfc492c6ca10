"""A module that stands in for the compiled ``MultiScaleDeformableAttention`` op on the
CPU (``--device cpu``; the compiled op has only CUDA kernels).

Its forward calls, at run time, the pure-PyTorch reference that the upstream code itself
ships, ``ms_deform_attn_core_pytorch`` in ``<codebase>/models/ops/functions/
ms_deform_attn_func.py`` (nothing of it is copied here). That upstream module imports
this one at its top, so the function is looked up when the op is first called.
"""

from __future__ import annotations

import sys
from pathlib import Path

_root: Path | None = None
_functions = "models/ops/functions/ms_deform_attn_func.py"


def bind(code_root: Path, functions: str = _functions) -> None:
    """The codebase whose reference implementation the forward must call, and the file
    that defines it, relative to ``code_root`` (UNINEXT keeps it elsewhere)."""
    global _root, _functions
    _root, _functions = Path(code_root).resolve(), functions


def _reference():
    want = _root / _functions if _root else None
    for mod in list(sys.modules.values()):
        fn = getattr(mod, "ms_deform_attn_core_pytorch", None)
        f = getattr(mod, "__file__", None)
        if fn is not None and f and want is not None and Path(f).resolve() == want:
            return fn
    raise RuntimeError(f"ms_deform_attn_core_pytorch of {want} is not imported")


def ms_deform_attn_forward(
    value, value_spatial_shapes, value_level_start_index, sampling_locations,
    attention_weights, im2col_step,
):  # fmt: skip
    """Same contract as the CUDA op's forward (``value_level_start_index`` and
    ``im2col_step`` only organise the CUDA kernel's work)."""
    return _reference()(value, value_spatial_shapes, sampling_locations, attention_weights)


def ms_deform_attn_backward(*args, **kwargs):
    raise RuntimeError("the CPU stand-in of MultiScaleDeformableAttention is inference-only")
