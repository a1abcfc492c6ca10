"""``rvos-kit audit-engine``: which DeAOT engine did the authors run? (contract section 5.7)

The authors' DeAOT run used engine code that was never published: either their AOT
fork's behaviour (``--engine published_aot_fork``) or aot-benchmark 75e46fe as written
(``--engine aot_benchmark``). They released, for vit_huge, referformer_ft and
vit_convnext_soc, both the tree their DeAOT run read and the tree it wrote. This verb
recomputes the written tree from the read one under both settings and compares each with
the released one, frame by frame (:func:`rvos_kit.stages.audit.compare.audit_stage`).

Key frames are read off the released trees themselves: the DeAOT run copies the key
frame's PNG byte for byte from its input (contract section 5.4). The key frame of an
expression is the one frame whose input mask is not empty and whose PNG bytes are the
same in both trees. An expression without exactly one such frame (its key-frame mask was
empty, so the run copied the whole expression; or several frames tie) is left out and
counted.

Writes under ``--out``: ``key_frame.json`` and ``meta.json`` (the audited expressions),
one tree per engine (``<engine>/``) and ``engine_audit.json`` (per engine: frames,
byte- and pixel-identical frames, mean and minimum IoU; the verdict). The verdict names the
engine whose trees are byte-identical to the released ones on every frame, else the one
with the higher mean IoU ("closer", not "matches": another GPU or driver can change a few
pixels under mixed precision). A GPU and the DeAOT checkpoint are needed for real data;
``--videos N`` audits the first N videos only (each costs both engines' propagation).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import KitError
from ..stages.audit.compare import audit_stage
from ..stages.propagate import make_backend, propagate
from ..stages.propagate.aot_model import ENGINES
from ..trees.files import atomic_write_bytes
from ..trees.masktree import decode_mask, expression_files
from ..trees.meta import load_meta


def key_frames_from_copies(inputs: Path, released: Path, meta) -> tuple[dict, dict]:
    """``({(video, exp_id): k}, {"copied": n, "ambiguous": n})`` (module docstring)."""
    keys: dict[tuple[str, str], int] = {}
    left_out = {"copied": 0, "ambiguous": 0}
    for v in meta:
        for e in v.exp_ids:
            a, b = expression_files(inputs, v, e), expression_files(released, v, e)
            same = [t for t, (x, y) in enumerate(zip(a, b, strict=True))
                    if x.read_bytes() == y.read_bytes()]  # fmt: skip
            found = [t for t in same if decode_mask(a[t].read_bytes(), a[t], "nonzero").any()]
            if len(found) == 1 and len(same) < len(a):
                keys[v.name, e] = found[0]
            else:
                left_out["copied" if len(same) == len(a) else "ambiguous"] += 1
    return keys, left_out


def _write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


def audit_engines(images, inputs, released, meta_path, out, videos: int | None = None,
                  progress: bool = True, **backend_options) -> dict:  # fmt: skip
    """Run both engines on the expressions whose key frame can be read off (module
    docstring); returns the JSON summary it writes."""
    images, inputs, released, out = Path(images), Path(inputs), Path(released), Path(out)
    meta = load_meta(meta_path)
    chosen = list(meta)[:videos] if videos else list(meta)
    keys, left_out = key_frames_from_copies(inputs, released, chosen)
    if not keys:
        raise KitError(
            f"{released}: no expression has exactly one frame copied byte for byte from "
            f"{inputs} with a non-empty mask; is it the DeAOT tree made from that tree?"
        )
    raw = json.loads(Path(meta_path).read_text(encoding="utf-8"))["videos"]
    sub = {"videos": {}}
    for v in chosen:
        exps = {e: raw[v.name]["expressions"][e] for e in v.exp_ids if (v.name, e) in keys}
        if exps:
            sub["videos"][v.name] = {"expressions": exps, "frames": list(v.frames)}
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "meta.json", sub)
    kf: dict = {}
    for (vid, e), k in keys.items():
        kf.setdefault(vid, {})[e] = {"index_info": {"class_index": k}}
    _write_json(out / "key_frame.json", kf)
    sub_meta = load_meta(out / "meta.json")
    result = {"expressions": len(keys), "left_out": left_out, "engines": {}}
    for engine in ENGINES:
        backend = make_backend("deaot", engine=engine, **backend_options)
        tree = out / engine
        propagate(images, inputs, out / "key_frame.json", sub_meta, tree, backend,
                  progress=progress)  # fmt: skip
        s = audit_stage(engine, tree, released, sub_meta, progress=progress)
        result["engines"][engine] = {
            "frames": s.n_frames, "byte_identical": s.n_byte, "pixel_identical": s.n_pixel,
            "mean_iou": s.mean_iou, "min_iou": s.min_iou,
        }  # fmt: skip
    e = result["engines"]
    exact = [n for n in ENGINES if e[n]["byte_identical"] == e[n]["frames"]]
    if len(exact) == 1:
        result["verdict"] = {"engine": exact[0], "how": "matches"}
    else:
        best = max(ENGINES, key=lambda n: e[n]["mean_iou"])
        tie = len({e[n]["mean_iou"] for n in ENGINES}) == 1
        result["verdict"] = {"engine": None if tie else best, "how": "tie" if tie else "closer"}
    _write_json(out / "engine_audit.json", result)
    return result


HELP = """\
Which DeAOT engine did the authors run? (contract section 5.7)

