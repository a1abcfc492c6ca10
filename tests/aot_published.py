"""The published AOT/DeAOT code on the CPU, driven from outside, beside the kit's propagation.

Run with the upstream test environment (``.venv-upstream``: torch + torchvision, which the
published evaluator imports), never imported by the kit's own tests::

    python tests/aot_published.py weights --code DIR --model swinl_aotl --out W.pth
    python tests/aot_published.py published --code AOT_DIR --data D --checkpoint W.pth --out O
    python tests/aot_published.py kit --data D --checkpoint W.pth --out O [--backend deaot ...]
    python tests/aot_published.py bench-engine --code BENCH_DIR --data D --checkpoint W.pth \\
        --out O --engine aot_benchmark

``--code`` is a folder of published code: ``soc_test/AOT`` of the published repository (the
authors' AOT fork) or the root of aot-benchmark at 75e46fe (what ``soc_test/DEAOT`` points
to). Its files are imported as they are; nothing in them is edited.

``weights``: the network that code builds (``build_vos_model``), randomly initialised from
``--seed``, saved as the published checkpoints are (``{"state_dict": ...}``). Random
weights give every one of the 11 ids about the same logit, so ``argmax >= 1`` would be
foreground almost everywhere; the decoder's output bias of the background id is raised
by ``--bg-bias`` so that the masks are neither empty nor full.

``published``: the published evaluator itself, ``tools/eval.py`` with ``eval_soc.sh``'s
flags (``--stage pre_ytb_dav --model swinl_aotl --dataset youtubevos2019_post --flip --ms 0.8
1.0 1.2 --amp``; ``--gpu_num 1`` instead of 2: the GPUs only split the videos), on the data
folder that :func:`rvos_kit.trees.synthetic.write_propagation_input` wrote (placed as the
published paths expect it). Run-time patches, each met from outside (file:line of what
each meets, in soc_test/AOT):

- ``torch.cuda.set_device`` (networks/managers/bidirectional_evaluator.py:41), the
  ``.cuda(gpu)`` calls of modules and tensors (bidirectional_evaluator.py:44, 380, 385;
  utils/checkpoint.py:98): no-ops on the CPU;
- ``torch.cuda.Event`` (bidirectional_evaluator.py:405): a timer that records nothing;
- ``torch.load(map_location=cuda:N)`` (utils/checkpoint.py:76-77): loaded on the CPU;
- the hard-coded folders of ``configs/default.py`` ``init_dir`` (DIR_ROOT under /mnt,
  DIR_IMAGE, DIR_YTB_POST_EVAL, PICKED_KEY_FRAMES_ID; lines 106-142): pointed into the
  data folder; the original still runs, without creating folders under /mnt;
- ``torch.cuda.amp.autocast`` (tools/eval.py:21): no CUDA, so float32, as the kit on a CPU;
- the ``spatial_correlation_sampler`` CUDA extension is not installed: the published
  transformer falls back to its own ``MultiheadLocalAttentionV3``
  (networks/layers/transformer.py:153-164), by itself;
- one intra-op thread (``torch.set_num_threads(1)``), as in the kit's run, so the two
  sum in the same order.

``kit``: ``rvos_kit.stages.propagate.propagate`` with ``--backend`` (aot / deaot), the
published settings and the checkpoint, on the same data, one thread.

``bench-engine``: aot-benchmark's own networks and per-object engine (``--code``: its root),
stepped by the kit's views and passes (:class:`rvos_kit.stages.propagate.aot_backend.
AOTBackend` with the model and engine classes swapped for the archive's), so that its
output can be compared with the kit on deaotpy's.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import runpy
import sys
from pathlib import Path

import torch

PUBLISHED_FLAGS = [
    "--exp_name", "soc", "--stage", "pre_ytb_dav", "--model", "swinl_aotl",
    "--dataset", "youtubevos2019_post", "--split", "valid", "--gpu_num", "1", "--flip",
    "--ms", "0.8", "1.0", "1.2", "--amp", "--gpu_id", "0",
]  # fmt: skip


@contextlib.contextmanager
def published_code(code: Path):
    """``code`` first on sys.path and as the working folder (as ``tools/eval.py`` runs)."""
    cwd = os.getcwd()
    sys.path.insert(0, str(code))
    os.chdir(code)
    try:
        yield
    finally:
        os.chdir(cwd)
        sys.path.remove(str(code))


@contextlib.contextmanager
def no_makedirs():
    real = os.makedirs
    os.makedirs = lambda *a, **k: None
    try:
        yield
    finally:
        os.makedirs = real


def engine_config(model: str, stage: str = "pre_ytb_dav"):
    with no_makedirs():  # init_dir creates result folders under /mnt
        return importlib.import_module("configs." + stage).EngineConfig("rvos_kit", model)


def build_network(model: str):
    """The network ``model`` as the code on sys.path builds it. aot-benchmark at 75e46fe has
    no Swin-L config: a ``swinl_*`` model it lacks is its ``swinb_*`` model with Swin-L's
    encoder dims and its own ``SwinTransformer`` at Swin-L's numbers (contract section 5.5;
    the published fork's ``swin_large`` uses the same numbers)."""
    from networks.models import build_vos_model

    if not model.startswith("swinl_") or Path(f"configs/models/{model}.py").exists():
        cfg = engine_config(model)
        return build_vos_model(cfg.MODEL_VOS, cfg).eval(), cfg
    from networks.encoders.swin.swin_transformer import SwinTransformer

    cfg = engine_config(model.replace("swinl_", "swinb_"))
    cfg.MODEL_ENCODER_DIM = [192, 384, 768, 768]
    net = build_vos_model(cfg.MODEL_VOS, cfg)
    net.encoder = SwinTransformer(
        embed_dim=192, depths=[2, 2, 18, 2], num_heads=[6, 12, 24, 48], window_size=12,
        drop_path_rate=0.3, out_indices=(0, 1, 2), ape=False, patch_norm=True,
        frozen_stages=cfg.TRAIN_ENCODER_FREEZE_AT, use_checkpoint=False,
    )  # fmt: skip
    return net.eval(), cfg


