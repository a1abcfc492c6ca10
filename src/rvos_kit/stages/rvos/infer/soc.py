"""SOC (``soc_test/``): ``infer_refytb_ensemble.sub_processor`` (the pth run,
contract section 3) and, with ``png_run``, ``infer_refytb.sub_processor`` (the PNG run).

The config is built as the scripts' ``__main__`` builds it, from the published
``configs/refer_youtube_vos.yaml`` plus the command line of ``scripts/infer_refytb.sh`` /
``infer_ensemble_test.sh`` (``-rm test --backbone video-swin-b -bpp ... -ckpt ...``),
with two differences forced by today's libraries and this kit: the YAML is read with
``ruamel.yaml``'s safe loader object (``safe_load`` is gone in ruamel.yaml 0.18) and the
training-only key without ``value`` (``text_encoder_lr``) becomes ``None`` instead of
raising ``KeyError``; ``text_encoder_type`` is ``--pretrained/roberta-base`` instead of
``/mnt/data_16TB/lzy23/pretrained/pretrained_roberta``.
"""

from __future__ import annotations

import argparse

from ....errors import KitError
from . import swin
from .core import MODELS, Request

FOLDER = MODELS["soc"].upstream[0]  # the catalogue row (rvos_kit.catalog)
CONFIG = "configs/refer_youtube_vos.yaml"
# the Video-Swin-B Kinetics file scripts/infer_refytb.sh passes as -bpp (README links it)
SWIN_KINETICS = "swin_base_patch244_window877_kinetics400_22k.pth"


def check(req: Request) -> None:
    swin.check_roberta(req)
    if not (req.pretrained / SWIN_KINETICS).is_file():
        raise KitError(
            f"{req.pretrained / SWIN_KINETICS}: missing; SOC's model builder loads this "
            "Video-Swin Kinetics file before the checkpoint overwrites it (spec trap 9)"
        )


def config(req: Request, version: str) -> argparse.Namespace:
    from ruamel.yaml import YAML

    path = req.upstream / FOLDER / CONFIG
    with open(path) as f:
        raw = YAML(typ="safe", pure=True).load(f)
    cfg = {k: (v.get("value") if isinstance(v, dict) else v) for k, v in raw.items()}
    cli = {
        "config_path": str(path),
        "running_mode": "test",
        "version": version,
        "backbone": "video-swin-b",
        "backbone_pretrained_path": str(req.pretrained / SWIN_KINETICS),
        "num_gpus": 1,
        "checkpoint_path": str(req.checkpoint),
        "visualize": False,
        "device": req.device,
    }
    cfg = {**cfg, **cli}  # as __main__: every command-line value overrides the YAML
    cfg["text_encoder_type"] = str(swin.roberta_dir(req))
    return argparse.Namespace(**cfg)


def run(req: Request, videos, out) -> None:
    bpp = req.pretrained / SWIN_KINETICS
    with swin.upstream_code(req, FOLDER, trusted_files=(bpp,)):
        pth = swin.import_worker("infer_refytb_ensemble")
        args = config(req, "soc_ft.pth")
        swin.build_once(pth, args.seed, f"pth:{req.checkpoint}:{req.device}")
        swin.pth_run(req, videos, out, pth, args)
        if req.png_run:
            png = swin.import_worker("infer_refytb")
            args = config(req, "soc_test")
            swin.build_once(png, args.seed, f"png:{req.checkpoint}:{req.device}")
            swin.png_run(req, videos, out, png, args)
