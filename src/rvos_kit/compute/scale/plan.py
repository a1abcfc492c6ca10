"""The plan of a sharded stage: what :func:`~rvos_kit.compute.scale.run_sharded` is told
about a verb (:class:`ShardedStage`), how its videos are cut into shards
(:func:`partition`), the key a committed shard is found by on resume (:func:`shard_key`),
and how committed mask-tree shards are checked and merged into the output
(:func:`tree_complete`, :func:`tree_merge`)."""

from __future__ import annotations

import bisect
import hashlib
import itertools
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


def partition(
    weights: Sequence[tuple[str, float]], shards: int | None, videos_per_shard: int | None
) -> list[list[str]]:
    """Cut videos (sorted by id here) into contiguous runs.

    ``videos_per_shard=K``: runs of K videos. Else ``shards=N`` runs (fewer when there are
    fewer videos) of about equal total weight: the k-th cut goes where the running total
    first reaches k/N of the whole, moved so that no run is empty."""
    items = sorted(weights)
    names = [n for n, _ in items]
    if not names:
        return []
    if videos_per_shard:
        return [names[i : i + videos_per_shard] for i in range(0, len(names), videos_per_shard)]
    n = max(1, min(int(shards or 1), len(names)))
    running = list(itertools.accumulate(max(float(w), 1e-9) for _, w in items))
    cuts: list[int] = []
    for k in range(1, n):
        first = bisect.bisect_left(running, running[-1] * k / n * (1 - 1e-12)) + 1
        low = (cuts[-1] if cuts else 0) + 1  # this run holds a video
        high = len(names) - (n - k)  # and so does every later run
        cuts.append(min(max(first, low), high))
    bounds = [0, *cuts, len(names)]
    pairs = zip(bounds, bounds[1:])  # noqa: B905 (runs on Python 3.9 in the uninext image)
    return [names[a:b] for a, b in pairs if b > a]


def shard_key(record: dict, videos: Sequence[str]) -> str:
    """Digest of what a shard's output depends on: the stage's record (inputs, settings,
    verb) and its videos."""
    text = json.dumps({"record": record, "videos": list(videos)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass
class ShardedStage:
    """What :func:`run_sharded` needs to know about a verb.

    ``argv(videos)``: the verb and its arguments for a shard, without ``--out`` (the task
    adds ``--videos-json`` and ``--out ATTEMPT``). ``merge(shard_dirs, out)``: join the
    committed shards, in shard order, into ``out``, atomically, after checking the
    result against meta (e.g. :func:`tree_merge`); :func:`run_sharded` holds the output's
    lock around it.
    ``complete(shard_dir, videos)``: whether a committed shard still holds its videos."""

    name: str  # for messages and the bar
    kind: str  # key of scale.needs: flow, aot, deaot, infer
    out: Path
    weights: list[tuple[str, float]]  # (video, work)
    # everything the output of a shard depends on (JSON-able; e.g. content digests of
    # its inputs): a dict for the stage, or a function of the shard's videos
    record: dict | Callable[[list[str]], dict]
    argv: Callable[[list[str]], list[str]]
    merge: Callable[[list[Path], Path], None]
    complete: Callable[[Path, list[str]], bool]
    image: str | None = None  # docker mode: the image a shard runs in
    runner: object = None  # compute.docker.Settings for docker mode
    # docker mode: shard args -> extra (host, container path, mode) mounts (infer: the
    # paths the published code hard-codes, rvos_kit.stages.rvos.infer.mounts)
    mounts: Callable[[list[str]], list[tuple[str, str, str]]] | None = None
    # docker mode: the docker client the driver checked (absolute path); a node without
    # it at that path uses `docker` from its own PATH
    docker: str | None = None


@dataclass
class Shard:
    index: int  # 1-based
    videos: list[str]
    key: str

    def label(self, n: int) -> str:
        v = self.videos
        span = v[0] if len(v) == 1 else f"{v[0]} .. {v[-1]}"
        return f"shard {self.index}/{n} ({len(v)} video{'s' if len(v) != 1 else ''}: {span})"


@dataclass
class ScaleReport:
    shards: int
    reused: int  # committed by an earlier run, not run again
    ran: int
    retried: list[str]  # one line per shard that needed more than one attempt
    videos: int
    seconds: float

    def describe(self) -> str:
        ran = f"{self.ran} run"
        if self.reused:
            ran += f", {self.reused} reused from an interrupted run"
        if self.retried:
            ran += f", {len(self.retried)} retried"
        plural = "s" if self.shards != 1 else ""
        return (
            f"{self.videos} videos in {self.shards} shard{plural} ({ran}) in {self.seconds:.1f} s"
        )


def tree_merge(shard_dirs: list[Path], out: Path, meta) -> None:
    """Merge for mask trees ``<video>/<exp>/<frame>.png``: every shard's video folders
    are moved (renamed) into ``.<out>.partial-<pid>``, which is checked against ``meta``
    (:func:`~rvos_kit.trees.masktree.check_merged`: every video, expression and frame,
    nothing else) and then replaces ``out``. A video in two shards is an error."""
    from ...errors import KitError
    from ...trees.masktree import StagedTree, check_merged

    owner: dict[str, Path] = {}
    with StagedTree(out) as staged:
        for d in shard_dirs:
            for v in sorted(p.name for p in d.iterdir()):
                if v in owner:
                    raise KitError(
                        f"{out}: video {v!r} is in two shards, {owner[v]} and {d}; nothing "
                        "was written"
                    )
                owner[v] = d
                os.rename(d / v, staged.path / v)
        check_merged(staged.path, meta, f"{out}: the merge of {len(shard_dirs)} shard(s)")


def tree_complete(shard_dir: Path, videos: list[str]) -> bool:
    return shard_dir.is_dir() and all((shard_dir / v).is_dir() for v in videos)
