"""The driver of a sharded stage: :func:`run_sharded` plans the shards, reuses the ones an
interrupted run committed, submits the others as Ray tasks (:mod:`.task`), follows their
progress on one bar, reports retries and failures, and merges the committed shards into
the stage's output (see the package docstring)."""

from __future__ import annotations

import contextlib
import shutil
import sys
import time
from pathlib import Path

from ...errors import KitError
from ...trees.staging import held_output
from .plan import ScaleReport, Shard, ShardedStage, partition, shard_key
from .session import cluster_slots, describe_resources, ray_session
from .settings import ScaleSettings, ShardNeeds
from .task import ShardCrashed, ShardFailed, log_tail, remote_task


def _prepare_shards_dir(shards_dir: Path, keys: set[str]) -> None:
    """Keep committed shards of the current plan; remove everything else (shards of
    other inputs or partitions, attempt folders and logs of earlier runs)."""
    shards_dir.mkdir(parents=True, exist_ok=True)
    for p in shards_dir.iterdir():
        if p.name in keys and p.is_dir():
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def _plan(stage: ShardedStage, settings: ScaleSettings, needs: ShardNeeds) -> list[Shard]:
    """The shards of ``stage``: ``scale.shards`` / ``videos_per_shard``, or as many as the
    cluster runs at once (``shards: auto``); each keyed by its videos and record."""
    if settings.shards is None and settings.videos_per_shard is None:
        slots = cluster_slots(needs)
        if slots < 1:
            raise KitError(
                f"{stage.name}: the Ray cluster has no room for one shard (needs "
                f"{needs.gpus:g} GPU and {needs.cpus:g} CPU; it has "
                f"{describe_resources()}); change scale.needs.{stage.kind} or add nodes"
            )
        n_shards = slots
    else:
        n_shards = settings.shards
    groups = partition(stage.weights, n_shards, settings.videos_per_shard)
    record = stage.record if callable(stage.record) else (lambda g: stage.record)
    return [Shard(i + 1, g, shard_key(record(g), g)) for i, g in enumerate(groups)]


def _submit(
    stage: ShardedStage,
    settings: ScaleSettings,
    needs: ShardNeeds,
    todo: list[Shard],
    n: int,
    shards_dir: Path,
    env: dict | None,
) -> dict:
    """Start one Ray task per shard of ``todo``; returns {streaming ref: shard}."""
    cwd = str(Path.cwd())
    remote = remote_task()
    refs = {}
    for s in todo:
        spec = {
            "shards_dir": str(shards_dir.resolve()),
            "key": s.key,
            "videos": s.videos,
            "argv": stage.argv(s.videos),
            "cwd": cwd,
            "gpus": needs.gpus,
            "env": dict(env or {}),
            "image": stage.image,
            "runner": stage.runner,
            "mounts": stage.mounts,
            "docker": stage.docker,
        }
        ref = remote.options(
            num_cpus=needs.cpus,
            num_gpus=needs.gpus,
            max_retries=settings.max_retries,
            retry_exceptions=[ShardCrashed],
            num_returns="streaming",
            name=f"{stage.name} shard {s.index}/{n}",
        ).remote(spec)
        refs[ref] = s
    return refs


def run_sharded(
    stage: ShardedStage, settings: ScaleSettings, progress: bool = True, env=None
) -> ScaleReport:
    """Run ``stage`` as shards on Ray and commit its output (see the package docstring)."""
    t0 = time.monotonic()
    out = Path(stage.out)
    # the output's lock, from before the first shard until the merge is committed: a
    # second run on this output fails here at once (the verbs take it even earlier, and
    # this joins their hold); only its holder creates or removes .<out>.shards
    with held_output(out):
        return _run_locked(stage, settings, progress, env, out, t0)


