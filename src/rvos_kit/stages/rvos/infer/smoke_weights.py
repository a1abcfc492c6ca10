"""``rvos-kit smoke-weights``: random inputs in the published formats, so that a model's
published inference code runs with no download (``rvos-kit smoke``, and the tests that
run the upstream code on the CPU).

smoke-weights --model M --upstream DIR --out DIR [--seed S]
    Runs where the model's inference runs (its image or venv: it builds the network with
    the published code) and writes under ``--out``, in a temporary folder renamed into
    place at the end:

    - ``pretrained/roberta-base/`` (soc, mutr, referformer_ft): a tiny random RoBERTa
      (hidden size 768 as the models' ``FeatureResizer`` needs, one layer, a byte-level
      BPE vocabulary of the 256 byte symbols and the five special tokens);
    - ``pretrained/bert-base-uncased/`` (vit_huge, convnext): a tiny random BERT (hidden
      size 768, one layer, a WordPiece vocabulary of the special tokens, the letters,
      the digits and a few words);
    - soc only: ``pretrained/swin_base_patch244_window877_kinetics400_22k.pth``, a
      random video Swin-B in the Kinetics release layout;
    - ``checkpoint.pth``: the state dict of the network the published code builds,
      randomly initialised from the seed, in the published format (soc
      ``{'model_state_dict': ...}``; mutr / referformer_ft ``{'model': ..., 'args':
      Namespace}``; vit_huge / convnext ``{'model': ...}``).

    The same model and seed give the same weights. vit_huge's file is ~5 GB (fp32).

Python: :func:`write_weights`, :func:`write_videos` (random-pixel JPEGs + meta.json),
:func:`write_roberta`, :func:`write_bert`, :func:`write_checkpoint`,
:func:`write_uninext_checkpoint`.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from ....argtypes import declare_paths
from ....errors import KitError

DETR_MODELS = ("soc", "mutr", "referformer_ft")
UNINEXT_MODELS = ("vit_huge", "convnext")
WORDS = "a an the cat dog on left right of number big small object".split()


def write_videos(out: Path, videos: dict, seed: int = 0, size: tuple[int, int] = (48, 48)):
    """``meta.json`` for ``videos`` (``{video: {"expressions": ..., "frames": [...]}}``)
    and a JPEG of random pixels (``default_rng(seed)``, ``size`` = (h, w)) per frame."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for vid, entry in videos.items():
        d = out / "JPEGImages" / vid
        d.mkdir(parents=True, exist_ok=True)
        for f in entry["frames"]:
            px = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            Image.fromarray(px).save(d / f"{f}.jpg", quality=95)
    (out / "meta.json").write_text(json.dumps({"videos": videos}))


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


def write_roberta(d: Path, seed: int = 1) -> None:
    import torch
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
    torch.manual_seed(seed)
    cfg = RobertaConfig(
        vocab_size=len(vocab), hidden_size=768, num_hidden_layers=1, num_attention_heads=12,
        intermediate_size=256, max_position_embeddings=130, type_vocab_size=1,
        pad_token_id=1, bos_token_id=0, eos_token_id=2,
    )  # fmt: skip
    RobertaModel(cfg).save_pretrained(d)


def write_bert(d: Path, seed: int = 1) -> None:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    d.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += list("abcdefghijklmnopqrstuvwxyz0123456789") + WORDS
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(d / "vocab.txt"), do_lower_case=True).save_pretrained(d)
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=len(vocab), hidden_size=768, num_hidden_layers=1, num_attention_heads=12,
        intermediate_size=256, max_position_embeddings=260,
    )  # fmt: skip
    BertModel(cfg).save_pretrained(d, safe_serialization=False)


def write_swin_kinetics(path: Path, seed: int = 2) -> None:
    """Call inside ``swin.upstream_code(req, "soc_test")``."""
    import torch
    from models.video_swin_transformer import SwinTransformer3D, configs

    kw = dict(configs["video-swin-b"], patch_size=(2, 4, 4))
    torch.manual_seed(seed)
    net = SwinTransformer3D(**kw)
    torch.save({"state_dict": {"backbone." + k: v for k, v in net.state_dict().items()}}, path)