def cmd_weights(a) -> None:
    torch.manual_seed(a.seed)
    with published_code(a.code):
        net, _ = build_network(a.model)
        with torch.no_grad():
            net.decoder.conv_out.bias[0] += a.bg_bias
    sd = net.state_dict()
    torch.save({"state_dict": sd}, a.out)
    print(json.dumps({"keys": len(sd), "mask_token": "LSTT.mask_token" in sd}))


def cpu_patches() -> None:
    """The run-time patches of the module docstring (CUDA calls on the CPU)."""
    torch.cuda.set_device = lambda *a, **k: None
    torch.nn.Module.cuda = lambda self, *a, **k: self
    torch.Tensor.cuda = lambda self, *a, **k: self

    class Event:
        def __init__(self, *a, **k):
            pass

        def record(self, *a, **k):
            pass

    torch.cuda.Event = Event
    real_load = torch.load

    def load(f, *args, **kwargs):
        kwargs["map_location"] = "cpu"
        kwargs.setdefault("weights_only", False)  # the published files hold plain tensors
        return real_load(f, *args, **kwargs)

    torch.load = load


def data_paths(data: Path) -> dict:
    """Place the generated data as the published paths expect it (``data``/published/):
    frames under ``<DIR_IMAGE>/test/JPEGImages``, the meta as both ``valid`` and ``test``
    ``meta_expressions.json`` (the published split ``test`` lists the test videos, whose
    expressions it reads from the valid file, which holds all of them), the model's tree
    as ``<DIR_YTB_POST_EVAL>/Annotations`` and ``key_frame.json`` beside it."""
    root = data / "published"
    images = root / "ytvos"
    post = root / "post"
    if not root.exists():
        meta = (data / "meta.json").read_text()
        for split in ("valid", "test"):
            d = images / "meta_expressions" / split
            d.mkdir(parents=True)
            (d / "meta_expressions.json").write_text(meta)
        (images / "test").mkdir(parents=True)
        (images / "test" / "JPEGImages").symlink_to((data / "JPEGImages").resolve())
        post.mkdir(parents=True)
        (post / "Annotations").symlink_to((data / "Annotations").resolve())
        (post / "key_frame.json").write_text((data / "key_frame.json").read_text())
    return {"images": images, "post": post, "result": root / "result"}


