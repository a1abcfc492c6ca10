"""``rvos-kit infer``: run the published RVOS inference code (pinned commit, unmodified)
and write a model folder; ``rvos-kit infer-merge``: join shard folders.

infer --model {soc,mutr,referformer_ft,vit_huge,convnext}
    Checks that ``--upstream`` is the published repository at commit c538b0d (git HEAD,
    or every file's git blob id against the manifest the kit ships) before importing any
    of it, then calls the model's own worker through a thin driver (one module per
    codebase in ``rvos_kit/stages/rvos/infer/``) on chunks of videos. Each chunk's dump is
    turned into
    ``MODEL_DIR/Annotations/`` (binarised as ``import-pth`` does), ``scores.json`` (the
    dump's ``class_info``) and, for the probability models, ``Annotations_sigmoid_odd/``,
    and then deleted: host memory stays bounded by one chunk, whatever the number of
    videos. ``--png-run`` also runs the model's separate PNG script into
    ``MODEL_DIR/Annotations_pngrun/`` (for mutr in ``challenge2023`` mode: the tree
    propagation starts from, input short side 432; quirk 9.6).

    ``--device cuda`` needs the compiled MultiScaleDeformableAttention op (the Docker
    image). ``--device cpu`` runs the same code with the op replaced by the pure-PyTorch
    reference the upstream code ships (``ms_deform_attn_core_pytorch``), for tests.
    ``--msda pytorch`` takes that reference on a GPU too (slower; another summation
    order); ``--msda compiled`` insists on the op. Without ``--msda``: by device.

    ``--videos`` and ``--shard I/N`` restrict the run to some videos; shard folders joined
    by ``infer-merge`` are byte-identical to one unsharded run.

Python: :func:`infer_videos` (one call per shard, as the scale helper does) and
:func:`merge_shards`.
"""

from __future__ import annotations

import argparse
import sys

from ....argtypes import declare_paths
from .core import (
    DEVICES,
    MODELS,
    MSDA_PATHS,
    PNG_RUN_TREE,
    SPLITS,
    infer_videos,
    merge_shards,
    select_videos,
    shard_videos,
)

__all__ = [
    "MODELS",
    "PNG_RUN_TREE",
    "infer_videos",
    "merge_shards",
    "select_videos",
    "shard_videos",
    "register",
]


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected I/N, e.g. 2/5") from None
    if not 1 <= i <= n:
        raise argparse.ArgumentTypeError(f"{text!r}: need 1 <= I <= N")
    return i, n


def _videos(args) -> list[str] | None:
    return args.videos  # --videos or --videos-json (rvos_kit.argtypes.add_video_selection)


def run_infer(args) -> int:
    """One shard (``--videos``, ``--shard``), or a whole stage where there is no Ray (in an
    image or the upstream environment), in this process; else the whole stage as shards
    on Ray (:mod:`.sharded`). Either way the output's lock is held from the start to the
    commit: a second run on the same ``--out`` fails at once."""
    from ....trees.staging import held_output

    with held_output(args.out):
        return _run_infer(args)


def _run_infer(args) -> int:
    import importlib.util
    import os

    from ....compute.docker import IN_CONTAINER_ENV
    from ....errors import KitError
    from .core import load_meta_file

    videos = _videos(args)
    # an image, or the upstream code's own environment, has no Ray: in process there
    here = os.environ.get(IN_CONTAINER_ENV) == "1" or importlib.util.find_spec("ray") is None
    if videos is None and args.shard is None and not here:  # the whole stage: on Ray
        from .sharded import run_sharded_infer

        return run_sharded_infer(args)
    from ....compute.scale import child_setup, video_done

    child_setup()  # a no-op unless this process is a shard started by rvos_kit.compute.scale
    progress = video_done if videos is not None else None  # a shard's: what the task reads
    if args.shard is not None:
        meta, _ = load_meta_file(args.meta)
        videos = [v.name for v in select_videos(meta, videos, args.shard)]
        if not videos:
            print(f"infer: shard {args.shard[0]}/{args.shard[1]} holds no video", file=sys.stderr)
    if args.chunk_videos < 1:
        raise KitError("--chunk-videos must be >= 1")
    r = infer_videos(
        args.model, videos, meta=args.meta, images=args.images, split=args.split,
        upstream=args.upstream, checkpoint=args.checkpoint, pretrained=args.pretrained,
        out_dir=args.out, device=args.device, png_run=args.png_run, chunk=args.chunk_videos,
        keep_dumps=args.keep_dumps, msda=args.msda,
        on_video=progress,
    )  # fmt: skip
    extra = f" and {PNG_RUN_TREE}/" if args.png_run else ""
    print(
        f"infer {args.model}: {r['masks']} masks of {r['videos']} videos -> "
        f"{args.out}/Annotations/, scores.json{extra}"
    )
    return 0


