"""argparse types shared by the verbs (a bad value -> argparse's one-line usage error)."""

from __future__ import annotations

import argparse
import os


def _int_at_least(low: int, text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if n < low:
        raise argparse.ArgumentTypeError(f"must be >= {low}: {text!r}")
    return n


def positive_int(text: str) -> int:
    """An integer >= 1 (workers, thresholds)."""
    return _int_at_least(1, text)


def count(text: str) -> int:
    """An integer >= 0."""
    return _int_at_least(0, text)


def add_workers(p: argparse.ArgumentParser) -> None:
    """``--workers N``: processes over videos, default one per core (the pooled verbs)."""
    p.add_argument("--workers", type=positive_int, default=os.cpu_count() or 1,
                   help="processes (default: cores)")  # fmt: skip
