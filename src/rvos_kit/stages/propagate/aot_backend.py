"""``--backend aot`` / ``--backend deaot``: the published propagation (contract section 5).

The networks and the per-view engines are those of the ``deaotpy`` package (module ``aot``);
this module only drives them the way the published run did. The places where that is
subtle, in the order a frame meets them:

Model and configuration
    The networks (Swin-L around deaotpy, the stage config, the sampler-free local
    attention) and the checkpoint loading: see :mod:`.aot_model`.

Views (test-time augmentation; aot-benchmark ``MultiRestrictSize`` + ``MultiToTensor``)
    * Views are ordered scale by scale, unflipped then flipped: 0.8, 0.8 flip, 1.0, 1.0
      flip, 1.2, 1.2 flip. View size: the long side is first limited to ``max_long_side``
      (1040 = 1.3 x 480 x 800 / 480; never enlarged), then multiplied by the scale and
      truncated to int, then rounded to a multiple of 16 (``align_corners=False``: Swin
      models) or to 16 n + 1 (``align_corners=True``: the others).
    * Frame: ``cv2.imread`` (BGR) -> float32 -> RGB -> ``cv2.resize(INTER_CUBIC)`` on the
      float image (skipped when the size is unchanged; values may overshoot 0..255) ->
      flipped -> ``/ 255``, minus ImageNet mean, divided by std, with the same numpy
      operations (float64 arithmetic rounded to float32).
    * Reference mask: 0/1 at the original size, flipped first, then resized to the view
      size with ``F.interpolate(mode="nearest")`` (flip and nearest resizing do not
      commute exactly; this is the published order).

Engines (``engine``: which engine code the run reproduces; contract section 5.6-5.7)
    Each view has its own AOT engine (deaotpy's ``AOTEngine`` / ``DeAOTEngine``, the
    networks and per-object engine of aot-benchmark at 75e46fe, which deaotpy equals). The
    published ``AOTInferEngine`` wraps one such engine per 10 objects; with one object it
    holds one and only forwards calls to it, so the kit drives the inner engine directly.

    ``published_aot_fork`` (default; what ``soc_test/AOT`` of the published repository did):
      * every ``add_reference_frame`` gives the engine ``obj_nums=[10]`` (the model's
        ``max_obj_num``; published ``networks/engines/aot_engine.py`` L585), so no id logit
        is masked: softmax, view averaging and argmax run over all 11 ids;
      * re-adding the reference for the backward pass sets ``last_mem_step`` to its
        ``frame_step`` argument, 0 (L248), while ``frame_step`` keeps counting from the
        forward pass: the first backward frame at least ``gap`` steps into the run enters
        the long-term memory at once.
    ``aot_benchmark`` (aot-benchmark 75e46fe / deaotpy as written): ``obj_nums=[1]`` (ids
    2..10 set to -1e10, -1e4 in float16, before the softmax) and ``last_mem_step`` set to
    the running ``frame_step`` at the re-add. Only the DeAOT stages may choose it: the
    published DeAOT engine is unknown (contract section 5.7).

Per frame (the published ``bidirectional_evaluator.py``)
    * Every view matches and propagates, decodes its logits, which are resized bilinearly
      to the ORIGINAL frame size (``align_corners`` of the model), flipped back, and
      soft-maxed; the probabilities are averaged over the views; label = argmax over the
      ids.
    * The output mask is ``label >= 1``: the published PNG is ``argmax * 255`` converted to
      ``L`` (L307-311), so every id >= 1 is foreground.
    * Memory: that SAME averaged label, all ids kept, flipped for flipped views and resized
      (nearest) to each view's size, updates every view's memory (L426-428, L461-469):
      short-term memory = this frame; long-term memory gains this frame when ``frame_step
      - last_mem_step >= gap``. deaotpy's bundled evaluator instead feeds each view its
      OWN label; that is not what the published run did.

Forward, then backward, without restarting the engines (contract section 5.2)
    * Forward (only when ``k < T - 1``; L288): the key frame ``k`` is added as reference
      (``frame_step=0``), then frames k+1 .. T-1 are propagated.
    * Backward (only when ``k > 0``): the reference (the same view tensors and masks) is
      added AGAIN to the same engines -- or for the first time when ``k = T - 1`` -- then
      frames k-1 .. 0 are propagated. Adding a reference to a running engine prepends the
      reference's long-term memory to the existing one (which still holds the forward
      reference and every frame the forward pass stored), resets the short-term memory to
      the reference and keeps the position embedding and sizes.

Shared encoder (``share_encoder``, default on; ``--no-share-encoder`` turns it off)
    Every expression of a video sees the same frames at the same views, so the encoder's
    output for (frame, view) -- ``encode_image``: the Swin-L features and the projected
    last level -- is the same tensor for all of them. With sharing on, the backend keeps,
    per video, the features it computed for one expression and hands them to the engines
    of the next (``add_reference_frame`` / ``match_propogate_one_frame`` take
    ``img_embs``, as the published ``AOTInferEngine`` already did between its inner
    engines). Engines and memories stay per expression; only the encoder call is shared,
    so the masks are byte-identical (tested). The features are held in tiers
    (:mod:`.features`): on the device while it has room, else (CUDA) in pinned host
    memory, copied back exactly at each use, else recomputed as without sharing; each
    tier's budget is measured (free device memory less a reserve, available RAM less a
    margin) and capped by ``encoder_cache_mb`` / ``host_cache_mb`` when given.
    ``encoder_stats()`` counts the encoder runs and the hits per tier. A frame whose views
    are all held already is not prepared again either (no resizing of its six views). The
    flip pair of a scale is NOT encoded as one batch of two: on the CPU that is bit-identical
    on one thread but not on two (``bench/flip_pair.py``), and unchecked on a GPU
    (docs/propagation.md).

Precision
    * On CUDA the whole propagation runs under ``torch.autocast`` float16, as
      ``tools/eval.py --amp`` did (``amp=False`` turns it off); on CPU always float32.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from ...errors import KitError
from .aot_model import (  # noqa: F401 (AOT_MODELS .. load_checkpoint: importable from here)
    AOT_MODELS,
    DEAOT_MODELS,
    DEFAULT_ENGINE,
    DEFAULT_MODEL,
    ENGINES,
    MODELS,
    PUBLISHED_FLIP,
    PUBLISHED_MAX_LONG_SIDE,
    PUBLISHED_SCALES,
    SWIN_L,
    CheckpointTrust,
    build_network,
    checkpoint_state_dict,
    load_checkpoint,
    model_config,
)
from .features import FeatureCache

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
MAX_STRIDE = 16
HEX = "0123456789abcdefABCDEF"


# ------------------------------------------------------------------------------- views
def view_size(h: int, w: int, scale: float, max_long_side, align_corners: bool):
    """(height, width) of one TTA view of an ``h`` x ``w`` frame (``MultiRestrictSize``)."""
    new_h, new_w = float(h), float(w)
    if max_long_side is not None:
        long_edge = max(new_h, new_w)
        if long_edge > max_long_side:
            sc = float(max_long_side) / long_edge
            new_h, new_w = sc * new_h, sc * new_w
    new_h, new_w = int(new_h * scale), int(new_w * scale)
    if align_corners:
        if (new_h - 1) % MAX_STRIDE != 0:
            new_h = int(np.around((new_h - 1) / MAX_STRIDE) * MAX_STRIDE + 1)
        if (new_w - 1) % MAX_STRIDE != 0:
            new_w = int(np.around((new_w - 1) / MAX_STRIDE) * MAX_STRIDE + 1)
    else:
        if new_h % MAX_STRIDE != 0:
            new_h = int(np.around(new_h / MAX_STRIDE) * MAX_STRIDE)
        if new_w % MAX_STRIDE != 0:
            new_w = int(np.around(new_w / MAX_STRIDE) * MAX_STRIDE)
    if new_h < 1 or new_w < 1:
        raise KitError(
            f"a {w}x{h} frame at scale {scale} (long side <= {max_long_side}) gives an empty "
            "view; use larger scales or a larger --max-long-side"
        )
    return new_h, new_w


def view_image(bgr: np.ndarray, size, flip: bool) -> np.ndarray:
    """Normalised CHW float32 array of one view, computed as the published loader does."""
    img = np.array(bgr, dtype=np.float32)[:, :, [2, 1, 0]]
    h, w = img.shape[:2]
    new_h, new_w = size
    if (new_h, new_w) != (h, w):
        img = cv2.resize(img, dsize=(new_w, new_h), interpolation=cv2.INTER_CUBIC)
    if flip:
        img = img[:, ::-1].copy()
    img = img / 255.0
    img -= MEAN
    img /= STD
    return np.ascontiguousarray(img.transpose((2, 0, 1)))


def _sha256_pin(value: str | None, checkpoint) -> str | None:
    if value is None:
        return None
    if checkpoint is None:
        raise KitError("--checkpoint-sha256 applies to a --checkpoint file")
    if not isinstance(value, str) or len(value) != 64 or set(value) - set(HEX):
        raise KitError(f"--checkpoint-sha256 {value!r}: not 64 hex digits")
    return value.lower()


# ------------------------------------------------------------------------------ backend
class AOTBackend:
    """AOT / DeAOT propagation with test-time augmentation (module docstring)."""

    def __init__(
        self,
        backend: str = "aot",
        model: str | None = None,
        checkpoint: str | os.PathLike | None = None,
        random_seed: int | None = None,
        device: str | None = None,
        checkpoint_sha256: str | None = None,
        scales=PUBLISHED_SCALES,
        flip: bool = PUBLISHED_FLIP,
        max_long_side: float | None = PUBLISHED_MAX_LONG_SIDE,
        long_term_gap: int | None = None,
        amp: bool = True,
        trust_checkpoint: bool = False,
        engine: str | None = None,
        share_encoder: bool = True,
        encoder_cache_mb: float | None = None,
        host_cache_mb: float | None = None,
    ):
        if backend not in MODELS:
            raise KitError(f"unknown network backend {backend!r}; use aot or deaot")
        model = model or DEFAULT_MODEL[backend]
        if model not in MODELS[backend]:
            raise KitError(
                f"model {model!r} is not an {'AOT' if backend == 'aot' else 'DeAOT'} model; "
                f"--backend {backend} takes one of: {', '.join(MODELS[backend])}"
            )
        if (checkpoint is None) == (random_seed is None):
            raise KitError(
                f"--backend {backend} needs --checkpoint PATH (the released weights), or "
                "--random-weights SEED for tests and benchmarks"
            )
        scales = tuple(float(s) for s in scales)
        if not scales or any(not math.isfinite(s) or s <= 0 for s in scales):
            raise KitError(f"TTA scales must be positive numbers, got {scales}")
        if max_long_side is not None and max_long_side < MAX_STRIDE:
            raise KitError(f"--max-long-side {max_long_side} is below {MAX_STRIDE} pixels")
        if long_term_gap is not None and long_term_gap < 1:
            raise KitError(f"--long-term-gap must be >= 1, got {long_term_gap}")
        engine = engine or DEFAULT_ENGINE
        if engine not in ENGINES:
            raise KitError(f"unknown engine {engine!r}; use one of: {', '.join(ENGINES)}")
        if backend == "aot" and engine != "published_aot_fork":
            raise KitError(
                f"--engine {engine}: the AOT stages run the published AOT engine "
                "(published_aot_fork); only DeAOT's engine is an open question"
            )
        if checkpoint is not None and not Path(checkpoint).is_file():
            raise KitError(f"{checkpoint}: checkpoint not found")
        self.name = backend
        self.model_name = model
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.checkpoint_sha256 = _sha256_pin(checkpoint_sha256, checkpoint)
        self.random_seed = random_seed
        self.device_name = device
        self.scales = scales
        self.flip = bool(flip)
        self.max_long_side = max_long_side
        self.long_term_gap = long_term_gap
        self.amp = bool(amp)
        self.trust_checkpoint = bool(trust_checkpoint)
        self.engine = engine
        for opt, mb in (
            ("--encoder-cache-mb", encoder_cache_mb),
            ("--host-cache-mb", host_cache_mb),
        ):
            if mb is not None and not (mb >= 0 and math.isfinite(mb)):
                raise KitError(f"{opt} must be a number >= 0, got {mb}")
        self.share_encoder = bool(share_encoder)
        self.encoder_cache_mb, self.host_cache_mb = encoder_cache_mb, host_cache_mb
        self.host_tier = None  # features.FeatureCache's host_tier (tests: True on the CPU)
        self.features = None  # the FeatureCache, made by prepare()
        self.model = None
        self.cfg = None
        self.device = None
        self.engines_built = 0  # every view of every expression builds one engine
        self.last_engines = []  # the engines of the last expression (for inspection)
        if self.checkpoint_sha256 is not None:  # load_checkpoint's trust: flag and pin
            self.trust_checkpoint = CheckpointTrust(bool(trust_checkpoint), self.checkpoint_sha256)

    # -------------------------------------------------------------------- set-up
    @property
    def views(self) -> list[tuple[float, bool]]:
        """(scale, flipped) of every view, in the published order."""
        out = []
        for s in self.scales:
            out.append((s, False))
            if self.flip:
                out.append((s, True))
        return out

    def _resolve_device(self):
        import torch

        name = self.device_name
        if name is None:
            name = "cuda" if torch.cuda.is_available() else "cpu"
        if name == "cuda" and not torch.cuda.is_available():
            raise KitError(
                f"--device cuda: PyTorch {torch.__version__} sees no CUDA device; "
                "use --device cpu (slow) or run on a GPU machine"
            )
        if name not in ("cpu", "cuda"):
            raise KitError(f"unknown device {name!r}; use cpu or cuda")
        return torch.device(name)

    def prepare(self) -> None:
        """Build the network and load the weights (once, in the calling process)."""
        if self.model is not None:
            return
        self.device = self._resolve_device()
        model, cfg = build_network(self.model_name, self.random_seed)
        if self.checkpoint is not None:
            load_checkpoint(model, self.checkpoint, self.model_name, self.trust_checkpoint)
        if self.long_term_gap is not None:
            cfg.TEST_LONG_TERM_MEM_GAP = int(self.long_term_gap)
        cfg.TEST_FLIP = self.flip
        cfg.TEST_MULTISCALE = list(self.scales)
        cfg.TEST_MAX_LONG_EDGE = self.max_long_side
        self.model = model.to(self.device)
        self.cfg = cfg
        self.features = FeatureCache(self.device, self.encoder_cache_mb, self.host_cache_mb,
                                     self.share_encoder, self.host_tier)  # fmt: skip

    @property
    def encoder_calls(self) -> int:
        return self.features.encoder_calls if self.features is not None else 0

    def encoder_stats(self) -> dict | None:
        """Encoder runs and shared-feature hits per tier (:mod:`.features`), once prepared."""
        return self.features.stats() if self.features is not None else None

    @property
    def gap(self) -> int:
        if self.long_term_gap is not None:
            return int(self.long_term_gap)
        return int(model_config(self.model_name).TEST_LONG_TERM_MEM_GAP)

    def settings(self) -> dict:
        import torch

        ck = None
        if self.checkpoint is not None:
            st = self.checkpoint.stat()
            ck = [str(self.checkpoint.resolve()), st.st_size, st.st_mtime_ns]
        dev = self.device_name or ("cuda" if torch.cuda.is_available() else "cpu")
        return {
            "backend": self.name,
            "model": self.model_name,
            "checkpoint": ck,
            "random_seed": self.random_seed,
            "device": dev,
            "amp": self.amp and dev == "cuda",
            "scales": list(self.scales),
            "flip": self.flip,
            "max_long_side": self.max_long_side,
            "long_term_gap": self.gap,
            "engine": self.engine,
            "torch": torch.__version__,
        }

    def describe(self) -> str:
        weights = self.checkpoint or f"random weights (seed {self.random_seed})"
        return (
            f"{self.name} {self.model_name} [{weights}], {len(self.views)} views "
            f"(scales {','.join(f'{s:g}' for s in self.scales)}"
            f"{' x flip' if self.flip else ''}), long side <= {self.max_long_side}, "
            f"long-term gap {self.gap}, engine {self.engine}"
        )

    def __getstate__(self):
        raise TypeError("the network backend runs in the main process only")

    # ----------------------------------------------------------------- inference
    def _new_engine(self):
        """One view's engine: the per-object engine the published ``AOTInferEngine``
        wraps (module docstring, "Engines")."""
        if self.cfg.MODEL_ENGINE == "deaotengine":
            from aot.networks.engines.deaot_engine import DeAOTEngine as Engine
        else:
            from aot.networks.engines.aot_engine import AOTEngine as Engine

        engine = Engine(
            self.model,
            gpu_id=0,
            long_term_mem_gap=self.cfg.TEST_LONG_TERM_MEM_GAP,
            short_term_mem_skip=self.cfg.TEST_SHORT_TERM_MEM_SKIP,
        )
        engine.eval()
        self.engines_built += 1
        return engine

    def propagate(self, frames, k: int, ref: np.ndarray, emit) -> None:
        """Call ``emit(t, mask)`` for t = k+1..T-1, then t = k-1..0 (bool masks at the
        frame size), from the reference mask ``ref`` (bool) of frame ``k``."""
        import torch

        self.prepare()
        amp = self.amp and self.device.type == "cuda"
        autocast = (
            torch.autocast(device_type="cuda", dtype=torch.float16)
            if amp
            else contextlib.nullcontext()
        )
        with torch.no_grad(), autocast, warnings.catch_warnings():
            # deaotpy's Swin / local attention call torch.meshgrid without ``indexing``
            warnings.filterwarnings("ignore", message="torch.meshgrid", category=UserWarning)
            self._propagate(frames, k, ref, emit)

    def _propagate(self, frames, k: int, ref: np.ndarray, emit) -> None:
        import torch
        import torch.nn.functional as F
        from aot.utils.image import flip_tensor

        n = len(frames)
        h, w = frames.size(k)
        align = self.cfg.MODEL_ALIGN_CORNERS
        views = [(flip, view_size(h, w, s, self.max_long_side, align)) for s, flip in self.views]
        dev = self.device

        def view_tensors(t):
            bgr = frames.bgr(t)
            return [torch.from_numpy(view_image(bgr, size, flip)[None]) for flip, size in views]

        cache = self.features
        cache.start_video(frames)  # a new video: the features of the last one go

        def inputs(t):
            """Frame t's view tensors, or Nones when the encoder's features of all its views
            are held already (no view to prepare: only the main thread adds to the cache,
            and nothing leaves it within a video)."""
            if all(cache.has((t, v)) for v in range(len(views))):
                return [None] * len(views)
            return view_tensors(t)

        def encode(t, v, img):
            """The encoder's features of frame t at view v: shared between the expressions
            of the video where a tier has room (module docstring, :mod:`.features`)."""
            return cache.features((t, v), lambda: self.model.encode_image(img))

        # Reference: the same tensors serve both passes.
        ref_imgs = [x.to(dev) for x in view_tensors(k)]  # engines size themselves from these
        label = ref.astype(np.uint8)
        ref_labels = []
        for flip, size in views:
            lab = label[:, ::-1].copy() if flip else label
            lab = torch.from_numpy(lab[None, None]).int().float()
            ref_labels.append(F.interpolate(lab, size=size, mode="nearest").to(dev))

        engines = [self._new_engine() for _ in views]
        self.last_engines = engines
        fork = self.engine == "published_aot_fork"
        obj_nums = [int(self.model.max_obj_num) if fork else 1]

        def add_reference():
            for v, (engine, img, lab) in enumerate(zip(engines, ref_imgs, ref_labels, strict=True)):
                embs = encode(k, v, img)
                engine.add_reference_frame(img, lab, frame_step=0, obj_nums=obj_nums, img_embs=embs)
                if fork:  # published L248: the argument, not the running frame_step
                    engine.last_mem_step = 0

        order = list(range(k + 1, n)) + list(range(k - 1, -1, -1))
        pool = ThreadPoolExecutor(max_workers=1)
        pending = {}

        def fetch(i):
            # Frame decoding and view preparation run one frame ahead, off the main thread.
            if i < len(order) and order[i] not in pending:
                pending[order[i]] = pool.submit(inputs, order[i])

        def step(t):
            fetch(order.index(t) + 1)
            imgs = pending.pop(t).result()
            probs = []
            for v, ((flip, _), engine, img) in enumerate(zip(views, engines, imgs, strict=True)):
                embs = encode(t, v, img if img is None else img.to(dev, non_blocking=True))
                engine.match_propogate_one_frame(img_embs=embs)
                logit = engine.decode_current_logits((h, w))
                if flip:
                    logit = flip_tensor(logit, 3)
                probs.append(torch.softmax(logit, dim=1))
            prob = torch.mean(torch.cat(probs, dim=0), dim=0, keepdim=True)
            pred = torch.argmax(prob, dim=1, keepdim=True).float()
            flipped = flip_tensor(pred, 3) if any(f for f, _ in views) else None
            for (flip, _), engine in zip(views, engines, strict=True):
                lab = flipped if flip else pred
                lab = F.interpolate(lab, size=engine.input_size_2d, mode="nearest")
                engine.update_short_term_memory(lab)
            emit(t, (pred[0, 0] >= 1).cpu().numpy())

        try:
            cache.expression_started()
            fetch(0)
            if k < n - 1:  # forward pass: k is the reference, then k+1 .. T-1
                add_reference()
                for t in range(k + 1, n):
                    step(t)
            if k > 0:  # backward pass: the SAME engines, k (re-)added, then k-1 .. 0
                add_reference()
                for t in range(k - 1, -1, -1):
                    step(t)
            cache.expression_done()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
