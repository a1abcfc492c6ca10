"""The DAG's data when there is no download: ``make-sample`` writes a tiny
Ref-YouTube-VOS-shaped dataset with simulated outputs of the five RVOS models,
deterministic from a seed (for ``make demo`` and the tests); ``valid-meta`` derives the
valid-only meta.

Layout written under OUT::

    JPEGImages/<video>/<frame>.jpg        textured objects drifting over a textured background
    meta_expressions.json                 expressions 2k and 2k+1 describe object k; odd and
                                          even expression counts
    gt/<video>/<exp_id>/<frame>.png       ground truth (the referred object's visible region)
    models/<model>/Annotations/...        simulated binary outputs (contract section 3)
    models/<model>/scores.json            per-frame referred scores (class_info)
    models/<model>/Annotations_sigmoid_odd/...
                                          probability models only: sigmoid(p) > 0.5 for the
                                          trailing odd expression (quirk 9.1)

Each model is a differently corrupted view of the truth: per expression it may refer to
the wrong object; per frame its boundary is dilated or eroded, it may add a false blob or
miss the object. Its score for a frame is the frame's true IoU plus noise, so the key
frame is usually a good frame. Probability models hold ``p = sigmoid(0.8 * signed
distance to the boundary, clipped like a real model's logits)`` in float32, binarised
``p > 0.5``; their quirk masks apply ``sigmoid(p) > 0.5`` to p, which is true wherever p
is not (almost exactly) zero: practically the whole frame, as in the published run.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from .. import catalog
from ..argtypes import declare_paths
from ..errors import KitError
from ..trees.files import atomic_write_bytes
from ..trees.jsonfiles import read_json, write_json
from ..trees.masktree import StagedTree, write_mask
from ..trees.meta import valid_only
from ..trees.synthetic import colour_texture, corrupt, ellipse, probability

_D = catalog.DEFAULTS["sample"]


def sample_models() -> dict[str, catalog.ModelRow]:
    """The simulated models, in catalogue order: the rows with a ``sample`` profile (P(refers
    to the wrong object), boundary jitter (px), P(false blob), P(miss))."""
    return {n: r for n, r in catalog.MODELS.items() if r.sample is not None}


MODELS = {n: r.kind for n, r in sample_models().items()}  # model -> kind of its output
EXP_COUNTS = (2, 3, 1, 4, 5, 2, 3, 4)


def _sigmoid_gt_half(p):
    with np.errstate(over="ignore"):
        return (np.float32(1) / (np.float32(1) + np.exp(-p))) > np.float32(0.5)


def _iou(a, b):
    u = np.logical_or(a, b).sum()
    return 1.0 if u == 0 else float(np.logical_and(a, b).sum() / u)


def make_sample(out, seed=_D["seed"], videos=_D["videos"], frames=_D["frames"],
                height=_D["height"], width=_D["width"], progress=True):  # fmt: skip
    """Write the sample dataset to ``out`` (replaced atomically)."""
    models = sample_models()
    if videos < 1 or frames < 2 or height < 32 or width < 32:
        raise KitError("sample needs >= 1 video, >= 2 frames and frames of at least 32x32 px")
    rng = np.random.default_rng(seed)
    meta = {"videos": {}}
    scores = {m: {} for m in models}
    with StagedTree(out) as staged:
        root = staged.path
        for vi in tqdm(range(videos), unit="video", desc="make-sample", disable=not progress):
            vid = f"s{seed:02d}v{vi:03d}"
            n_exp = EXP_COUNTS[vi % len(EXP_COUNTS)]
            n_obj = (n_exp + 1) // 2
            names = [f"{5 * t:05d}" for t in range(frames)]
            meta["videos"][vid] = {
                "expressions": {
                    str(e): {"exp": f"the object number {e // 2} (expression {e})"}
                    for e in range(n_exp)
                },
                "frames": names,
            }
            bg = colour_texture(rng, height, width, rng.uniform(60, 190, 3))
            objs = []
            for _ in range(n_obj):
                ry, rx = rng.uniform(0.12, 0.25) * height, rng.uniform(0.10, 0.22) * width
                objs.append(
                    dict(
                        cy=rng.uniform(ry, height - ry),
                        cx=rng.uniform(rx, width - rx),
                        ry=ry,
                        rx=rx,
                        vy=rng.uniform(-2.5, 2.5),
                        vx=rng.uniform(-3.0, 3.0),
                        tex=colour_texture(rng, height, width, rng.uniform(30, 230, 3), amp=80.0),
                    )
                )
            truth = np.zeros((frames, n_obj, height, width), bool)
            (root / "JPEGImages" / vid).mkdir(parents=True)
            for t, name in enumerate(names):
                img = bg.copy()
                visible = np.zeros((height, width), np.int16) - 1
                for k, o in enumerate(objs):  # later objects occlude earlier ones
                    m = ellipse(height, width, o["cy"] + o["vy"] * t, o["cx"] + o["vx"] * t,
                                o["ry"], o["rx"])  # fmt: skip
                    # the texture moves with the object
                    shift = np.float32([[1, 0, o["vx"] * t], [0, 1, o["vy"] * t]])
                    tex = cv2.warpAffine(o["tex"], shift, (width, height),
                                         borderMode=cv2.BORDER_REFLECT)  # fmt: skip
                    img[m] = tex[m]
                    visible[m] = k
                for k in range(n_obj):
                    truth[t, k] = visible == k
                buf = io.BytesIO()
                Image.fromarray(img, "RGB").save(buf, "JPEG", quality=90)
                atomic_write_bytes(root / "JPEGImages" / vid / f"{name}.jpg", buf.getvalue())
            for e in range(n_exp):
                d = root / "gt" / vid / str(e)
                d.mkdir(parents=True)
                for t, name in enumerate(names):
                    write_mask(d / f"{name}.png", truth[t, e // 2])
            for model, row in models.items():
                kind = row.kind
                p_wrong, jitter, p_blob, p_miss = row.sample
                mrng = np.random.default_rng([seed, vi, list(models).index(model)])
                scores[model][vid] = {}
                for e in range(n_exp):
                    obj = e // 2
                    if n_obj > 1 and mrng.random() < p_wrong:
                        obj = int((obj + 1 + mrng.integers(0, n_obj - 1)) % n_obj)
                    d = root / "models" / model / "Annotations" / vid / str(e)
                    d.mkdir(parents=True)
                    quirk = kind == "probabilities" and n_exp % 2 == 1 and e == n_exp - 1
                    if quirk:
                        qd = root / "models" / model / "Annotations_sigmoid_odd" / vid / str(e)
                        qd.mkdir(parents=True)
                    s = []
                    for t, name in enumerate(names):
                        pred = corrupt(mrng, truth[t, obj], jitter, p_blob, p_miss)
                        if kind == "probabilities":
                            p = probability(pred)
                            pred = p > np.float32(0.5)
                            if quirk:
                                write_mask(qd / f"{name}.png", _sigmoid_gt_half(p))
                        write_mask(d / f"{name}.png", pred)
                        quality = _iou(pred, truth[t, e // 2])
                        s.append(round(quality + float(mrng.normal(0, 0.1)), 6))
                    scores[model][vid][str(e)] = s
        text = json.dumps(meta, indent=1) + "\n"
        atomic_write_bytes(root / "meta_expressions.json", text.encode())
        for model in models:
            text = json.dumps(scores[model]) + "\n"
            atomic_write_bytes(root / "models" / model / "scores.json", text.encode())
    return Path(out)


def run(args) -> int:
    out = make_sample(args.out, args.seed, args.videos, args.frames, args.height, args.width)
    print(f"sample dataset ({args.videos} videos, {args.frames} frames) -> {out}")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "make-sample",
        help="generate a tiny Ref-YouTube-VOS-shaped dataset with simulated model outputs",
        description=__doc__,
    )
    p.add_argument("--out", required=True, help="folder to create (replaced atomically)")
    p.add_argument(
        "--seed", type=int, default=_D["seed"], help="random seed: same seed, same bytes"
    )
    p.add_argument("--videos", type=int, default=_D["videos"], help="number of videos")
    p.add_argument("--frames", type=int, default=_D["frames"], help="frames per video")
    p.add_argument("--height", type=int, default=_D["height"], help="frame height in pixels")
    p.add_argument("--width", type=int, default=_D["width"], help="frame width in pixels")
    declare_paths(p, writes=("out",))
    p.set_defaults(func=run)

    v = sub.add_parser(
        "valid-meta",
        help="the valid meta minus the test videos (the 202 valid-only videos)",
        description="Ref-YouTube-VOS's valid meta_expressions.json also lists the 305 test "
        "videos; write the valid-only meta (videos and expressions in file order).",
    )
    v.add_argument("--valid", required=True, help="meta_expressions/valid/meta_expressions.json")
    v.add_argument("--test", required=True, help="meta_expressions/test/meta_expressions.json")
    v.add_argument("--out", required=True, help="meta file to write")
    declare_paths(v, reads=("valid", "test"), writes=("out",))
    v.set_defaults(func=run_valid_meta)


def run_valid_meta(args) -> int:
    out = valid_only(read_json(args.valid, "valid meta"), read_json(args.test, "test meta"))
    if not out["videos"]:
        raise KitError(f"{args.valid}: no video left after removing those of {args.test}")
    write_json(args.out, out)
    print(f"{args.out}: {len(out['videos'])} valid-only videos")
    return 0
