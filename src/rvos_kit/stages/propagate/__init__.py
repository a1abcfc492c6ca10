"""Propagation post-processing (contract section 5): every expression's masks re-derived from
its key frame by a semi-supervised VOS model.

For each (video, expression) of meta:

1. Reference = the input tree's mask at the key frame ``k`` (``key_frame.json``); any value
   > 0 is the object. An empty reference: the expression's input PNGs are copied unchanged.
2. The backend carries the reference forward over frames k+1 .. T-1, then backward over
   k-1 .. 0 (``aot`` / ``deaot``: the published AOT/DeAOT inference with 6-view test-time
   augmentation, see :mod:`rvos_kit.stages.propagate.aot_backend`; ``flow``: OpenCV optical flow
   on the CPU, see :mod:`rvos_kit.stages.propagate.flow_backend`).
3. Output ``<out>/<video>/<exp_id>/<frame>.png``: the key frame's PNG copied byte for byte
   from the input; every other frame = the propagated mask x 255, written as PIL writes an
   ``L`` image (the published bytes).

Inputs are checked before anything runs: meta vs. the input tree (missing or extra PNG),
key frames (one per expression, in range), a JPEG for every frame; then, per expression,
the frames must have the mask's size.

Resuming. The output is built in ``.<out>.partial`` beside ``<out>`` and moved into place
only when every expression is done. Every PNG is written atomically (temp file + rename),
so an expression whose folder holds all its frames is complete. A run that is killed (or
fails other than on bad input) keeps the staging folder and a record of its settings in
``.<out>.partial.json``: a content digest (:func:`resume_key`) of every input (the frames
and masks meta lists, key frames, meta, the checkpoint's bytes, every setting). The next
run skips the complete expressions only when every digest matches, and redoes the others
(removing stray temp files); otherwise it discards the staging folder with a one-line
notice naming what changed and starts afresh. Bad input (a KitError) discards it.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from ...argtypes import positive_int
from ...compute import pool
from ...errors import KitError
from ...trees.digest import content_digest
from ...trees.jsonfiles import read_json, write_json
from ...trees.masktree import (
    StagedTree,
    check_tree,
    copy_file_atomic,
    expression_files,
    read_mask,
    write_mask,
)
from ...trees.meta import Meta, Video, load_meta
from ...trees.sidefiles import read_key_frames
from .frames import VideoFrames, check_images, frame_paths

BACKENDS = ("aot", "deaot", "flow")
PUBLISHED_SCALES = (0.8, 1.0, 1.2)
PUBLISHED_MAX_LONG_SIDE = 1040.0  # 1.3 x 480 x 800 / 480


@dataclass
class PropagateSummary:
    expressions: int  # in meta
    propagated: int  # run through the backend in this call
    copied_empty: int  # empty key-frame mask: input copied (this call)
    resumed: int  # already complete in the staging folder of an interrupted run
    masks: int  # PNGs written in this call


def make_backend(name: str, **options):
    """``flow`` (options: preset, max_side) or ``aot`` / ``deaot`` (options of
    :class:`~rvos_kit.stages.propagate.aot_backend.AOTBackend`)."""
    if name == "flow":
        from .flow_backend import FlowBackend

        return FlowBackend(**options)
    if name in ("aot", "deaot"):
        from .aot_backend import AOTBackend

        return AOTBackend(name, **options)
    raise KitError(f"unknown backend {name!r}; use one of {BACKENDS}")


# ------------------------------------------------------------------------ one video
def _expression_complete(d: Path, video: Video) -> bool:
    return all((d / f"{f}.png").is_file() for f in video.frames)


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
def shared_key(keyframes, backend) -> dict[str, str]:
    """The part of :func:`resume_key` that does not depend on the videos: the key frames,
    the checkpoint's bytes and every setting. A sharded stage computes it once for all
    its shards (hashing a checkpoint of hundreds of MB once, not once per shard)."""
    checkpoint = getattr(backend, "checkpoint", None)
    return {
        "keyframes": content_digest(Path(keyframes)),
        "checkpoint": content_digest(Path(checkpoint) if checkpoint else None),
        "settings": content_digest(backend.settings()),
    }


def resume_key(images, annotations, keyframes, meta, backend, shared=None) -> dict[str, str]:
    """Content digest of every input of a propagation, per input (see
    :mod:`rvos_kit.trees.digest`): the frames and masks meta lists, the key frames, meta, the
    checkpoint's bytes and every setting. Partial work resumes only when all match.
    ``shared``: :func:`shared_key` of the same ``keyframes`` and ``backend``, if already
    computed."""
    shared = shared or shared_key(keyframes, backend)
    images, annotations = Path(images), Path(annotations)
    meta_obj = meta if isinstance(meta, Meta) else load_meta(meta)
    frames = {f"{v.name}/{f}": p for v in meta_obj for f, p in
              zip(v.frames, frame_paths(images, v), strict=True)}  # fmt: skip
    masks = {f"{v.name}/{e}/{f}": annotations / v.name / e / f"{f}.png"
             for v in meta_obj for e in v.exp_ids for f in v.frames}  # fmt: skip
    return {
        "images": content_digest(frames),
        "annotations": content_digest(masks),
        "keyframes": shared["keyframes"],
        "meta": content_digest(Path(meta) if not isinstance(meta, Meta) else repr(meta.videos)),
        "checkpoint": shared["checkpoint"],
        "settings": shared["settings"],
    }


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
    out_abs = out.resolve()
    for name, p in (("--annotations", annotations), ("--images", images)):
        p_abs = p.resolve()
        if out_abs == p_abs or p_abs in out_abs.parents or out_abs in p_abs.parents:
            raise KitError(f"{out}: output overlaps the {name} tree {p}; choose another --out")
    keys = read_key_frames(keyframes, meta)
    check_tree(annotations, meta)
    check_images(images, meta)
    return keys


def _remove_temp_files(staging: Path) -> None:
    """Temp files of atomic writes interrupted by a kill (``.<name>.tmp-<pid>``)."""
    for p in staging.rglob(".*.tmp-*"):
        if p.is_file():
            p.unlink()


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
    propagated = copied = written = resumed = 0
    try:
        with staged:
            if any(staged.path.iterdir()):
                try:
                    previous = read_json(record_path, "resume record")
                except KitError:
                    previous = None
                if previous != record:
                    old = previous.get("inputs") if isinstance(previous, dict) else None
                    old = old if isinstance(old, dict) else {}
                    changed = [k for k, d in record["inputs"].items() if old.get(k) != d]
                    print(
                        f"note: discarding the partial output {staged.path} (made from other "
                        f"{', '.join(changed) or 'inputs'}); starting afresh",
                        file=sys.stderr,
                    )
                    staged.discard()
            write_json(record_path, record, indent=1)
            _remove_temp_files(staged.path)
            jobs = []
            for v in meta:
                items = []
                for e in v.exp_ids:
                    if _expression_complete(staged.path / v.name / e, v):
                        resumed += 1
                    else:
                        items.append((e, keys[v.name, e], expression_files(annotations, v, e)))
                if items:
                    jobs.append((v, items))
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
    except KitError:
        record_path.unlink(missing_ok=True)
        raise
    record_path.unlink(missing_ok=True)
    return PropagateSummary(total, propagated, copied, resumed, written)


# --------------------------------------------------------------------------------- CLI
def _scales(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of numbers: {text!r}"
        ) from None
    if not values or any(not v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"scales must be positive numbers: {text!r}")
    return values


def run(args) -> int:
    if args.backend == "flow":
        if (
            args.checkpoint
            or args.random_weights is not None
            or args.model
            or args.trust_checkpoint
        ):
            raise KitError("--model, --checkpoint and --random-weights apply to aot/deaot only")
        backend = make_backend("flow", preset=args.flow_preset, max_side=args.flow_max_side)
        workers = args.workers or os.cpu_count() or 1
    else:
        backend = make_backend(
            args.backend,
            model=args.model,
            checkpoint=args.checkpoint,
            random_seed=args.random_weights,
            device=args.device,
            scales=args.scales,
            flip=args.flip,
            max_long_side=args.max_long_side if args.max_long_side > 0 else None,
            long_term_gap=args.long_term_gap,
            amp=not args.no_amp,
            trust_checkpoint=args.trust_checkpoint,
        )
        workers = args.workers or 2
    if args.videos is not None:  # one shard, in this process (what a Ray task runs)
        from ...compute.scale import child_setup, video_done

        child_setup()
        s = propagate(
            args.images, args.annotations, args.keyframes, args.meta, args.out, backend,
            workers, progress=False, videos=args.videos, on_video=video_done,
        )  # fmt: skip
        print(
            f"propagated {s.propagated} expressions, copied {s.copied_empty} with an empty "
            f"key frame ({s.masks} PNGs) -> {args.out}"
        )
        return 0
    return _run_sharded(args, backend)


def _backend_args(args) -> list[str]:
    """The backend's options as given (for a shard's command line)."""
    if args.backend == "flow":
        return ["--flow-preset", args.flow_preset, "--flow-max-side", str(args.flow_max_side)]
    out = ["--scales", ",".join(repr(x) for x in args.scales)]
    out += ["--flip" if args.flip else "--no-flip", "--max-long-side", repr(args.max_long_side)]
    for opt, v in (("--model", args.model), ("--checkpoint", args.checkpoint),
                   ("--random-weights", args.random_weights), ("--device", args.device),
                   ("--long-term-gap", args.long_term_gap)):  # fmt: skip
        if v is not None:
            out += [opt, str(v)]
    out += ["--no-amp"] * bool(args.no_amp) + ["--trust-checkpoint"] * bool(args.trust_checkpoint)
    return out


def _run_sharded(args, backend) -> int:
    """The whole stage: inputs checked here once, then shards of videos on Ray
    (:mod:`rvos_kit.compute.scale`), merged into ``--out`` atomically."""
    from ...compute import scale
    from ...compute.docker import IN_CONTAINER_ENV, image_key, load_settings

    params = scale.stage_params(args)
    settings = scale.settings_from_args(args, backend.name)
    images, annotations = Path(args.images), Path(args.annotations)
    keyframes, meta_path, out = Path(args.keyframes), Path(args.meta), Path(args.out)
    meta = load_meta(meta_path)
    check_inputs(images, annotations, keyframes, meta, out)
    kind = backend.name
    needs = settings.needs_of(kind)
    threads = max(1, int(needs.cpus)) if kind == "flow" else (args.workers or 2)
    base = ["propagate", "--images", args.images, "--annotations", args.annotations,
            "--keyframes", args.keyframes, "--meta", args.meta, "--backend", args.backend,
            *_backend_args(args), "--workers", str(threads)]  # fmt: skip
    image = runner = None
    rs = load_settings(params) if params else None
    if rs is not None and rs.mode == "docker" and os.environ.get(IN_CONTAINER_ENV) != "1":
        key = image_key(rs, "propagate", base[1:], "propagate")
        if key is not None:
            from ...compute.docker import check_docker

            image, runner = rs.images[key], rs
            check_docker(image)  # this node; docs/scale.md: pre-pull on the others
    shared = shared_key(keyframes, backend)
    stage = scale.ShardedStage(
        name=f"propagate {kind} -> {out.name}",
        kind=kind,
        out=out,
        weights=[(v.name, len(v.frames) * len(v.exp_ids)) for v in meta],
        record=lambda videos: {
            "stage": "propagate",
            "inputs": resume_key(
                images, annotations, keyframes, select_videos(meta, videos), backend, shared
            ),
        },  # fmt: skip
        argv=lambda videos: list(base),
        merge=scale.tree_merge,
        complete=scale.tree_complete,
        image=image,
        runner=runner,
    )
    r = scale.run_sharded(stage, settings)
    print(f"propagated {r.describe()} -> {args.out}")
    return 0


HELP = """\
Re-derive every expression's masks from its key frame (contract section 5).

