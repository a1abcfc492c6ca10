"""params.yaml's schema and loader, under their older import path: the typed config lives
in :mod:`rvos_kit.config` (the base room), the model and backend catalogues and every
default in :mod:`rvos_kit.catalog`."""

from __future__ import annotations

from ..catalog import (  # noqa: F401 (importable from here)
    BACKENDS,
    COMPAT_MODES,
    DEVICES,
    ENCODERS,
    FUSION_SOURCES,
    MODEL_KINDS,
    MODEL_SOURCES,
    MODELS,
    MSDA_PATHS,
    ODD_RULES,
    PAIRINGS,
    RUNNER_MODES,
    SPLITS,
    STACKS,
)
from ..config import (  # noqa: F401
    Params,
    Section,
    check_params,
    check_section,
    load_params,
)
