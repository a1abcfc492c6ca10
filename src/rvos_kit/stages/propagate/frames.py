"""JPEG frames of one video, ``<images_root>/<video>/<frame>.jpg``, decoded once and shared
by every expression of the video."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from ...errors import KitError
from ...trees.meta import Meta, Video


def frame_paths(images_root: str | os.PathLike, video: Video) -> list[Path]:
    d = Path(images_root) / video.name
    return [d / f"{f}.jpg" for f in video.frames]


def check_images(images_root: str | os.PathLike, meta: Meta) -> None:
    """Every frame meta lists must exist as a JPEG, checked before any work starts."""
    root = Path(images_root)
    if not root.is_dir():
        raise KitError(f"{root}: JPEG root not found (expected <root>/<video>/<frame>.jpg)")
    for v in meta:
        missing = [p for p in frame_paths(root, v) if not p.is_file()]
        if missing:
            raise KitError(
                f"{missing[0]}: frame missing ({len(missing)} of the {len(v.frames)} frames "
                f"meta lists for video {v.name!r} are absent); pass the right --images"
            )


class VideoFrames:
    """Decoded frames of one video (BGR ``uint8``, as ``cv2.imread`` returns them).

    Frames are decoded on first use and kept for the video's lifetime; ``preload`` decodes
    them all with a few threads (OpenCV releases the GIL). ``cache`` is a scratch dict that
    backends use for per-video results shared by expressions (e.g. optical flow)."""

    def __init__(self, images_root: str | os.PathLike, video: Video):
        self.video = video
        self.paths = frame_paths(images_root, video)
        self._frames: dict[int, np.ndarray] = {}
        self.cache: dict = {}

    def __len__(self) -> int:
        return len(self.paths)

    def _decode(self, t: int) -> np.ndarray:
        # cv2.imread, as the published data loader reads frames (same decoder, same EXIF
        # handling). It returns None for a missing or undecodable file.
        path = self.paths[t]
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            what = "cannot decode this image" if path.is_file() else "frame not found"
            raise KitError(f"{path}: {what}; re-extract the frames of video {self.video.name!r}")
        return img

    def preload(self, workers: int = 1) -> None:
        todo = [t for t in range(len(self)) if t not in self._frames]
        if workers <= 1 or len(todo) <= 1:
            for t in todo:
                self._frames[t] = self._decode(t)
            return
        with ThreadPoolExecutor(min(workers, len(todo))) as pool:
            for t, img in zip(todo, pool.map(self._decode, todo), strict=True):
                self._frames[t] = img

    def bgr(self, t: int) -> np.ndarray:
        img = self._frames.get(t)
        if img is None:
            img = self._frames[t] = self._decode(t)
        return img

    def size(self, t: int) -> tuple[int, int]:
        """(height, width) of frame ``t``."""
        return self.bgr(t).shape[:2]

    def check_size(self, t: int, shape: tuple[int, int], what) -> None:
        h, w = self.size(t)
        if (h, w) != tuple(shape):
            raise KitError(
                f"{what}: mask is {shape[1]}x{shape[0]} but frame {self.paths[t]} is {w}x{h}; "
                "masks and frames must have the same size"
            )
