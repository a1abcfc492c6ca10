"""``--backend flow``: the key-frame mask carried through the video by dense optical flow.

A CPU stand-in for AOT/DeAOT (``make demo``, machines without a GPU); it is not the
published method. For every frame ``t`` after the key frame ``k`` the mask of ``t - 1`` is
warped onto ``t`` (and, backwards, the mask of ``t + 1`` onto ``t`` for ``t < k``):

1. OpenCV DIS optical flow (``cv2.DISOpticalFlow``, preset ``medium`` by default) from the
   grayscale target frame to the grayscale source frame, so that
   ``target(x) ~ source(x + flow(x))``: every target pixel knows where it came from
   (backward warping, no holes). The flow is computed at a working resolution whose long
   side is at most ``max_side`` pixels (640 by default; smaller frames are used as they are)
   and resized to the frame size.
2. The source mask (0/1, float32) is sampled at ``x + flow(x)`` with bilinear interpolation
   (``cv2.remap``, outside = background), and re-binarised: ``>= 0.5`` is the object.
   Re-binarising at every step keeps the mask from blurring as it travels.

Flows do not depend on the mask, so they are cached per video and shared by every
expression (a video's expressions usually have different key frames, but the same pairs
of neighbouring frames). Everything runs single-threaded OpenCV code on fixed inputs, so
the output bytes are the same on every run.
"""

from __future__ import annotations

import cv2
import numpy as np

from ...errors import KitError

PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


def _dis(preset: str):
    """DIS at full working resolution (finest scale 0; the presets stop at 1/2 or 1/4,
    which blurs the flow across object boundaries), 8x8 patches every 4 pixels, and the
    preset's other settings (gradient-descent and variational-refinement iterations)."""
    dis = cv2.DISOpticalFlow_create(PRESETS[preset])
    dis.setFinestScale(0)
    dis.setPatchSize(8)
    dis.setPatchStride(4)
    dis.setVariationalRefinementAlpha(20.0)
    return dis


class FlowBackend:
    """Optical-flow mask propagation (see the module docstring)."""

    name = "flow"

    def __init__(self, preset: str = "medium", max_side: int = 640, threshold: float = 0.5):
        if preset not in PRESETS:
            raise KitError(f"unknown DIS preset {preset!r}; use one of {tuple(PRESETS)}")
        if max_side < 16:
            raise KitError(f"flow max side {max_side} is too small (16 at least)")
        if not 0.0 < threshold < 1.0:
            raise KitError(f"flow threshold {threshold} must be between 0 and 1")
        self.preset = preset
        self.max_side = int(max_side)
        self.threshold = float(threshold)
        self._dis = None

    def settings(self) -> dict:
        return {
            "backend": self.name,
            "preset": self.preset,
            "max_side": self.max_side,
            "threshold": self.threshold,
            "opencv": cv2.__version__,
        }

    def describe(self) -> str:
        return f"flow (OpenCV DIS {self.preset}, flow long side <= {self.max_side})"

    def prepare(self) -> None:
        """Nothing to load (kept for symmetry with the network backends)."""

    def __getstate__(self):  # the OpenCV object does not pickle; workers make their own
        state = dict(self.__dict__)
        state["_dis"] = None
        return state

    # ------------------------------------------------------------------------- internals
    def _gray(self, frames, t: int) -> np.ndarray:
        key = ("flow-gray", self.max_side, t)
        g = frames.cache.get(key)
        if g is None:
            g = cv2.cvtColor(frames.bgr(t), cv2.COLOR_BGR2GRAY)
            h, w = g.shape
            s = self.max_side / max(h, w)
            if s < 1.0:
                size = (max(1, round(w * s)), max(1, round(h * s)))
                g = cv2.resize(g, size, interpolation=cv2.INTER_AREA)
            frames.cache[key] = g
        return g

    def _flow(self, frames, a: int, b: int) -> np.ndarray:
        """Flow from frame ``a`` to frame ``b`` at frame size: ``a(x) ~ b(x + flow(x))``.

        Cached per video at the working resolution (small), resized on each use."""
        key = ("flow", self.preset, self.max_side, a, b)
        flow = frames.cache.get(key)
        if flow is None:
            if self._dis is None:
                self._dis = _dis(self.preset)
            flow = self._dis.calc(self._gray(frames, a), self._gray(frames, b), None)
            frames.cache[key] = flow
        h, w = frames.size(a)
        fh, fw = flow.shape[:2]
        if (fh, fw) != (h, w):
            flow = cv2.resize(flow, (w, h), interpolation=cv2.INTER_LINEAR)
            flow[..., 0] *= w / fw
            flow[..., 1] *= h / fh
        return flow

    def _grid(self, frames, h: int, w: int):
        grid = frames.cache.get(("grid", h, w))
        if grid is None:
            grid = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
            frames.cache[("grid", h, w)] = grid
        return grid

    def step(self, frames, mask: np.ndarray, target: int, source: int) -> np.ndarray:
        """The mask of frame ``source`` carried onto frame ``target`` (bool)."""
        back = self._flow(frames, target, source)  # target -> source
        h, w = back.shape[:2]
        gx, gy = self._grid(frames, h, w)
        map_x, map_y = gx + back[..., 0], gy + back[..., 1]
        warped = cv2.remap(
            mask.astype(np.float32),
            map_x,
            map_y,
            interpolation=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
        out = warped >= self.threshold
        if not out.any():
            return out
        # Occlusion check near the boundary: a target pixel whose backward flow is not
        # undone by the forward flow at the point it samples has no counterpart in the
        # source frame -- typically background uncovered behind the moving object, which
        # the backward warp would wrongly fill with the object (and the mask would smear).
        fwd = self._flow(frames, source, target)  # source -> target
        fwd_at = cv2.remap(fwd, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        err = ((back + fwd_at) ** 2).sum(-1)
        bad = err > 0.01 * ((back**2).sum(-1) + (fwd_at**2).sum(-1)) + 0.5
        # Only within a band along the mask's edge, as wide as the motion: the interior of
        # the object is never removed by a noisy flow.
        speed = np.sqrt((back[out] ** 2).sum(-1))
        band = float(np.ceil(np.percentile(speed, 99))) + 2.0
        inner = cv2.distanceTransform(out.view(np.uint8), cv2.DIST_L2, 3)
        out &= ~(bad & (inner <= band))
        return out

    # --------------------------------------------------------------------------- API
    def propagate(self, frames, k: int, ref: np.ndarray, emit) -> None:
        """Call ``emit(t, mask)`` for t = k+1..T-1, then t = k-1..0 (bool masks)."""
        mask = ref
        for t in range(k + 1, len(frames)):
            mask = self.step(frames, mask, t, t - 1)
            emit(t, mask)
        mask = ref
        for t in range(k - 1, -1, -1):
            mask = self.step(frames, mask, t, t + 1)
            emit(t, mask)
