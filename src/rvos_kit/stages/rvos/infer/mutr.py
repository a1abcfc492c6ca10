"""MUTR (``MUTR/``): ``infer_ytvos_ensemble.sub_processor`` (the pth run, ``Resize(360)``)
and, with ``png_run``, ``inference_ytvos.sub_processor`` (the PNG run, ``Resize(432)``:
the tree the published AOT run started from, quirk 9.6). Arguments are those of
``MUTR/infer_ytvos_ensemble.sh`` / ``inference_ytvos.sh`` parsed by the upstream
``opts.get_args_parser()``; ``args.masks = True`` as ``main()`` sets it; the misspelt
``args.ensembe_save_path`` the pth worker saves to is set (spec trap 2); the text
encoder path hard-coded in ``models/mutr.py`` is redirected to ``--pretrained/roberta-base``.
"""

from __future__ import annotations

import sys

from . import swin
from .core import MODELS, Request

FOLDER = MODELS["mutr"].upstream[0]  # the catalogue row (rvos_kit.catalog)
PUBLISHED_ROBERTA = "/opt/tiger/ljyaronld/pretrained/pretrained_roberta"  # models/mutr.py L127
MODEL_MODULE = "models.mutr"
# published command lines, less the paths the kit passes to the workers itself
PTH_FLAGS = ["--with_box_refine", "--binary", "--freeze_text_encoder",
             "--backbone", "video_swin_b_p4w7", "--version", "mutr.pth"]  # fmt: skip
PNG_FLAGS = ["--with_box_refine", "--binary", "--freeze_text_encoder",
             "--backbone", "video_swin_b_p4w7"]  # fmt: skip


SCRIPT = "MUTR inference script"
PTH_WORKER, PNG_WORKER = "infer_ytvos_ensemble", "inference_ytvos"
PTH_PARSER_HAS_VERSION = True  # its __main__ adds --version to the opts parser

check = swin.check_roberta


def run(req: Request, videos, out) -> None:
    swin.run_detr_style(req, videos, out, sys.modules[__name__])
