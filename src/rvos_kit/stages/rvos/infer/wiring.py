"""What the pipeline (dag, preflight) needs to know about each model's inference, without
importing any driver: the pretrained parts it reads (under ``--pretrained``), the image it
runs in, and where the published run propagated from a tree other than its dump's
(quirk 9.6), that tree's name."""

from __future__ import annotations

from .core import PNG_RUN_TREE

SWIN_KINETICS = "swin_base_patch244_window877_kinetics400_22k.pth"

# model -> what it reads under --pretrained (inference.md §1.3, §3-§6)
PRETRAINED = {
    "soc": ("roberta-base", SWIN_KINETICS),
    "mutr": ("roberta-base",),
    "referformer_ft": ("roberta-base",),
    "vit_huge": ("bert-base-uncased",),
    "convnext": ("bert-base-uncased",),
}

# model -> folder in its model dir holding the PNG run's masks (challenge2023 mode). Only
# MUTR's PNG run differs from its dump (input short side 432 vs 360).
PNG_RUN_TREES = {"mutr": PNG_RUN_TREE}

# model -> the key of runner.images its stage runs in
IMAGES = {"soc": "rvos", "mutr": "rvos", "referformer_ft": "rvos", "vit_huge": "uninext",
          "convnext": "uninext"}  # fmt: skip
