"""The propagation of a mask tree (:func:`propagate`): inputs checked, then every
expression of every video run through the backend (:func:`make_backend`) into a staging
tree that resumes after an interrupt (:mod:`.resume`) and appears atomically."""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from ... import catalog
from ...compute import pool
from ...errors import KitError
from ...trees.masktree import (
    StagedTree,
    check_merged,
    check_tree,
    copy_file_atomic,
    read_mask,
    write_mask,
)
from ...trees.meta import Meta, load_meta
from ...trees.sidefiles import read_key_frames
from ...trees.staging import check_outputs
from .frames import VideoFrames, check_images
from .resume import pending, resume_key, start_or_resume

BACKENDS = catalog.BACKENDS  # name -> its row in the backend catalogue


@dataclass
class PropagateSummary:
    expressions: int  # in meta
    propagated: int  # run through the backend in this call
    copied_empty: int  # empty key-frame mask: input copied (this call)
    resumed: int  # already complete in the staging folder of an interrupted run
    masks: int  # PNGs written in this call
    encoder: dict | None = None  # aot/deaot: encoder calls and shared-feature hits per tier


def describe_encoder(stats: dict) -> str:
    """One line of :attr:`PropagateSummary.encoder` (``features.FeatureCache.stats``)."""
    return (
        f"encoder: {stats['encoder_calls']} calls, {stats['device_hits']} device hits, "
        f"{stats['host_hits']} host hits, {stats['recomputes']} recomputes"
    )


def make_backend(name: str, **options):
    """``flow`` (options: preset, max_side) or ``aot`` / ``deaot`` (options of
    :class:`~rvos_kit.stages.propagate.aot_backend.AOTBackend`)."""
    row = BACKENDS.get(name)
    if row is None:
        raise KitError(f"unknown backend {name!r}; use one of {tuple(BACKENDS)}")
    module, cls = row.driver.split(":")
    backend = getattr(importlib.import_module(f"rvos_kit.stages.propagate.{module}"), cls)
    # a backend that runs a network is told which (aot / deaot share one class)
    return backend(name, **options) if row.takes_model else backend(**options)


# ------------------------------------------------------------------------ one video
def _process_video(job, on_expression=None) -> tuple[int, int, int]:
    """Propagate the listed expressions of one video into the staging tree.

    Returns (propagated, copied_empty, PNGs written)."""
    backend, images, video, items, staging, threads = job
    frames = VideoFrames(images, video)
    propagated = copied = written = 0
    n = len(video.frames)
    for exp_id, k, files in items:
        out_dir = staging / video.name / exp_id
        out_dir.mkdir(parents=True, exist_ok=True)
        ref = read_mask(files[k], foreground="nonzero")
        if not ref.any():
            for f, src in zip(video.frames, files, strict=True):
                copy_file_atomic(src, out_dir / f"{f}.png")
            copied += 1
            written += n
        else:
            frames.preload(threads)
            for t in range(n):
                frames.check_size(t, ref.shape, files[k])
            done = []

            def emit(t, mask, out_dir=out_dir, done=done, ref=ref, k=k):
                if mask.shape != ref.shape or t == k or not 0 <= t < n:  # pragma: no cover
                    raise RuntimeError(f"backend returned frame {t} of shape {mask.shape}")
                write_mask(out_dir / f"{video.frames[t]}.png", mask)
                done.append(t)

            backend.propagate(frames, k, ref, emit)
            expected = list(range(k + 1, n)) + list(range(k - 1, -1, -1))
            if done != expected:  # pragma: no cover - guards the backends
                raise RuntimeError(
                    f"internal error: {backend.name} produced frames {done} for "
                    f"{video.name}/{exp_id}, expected {expected}"
                )
            copy_file_atomic(files[k], out_dir / f"{video.frames[k]}.png")
            propagated += 1
            written += n
        if on_expression is not None:
            on_expression()
    return propagated, copied, written


def _run_job(job):
    return _process_video(job)


# ------------------------------------------------------------------------ the stage
def select_videos(meta: Meta, names) -> Meta:
    """The videos ``names`` of meta (in meta order); an unknown name is an error."""
    wanted = set(names)
    unknown = sorted(wanted.difference(v.name for v in meta))
    if unknown:
        raise KitError(f"--videos: {unknown[0]!r} is not a video of meta")
    return Meta(tuple(v for v in meta if v.name in wanted))