def run_merge(args) -> int:
    from ....trees.staging import held_output

    with held_output(args.out):
        r = merge_shards(args.shards, args.meta, args.out, _videos(args))
    n, videos = r["shards"], r["videos"]
    print(f"merged {n} shard folders ({videos} videos, {r['files']} PNGs) -> {args.out}")
    return 0


def register(sub) -> None:
    from ....argtypes import add_video_selection
    from ....catalog import default

    p = sub.add_parser(
        "infer",
        help="run a model's published inference code (pinned, unmodified) into a model folder",
        description=__doc__.split("\nPython:")[0],  # the Python API is not for --help
    )
    p.add_argument("--model", required=True, choices=list(MODELS))
    p.add_argument("--meta", required=True, help="meta_expressions.json of the split")
    p.add_argument(
        "--images", required=True, help="the split's JPEGImages: <images>/<video>/<frame>.jpg"
    )
    p.add_argument("--split", required=True, choices=SPLITS)
    p.add_argument(
        "--upstream",
        required=True,
        help="root of the published repository at c538b0d (holds "
        f"{', '.join(sorted({f'{u}/' for r in MODELS.values() for u in r.upstream}))})",
    )
    p.add_argument("--checkpoint", required=True, help="the model's published checkpoint file")
    p.add_argument(
        "--pretrained",
        required=True,
        help="what the model reads there (save_pretrained layout): "
        + "; ".join(f"{n}: {', '.join(r.pretrained)}" for n, r in MODELS.items() if r.pretrained),
    )
    p.add_argument("--out", required=True, help="model folder to write (Annotations/, scores.json)")
    p.add_argument("--device", choices=DEVICES, default=default("", "device"))
    p.add_argument(
        "--msda",
        choices=MSDA_PATHS,
        help="deformable attention: the compiled CUDA op or the upstream pure-PyTorch "
        "reference (default: compiled on cuda, pytorch on cpu)",
    )
    add_video_selection(p, "only these videos")
    p.add_argument(
        "--shard", type=_shard, metavar="I/N", help="only part I of N (contiguous, meta order)"
    )
    from ....compute.scale import add_arguments  # without --videos / --shard: every video, on Ray

    add_arguments(p)
    p.add_argument(
        "--png-run",
        action="store_true",
        help=f"also run the model's PNG script into {PNG_RUN_TREE}/ (mutr: short side 432)",
    )
    p.add_argument(
        "--chunk-videos",
        type=int,
        default=default("infer", "chunk_videos"),
        metavar="K",
        help="videos per call of the upstream worker; bounds host memory (default %(default)s)",
    )
    p.add_argument(
        "--keep-dumps", metavar="DIR", help="keep each chunk's upstream .pth here (debug, tests)"
    )
    declare_paths(p, reads=("meta", "images", "upstream", "checkpoint", "pretrained"),
                  writes=("out",), writes_into=("keep_dumps",))  # fmt: skip
    p.set_defaults(func=run_infer)

    m = sub.add_parser(
        "infer-merge",
        help="join model folders written for disjoint shards of videos into one",
        description="Union of the shards' trees and scores.json in meta order; byte-identical "
        "to one unsharded `infer` run.",
    )
    m.add_argument("shards", nargs="+", metavar="SHARD_DIR")
    m.add_argument("--meta", required=True)
    m.add_argument("--out", required=True)
    add_video_selection(m, "the videos the shards cover (default: all of meta)")
    declare_paths(m, reads=("shards", "meta"), writes=("out",))
    m.set_defaults(func=run_merge)
