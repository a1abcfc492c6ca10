"""argparse types shared by the verbs (a bad value -> argparse's one-line usage error),
and what each verb declares it reads and writes (the CLI's guard of inputs)."""

from __future__ import annotations

import argparse
import math
import os
import re


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


def finite_float(text: str, low: float | None = None) -> float:
    """A finite number (``nan``, ``inf`` refused), ``>= low`` when given."""
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(x):
        raise argparse.ArgumentTypeError(f"must be a finite number: {text!r}")
    if low is not None and x < low:
        raise argparse.ArgumentTypeError(f"must be >= {low:g}: {text!r}")
    return x


def non_negative(text: str) -> float:
    """A finite number >= 0 (resources a shard asks for, size limits)."""
    return finite_float(text, 0)


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


def declare_paths(
    p: argparse.ArgumentParser,
    reads: tuple[str, ...] = (),
    writes: tuple[str, ...] = (),
    writes_into: tuple[str, ...] = (),
) -> None:
    """Say which arguments of the verb ``p`` name what it reads and what it writes; the CLI
    refuses, before any work, an output that is, holds or lies inside an input
    (:func:`rvos_kit.trees.staging.check_outputs`). Each entry is an argument's ``dest``;
    ``dest:1,2`` takes items 1 and 2 of each tuple an ``nargs=N`` option gives, ``dest=``
    the part after ``=`` of a ``NAME=PATH`` value. ``writes``: files and folders the verb
    replaces whole; ``writes_into``: folders it adds files to (they may hold an input)."""
    p.set_defaults(path_reads=reads, path_writes=writes, path_writes_into=writes_into)


def declared_paths(args: argparse.Namespace, specs: tuple[str, ...]) -> list[tuple[str, str]]:
    """``(dest, path)`` of every path named by ``specs`` (see :func:`declare_paths`)."""
    out = []
    for spec in specs:
        dest, _, pick = spec.partition(":")
        after_eq = dest.endswith("=")
        dest = dest.rstrip("=")
        value = getattr(args, dest, None)
        if value is None:
            continue
        items = value if isinstance(value, list) else [value]
        for item in items:
            if pick:
                parts = [item[int(i)] for i in pick.split(",")]
            else:
                parts = [item]
            for x in parts:
                if after_eq:
                    x = str(x).partition("=")[2]
                if isinstance(x, (str, os.PathLike)) and str(x):
                    out.append((dest, str(x)))
    return out


# Docker's reference grammar (github.com/distribution/reference), sha256 digests only.
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|-+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])"
_NAME = rf"(?:{_HOST}(?::[0-9]+)?/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
REFERENCE = re.compile(
    rf"(?P<name>{_NAME})(?::[\w][\w.-]{{0,127}})?(?:@sha256:[a-f0-9]{{64}})?", re.ASCII
)
NAME_MAX = 255  # Docker's limit on the name part


def image_ref_error(ref) -> str | None:
    """Why ``ref`` is not a Docker image reference, or None when it is one."""
    if not isinstance(ref, str) or not ref:
        return "not a non-empty string"
    if ref.startswith("-"):
        return "starts with '-', so docker would read it as an option"
    m = REFERENCE.fullmatch(ref)
    if m is None:
        return "does not match name[:tag][@sha256:<64 hex>] (lower-case name components)"
    if len(m.group("name")) > NAME_MAX:
        return f"its name is longer than {NAME_MAX} characters"
    return None
