"""``infer`` over every video of meta as shards on Ray (:mod:`rvos_kit.compute.scale`),
natively or each shard in the model's Docker image; docs/scale.md.

:func:`run_sharded_infer` is the whole stage. The videos are cut into shards as every
sharded stage's are (contiguous runs of sorted ids, balanced by frames x expressions);
each shard is a Ray task asking for ``scale.needs.infer`` (overlaid by
``scale.needs.<model>``, one of the five model names, when params.yaml gives one) whose
child is this verb for the shard's videos, into an attempt folder:

native
    ``python -m rvos_kit infer ... --videos-json '["V1", ...]' --out ATTEMPT`` with
    ``CUDA_VISIBLE_DEVICES`` = the GPU Ray assigned (``rvos-kit infer`` over all videos).
docker
    ``docker run --gpus device=N --name ... IMAGE python -m rvos_kit infer ...
    --videos-json ... --out ATTEMPT``, N being the GPU Ray assigned. This is what a
    generated ``rvos_<model>`` stage (``rvos-kit run --stage rvos_<model> -- infer ...``)
    does in docker mode: ``rvos-kit run`` keeps the driver on the host, where Ray is, and
    hands it its runner settings (:func:`whole_stage_args` says when), instead of running
    the whole stage in one container. The host side of the mounts a model's published
    code needs (the UNINEXT work folders) is made per shard, by the user, just before its
    ``docker run`` (:func:`shard_mounts`).

A committed shard is reused by a re-run only when its ``scores.json`` lists exactly its
videos. The shards are joined by :func:`~rvos_kit.stages.rvos.infer.core.merge_shards`:
every video and expression of meta exactly once, nothing else, checked before the model
folder is renamed into place, byte-identical to one unsharded run. A shard killed by a
signal (in docker mode: ``docker run`` exiting 128+N) is retried up to
``scale.max_retries`` times; a shard that fails for good fails the stage with one error
and writes no output (the other committed shards are kept for the next run).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
from dataclasses import replace
from pathlib import Path

from ....compute import scale
from ....compute.docker import (
    check_docker,
    docker_settings,
    image_key,
    option_value,
)
from ....errors import KitError
from ....trees.jsonfiles import read_json
from ....trees.staging import held_output
from .core import _check_frames, _check_out, load_meta_file, merge_shards
from .mounts import mounts_for_args, prepare_container


def whole_stage_args(parser: argparse.ArgumentParser, args: list[str]):
    """The parsed ``infer`` arguments when they ask for every video of meta (no
    ``--videos``, ``--videos-json``, ``--shard``) and this process can drive Ray; None
    otherwise (one process or container runs them). ``parser``: the kit's parser with
    the ``infer`` verb, whose usage errors the caller handles."""
    if importlib.util.find_spec("ray") is None:
        return None
    ns = parser.parse_args(args)
    if ns.videos is not None or ns.shard is not None:
        return None
    return ns


def shard_mounts(args: list[str]) -> list[tuple[str, str, str]]:
    """A docker shard's mounts for the paths the model's published code hard-codes; the
    host side of the writable ones is created first, as the user (Docker would create it
    as root, inside the stage's shards folder)."""
    model, out = option_value(args, "--model"), option_value(args, "--out")
    if model and out:
        prepare_container(model, out)
    mounts = mounts_for_args(args)
    for host, target, _ in mounts:
        if not Path(host).exists():  # Docker would make it, empty and root's
            raise KitError(f"{host}: not found (mounted at {target} for the published code)")
    return mounts


def infer_settings(args, model: str) -> scale.ScaleSettings:
    """``scale`` for an infer stage: ``needs.infer`` overlaid by ``needs.<model>`` from
    params.yaml, then ``--gpus-per-shard`` / ``--cpus-per-shard``."""
    settings = scale.settings_from_args(args, "infer")  # the file's scale:, checked
    row = _given_needs(scale.stage_params(args), model)
    if row:
        merged = {**settings.needs["infer"], **row}
        for key, attr in (("gpus", "scale_gpus"), ("cpus", "scale_cpus")):
            if getattr(args, attr, None) is not None:
                merged[key] = getattr(args, attr)
        settings = replace(settings, needs={**settings.needs, "infer": merged})
    return settings


def _given_needs(params, model: str) -> dict:
    """``scale.needs.<model>`` as the params file gives it (no defaults filled in)."""
    if not params:
        return {}
    from ....config import load_params  # pydantic: the shards are driven natively

    needs = load_params(Path(params)).scale.needs or {}
    row = needs.get(model)
    return row.model_dump(exclude_unset=True) if row is not None else {}


def shard_complete(shard_dir: Path, videos: list[str]) -> bool:
    """Whether a committed shard of an interrupted run can be reused: its scores.json
    lists exactly its videos (merge_shards checks the rest)."""
    try:
        scores = read_json(shard_dir / "scores.json", "shard scores.json")
    except (KitError, OSError):
        return False
    return isinstance(scores, dict) and sorted(scores) == sorted(videos)


def run_sharded_infer(args, runner=None, stage: str | None = None) -> int:
    """Every video of meta, as shards on Ray. ``runner``: the runner settings of a caller
    that chose docker mode (``rvos-kit run``), with ``stage`` its stage name; without
    them, docker mode when the stage's params file says ``runner.mode: docker``."""
    with held_output(args.out):
        return _run(args, runner, stage)


def _run(args, runner, stage) -> int:
    if args.chunk_videos < 1:
        raise KitError("--chunk-videos must be >= 1")
    params = scale.stage_params(args)
    settings = infer_settings(args, args.model)
    meta, _ = load_meta_file(args.meta)
    _check_frames(Path(args.images), list(meta))
    _check_out(Path(args.out))
    for what, path in (("--checkpoint", args.checkpoint), ("--pretrained", args.pretrained)):
        if not Path(path).exists():
            raise KitError(f"{path}: {what} not found")
    base = ["infer", "--model", args.model, "--meta", args.meta, "--images", args.images,
            "--split", args.split, "--upstream", args.upstream, "--checkpoint", args.checkpoint,
            "--pretrained", args.pretrained, "--device", args.device,
            "--chunk-videos", str(args.chunk_videos)]  # fmt: skip
    base += ["--png-run"] * bool(args.png_run)
    base += ["--msda", args.msda] if args.msda else []
    record = {
        "verb": base,
        "cwd": os.getcwd(),
        "meta": hashlib.sha256(Path(args.meta).read_bytes()).hexdigest(),
    }
    image = docker = None
    if runner is None:  # `run` passes one only outside an image; docker_settings checks
        runner = docker_settings(params)
    if runner is not None:
        key = image_key(runner, "infer", base[1:], stage or f"rvos_{args.model}")
        if key is not None:
            image = runner.images[key]
            # what the published code reads at fixed paths, outside the shards' work folders
            shards = Path(args.out).resolve().parent / f".{Path(args.out).name}.shards"
            for host, target, _ in mounts_for_args([*base[1:], "--out", str(shards / ".x")]):
                if shards not in Path(host).parents and not Path(host).exists():
                    raise KitError(f"{host}: not found (mounted at {target} in {image})")
            docker = check_docker(image)
            (runner.base / runner.outputs).mkdir(parents=True, exist_ok=True)
    record["image"] = image  # another image (stack) makes other shards
    sharded = scale.ShardedStage(
        name=f"infer {args.model} -> {Path(args.out).name}",
        kind="infer",
        out=Path(args.out),
        weights=[(v.name, len(v.frames) * len(v.exp_ids)) for v in meta],
        record=record,
        argv=lambda vids: list(base),
        merge=lambda dirs, out: merge_shards(dirs, args.meta, out),
        complete=shard_complete,
        image=image,
        runner=runner if image else None,
        mounts=shard_mounts,
        docker=docker,
    )
    r = scale.run_sharded(sharded, settings)
    where = f" (each in {image})" if image else ""
    print(f"infer {args.model}: {r.describe()}{where} -> {args.out}")
    return 0