def cmd_published(a) -> None:
    torch.set_num_threads(1)
    paths = data_paths(a.data)
    cpu_patches()
    with published_code(a.code):
        import configs.default as default

        real_init_dir = default.DefaultEngineConfig.init_dir

        def init_dir(cfg):
            with no_makedirs():
                real_init_dir(cfg)
            cfg.DIR_ROOT = str(paths["result"])
            for key in ("DIR_RESULT", "DIR_CKPT", "DIR_EMA_CKPT", "DIR_LOG", "DIR_TB_LOG",
                        "DIR_IMG_LOG", "DIR_EVALUATION"):  # fmt: skip
                setattr(cfg, key, str(paths["result"] / key.lower()))
            cfg.DIR_IMAGE = str(paths["images"])
            cfg.DIR_YTB_POST_EVAL = str(paths["post"])
            cfg.PICKED_KEY_FRAMES_ID = str(paths["post"] / "key_frame.json")

        default.DefaultEngineConfig.init_dir = init_dir
        sys.argv = ["tools/eval.py", *PUBLISHED_FLAGS, "--ckpt_path", str(a.checkpoint)]
        with contextlib.redirect_stdout(sys.stderr):
            runpy.run_path("tools/eval.py", run_name="__main__")
    out = paths["post"] / "Annotations_AOT_class_index"
    out.rename(a.out)


def kit_backend(a, **extra):
    from rvos_kit.stages.propagate import make_backend

    return make_backend(
        a.backend, model=a.model, checkpoint=a.checkpoint, device="cpu", engine=a.engine, **extra
    )


def run_kit(a, backend) -> None:
    from rvos_kit.stages.propagate import propagate

    d = a.data
    propagate(
        d / "JPEGImages", d / "Annotations", d / "key_frame.json", d / "meta.json", a.out,
        backend, progress=False,
    )  # fmt: skip
    print(json.dumps({"engines": backend.engines_built}))


def cmd_kit(a) -> None:
    torch.set_num_threads(1)
    run_kit(a, kit_backend(a))


def cmd_bench_engine(a) -> None:
    """The kit's loop around aot-benchmark's own network and engine (module docstring)."""
    torch.set_num_threads(1)
    backend = kit_backend(a)
    with published_code(a.code):
        from networks.engines.aot_engine import AOTEngine
        from networks.engines.deaot_engine import DeAOTEngine

        net, cfg = build_network(a.model)
        sd = torch.load(a.checkpoint, map_location="cpu", weights_only=True)["state_dict"]
        net.load_state_dict(sd, strict=True)
        engine_cls = DeAOTEngine if cfg.MODEL_ENGINE == "deaotengine" else AOTEngine

        def new_engine():
            e = engine_cls(net, 0, cfg.TEST_LONG_TERM_MEM_GAP, cfg.TEST_SHORT_TERM_MEM_SKIP)
            e.eval()
            backend.engines_built += 1
            return e

        backend.prepare()  # the kit's configuration (views, gap), then the archive's parts
        backend.model = net
        backend._new_engine = new_engine
        run_kit(a, backend)


def main() -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("weights")
    w.add_argument("--code", type=Path, required=True)
    w.add_argument("--model", default="swinl_aotl")
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--bg-bias", type=float, default=0.0)
    w.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("published")
    p.add_argument("--code", type=Path, required=True)
    for q in (p, sub.add_parser("kit"), sub.add_parser("bench-engine")):
        q.add_argument("--data", type=Path, required=True)
        q.add_argument("--checkpoint", type=Path, required=True)
        q.add_argument("--out", type=Path, required=True)
        if q is not p:
            q.add_argument("--backend", default="aot")
            q.add_argument("--model", default="swinl_aotl")
            q.add_argument("--engine", default="published_aot_fork")
        if q.prog.endswith("bench-engine"):
            q.add_argument("--code", type=Path, required=True)
    a = ap.parse_args()
    for key, v in vars(a).items():  # the published code runs in its own folder
        if isinstance(v, Path):
            setattr(a, key, v.resolve())
    {"weights": cmd_weights, "published": cmd_published, "kit": cmd_kit,
     "bench-engine": cmd_bench_engine}[a.cmd](a)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