Recomputes a released DeAOT tree from the released tree it was made from (--input, e.g.
the authors' vit_huge masks; --released, their vit_huge DeAOT tree), once per --engine
setting (published_aot_fork, aot_benchmark), and compares both with the released tree.
Key frames are read off the two trees (the key frame's PNG is copied byte for byte).
Needs the DeAOT checkpoint and, for real data, a GPU. Writes --out/engine_audit.json and
prints the verdict; set propagation.deaot.engine in params.yaml accordingly.
"""


def run(args) -> int:
    r = audit_engines(
        args.images, args.input, args.released, args.meta, args.out, videos=args.videos,
        model=args.model, checkpoint=args.checkpoint, random_seed=args.random_weights,
        device=args.device, trust_checkpoint=args.trust_checkpoint,
        checkpoint_sha256=args.checkpoint_sha256,
    )  # fmt: skip
    for name, s in r["engines"].items():
        print(
            f"{name:>20}: {s['byte_identical']}/{s['frames']} frames byte-identical, "
            f"{s['pixel_identical']} pixel-identical, mean IoU {s['mean_iou']:.4f}"
        )
    left = r["left_out"]
    print(
        f"{r['expressions']} expressions audited ({left['copied']} copied whole and "
        f"{left['ambiguous']} without one clear key frame left out)"
    )
    v = r["verdict"]
    verdict = f"{v['engine']} {v['how']}" if v["engine"] else "no engine is closer (a tie)"
    print(f"verdict: {verdict} -> {Path(args.out) / 'engine_audit.json'}")
    return 0


def register(sub) -> None:
    from ..argtypes import declare_paths, positive_int
    from ..stages.propagate.verb import add_weight_options

    p = sub.add_parser(
        "audit-engine",
        help="which DeAOT engine the authors ran: recompute a released DeAOT tree both ways",
        description=HELP,
    )
    p.add_argument("--images", required=True, help="JPEG root: <root>/<video>/<frame>.jpg")
    p.add_argument("--input", required=True, help="the released tree the DeAOT run read")
    p.add_argument("--released", required=True, help="the released DeAOT tree it wrote")
    p.add_argument("--meta", required=True, help="meta_expressions.json")
    p.add_argument("--out", required=True, help="work folder (trees, engine_audit.json)")
    p.add_argument("--videos", type=positive_int, help="audit the first N videos of meta only")
    p.add_argument("--model", default="swinl_deaotl", help="default swinl_deaotl")
    add_weight_options(p)
    declare_paths(p, reads=("images", "input", "released", "meta", "checkpoint"), writes=("out",))
    p.set_defaults(func=run)
