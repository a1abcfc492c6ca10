"""Synthetic masks and frames for the demo sample, the benchmarks and the tests.

Deterministic from a numpy ``Generator``: the one generator behind ``rvos-kit
make-sample`` (the demo dataset), the benchmarks in ``bench/`` and the tests.

Shapes
    :func:`ellipse_d2` (squared normalised distance to an ellipse's centre; < 1 inside),
    :func:`ellipse` (the closed ellipse as a boolean mask), :func:`random_ellipse` (one
    drawn from ranges), :func:`random_mask` (a few rectangles plus pixel noise),
    :func:`wavy_blobs` (per frame, several views of one object with a wavy boundary,
    shaped like real model output).
Frames
    :func:`colour_texture` (the sample's colour texture), :func:`grey_texture` (a blurred
    noise texture), :func:`moving_object_clip` (BGR frames of a textured ellipse moving
    over a textured background, and its true masks: what the propagation backends track).
Simulated model output
    :func:`corrupt` (a model's view of a mask: boundary dilated or eroded, a false blob,
    or a miss), :func:`probability` (a float32 probability map whose ``p > 0.5`` is the mask).
Datasets on disk
    :func:`write_propagation_input` (clips as a propagation stage reads them: JPEG frames,
    key-frame masks in a mask tree, ``meta.json``, ``key_frame.json``; the benchmarks and
    the propagation tests write theirs with it).

Every function draws from the ``rng`` it is given, in a fixed order, so a caller's random
stream (and with it the demo's bytes pinned in ``demo/dvc.lock`` and the tests' data)
depends only on its seed and its sequence of calls. Changing the numpy calls of a function
here changes the demo outputs: ``tests/test_synthetic.py`` pins them.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

# ---------------------------------------------------------------------------------- shapes


def ellipse_d2(h: int, w: int, cy, cx, ry, rx) -> np.ndarray:
    """float64 ``(h, w)``: ``((y - cy) / ry)^2 + ((x - cx) / rx)^2`` at every pixel centre
    ``(y, x)`` (integer coordinates); < 1 inside the ellipse, 1 on its boundary."""
    yy, xx = np.ogrid[:h, :w]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2


def ellipse(h: int, w: int, cy, cx, ry, rx) -> np.ndarray:
    """Boolean ``(h, w)`` mask of the closed ellipse centred at ``(cy, cx)`` with radii
    ``(ry, rx)`` in pixels; it may reach past the frame (then it is clipped)."""
    return ellipse_d2(h, w, cy, cx, ry, rx) <= 1.0


def random_ellipse(rng, h: int, w: int, cy=None, cx=None, ry=None, rx=None, closed=True):
    """An ellipse whose centre and radii are drawn, in the order cy, cx, ry, rx, each by
    ``rng.uniform(low, high)`` from its ``(low, high)`` range in pixels. Defaults: the
    centre anywhere in the frame, radii from 1 px to the frame's height / width.
    ``closed=False``: only the pixels strictly inside (``d2 < 1``)."""
    cy = rng.uniform(*(cy or (0, h)))
    cx = rng.uniform(*(cx or (0, w)))
    ry = rng.uniform(*(ry or (1, h)))
    rx = rng.uniform(*(rx or (1, w)))
    d2 = ellipse_d2(h, w, cy, cx, ry, rx)
    return d2 <= 1.0 if closed else d2 < 1.0


def random_mask(rng, h: int, w: int, density=None) -> np.ndarray:
    """A blobby random boolean mask: 0-3 rectangles of random corner and size (clipped by
    the frame), then, with ``density``, that share of pixels flipped at random."""
    m = np.zeros((h, w), bool)
    for _ in range(rng.integers(0, 4)):
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        m[y0 : y0 + rng.integers(1, h), x0 : x0 + rng.integers(1, w)] = True
    if density is not None:
        m ^= rng.random((h, w)) < density
    return m


# Reference frame size of wavy_blobs' radius and speed (Ref-YouTube-VOS: 720p).
WAVY_REF_H, WAVY_REF_W = 720, 1280


def wavy_blobs(rng, n_frames, n_masks, h=WAVY_REF_H, w=WAVY_REF_W, empty=0.1, harmonics=12):
    """Yield, for each of ``n_frames`` frames, ``n_masks`` boolean ``(h, w)`` masks of one
    object (e.g. one per source x expression that refers to it): a blob whose radius is a
    sum of ``harmonics`` drifting sinusoids of the angle, drifting over the frames; each
    mask gets its own small boundary perturbation (masks agree at IoU ~0.92). ``empty``:
    the share of frames where every mask is empty (the object is not visible). Saved by
    PIL with default settings these masks give the filter mix of real model output."""
    k = np.arange(1, harmonics + 1)
    scale = min(h / WAVY_REF_H, w / WAVY_REF_W)
    cy, cx = rng.uniform(0.32, 0.68) * h, rng.uniform(0.26, 0.74) * w
    radius = rng.uniform(110, 250) * scale
    vy, vx = rng.uniform(-4, 4, 2) * scale
    amp = rng.uniform(0.3, 1.0, harmonics) * 0.4 / k
    phase = rng.uniform(0, 2 * np.pi, harmonics)
    drift = rng.uniform(-0.2, 0.2, harmonics)
    pert = rng.normal(0, 0.055 / np.sqrt(harmonics), (n_masks, harmonics))
    pert = pert * np.exp(1j * rng.uniform(0, 2 * np.pi, pert.shape))
    size = rng.normal(1, 0.015, n_masks)
    for t in range(n_frames):
        if rng.random() < empty:
            yield [np.zeros((h, w), bool)] * n_masks
            continue
        # only the box the blob can reach is computed
        y0, x0 = cy + vy * t, cx + vx * t
        reach = radius * (1.1 + amp.sum() + 0.1)
        ya, yb = int(max(0, y0 - reach)), int(min(h, y0 + reach + 1))
        xa, xb = int(max(0, x0 - reach)), int(min(w, x0 + reach + 1))
        dy = (np.arange(ya, yb, dtype=np.float32) - y0)[:, None]
        dx = (np.arange(xa, xb, dtype=np.float32) - x0)[None, :]
        dist = np.sqrt(dy * dy + dx * dx)
        z = ((dx + 1j * dy) / np.maximum(dist, 1e-6)).astype(np.complex64)  # e^(i angle)
        powers = [z]
        for _ in range(harmonics - 1):
            powers.append(powers[-1] * z)
        coef = amp * np.exp(1j * (phase + drift * t))
        masks = []
        for m in range(n_masks):
            c = np.conj(coef + pert[m])
            r = np.ones_like(dist)
            for j in range(harmonics):
                r += (powers[j] * c[j]).real
            mask = np.zeros((h, w), bool)
            mask[ya:yb, xa:xb] = dist < radius * size[m] * r
            masks.append(mask)
        yield masks


# ---------------------------------------------------------------------------------- frames


def colour_texture(rng, h: int, w: int, base, amp=60.0) -> np.ndarray:
    """Smooth random colour texture around the RGB colour ``base`` (low-frequency noise
    of amplitude ``amp`` + fine grain), uint8 ``(h, w, 3)``."""
    coarse = rng.normal(0, 1, (h // 8 + 2, w // 8 + 2, 3)).astype(np.float32)
    coarse = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    fine = rng.normal(0, 0.5, (h, w, 3)).astype(np.float32)
    img = np.asarray(base, np.float32) + amp * coarse + 25 * fine
    return np.clip(img, 0, 255).astype(np.uint8)


def grey_texture(rng, h: int, w: int, sigma=1.5) -> np.ndarray:
    """Uniform noise blurred with a Gaussian of ``sigma`` px, standardised to mean 0.5,
    standard deviation 0.2, clipped to [0, 1]: float ``(h, w)``."""
    n = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), sigma)
    n = (n - n.mean()) / n.std()
    return np.clip(0.5 + 0.2 * n, 0, 1)


def moving_object_clip(rng, h, w, n_frames, step=(3, 2), centre=None, radii=None, sigma=1.5):
    """``(frames, masks)``: ``n_frames`` BGR uint8 frames of an elliptic textured object
    moving ``step = (dx, dy)`` integer pixels per frame over a static textured background
    (textures: :func:`grey_texture`, the object's drawn second and moving with it), and
    the object's true boolean masks. ``centre = (cy, cx)`` at frame 0 and ``radii = (ry,
    rx)`` in pixels; defaults ``(0.4 h, 0.35 w)`` and ``(0.22 h, 0.18 w)``. The object
    may move at most half the frame in all."""
    bg = grey_texture(rng, h, w, sigma) * 200 + 20
    obj_tex = grey_texture(rng, 2 * h, 2 * w, sigma) * 255
    cy0, cx0 = centre if centre is not None else (h * 0.4, w * 0.35)
    ry, rx = radii if radii is not None else (h * 0.22, w * 0.18)
    frames, masks = [], []
    for t in range(n_frames):
        dx, dy = step[0] * t, step[1] * t
        m = ellipse(h, w, cy0 + dy, cx0 + dx, ry, rx)
        tex = obj_tex[h // 2 - dy : h // 2 - dy + h, w // 2 - dx : w // 2 - dx + w]
        f = np.where(m, tex, bg)
        frames.append(np.dstack([f, f * 0.8 + 30, f * 0.6 + 50]).clip(0, 255).astype(np.uint8))
        masks.append(m)
    return frames, masks


# ------------------------------------------------------------------ simulated model output


def corrupt(rng, mask: np.ndarray, jitter: int, p_blob: float, p_miss: float) -> np.ndarray:
    """A model's view of ``mask``: with probability ``p_miss`` empty; otherwise the mask
    dilated or eroded by a radius drawn from ``[-jitter, jitter]`` px, and with
    probability ``p_blob`` a false elliptic blob (radii 3 px to 1/6 of the frame) added."""
    if rng.random() < p_miss:
        return np.zeros_like(mask)
    out = mask.astype(np.uint8)
    r = int(rng.integers(-jitter, jitter + 1))
    if r:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * abs(r) + 1, 2 * abs(r) + 1))
        out = cv2.dilate(out, k) if r > 0 else cv2.erode(out, k)
    if rng.random() < p_blob:
        h, w = mask.shape
        out |= random_ellipse(rng, h, w, ry=(3, h / 6), rx=(3, w / 6)).astype(np.uint8)
    return out.astype(bool)


def probability(mask: np.ndarray) -> np.ndarray:
    """float32 p = sigmoid(logit), logit = 0.8 x signed distance to the boundary clipped to
    [-14, 12] like a real model's (background ~ -14: p ~ 8e-7, tiny but not zero), so
    p > 0.5 exactly inside the mask."""
    m = mask.astype(np.uint8)
    inside = cv2.distanceTransform(m, cv2.DIST_L2, 5)
    outside = cv2.distanceTransform(1 - m, cv2.DIST_L2, 5)
    logit = np.clip(0.8 * np.where(mask, inside, -outside), -14, 12).astype(np.float32)
    return (np.float32(1) / (np.float32(1) + np.exp(-logit))).astype(np.float32)


# ------------------------------------------------------------------------ datasets on disk


def write_propagation_input(root: Path, clips: dict, noise_seed: int | None = None) -> None:
    """Write ``root/{JPEGImages,Annotations,meta.json,key_frame.json}`` for the
    propagation stage. ``clips``: ``{video: (frames, masks, exps)}`` with ``frames`` and
    ``masks`` as :func:`moving_object_clip` returns them (named ``00000``, ``00005``, ...)
    and ``exps``: ``{exp_id: (key index, kind)}``. At its key frame an expression holds
    the true mask (kind ``"true"``), an empty mask (``"empty"``) or the true mask stored
    with value 1, not 255 (``"value"``). Its other frames hold empty masks, or with
    ``noise_seed`` random noise (30 % foreground) drawn in video, expression, frame order
    from ``default_rng(noise_seed)``: what a model's tree holds besides its key frame."""
    rng = np.random.default_rng(noise_seed) if noise_seed is not None else None
    meta, keys = {"videos": {}}, {}
    for video, (frames, masks, exps) in clips.items():
        names = [f"{5 * t:05d}" for t in range(len(frames))]
        meta["videos"][video] = {
            "expressions": {e: {"exp": f"object {e}"} for e in exps},
            "frames": names,
        }
        d = root / "JPEGImages" / video
        d.mkdir(parents=True, exist_ok=True)
        for name, img in zip(names, frames, strict=True):
            cv2.imwrite(str(d / f"{name}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        keys[video] = {}
        for e, (k, kind) in exps.items():
            keys[video][e] = {"index_info": {"class_index": k}}
            (root / "Annotations" / video / e).mkdir(parents=True, exist_ok=True)
            for t, name in enumerate(names):
                if t == k:
                    m = masks[t] if kind != "empty" else np.zeros_like(masks[t])
                    value = 1 if kind == "value" else 255
                elif rng is not None:
                    m, value = rng.random(masks[t].shape) < 0.3, 255
                else:
                    m, value = np.zeros_like(masks[t]), 255
                png = root / "Annotations" / video / e / f"{name}.png"
                Image.fromarray(m.astype(np.uint8) * value, "L").save(png)
    (root / "meta.json").write_text(json.dumps(meta))
    (root / "key_frame.json").write_text(json.dumps(keys))
