"""meta_expressions.json: which videos, expressions (in order) and frames a tree must hold.

Ref-YouTube-VOS meta (contract section 1)::

    {"videos": {VID: {"expressions": {"0": {"exp": TEXT}, ...}, "frames": ["00000", ...]}}}

Expression order is the JSON key order. Every stage validates mask trees against a
:class:`Meta`, never against sorted directory position (contract section 9.4).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import KitError
from .jsonfiles import read_json


@dataclass(frozen=True)
class Video:
    name: str
    exp_ids: tuple[str, ...]  # meta (JSON key) order
    frames: tuple[str, ...]  # frame names without extension, meta order


@dataclass(frozen=True)
class Meta:
    videos: tuple[Video, ...]

    def __iter__(self):
        return iter(self.videos)

    def __len__(self) -> int:
        return len(self.videos)

    def video(self, name: str) -> Video:
        for v in self.videos:
            if v.name == name:
                return v
        raise KeyError(name)

    @property
    def n_masks(self) -> int:
        """Number of (expression, frame) masks a full tree holds."""
        return sum(len(v.exp_ids) * len(v.frames) for v in self.videos)


def _check_name(kind: str, name: str, where: str) -> None:
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise KitError(f"{where}: invalid {kind} name {name!r}")


def parse_meta(obj: dict, where: str = "meta") -> Meta:
    """Build a :class:`Meta` from the parsed JSON object, checking its shape."""
    if not isinstance(obj, dict) or not isinstance(obj.get("videos"), dict):
        raise KitError(f'{where}: not a meta_expressions file (no top-level "videos" object)')
    videos = []
    for vid, entry in obj["videos"].items():
        _check_name("video", vid, where)
        if not isinstance(entry, dict):
            raise KitError(f"{where}: video {vid!r} is not an object")
        exps = entry.get("expressions")
        frames = entry.get("frames")
        if not isinstance(exps, dict) or not isinstance(frames, list):
            raise KitError(f'{where}: video {vid!r} lacks an "expressions" object or "frames" list')
        for e in exps:
            _check_name("expression", e, where)
        for f in frames:
            if not isinstance(f, str):
                raise KitError(f"{where}: video {vid!r} has a non-string frame name {f!r}")
            _check_name("frame", f, where)
        if len(set(frames)) != len(frames):
            raise KitError(f"{where}: video {vid!r} lists a frame twice")
        videos.append(Video(vid, tuple(exps), tuple(frames)))
    if not any(v.exp_ids and v.frames for v in videos):
        raise KitError(
            f"{where}: lists no video with expressions and frames; every output would be "
            "empty: pass the meta_expressions.json of a split"
        )
    return Meta(tuple(videos))


def load_meta(path: str | os.PathLike) -> Meta:
    return parse_meta(read_json(path, "meta_expressions file"), str(path))


def _exp_sort_key(name: str):
    return (0, int(name), name) if name.isdigit() else (1, 0, name)


def agreed_meta(roots) -> Meta:
    """Meta read off the first tree, after checking that every tree holds the same videos,
    expressions and frames (so that nothing is dropped silently without --meta)."""
    metas = [infer_meta(r) for r in roots]
    first = {v.name: v for v in metas[0]}
    for i in range(1, len(roots)):
        root, other = roots[i], {v.name: v for v in metas[i]}
        for name in sorted(set(first) ^ set(other)):
            where, lacks = (roots[0], root) if name in other else (root, roots[0])
            raise KitError(
                f"{Path(lacks) / name}: video in {where} but not in {lacks}; the trees "
                "disagree: pass --meta to say which videos to use"
            )
        for name, v in first.items():
            if other[name] != v:
                raise KitError(
                    f"{Path(root) / name}: expressions or frames differ from "
                    f"{Path(roots[0]) / name}; pass --meta"
                )
    return metas[0]


def infer_meta(root: str | os.PathLike) -> Meta:
    """Meta read off a mask tree: videos sorted, expressions in numeric order, and each
    video's frames = the sorted PNG names of its first expression."""
    root = Path(root)
    if not root.is_dir():
        raise KitError(
            f"{root}: mask tree not found (expected <root>/<video>/<exp_id>/<frame>.png)"
        )
    videos = []
    for vid in sorted(p.name for p in root.iterdir() if p.is_dir()):
        exps = sorted((p.name for p in (root / vid).iterdir() if p.is_dir()), key=_exp_sort_key)
        if not exps:
            raise KitError(f"{root / vid}: video folder has no expression folders")
        frames = sorted(
            p.name[:-4] for p in (root / vid / exps[0]).iterdir() if p.name.endswith(".png")
        )
        videos.append(Video(vid, tuple(exps), tuple(frames)))
    if not videos:
        raise KitError(f"{root}: mask tree holds no video folders")
    return Meta(tuple(videos))


# ---------------------------------------------------------------------- valid-meta
def valid_only(valid: dict, test: dict) -> dict:
    """The valid meta minus the test videos (the valid file lists both: 202 + 305)."""
    for obj, what in ((valid, "valid"), (test, "test")):
        parse_meta(obj, f"{what} meta")  # shape check
    return {"videos": {v: e for v, e in valid["videos"].items() if v not in test["videos"]}}