def write_checkpoint(model: str, req, path: Path, seed: int = 3) -> None:
    """A random checkpoint of SOC / MUTR / ReferFormer-ft, built by the published
    ``build_model`` (``req``: a :class:`~.core.Request` whose ``pretrained`` holds the
    tiny RoBERTa; soc: the Video-Swin file is written there too)."""
    import importlib

    import torch

    from . import mutr, referformer, soc, swin

    torch.manual_seed(seed)
    if model == "soc":
        with swin.upstream_code(req, soc.FOLDER, (req.pretrained / soc.SWIN_KINETICS,)):
            from models import build_model

            write_swin_kinetics(req.pretrained / soc.SWIN_KINETICS, seed - 1)

            net = build_model(soc.config(req, "fixture"))[0]
        torch.save({"model_state_dict": net.state_dict()}, path)
        return
    drv = {"mutr": mutr, "referformer_ft": referformer}[model]
    with swin.upstream_code(req, drv.FOLDER):
        from models import build_model

        swin.redirect_from_pretrained(
            importlib.import_module(drv.MODEL_MODULE), ("RobertaTokenizerFast", "RobertaModel"),
            drv.PUBLISHED_ROBERTA, swin.roberta_dir(req),
        )  # fmt: skip
        args = swin.detr_args(req, "fixture", drv.PNG_FLAGS, False)
        net = build_model(args)[0]
    torch.save({"model": net.state_dict(), "args": args, "epoch": 5}, path)


def write_uninext_checkpoint(
    model: str, upstream: Path, pretrained: Path, path: Path, seed: int = 3
) -> None:
    """Build the model as ``train_net.py``'s ``main`` does (``setup`` then
    ``Trainer.build_model``), with the run's own command line and shims, and save it."""
    import runpy

    import torch

    from . import uninext, uninext_child

    with tempfile.TemporaryDirectory() as work:
        argv = uninext.command_line(model, upstream, "", Path(work) / "run", device="cpu")
        assert argv[1:3] == ["-m", uninext.CHILD]
        script, args = Path(argv[3]), argv[4:]
        paths = {uninext.BERT: str(pretrained / "bert-base-uncased")}
        uninext_child.prepare(script, args, paths)
        train_net = runpy.run_path(str(script), run_name="rvos_kit_fixture")
        args = train_net["new_argument_parser"]().parse_args(args)
        cfg = train_net["setup"](args)  # default_setup seeds every RNG from cfg.SEED
        torch.manual_seed(seed)
        net = train_net["Trainer"].build_model(cfg)
    torch.save({"model": net.state_dict()}, path)


def _request(model: str, upstream: Path, out: Path):
    """A request over a one-frame stand-in meta (building a network reads no frame)."""
    from .core import Request, load_meta_file

    write_videos(out / "stand-in", {"v": {"expressions": {"0": {"exp": "a cat"}},
                                          "frames": ["00000"]}})  # fmt: skip
    meta, raw = load_meta_file(out / "stand-in" / "meta.json")
    return Request(
        model=model, meta=meta, meta_videos=raw, images=out / "stand-in" / "JPEGImages",
        split="valid", upstream=upstream, checkpoint=out / "checkpoint.pth",
        pretrained=out / "pretrained", device="cpu",
    )  # fmt: skip


def write_weights(model: str, upstream: Path, out: Path, seed: int = 0) -> Path:
    """``out/pretrained/`` and ``out/checkpoint.pth`` of ``model`` from ``seed`` (the text
    encoder from seed + 1, SOC's Video-Swin from seed + 2, the network from seed + 3;
    seed 0 gives the tests' fixtures). Built in a temporary folder beside ``out``,
    renamed into place; an existing ``out`` is replaced."""
    from .... import catalog
    from .upstream import verify_upstream

    if model not in DETR_MODELS + UNINEXT_MODELS:
        raise KitError(f"smoke-weights: unknown model {model!r}")
    upstream, out = Path(upstream).resolve(), Path(out).resolve()
    verify_upstream(upstream, catalog.MODELS[model].upstream)  # before importing any
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        pre = tmp / "pretrained"
        if model in DETR_MODELS:
            write_roberta(pre / "roberta-base", seed + 1)
            req = _request(model, upstream, tmp)
            write_checkpoint(model, req, tmp / "checkpoint.pth", seed + 3)
            shutil.rmtree(tmp / "stand-in")
        else:
            write_bert(pre / "bert-base-uncased", seed + 1)
            write_uninext_checkpoint(model, upstream, pre, tmp / "checkpoint.pth", seed + 3)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def run(args) -> int:
    out = write_weights(args.model, args.upstream, args.out, args.seed)
    print(f"smoke-weights {args.model}: random weights (seed {args.seed}) -> {out}")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "smoke-weights",
        help="random weights and tiny text encoders in a model's published formats (smoke)",
        description=__doc__.split("\nPython:")[0],
    )
    p.add_argument("--model", required=True, choices=DETR_MODELS + UNINEXT_MODELS)
    p.add_argument("--upstream", required=True, help="the published repository at c538b0d")
    p.add_argument("--out", required=True, help="folder to write (replaced if it exists)")
    p.add_argument("--seed", type=int, default=0)
    declare_paths(p, reads=("upstream",), writes=("out",))
    p.set_defaults(func=run)
