"""DAG kind ``keyframes_<model>``: each model's key frame per expression, from the
``scores.json`` beside its tree (every source but ``released``, which has none)."""

from __future__ import annotations

from .context import Builder, q


def add(b: Builder, m: str) -> None:
    if b.models[m].source == "released":
        return
    mdir = b.model_dir(m)
    kf = f"{b.out}/key_frames/{m}.json"
    b.stages[f"keyframes_{m}"] = {
        "cmd": q(
            [
                "rvos-kit",
                "keyframes",
                "--scores",
                f"{mdir}/scores.json",
                "--meta",
                b.meta,
                "--out",
                kf,
            ]
        ),  # fmt: skip
        "deps": [f"{mdir}/scores.json", b.meta],
        "outs": [kf],
    }
