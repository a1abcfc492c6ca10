"""ReferFormer fine-tuned, ``referformer_ft`` (``ReferFormer/``):
``inference_ytvos_for_ensemble.sub_processor`` (the pth run) and, with ``png_run``,
``inference_ytvos.sub_processor`` (the PNG run); both ``Resize(360)``. Arguments are those
of ``ReferFormer/scripts/ensemble_test.sh`` / ``infer_ytvos.sh`` parsed by the upstream
``opts.get_args_parser()`` (seed 57); the text encoder path hard-coded in
``models/referformer.py`` is redirected to ``--pretrained/roberta-base``; the PNG
script's hard-coded output folder lives in ``main()``, which is not called.
"""

from __future__ import annotations

import sys

from . import swin
from .core import MODELS, Request

FOLDER = MODELS["referformer_ft"].upstream[0]  # the catalogue row (rvos_kit.catalog)
PUBLISHED_ROBERTA = "/mnt/data_16TB/lzy23/pretrained/pretrained_roberta"  # referformer.py L127
MODEL_MODULE = "models.referformer"
PTH_FLAGS = ["--with_box_refine", "--binary", "--freeze_text_encoder",
             "--backbone", "video_swin_b_p4w7", "--use_checkpoint"]  # fmt: skip
PNG_FLAGS = ["--with_box_refine", "--binary", "--freeze_text_encoder",
             "--backbone", "video_swin_b_p4w7", "--ngpu", "1"]  # fmt: skip


SCRIPT = "ReferFormer inference script"
PTH_WORKER, PNG_WORKER = "inference_ytvos_for_ensemble", "inference_ytvos"
PTH_PARSER_HAS_VERSION = False  # its __main__ adds no --version

check = swin.check_roberta


def run(req: Request, videos, out) -> None:
    swin.run_detr_style(req, videos, out, sys.modules[__name__])
