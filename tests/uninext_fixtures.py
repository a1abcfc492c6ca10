"""Inputs for running UNINEXT's published ``train_net.py`` on the CPU with random weights.

Run with the upstream test environment (``.venv-upstream``), never imported by the kit's
own tests::

    python tests/uninext_fixtures.py --model vit_huge --upstream DIR --out DIR [--small]

Writes under ``--out``:

- ``meta.json`` + ``JPEGImages/<video>/<frame>.jpg``: two videos of two 48x48 frames
  (square: the smallest input after the mapper's short-side-480 resize; random pixels,
  fixed seed), the first with two expressions, the second with one (an odd count); with
  ``--small`` one frame and one expression each (ViT-H costs ~16 s of CPU per frame);
- ``pretrained/bert-base-uncased/``: a tiny random BERT (hidden size 768, as
  ``bert_model.py`` L20 ``language_dim = 768`` needs; one layer; a WordPiece vocabulary
  of the special tokens, the letters and the expressions' words), written with
  ``save_pretrained`` as ``config.json``, ``vocab.txt``, ``pytorch_model.bin``;
- ``<model>.pth``: ``{"model": state_dict}`` of the model that
  ``train_net.py``'s ``Trainer.build_model`` builds from the published config, randomly
  initialised from a fixed seed, the layout ``DetectionCheckpointer`` loads from
  ``MODEL.WEIGHTS``. The model is built in this process with the same outside shims the
  run gets (:mod:`rvos_kit.stages.rvos.infer.uninext_child`).
"""

from __future__ import annotations

import argparse
import runpy
import tempfile
from pathlib import Path

import torch
from upstream_fixtures import write_videos

from rvos_kit.stages.rvos.infer import uninext, uninext_child

WORDS = "a an the cat dog on left right of number big small".split()


def write_video_data(out: Path, small: bool) -> None:
    videos = {}
    for i in range(2):
        frames = ["00000"] if small else ["00000", "00005"]
        exps = {"0": {"exp": f"a cat number {i} on the left"}}
        if i == 0 and not small:  # the second video has one: an odd count, for quirk 9.1
            exps["1"] = {"exp": "the big dog on the right"}
        videos[f"{i:02d}f0e1d2c3"] = {"expressions": exps, "frames": frames}
    write_videos(out, videos)


def write_bert(d: Path) -> None:
    from transformers import BertConfig, BertModel, BertTokenizerFast

    d.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += list("abcdefghijklmnopqrstuvwxyz0123456789") + WORDS
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(d / "vocab.txt"), do_lower_case=True).save_pretrained(d)
    torch.manual_seed(1)
    cfg = BertConfig(
        vocab_size=len(vocab), hidden_size=768, num_hidden_layers=1, num_attention_heads=12,
        intermediate_size=256, max_position_embeddings=260,
    )  # fmt: skip
    BertModel(cfg).save_pretrained(d, safe_serialization=False)


def write_checkpoint(model: str, upstream: Path, pretrained: Path, path: Path) -> None:
    """Build the model as ``train_net.py``'s ``main`` does (``setup`` then
    ``Trainer.build_model``), with the run's own command line and shims, and save it."""
    with tempfile.TemporaryDirectory() as work:
        argv = uninext.command_line(model, upstream, "", Path(work) / "run", device="cpu")
        assert argv[1:3] == ["-m", uninext.CHILD]
        script, args = Path(argv[3]), argv[4:]
        paths = {uninext.BERT: str(pretrained / "bert-base-uncased")}
        uninext_child.prepare(script, args, paths)
        train_net = runpy.run_path(str(script), run_name="rvos_kit_fixture")
        args = train_net["new_argument_parser"]().parse_args(args)
        cfg = train_net["setup"](args)  # default_setup seeds every RNG from cfg.SEED
        torch.manual_seed(3)
        net = train_net["Trainer"].build_model(cfg)
    torch.save({"model": net.state_dict()}, path)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, choices=list(uninext.MODELS))
    ap.add_argument("--upstream", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--small", action="store_true")
    a = ap.parse_args()
    out = a.out.resolve()
    write_video_data(out, a.small)
    write_bert(out / "pretrained" / "bert-base-uncased")
    write_checkpoint(a.model, a.upstream.resolve(), out / "pretrained", out / f"{a.model}.pth")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