def _run_locked(stage, settings, progress, env, out: Path, t0: float) -> ScaleReport:
    from tqdm import tqdm

    shards_dir = out.parent / f".{out.name}.shards"
    needs = settings.needs_of(stage.kind)
    n_videos = len(stage.weights)
    with ray_session(settings):
        shards = _plan(stage, settings, needs)
        _prepare_shards_dir(shards_dir, {s.key for s in shards})
        done = [s for s in shards if stage.complete(shards_dir / s.key, s.videos)]
        todo = [s for s in shards if s not in done]
        for s in todo:  # committed, but no longer whole: run again from scratch
            if (shards_dir / s.key).is_dir():
                shutil.rmtree(shards_dir / s.key)
        n = len(shards)
        if progress:
            print(
                f"{stage.name}: {n_videos} videos in {n} shard{'s' if n != 1 else ''} on Ray "
                f"({needs.gpus:g} GPU + {needs.cpus:g} CPU each; {describe_resources()})"
                + (f"; {len(done)} shard(s) already done, reused" if done else ""),
                file=sys.stderr,
            )
        refs = _submit(stage, settings, needs, todo, n, shards_dir, env)
        failures: list = []
        retried: list[str] = []
        placed: list[str] = []
        bar = tqdm(
            total=n_videos,
            initial=sum(len(s.videos) for s in done),
            unit="video",
            desc=stage.name,
            disable=not progress,
            file=sys.stderr,
            dynamic_ncols=True,
        )
        try:
            with bar:
                _drain(refs, bar, failures, retried, placed, shards_dir, n)
        except KeyboardInterrupt:
            import ray

            for ref in refs:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
            print(
                f"{stage.name}: interrupted; committed shards are kept in {shards_dir} and "
                "reused by the next run",
                file=sys.stderr,
            )
            raise
    for line in placed + retried:
        print(f"{stage.name}: {line}", file=sys.stderr)
    if failures:
        first, why = failures[0]
        more = f" and {len(failures) - 1} more shard(s), see above" if len(failures) > 1 else ""
        kept = n - len(failures)
        raise KitError(
            f"{why} ({first.label(n)}{more}; "
            + (f"the {kept} other shard(s) are kept for the next run)" if kept else "nothing kept)")
        )
    stage.merge([shards_dir / s.key for s in shards], out)
    shutil.rmtree(shards_dir, ignore_errors=True)
    return ScaleReport(n, len(done), len(todo), retried, n_videos, time.monotonic() - t0)


def _drain(refs: dict, bar, failures: list, retried: list, placed: list, shards_dir: Path, n: int):
    """Follow every shard's stream until all have ended."""
    import ray

    pending = list(refs)
    seen: dict = {}
    while pending:
        ready, pending = ray.wait(pending, num_returns=1, timeout=1.0)
        for gen in ready:
            shard = refs[gen]
            try:
                item_ref = next(gen)
            except StopIteration:
                continue
            try:
                item = ray.get(item_ref)
            except Exception as e:  # the shard failed for good
                text, why = _failure(shard, e, shards_dir, n)
                failures.append((shard, why))
                bar.write(f"FAILED {text}", file=sys.stderr)
                continue
            if item[0] == "video":
                seen[gen] = seen.get(gen, 0) + 1
                bar.update(1)
            elif item[0] == "done":  # a verb that reports no videos: the shard at once
                bar.update(max(0, len(shard.videos) - seen.get(gen, 0)))
            if item[0] == "done" and "GPU" in item[3]:
                placed.append(f"{shard.label(n)} ran on {item[3]} in {item[2]:.1f} s")
            if item[0] == "done" and item[1] > 1:
                logs = [shards_dir / f".{shard.key}.attempt-{a}.log" for a in range(1, item[1])]
                lost = "; ".join(f"attempt {a}: {log_tail(p, 1)}" for a, p in enumerate(logs, 1))
                retried.append(
                    f"{shard.label(n)} retried after a lost worker, done on attempt "
                    f"{item[1]} ({lost})"
                )
            pending.append(gen)


def _failure(shard: Shard, e: Exception, shards_dir: Path, n: int) -> tuple[str, str]:
    """(what to print: the shard, its videos and the worker's error; the error in one
    line: the child's own error message when it gave one)."""
    cause = getattr(e, "cause", None) or e  # a RayTaskError wraps the task's exception
    if isinstance(cause, (ShardFailed, ShardCrashed)):
        msg = str(cause)
    else:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        msg = f"{type(e).__name__}: {first}"
        logs = sorted(shards_dir.glob(f".{shard.key}.attempt-*.log"))
        if logs:
            msg += f"\nlast output of the child:\n{log_tail(logs[-1])}"
    lines = msg.splitlines()
    why = next((x.split(": error: ", 1)[1] for x in reversed(lines) if ": error: " in x), None)
    if why is None:
        why = f"{shard.label(n)} failed: {lines[0] if lines else type(e).__name__}"
    indented = "\n".join("    " + x for x in lines)
    return f"{shard.label(n)}: videos {', '.join(shard.videos)}\n{indented}", why
