"""The clips UNINEXT's published-code tests run on (``tests/test_infer_uninext_upstream.py``):
two videos of 48x48 random-pixel JPEGs (square: the smallest input after the mapper's
short-side-480 resize; fixed seed) and their ``meta.json``: two frames each, the first video
with two expressions and the second with one (an odd count, for quirk 9.1); with ``small``
one frame and one expression each (ViT-H costs ~16 s of CPU per frame). The random
weights and the tiny BERT are the kit's own (``rvos-kit smoke-weights``: the
``random_weights`` fixture of conftest.py)."""

from __future__ import annotations

from pathlib import Path

from rvos_kit.stages.rvos.infer.smoke_weights import write_videos


def write_video_data(out: Path, small: bool) -> None:
    videos = {}
    for i in range(2):
        frames = ["00000"] if small else ["00000", "00005"]
        exps = {"0": {"exp": f"a cat number {i} on the left"}}
        if i == 0 and not small:  # the second video has one: an odd count, for quirk 9.1
            exps["1"] = {"exp": "the big dog on the right"}
        videos[f"{i:02d}f0e1d2c3"] = {"expressions": exps, "frames": frames}
    write_videos(out, videos)
