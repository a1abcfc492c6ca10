"""``rvos-kit propagate``: the verb. Without ``--videos`` the whole stage runs as shards of
videos on Ray (:mod:`rvos_kit.compute.scale`; inputs checked here once, shards merged into
``--out`` atomically); with ``--videos`` one shard runs in this process (what each Ray
task's child runs), through :func:`~rvos_kit.stages.propagate.engine.propagate`."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from ... import catalog
from ...argtypes import add_video_selection, declare_paths, non_negative, positive_int
from ...errors import KitError
from ...trees.meta import load_meta
from ...trees.staging import held_output
from .aot_model import ENGINES, PUBLISHED_MAX_LONG_SIDE, PUBLISHED_SCALES
from .engine import BACKENDS, check_inputs, describe_encoder, make_backend, propagate, select_videos
from .resume import resume_key, shared_key

_D = catalog.DEFAULTS["propagation"]


def _scales(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of numbers: {text!r}"
        ) from None
    if not values or any(not (math.isfinite(v) and v > 0) for v in values):
        raise argparse.ArgumentTypeError(f"scales must be positive numbers: {text!r}")
    return values


def run(args) -> int:
    # the output's lock from the start (a second run on --out fails at once) to the
    # commit, sharded or not (rvos_kit.trees.staging: the commit joins this hold)
    with held_output(args.out):
        return _run(args)


def _run(args) -> int:
    if args.checkpoint_sha256 is not None and args.checkpoint is None:
        raise KitError("--checkpoint-sha256 pins a --checkpoint file: give both")
    if args.backend == "flow":
        if (
            args.checkpoint
            or args.random_weights is not None
            or args.model
            or args.trust_checkpoint
            or args.engine
        ):
            raise KitError(
                "--model, --checkpoint, --random-weights and --engine apply to aot/deaot only"
            )
        backend = make_backend("flow", preset=args.flow_preset, max_side=args.flow_max_side)
        workers = args.workers or os.cpu_count() or 1
    else:
        backend = make_backend(
            args.backend,
            model=args.model,
            checkpoint=args.checkpoint,
            random_seed=args.random_weights,
            device=args.device,
            checkpoint_sha256=args.checkpoint_sha256,
            scales=args.scales,
            flip=args.flip,
            max_long_side=args.max_long_side if args.max_long_side > 0 else None,
            long_term_gap=args.long_term_gap,
            amp=not args.no_amp,
            trust_checkpoint=args.trust_checkpoint,
            engine=args.engine,
            share_encoder=args.share_encoder,
            encoder_cache_mb=args.encoder_cache_mb,
            host_cache_mb=args.host_cache_mb,
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
        if s.encoder:
            print(describe_encoder(s.encoder))
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
                   ("--long-term-gap", args.long_term_gap), ("--engine", args.engine)):  # fmt: skip
        if v is not None:
            out += [opt, str(v)]
    out += ["--no-amp"] * bool(args.no_amp) + ["--trust-checkpoint"] * bool(args.trust_checkpoint)
    out += ["--share-encoder" if args.share_encoder else "--no-share-encoder"]
    for opt, mb in (("--encoder-cache-mb", args.encoder_cache_mb),
                    ("--host-cache-mb", args.host_cache_mb)):  # fmt: skip
        if mb is not None:
            out += [opt, repr(mb)]
    if args.checkpoint_sha256 is not None:
        out += ["--checkpoint-sha256", args.checkpoint_sha256]
    return out


def _run_sharded(args, backend) -> int:
    """The whole stage: inputs checked here once, then shards of videos on Ray
    (:mod:`rvos_kit.compute.scale`), merged into ``--out`` atomically."""
    from ...compute import scale
    from ...compute.docker import docker_settings, image_key

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
    rs = docker_settings(params)
    if rs is not None:
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
        merge=lambda dirs, o: scale.tree_merge(dirs, o, meta),
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


def add_weight_options(g) -> None:
    """The network-weight options of the aot/deaot backends (also ``rvos-kit audit-engine``'s):
    --checkpoint, --trust-checkpoint, --checkpoint-sha256, --random-weights, --device."""
    g.add_argument("--checkpoint", help="weights (.pth state dict) matching --model")
    g.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="unpickle a checkpoint that holds Python objects besides tensors (only for "
        "files from a trusted source; default: tensors only)",
    )
    g.add_argument(
        "--checkpoint-sha256",
        metavar="HEX",
        help="the checkpoint's pinned sha256 (the pipeline passes checkpoints.lock's): "
        "checked before loading; where torch has no weights_only (< 1.13) only a pinned or "
        "trusted checkpoint is loaded",
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


def register(sub) -> None:
    p = sub.add_parser(
        "propagate",
        help="propagate each expression's key-frame mask through its video (AOT/DeAOT/flow)",
        description=HELP,
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
    add_video_selection(p, "only these videos, in this process, without Ray (what each shard runs)")
    g = p.add_argument_group("aot / deaot")
    g.add_argument(
        "--model",
        help="network: swinl_aotl (default for aot), swinl_deaotl (default for deaot), or a "
        "deaotpy variant: aott aots aotb aotl r50_aotl r101_aotl rs101_aotl swinb_aotl / "
        "deaott deaots deaotb deaotl r50_deaotl swinb_deaotl",
    )
    add_weight_options(g)
    g.add_argument(
        "--scales",
        type=_scales,
        default=PUBLISHED_SCALES,
        help=f"TTA scales, comma-separated (default {','.join(map(str, PUBLISHED_SCALES))})",
    )
    g.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        default=_D["flip"],
        help="add a horizontally flipped view of every scale (default: --flip)",
    )
    g.add_argument(
        "--max-long-side",
        type=non_negative,
        default=PUBLISHED_MAX_LONG_SIDE,
        help=f"limit on the frame's long side before scaling (default {_D['max_long_side']}; "
        "0 = none)",
    )
    g.add_argument(
        "--long-term-gap",
        type=positive_int,
        help="frames between long-term memory entries (default: the model's, 5 for *l models)",
    )
    g.add_argument("--no-amp", action="store_true", help="float32 on CUDA (default: float16 AMP)")
    g.add_argument(
        "--engine",
        choices=ENGINES,
        help="engine code reproduced (contract section 5.6-5.7): published_aot_fork (default; "
        "the published AOT engine: no id masked, long-term memory step reset at the "
        "backward re-add) or aot_benchmark (aot-benchmark 75e46fe as written; deaot only)",
    )
    g.add_argument(
        "--share-encoder",
        action=argparse.BooleanOptionalAction,
        default=_D["share_encoder"],
        help="encode each (frame, view) once per video and reuse it for every expression "
        "(exact: the same masks, byte for byte; --no-share-encoder to check it yourself)",
    )
    g.add_argument(
        "--encoder-cache-mb",
        type=non_negative,
        metavar="MIB",
        help="at most this much device memory for one video's shared encoder features "
        "(default: what the device has free, less a reserve for the engines; on the CPU, "
        "the available RAM less a margin); past it they go to pinned host memory (CUDA), "
        "else they are recomputed",
    )
    g.add_argument(
        "--host-cache-mb",
        type=non_negative,
        metavar="MIB",
        help="CUDA: at most this much pinned host memory for the encoder features that do "
        "not fit on the device (default: the available RAM less a margin)",
    )
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
    declare_paths(p, reads=("images", "annotations", "keyframes", "meta", "checkpoint"),
                  writes=("out",))  # fmt: skip
    p.set_defaults(func=run)
