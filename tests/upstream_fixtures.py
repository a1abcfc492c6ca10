"""Inputs for running a published model's inference on the CPU with random weights.

Run with the upstream test environment (``.venv-upstream``), never imported by the kit's
own tests::

    python tests/upstream_fixtures.py --model soc --upstream DIR --out DIR [--videos 3]

Writes under ``--out``:

- ``meta.json`` + ``JPEGImages/<video>/<frame>.jpg``: ``--videos`` tiny videos, one
  expression and two 48x48 frames (square: the smallest input after the
  workers' short-side resize) each (random pixels, fixed seed);
- ``pretrained/roberta-base/``: a tiny random RoBERTa (hidden size 768 as the models'
  ``FeatureResizer`` needs, one layer, a byte-level BPE vocabulary of the 256 byte symbols
  and the five special tokens), written with ``save_pretrained``;
- soc only: ``pretrained/swin_base_patch244_window877_kinetics400_22k.pth``, a random
  Video-Swin-B in the Kinetics release layout (``{'state_dict': {'backbone.'+k: v}}``,
  patch size (2,4,4)), built from the upstream ``SwinTransformer3D``;
- ``checkpoint.pth``: the state dict of the model the upstream ``build_model`` builds,
  randomly initialised, in the published format (soc ``{'model_state_dict': ...}``;
  mutr/referformer_ft ``{'model': ..., 'args': argparse.Namespace}``, so loading it needs
  ``weights_only=False`` exactly as the published files do).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from rvos_kit.stages.rvos.infer import core, mutr, referformer, soc, swin

DRIVERS = {"soc": soc, "mutr": mutr, "referformer_ft": referformer}


def write_videos(out: Path, videos: dict, seed: int = 0) -> None:
    """``meta.json`` for ``videos`` (``{video: {"expressions": ..., "frames": [...]}}``)
    and a 48x48 JPEG of random pixels (``default_rng(seed)``) per frame."""
    rng = np.random.default_rng(seed)
    for vid, entry in videos.items():
        d = out / "JPEGImages" / vid
        d.mkdir(parents=True, exist_ok=True)
        for f in entry["frames"]:
            px = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
            Image.fromarray(px).save(d / f"{f}.jpg", quality=95)
    (out / "meta.json").write_text(json.dumps({"videos": videos}))


def write_video_data(out: Path, n_videos: int) -> None:
    videos = {}
    for i in range(n_videos):
        exps = {"0": {"exp": f"a cat number {i} on the left"}}
        videos[f"{i:02d}a1b2c3d4"] = {"expressions": exps, "frames": ["00000", "00005"]}
    write_videos(out, videos)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (what byte-level BPE vocabularies use)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1))
    keep += list(range(0xAE, 0xFF + 1))
    out, n = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + n)
            n += 1
    return out


def write_roberta(d: Path) -> None:
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast

    d.mkdir(parents=True, exist_ok=True)
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    vocab = {t: i for i, t in enumerate(specials)}
    for ch in bytes_to_unicode().values():
        vocab[ch] = len(vocab)
    (d / "vocab.json").write_text(json.dumps(vocab))
    (d / "merges.txt").write_text("#version: 0.2\n")
    tok = RobertaTokenizerFast(vocab_file=str(d / "vocab.json"), merges_file=str(d / "merges.txt"))
    tok.save_pretrained(d)
    torch.manual_seed(1)
    cfg = RobertaConfig(
        vocab_size=len(vocab), hidden_size=768, num_hidden_layers=1, num_attention_heads=12,
        intermediate_size=256, max_position_embeddings=130, type_vocab_size=1,
        pad_token_id=1, bos_token_id=0, eos_token_id=2,
    )  # fmt: skip
    RobertaModel(cfg).save_pretrained(d)


def write_swin_kinetics(path: Path) -> None:
    """Call inside ``swin.upstream_code(req, "soc_test")``."""
    from models.video_swin_transformer import SwinTransformer3D, configs

    kw = dict(configs["video-swin-b"], patch_size=(2, 4, 4))
    torch.manual_seed(2)
    net = SwinTransformer3D(**kw)
    torch.save({"state_dict": {"backbone." + k: v for k, v in net.state_dict().items()}}, path)


def write_checkpoint(model: str, req: core.Request, path: Path) -> None:
    torch.manual_seed(3)
    if model == "soc":
        with swin.upstream_code(req, soc.FOLDER, (req.pretrained / soc.SWIN_KINETICS,)):
            from models import build_model

            write_swin_kinetics(req.pretrained / soc.SWIN_KINETICS)

            net = build_model(soc.config(req, "fixture"))[0]
        torch.save({"model_state_dict": net.state_dict()}, path)
        return
    drv = DRIVERS[model]
    with swin.upstream_code(req, drv.FOLDER):
        import importlib

        from models import build_model

        swin.redirect_from_pretrained(
            importlib.import_module(drv.MODEL_MODULE), ("RobertaTokenizerFast", "RobertaModel"),
            drv.PUBLISHED_ROBERTA, swin.roberta_dir(req),
        )  # fmt: skip
        args = swin.detr_args(req, "fixture", drv.PNG_FLAGS, False)
        net = build_model(args)[0]
    torch.save({"model": net.state_dict(), "args": args, "epoch": 5}, path)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, choices=list(DRIVERS))
    ap.add_argument("--upstream", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--videos", type=int, default=2)
    a = ap.parse_args()
    out = a.out.resolve()
    write_video_data(out, a.videos)
    pre = out / "pretrained"
    write_roberta(pre / swin.ROBERTA)
    meta, raw = core.load_meta_file(out / "meta.json")
    req = core.Request(
        model=a.model, meta=meta, meta_videos=raw, images=out / "JPEGImages", split="valid",
        upstream=a.upstream.resolve(), checkpoint=out / "checkpoint.pth", pretrained=pre,
        device="cpu",
    )  # fmt: skip
    write_checkpoint(a.model, req, out / "checkpoint.pth")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
