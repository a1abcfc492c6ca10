"""Key frames (contract section 4): ``k = argmax_t class_info[t]``, the first maximum.

Input ``scores.json``: ``{video: {exp_id: [score per frame]}}`` (the per-frame
``class_info`` of an RVOS model). Output ``key_frame.json`` in the published format:
``{video: {exp_id: {"index_info": {"class_index": k}}}}``.
"""

from __future__ import annotations

import math

from ..argtypes import declare_paths
from ..errors import KitError
from ..trees.jsonfiles import read_json, write_json
from ..trees.meta import Meta, load_meta


def first_argmax(scores, where: str) -> int:
    if not isinstance(scores, list) or not scores:
        raise KitError(f"{where}: expected a non-empty list of per-frame scores")
    best_i, best = 0, None
    for i, s in enumerate(scores):
        if isinstance(s, bool) or not isinstance(s, (int, float)) or math.isnan(s):
            raise KitError(f"{where}: frame {i} score {s!r} is not a number")
        if best is None or s > best:
            best_i, best = i, s
    return best_i


def key_frames(scores: dict, meta: Meta | None = None, where: str = "scores") -> dict:
    """``{video: {exp: {"index_info": {"class_index": k}}}}`` from per-frame scores.

    With ``meta``, every meta expression must have scores, one per meta frame."""
    if not isinstance(scores, dict):
        raise KitError(f"{where}: expected {{video: {{exp_id: [scores]}}}}")
    if meta is not None:
        for v in meta:
            for e in v.exp_ids:
                s = scores.get(v.name, {}).get(e) if isinstance(scores.get(v.name), dict) else None
                if s is None:
                    raise KitError(f"{where}: no scores for {v.name}/{e}, which meta lists")
                if not isinstance(s, list) or len(s) != len(v.frames):
                    n = len(s) if isinstance(s, list) else "no"
                    raise KitError(
                        f"{where}: {v.name}/{e} has {n} scores but meta lists "
                        f"{len(v.frames)} frames"
                    )
    out = {}
    for vid, exps in scores.items():
        if not isinstance(exps, dict):
            raise KitError(f"{where}: video {vid!r} is not an object of expressions")
        out[vid] = {
            e: {"index_info": {"class_index": first_argmax(s, f"{where}: {vid}/{e}")}}
            for e, s in exps.items()
        }
    return out


def run(args) -> int:
    scores = read_json(args.scores, "scores file")
    meta = load_meta(args.meta) if args.meta else None
    write_json(args.out, key_frames(scores, meta, str(args.scores)))
    n = sum(len(e) for e in scores.values())
    print(f"key frames for {n} expressions -> {args.out}")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "keyframes",
        help="per-expression key frame = first argmax of the per-frame scores",
        description=__doc__,
    )
    p.add_argument("--scores", required=True, help="scores.json {video: {exp_id: [score]}}")
    p.add_argument("--out", required=True, help="key_frame.json to write")
    p.add_argument("--meta", help="meta_expressions.json: check every expression and length")
    declare_paths(p, reads=("scores", "meta"), writes=("out",))
    p.set_defaults(func=run)
