"""``--backend aot`` / ``--backend deaot``: the published propagation (contract section 5).

The networks and the per-view engines are those of the ``deaotpy`` package (module ``aot``);
this module only drives them the way the published run did. The places where that is
subtle, in the order a frame meets them:

Model and configuration
    * ``swinl_aotl`` / ``swinl_deaotl``: deaotpy ships Swin-B only. The Swin-L encoder is
      deaotpy's own ``SwinTransformer`` with embed dim 192, depths [2, 2, 18, 2], heads
      [6, 12, 24, 48], window 12, out indices (0, 1, 2) (only the first three stages are
      built), encoder dims [192, 384, 768, 768], 3 LSTT layers, ``align_corners=False``
      (the Swin-B settings otherwise). aot-benchmark's own ``swin_large`` uses window 7;
      the released checkpoints decide, and a window mismatch shows up at loading as a shape
      mismatch of ``relative_position_bias_table``.
    * Stage ``pre_ytb_dav``: in deaotpy a stage config only sets training data and the
      pre-training checkpoint path -- and its constructor creates result folders in the
      current directory. It is therefore not instantiated: the model config is deaotpy's
      ``DefaultEngineConfig`` with ``STAGE_NAME = "PRE_YTB_DAV"``; inference reads only the
      ``MODEL_*`` and ``TEST_*`` fields. Long-term memory gap: the model's
      ``TEST_LONG_TERM_MEM_GAP`` (5 for every ``*l`` model, the published value; 9999, i.e.
      reference frame only, for the tiny/small/base variants) unless ``long_term_gap`` says
      otherwise.
    * Correlation sampler: without ``spatial_correlation_sampler`` installed, deaotpy's AOT
      block falls back to ``MultiheadLocalAttentionV3``, whose forward fails with a shape
      error in deaotpy 1.11.0. Every such layer is replaced by deaotpy's
      ``MultiheadLocalAttentionV2(enable_corr=False)``: same parameters (so the same
      checkpoint keys), and the same local attention computed with ``unfold`` instead of
      the CUDA sampler (equal up to float rounding). DeAOT's gated propagation has its own
      sampler-free path and is used as is. Where the sampler is installed, deaotpy uses it.
    * Checkpoints: a plain state dict, or one wrapped under ``state_dict`` / ``model``
      (possibly nested), keys with or without ``module.``. Every parameter of the network
      must be present with the right shape; extra keys are ignored (as the published
      ``load_network`` did) and counted in a warning. ``torch.load(weights_only=True)``
      where this PyTorch has it (1.13 and later): a file holding other Python objects is
      refused unless ``trust_checkpoint`` (``--trust-checkpoint``).

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

Per frame
    * Each view has its own engine (a deaotpy ``AOTInferEngine`` / ``DeAOTInferEngine``,
      one object, so one inner engine). Every view matches and propagates, decodes its
      logits, which are resized bilinearly to the ORIGINAL frame size (``align_corners`` of
      the model), flipped back, and soft-maxed. deaotpy sets the logits of unused object
      slots to -1e10 (-1e4 in float16) first, so the softmax is effectively over
      background and the one object.
    * The probabilities are averaged over the views; label = argmax (0 or 1); the output
      mask is ``label == 1``.
    * Memory: that SAME averaged label, flipped for flipped views and resized
      (nearest) to each view's size, updates every view's memory (``update_memory``):
      short-term memory = this frame; long-term memory gains this frame when
      ``frame_step - last_mem_step >= gap``. This is the aot-benchmark evaluator of the
      published run. deaotpy's bundled evaluator instead feeds each view its OWN label
      (its pre-2023 lines are commented out there); that is not what the spec describes.

Forward, then backward, without restarting the engines (contract section 5.2)
    * Forward: the key frame ``k`` is added as reference (``frame_step=0``), then frames
      k+1 .. T-1 are propagated. With k = T-1 the pass holds the reference only.
    * Backward: the reference (the same view tensors and masks) is added AGAIN to the same
      engines, then frames k-1 .. 0 are propagated. Adding a reference to a running engine
      (``AOTEngine.add_reference_frame``) prepends the reference's long-term memory to the
      existing one -- which still holds the forward reference and every frame the forward
      pass stored (every ``gap``-th frame) -- resets the short-term memory to the
      reference, keeps the position embedding and sizes, and sets ``last_mem_step`` to the
      running ``frame_step`` (which keeps counting from the forward pass), so the next
      long-term entry is ``gap`` frames into the backward pass.
    * The re-add calls the inner engine's ``add_reference_frame`` directly. For AOT that is
      exactly what ``AOTInferEngine.add_reference_frame`` does with one object. deaotpy's
      ``DeAOTInferEngine.add_reference_frame`` differs from the published aot-benchmark code
      here: for an engine that already has its objects it calls
      ``update_short_term_memory`` with the reference mask on the last forward frame's
      features instead of encoding the reference (and in deaotpy 1.11.0 that call fails
      with a shape error once the memory has been updated). Going through the inner engine
      reproduces the published behaviour for both.
    * With k = 0 the backward pass has no frame to predict and is skipped.

Precision
    * On CUDA the whole propagation runs under ``torch.autocast`` float16, as
      ``tools/eval.py --amp`` did (``amp=False`` turns it off); on CPU always float32.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import io
import math
import os
import re
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from ...errors import KitError

AOT_MODELS = (
    "swinl_aotl",
    "aott",
    "aots",
    "aotb",
    "aotl",
    "r50_aotl",
    "r101_aotl",
    "rs101_aotl",
    "swinb_aotl",
)
DEAOT_MODELS = (
    "swinl_deaotl",
    "deaott",
    "deaots",
    "deaotb",
    "deaotl",
    "r50_deaotl",
    "swinb_deaotl",
)
MODELS = {"aot": AOT_MODELS, "deaot": DEAOT_MODELS}
DEFAULT_MODEL = {"aot": "swinl_aotl", "deaot": "swinl_deaotl"}

# Swin-L encoder of the released swinl_aotl / swinl_deaotl checkpoints (contract section 5).
SWIN_L = {
    "embed_dim": 192,
    "depths": [2, 2, 18, 2],
    "num_heads": [6, 12, 24, 48],
    "window_size": 12,
    "out_indices": (0, 1, 2),
    "encoder_dim": [192, 384, 768, 768],
    "lstt_num": 3,
}

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
MAX_STRIDE = 16


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


# ------------------------------------------------------------------------------ models
def _quiet():
    """deaotpy prints (and PyTorch warns) while building some layers; keep stdout clean."""
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    return stack


def correlation_sampler_installed() -> bool:
    return importlib.util.find_spec("spatial_correlation_sampler") is not None


def model_config(name: str):
    """deaotpy engine config for ``name`` at stage ``pre_ytb_dav`` (see module docstring)."""
    from aot.configs.default import DefaultEngineConfig

    swin_l = name.startswith("swinl_")
    base = name.replace("swinl_", "swinb_") if swin_l else name
    cfg = DefaultEngineConfig("rvos_kit", base)
    if swin_l:
        cfg.MODEL_NAME = "SwinL_" + cfg.MODEL_NAME.split("_", 1)[1]
        cfg.MODEL_ENCODER = "swin_large"
        cfg.MODEL_ENCODER_DIM = list(SWIN_L["encoder_dim"])
        cfg.MODEL_LSTT_NUM = SWIN_L["lstt_num"]
        cfg.MODEL_ALIGN_CORNERS = False
        cfg.EXP_NAME = "rvos_kit_" + cfg.MODEL_NAME
    cfg.STAGE_NAME = "PRE_YTB_DAV"
    cfg.DATASETS = ["youtubevos", "davis2017"]
    cfg.PRETRAIN_FULL = True
    return cfg


def build_network(name: str, seed: int | None = None):
    """The VOS network ``name`` on the CPU, in eval mode, randomly initialised (from
    ``seed`` when given; load a checkpoint with :func:`load_checkpoint`)."""
    import torch
    from aot.networks.encoders.swin.swin_transformer import SwinTransformer
    from aot.networks.layers.attention import (
        MultiheadLocalAttentionV2,
        MultiheadLocalAttentionV3,
    )
    from aot.networks.models import build_vos_model

    backend = next((b for b, names in MODELS.items() if name in names), None)
    if backend is None:
        known = ", ".join(AOT_MODELS + DEAOT_MODELS)
        raise KitError(f"unknown model {name!r}; known models: {known}")
    cfg = model_config(name)
    if seed is not None:
        torch.manual_seed(seed)
    with _quiet():
        if name.startswith("swinl_"):
            # deaotpy's build_encoder knows Swin-B only: build the model around a small
            # encoder, then put the Swin-L encoder in its place (the projector and the
            # decoder are sized from cfg.MODEL_ENCODER_DIM, i.e. for Swin-L already).
            from aot.networks.models.aot import AOT
            from aot.networks.models.deaot import DeAOT

            cls = AOT if cfg.MODEL_VOS == "aot" else DeAOT
            model = cls(cfg, encoder="mobilenetv2")
            model.encoder = SwinTransformer(
                embed_dim=SWIN_L["embed_dim"],
                depths=SWIN_L["depths"],
                num_heads=SWIN_L["num_heads"],
                window_size=SWIN_L["window_size"],
                drop_path_rate=0.3,
                out_indices=SWIN_L["out_indices"],
                ape=False,
                patch_norm=True,
                frozen_stages=cfg.TRAIN_ENCODER_FREEZE_AT,
                use_checkpoint=False,
            )
        else:
            model = build_vos_model(cfg.MODEL_VOS, cfg)
        # Sampler-free local attention for AOT blocks (see module docstring).
        for layer in model.LSTT.layers:
            old = getattr(layer, "short_term_attn", None)
            if isinstance(old, MultiheadLocalAttentionV3):
                new = MultiheadLocalAttentionV2(
                    cfg.MODEL_ENCODER_EMBEDDING_DIM,
                    old.num_head,
                    dilation=old.dilation,
                    use_linear=False,
                    enable_corr=False,
                )
                new.load_state_dict(old.state_dict())
                layer.short_term_attn = new
    model.eval()
    return model, cfg


def _torch_load(path: Path, trust: bool = False):
    """``torch.load`` on the CPU, restricted to tensors and plain containers
    (``weights_only=True``) where this PyTorch has that option, unless ``trust``."""
    import torch

    kwargs = {"map_location": "cpu"}
    safe = "weights_only" in inspect.signature(torch.load).parameters
    if safe:
        kwargs["weights_only"] = not trust
    try:
        return torch.load(str(path), **kwargs)
    except FileNotFoundError:
        raise KitError(f"{path}: checkpoint not found") from None
    except IsADirectoryError:
        raise KitError(f"{path}: is a folder; pass the checkpoint .pth file") from None
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for a bad file
        text = str(e)
        unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if safe and not trust and unsafe:
            raise KitError(
                f"{path}: holds Python objects besides tensors ({unsafe.group(1)}), which are "
                "not unpickled for safety; if you trust the file, pass --trust-checkpoint"
            ) from None
        first = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(e).__name__)
        detail = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\n|$)", text, re.S)
        if detail:
            first = "unpickling: " + " ".join(detail.group(1).split())
        raise KitError(
            f"{path}: not a readable PyTorch checkpoint ({first[:160]}); the file is "
            "corrupt or truncated: download it again"
        ) from None


def _is_tensor_dict(obj) -> bool:
    import torch

    return (
        isinstance(obj, dict)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def checkpoint_state_dict(obj, path) -> dict:
    """The state dict inside a loaded checkpoint object (see module docstring)."""
    sd = obj
    for _ in range(4):
        if _is_tensor_dict(sd):
            break
        if isinstance(sd, dict):
            inner = next(
                (sd[k] for k in ("state_dict", "model", "model_state_dict", "net") if k in sd),
                None,
            )
            if isinstance(inner, dict):
                sd = inner
                continue
        raise KitError(
            f"{path}: no state dict found (expected a dict of tensors, possibly under "
            '"state_dict" or "model"); is this an AOT/DeAOT checkpoint?'
        )
    out = {}
    for k, v in sd.items():
        out[k[len("module.") :] if k.startswith("module.") else k] = v
    return out


def load_checkpoint(model, path, model_name: str, trust: bool = False) -> int:
    """Load ``path`` into ``model``; returns the number of ignored extra keys."""
    path = Path(path)
    sd = checkpoint_state_dict(_torch_load(path, trust), path)
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    if missing:
        raise KitError(
            f"{path}: does not fit model {model_name!r}: {len(missing)} of its {len(own)} "
            f"tensors are missing (e.g. {missing[0]!r}); pass the --model this checkpoint "
            "was trained as (swinl_aotl for AOT, swinl_deaotl for DeAOT)"
        )
    for k, v in own.items():
        if tuple(sd[k].shape) != tuple(v.shape):
            raise KitError(
                f"{path}: does not fit model {model_name!r}: {k!r} has shape "
                f"{tuple(sd[k].shape)}, the model expects {tuple(v.shape)}"
            )
        if not sd[k].is_floating_point() and v.is_floating_point():
            raise KitError(f"{path}: {k!r} is not a floating-point tensor")
    extra = [k for k in sd if k not in own]
    model.load_state_dict({k: sd[k] for k in own}, strict=True)
    return len(extra)


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
        scales=(0.8, 1.0, 1.2),
        flip: bool = True,
        max_long_side: float | None = 1040.0,
        long_term_gap: int | None = None,
        amp: bool = True,
        trust_checkpoint: bool = False,
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
        if checkpoint is not None and not Path(checkpoint).is_file():
            raise KitError(f"{checkpoint}: checkpoint not found")
        self.name = backend
        self.model_name = model
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.random_seed = random_seed
        self.device_name = device
        self.scales = scales
        self.flip = bool(flip)
        self.max_long_side = max_long_side
        self.long_term_gap = long_term_gap
        self.amp = bool(amp)
        self.trust_checkpoint = bool(trust_checkpoint)
        self.model = None
        self.cfg = None
        self.device = None
        self.engines_built = 0  # every view of every expression builds one engine
        self.last_engines = []  # the engines of the last expression (for inspection)

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
            extra = load_checkpoint(model, self.checkpoint, self.model_name, self.trust_checkpoint)
            if extra:
                print(
                    f"note: {self.checkpoint}: {extra} tensor(s) not used by "
                    f"{self.model_name} were ignored",
                    file=sys.stderr,
                )
        if self.long_term_gap is not None:
            cfg.TEST_LONG_TERM_MEM_GAP = int(self.long_term_gap)
        cfg.TEST_FLIP = self.flip
        cfg.TEST_MULTISCALE = list(self.scales)
        cfg.TEST_MAX_LONG_EDGE = self.max_long_side
        self.model = model.to(self.device)
        self.cfg = cfg

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
            "torch": torch.__version__,
        }

    def describe(self) -> str:
        weights = self.checkpoint or f"random weights (seed {self.random_seed})"
        return (
            f"{self.name} {self.model_name} [{weights}], {len(self.views)} views "
            f"(scales {','.join(f'{s:g}' for s in self.scales)}"
            f"{' x flip' if self.flip else ''}), long side <= {self.max_long_side}, "
            f"long-term gap {self.gap}"
        )

    def __getstate__(self):
        raise TypeError("the network backend runs in the main process only")

    # ----------------------------------------------------------------- inference
    def _new_engine(self):
        from aot.networks.engines import build_engine

        engine = build_engine(
            self.cfg.MODEL_ENGINE,
            phase="eval",
            aot_model=self.model,
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

        def inputs(t):
            bgr = frames.bgr(t)
            return [torch.from_numpy(view_image(bgr, size, flip)[None]) for flip, size in views]

        # Reference: the same tensors serve both passes.
        ref_imgs = [x.to(dev) for x in inputs(k)]
        label = ref.astype(np.uint8)
        ref_labels = []
        for flip, size in views:
            lab = label[:, ::-1].copy() if flip else label
            lab = torch.from_numpy(lab[None, None]).int().float()
            ref_labels.append(F.interpolate(lab, size=size, mode="nearest").to(dev))

        engines = [self._new_engine() for _ in views]
        self.last_engines = engines

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
            for (flip, _), engine, img in zip(views, engines, imgs, strict=True):
                engine.match_propogate_one_frame(img.to(dev, non_blocking=True))
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
                engine.update_memory(lab)
            emit(t, (pred[0, 0] == 1).cpu().numpy())

        try:
            fetch(0)
            # Forward pass: k is the reference, then k+1 .. T-1.
            for engine, img, lab in zip(engines, ref_imgs, ref_labels, strict=True):
                engine.add_reference_frame(img, lab, frame_step=0, obj_nums=[1])
            for t in range(k + 1, n):
                step(t)
            if k == 0:
                return
            # Backward pass: the SAME engines, k re-added as reference, then k-1 .. 0.
            for engine, img, lab in zip(engines, ref_imgs, ref_labels, strict=True):
                for inner in engine.aot_engines:
                    inner.add_reference_frame(img, lab, frame_step=0, obj_nums=[1])
                engine.update_size()
            for t in range(k - 1, -1, -1):
                step(t)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