Inputs: --images JPEG_ROOT/<video>/<frame>.jpg, --annotations IN_ROOT/<video>/<exp>/
<frame>.png (any value > 0 is the object), --keyframes key_frame.json, --meta.
Output --out OUT_ROOT/<video>/<exp>/<frame>.png: the key frame's PNG copied byte for byte,
the other frames propagated (0/255, PIL bytes); an expression whose key-frame mask is
empty is copied unchanged. The output appears atomically when every expression is done;
a killed run resumes where it stopped when started again with the same arguments.

Backends:
  aot, deaot  the published method: AOT-L / DeAOT-L with a Swin-L encoder
              (--model swinl_aotl / swinl_deaotl, --checkpoint the released .pth),
              6-view test-time augmentation, forward then backward pass. Needs a GPU
              for real data (--device cuda); CPU works but is very slow.
  flow        OpenCV DIS optical flow warping the key-frame mask frame by frame (CPU,
              fast, deterministic; not the published method): the demo backend.
"""


def register(sub) -> None:
    p = sub.add_parser(
        "propagate",
        help="propagate each expression's key-frame mask through its video (AOT/DeAOT/flow)",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--images", required=True, help="JPEG root: <root>/<video>/<frame>.jpg")
    p.add_argument("--annotations", required=True, help="input mask tree (the model's masks)")
    p.add_argument("--keyframes", required=True, help="key_frame.json of the input model")
    p.add_argument("--meta", required=True, help="meta_expressions.json")
    p.add_argument("--out", required=True, help="output mask tree (replaced atomically)")
    p.add_argument("--backend", required=True, choices=BACKENDS)
    p.add_argument(
        "--workers",
        type=positive_int,
        help="flow: processes over videos (default: cores); aot/deaot: frame-decoding "
        "threads (default 2)",
    )
    from ...compute.scale import add_arguments

    add_arguments(p)
    p.add_argument(
        "--videos",
        type=lambda t: [v for v in t.split(",") if v],
        metavar="V1,V2",
        help="only these videos, in this process, without Ray (what each shard runs)",
    )
    g = p.add_argument_group("aot / deaot")
    g.add_argument(
        "--model",
        help="network: swinl_aotl (default for aot), swinl_deaotl (default for deaot), or a "
        "deaotpy variant: aott aots aotb aotl r50_aotl r101_aotl rs101_aotl swinb_aotl / "
        "deaott deaots deaotb deaotl r50_deaotl swinb_deaotl",
    )
    g.add_argument("--checkpoint", help="weights (.pth state dict) matching --model")
    g.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="unpickle a checkpoint that holds Python objects besides tensors (only for "
        "files from a trusted source; default: tensors only)",
    )
    g.add_argument(
        "--random-weights",
        type=int,
        metavar="SEED",
        help="random weights from SEED instead of --checkpoint (tests and benchmarks only: "
        "the masks are meaningless)",
    )
    g.add_argument(
        "--device", choices=("cpu", "cuda"), help="default: cuda when available, else cpu"
    )
    g.add_argument(
        "--scales",
        type=_scales,
        default=PUBLISHED_SCALES,
        help="TTA scales, comma-separated (default 0.8,1.0,1.2)",
    )
    g.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="add a horizontally flipped view of every scale (default: --flip)",
    )
    g.add_argument(
        "--max-long-side",
        type=float,
        default=PUBLISHED_MAX_LONG_SIDE,
        help="limit on the frame's long side before scaling (default 1040; 0 = none)",
    )
    g.add_argument(
        "--long-term-gap",
        type=positive_int,
        help="frames between long-term memory entries (default: the model's, 5 for *l models)",
    )
    g.add_argument("--no-amp", action="store_true", help="float32 on CUDA (default: float16 AMP)")
    f = p.add_argument_group("flow")
    f.add_argument(
        "--flow-preset",
        choices=("ultrafast", "fast", "medium"),
        default="medium",
        help="DIS preset (default medium)",
    )
    f.add_argument(
        "--flow-max-side",
        type=positive_int,
        default=640,
        help="long side of the frames the flow is computed on (default 640)",
    )
    p.set_defaults(func=run)


__all__ = ["BACKENDS", "PropagateSummary", "make_backend", "propagate", "register", "run"]