def check_inputs(images: Path, annotations: Path, keyframes: Path, meta: Meta, out: Path):
    """Everything checkable before work starts (names, key frames, JPEGs, no overlap of
    the output with an input); returns the key frames."""
    check_outputs([("--annotations", str(annotations)), ("--images", str(images)),
                   ("--keyframes", str(keyframes))], [("--out", str(out))])  # fmt: skip
    keys = read_key_frames(keyframes, meta)
    check_tree(annotations, meta)
    check_images(images, meta)
    return keys


def propagate(
    images,
    annotations,
    keyframes,
    meta,
    out,
    backend,
    workers: int = 1,
    progress: bool = True,
    videos=None,
    on_video=None,
) -> PropagateSummary:
    """Propagate every expression of ``meta`` from its key frame into the tree ``out``.

    ``backend``: from :func:`make_backend`. ``workers``: processes over videos for the
    ``flow`` backend; frame-decoding threads for ``aot`` / ``deaot`` (one network, in this
    process). ``videos``: only these videos of meta (a shard, see :mod:`rvos_kit.compute.scale`);
    ``on_video(name)`` is called as each video is complete."""
    images, annotations, out, keyframes = (
        Path(images),
        Path(annotations),
        Path(out),
        Path(keyframes),
    )
    meta_path = None
    if not isinstance(meta, Meta):
        meta_path = Path(meta)
        meta = load_meta(meta_path)
    if videos is not None:
        meta = select_videos(meta, videos)
    keys = check_inputs(images, annotations, keyframes, meta, out)

    staged = StagedTree(out, resume=True)
    record_path = staged.path.with_name(staged.path.name + ".json")
    # a shard (``videos``) digests only its own inputs
    record = {"stage": "propagate", "inputs": resume_key(images, annotations, keyframes,
              meta if videos is not None else meta_path or meta, backend)}  # fmt: skip

    total = sum(len(v.exp_ids) for v in meta)
    try:
        with staged:
            start_or_resume(staged, record_path, record)
            jobs, resumed = pending(meta, staged.path, keys, annotations)
            if progress:
                print(f"propagate: {backend.describe()}", file=sys.stderr)
            if resumed:
                print(f"resuming: {resumed} of {total} expressions already done", file=sys.stderr)
            parallel = backend.name == "flow" and workers > 1 and len(jobs) > 1
            if jobs and not parallel:
                backend.prepare()
            threads = 1 if parallel else max(1, workers)
            full = [(backend, images, v, items, staged.path, threads) for v, items in jobs]
            bar = tqdm(
                total=total,
                initial=resumed,
                unit="expr",
                desc=f"propagate {backend.name} -> {out.name}",
                disable=not progress,
                file=sys.stderr,
            )
            with bar:
                propagated, copied, written = _run_jobs(full, parallel, workers, bar, on_video)
            check_merged(staged.path, meta, f"propagate --out {out}")  # before the commit
    except KitError:
        record_path.unlink(missing_ok=True)
        raise
    record_path.unlink(missing_ok=True)
    stats = backend.encoder_stats() if hasattr(backend, "encoder_stats") else None
    if progress and stats:
        print(f"propagate: {describe_encoder(stats)}", file=sys.stderr)
    return PropagateSummary(total, propagated, copied, resumed, written, stats)


def _run_jobs(full: list, parallel: bool, workers: int, bar, on_video) -> tuple[int, int, int]:
    """Every video's job, in this process or (``parallel``: flow) over ``workers``
    processes; returns the summed (propagated, copied_empty, PNGs written)."""
    propagated = copied = written = 0
    if not parallel:
        for job in full:
            p, c, n = _process_video(job, bar.update)
            propagated, copied, written = propagated + p, copied + c, written + n
            if on_video is not None:
                on_video(job[2].name)
    else:
        name = lambda j: f"video {j[2].name}"  # noqa: E731
        results = pool.imap(_run_job, full, workers, name)
        for (p, c, n), job in zip(results, full, strict=True):
            propagated, copied, written = propagated + p, copied + c, written + n
            bar.update(len(job[3]))
            if on_video is not None:
                on_video(job[2].name)
    return propagated, copied, written
