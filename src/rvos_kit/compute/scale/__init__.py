"""Sharded stages on Ray: one DVC stage, many workers, the same bytes (docs/scale.md).

A sharded stage (``propagate`` today; ``infer`` when its stage runs through here) is one
verb call over every video of meta. :func:`run_sharded` splits the videos into shards,
runs each shard as a Ray task and merges the shards' outputs into the stage's output:

Ray
    ``scale.address: local`` (default) starts an embedded single-node Ray for the stage
    and stops it afterwards; ``auto`` joins the cluster this node belongs to;
    ``ray://HOST:PORT`` (Ray client) or ``HOST:PORT`` joins that cluster. A program that
    has already called ``ray.init`` (the tests, a notebook) is used as it is.

Shards
    The videos, sorted by id, are cut into contiguous runs: ``scale.shards: N`` runs of
    about equal work (work of a video = frames x expressions for propagation), or
    ``scale.videos_per_shard: K`` runs of K videos; ``scale.shards: auto`` (default) makes
    as many shards as the cluster can run at once for the stage's needs. The output of a
    video depends only on that video, so the merged output is byte-identical whatever
    the partition (and to an unsharded run); ``scale.*`` is therefore no dependency of
    any DVC stage.

A shard's task
    Asks Ray for the stage's needs (``scale.needs.<kind>``: ``gpus`` and ``cpus``; GPU
    shards get ``num_gpus``, CPU shards ``num_cpus``), then runs the verb for its videos
    in a child process (``python -m rvos_kit VERB ... --videos-json JSON --out ATTEMPT``,
    the videos as a JSON list, which no video id can break):
    natively with ``CUDA_VISIBLE_DEVICES`` set to the GPU(s) Ray assigned, or in docker
    mode (``runner.mode: docker``) as ``docker run --gpus device=ID ...`` in the stage's
    image. The child writes into its own attempt folder, which is renamed to the shard's
    folder only when the child exits 0: a shard is committed whole or not at all.

Failures
    A worker that dies (process killed, node lost) or a child killed by a signal is
    retried up to ``scale.max_retries`` times, each attempt in a fresh folder; retries are
    reported at the end. A child that fails (exit status != 0) is not retried: the
    shard's videos and the child's last lines of output are printed. Other shards still
    finish and are kept, then the stage fails.

Resume
    Committed shards live in ``.<out>.shards/<key>/`` beside the output, ``key`` being a
    digest of the shard's videos and of everything the stage's output depends on (its
    inputs and settings). A re-run after an interrupt reuses a committed shard only when
    its key matches and all of its video folders are there, and runs the others from
    scratch (attempt folders are never reused). When every shard is committed, their
    videos are moved into ``.<out>.partial-<pid>``, which is checked against meta (every
    video, expression and frame; nothing else) and renamed to ``<out>`` (the output
    appears atomically), then ``.<out>.shards`` is removed.

One writer
    The driver holds the output's lock (:func:`rvos_kit.trees.staging.held_output`) from
    before its checks until the merge is committed, so a second run on the same output
    fails at once; only the holder creates or removes ``.<out>.shards``, and the shards'
    children write only there (each locks its own attempt folder).

Progress
    One bar per stage over videos, advanced as any worker finishes a video (each task

Modules
    :mod:`.settings` (``scale:`` of params.yaml, command-line overrides), :mod:`.plan`
    (the stage, its shards and their keys, merging mask-tree shards), :mod:`.session`
    (connecting to Ray; ``python -m rvos_kit.compute.scale -- CMD``), :mod:`.driver`
    (:func:`run_sharded`), :mod:`.task` (a shard's Ray task and its child's command line),
    :mod:`.child` (what the child calls; imports no Ray).
"""

from __future__ import annotations

from .child import PROGRESS_PREFIX, child_setup, video_done
from .driver import run_sharded
from .plan import ScaleReport, Shard, ShardedStage, partition, shard_key, tree_complete, tree_merge
from .session import SESSION_ENV, ray_session, session_main
from .settings import (
    DEFAULT_NEEDS,
    ScaleSettings,
    ShardNeeds,
    add_arguments,
    load_scale,
    scale_settings,
    settings_from_args,
    stage_params,
)
from .task import ShardCrashed, ShardFailed, container_name, shard_command

__all__ = [
    "DEFAULT_NEEDS",
    "PROGRESS_PREFIX",
    "SESSION_ENV",
    "ScaleReport",
    "ScaleSettings",
    "Shard",
    "ShardCrashed",
    "ShardFailed",
    "ShardNeeds",
    "ShardedStage",
    "add_arguments",
    "child_setup",
    "container_name",
    "load_scale",
    "partition",
    "ray_session",
    "run_sharded",
    "scale_settings",
    "session_main",
    "settings_from_args",
    "shard_command",
    "shard_key",
    "stage_params",
    "tree_complete",
    "tree_merge",
    "video_done",
]
