"""The clips the published-code tests run on (``tests/test_infer_upstream.py``): tiny videos
of 48x48 random-pixel JPEGs (square: the smallest input after the workers' short-side
resize), fixed seed, and their ``meta.json``. The random weights and tiny text encoders
are the kit's own (``rvos-kit smoke-weights``: the ``random_weights`` fixture of
conftest.py, shared with ``rvos-kit smoke``'s test)."""

from __future__ import annotations

from pathlib import Path

from rvos_kit.stages.rvos.infer.smoke_weights import write_videos


def write_video_data(out: Path, n_videos: int = 2) -> None:
    """``n_videos`` videos of one expression and two frames each."""
    videos = {}
    for i in range(n_videos):
        exps = {"0": {"exp": f"a cat number {i} on the left"}}
        videos[f"{i:02d}a1b2c3d4"] = {"expressions": exps, "frames": ["00000", "00005"]}
    write_videos(out, videos)
