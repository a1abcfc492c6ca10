"""rvos-kit: the ICCV 2023 LSVOS track-3 winning pipeline, one verb per stage."""

__version__ = "0.1.0"
