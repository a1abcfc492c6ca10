"""A stand-in for ``pycocotools.ytvos`` (the XD7479 cocoapi fork, on no package registry):
the part of its ``YTVOS`` index that UNINEXT's inference path reads, written for the kit.

Used by :mod:`.uninext_child` only when the fork is not installed. What UNINEXT reads:
``uninext/data/datasets/ytvis.py`` L206-252 (``getCatIds``, ``loadCats``, ``vids``,
``loadVids``, ``vidToAnns``, ``anns``) and ``uninext/data/ytvis_eval.py`` L92-96
(``dataset``). The index is the COCO one with videos in place of images: ``vids`` by
``id`` from ``videos``, ``anns`` by ``id`` from ``annotations`` (the test json has none),
``vidToAnns`` by ``video_id``, ``cats`` by ``id``.
"""

from __future__ import annotations

import json
from collections import defaultdict


class YTVOS:
    def __init__(self, annotation_file=None):
        self.dataset, self.anns, self.cats, self.vids = {}, {}, {}, {}
        self.vidToAnns, self.catToVids = defaultdict(list), defaultdict(list)
        if annotation_file is not None:
            with open(annotation_file) as f:
                self.dataset = json.load(f)
            self.createIndex()

    def createIndex(self):  # noqa: N802 (the fork's name)
        for ann in self.dataset.get("annotations", []):
            self.anns[ann["id"]] = ann
            self.vidToAnns[ann["video_id"]].append(ann)
            self.catToVids[ann["category_id"]].append(ann["video_id"])
        for vid in self.dataset.get("videos", []):
            self.vids[vid["id"]] = vid
        for cat in self.dataset.get("categories", []):
            self.cats[cat["id"]] = cat

    def getCatIds(self):  # noqa: N802
        return [c["id"] for c in self.dataset.get("categories", [])]

    def loadCats(self, ids):  # noqa: N802
        return [self.cats[i] for i in ids]

    def loadVids(self, ids):  # noqa: N802
        return [self.vids[i] for i in ids]
