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


def _video_names_json(text: str) -> list[str]:
    import json

    try:
        names = json.loads(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a JSON list of video ids: {text[:80]!r}") from None
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise argparse.ArgumentTypeError(f"not a JSON list of video ids: {text[:80]!r}")
    return names


def add_video_selection(p: argparse.ArgumentParser, what: str) -> None:
    """``--videos V1,V2`` (typed by hand) or ``--videos-json '["V1", "V2"]'`` (what a
    sharded stage passes each shard: no video id can break it, commas included); both
    give ``args.videos``, a list of names, or None."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--videos", type=lambda t: [v for v in t.split(",") if v],
                   metavar="V1,V2", help=f"{what} (comma-separated)")  # fmt: skip
    g.add_argument("--videos-json", dest="videos", type=_video_names_json, metavar="JSON",
                   help="the same as a JSON list, for ids with commas")  # fmt: skip
