"""The AOT / DeAOT networks of the published propagation, built from the ``deaotpy``
package (module ``aot``), and their checkpoints (used by :mod:`.aot_backend`).

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
      (possibly nested), keys with or without ``module.``. The keys must be the network's,
      each with the right shape, with one exception (:data:`OPTIONAL_KEYS`):
      ``LSTT.mask_token``, a parameter of aot-benchmark's (and deaotpy's) AOT transformer
      that no forward pass uses and that the published ``soc_test/AOT`` network lacks. A
      checkpoint saved from either network loads (without it the network keeps its own,
      unused, value); any other missing or unexpected key is refused, naming it. (The
      published ``load_network`` silently dropped unknown keys and kept the network's own
      initial values for missing ones; a refusal is safer than a silently half-loaded
      network.) ``torch.load(weights_only=True)``
      where this PyTorch has it (1.13 and later): a file holding other Python objects is
      refused unless ``trust_checkpoint`` (``--trust-checkpoint``). Where it has not
      (the rvos image's 1.11), only a sha256-pinned file (``--checkpoint-sha256``) or a
      trusted one is loaded (:func:`_torch_load`).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import inspect
import io
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from ... import catalog
from ...errors import KitError

# The networks of each backend and its default: the backend catalogue (rvos_kit.catalog).
AOT_MODELS = catalog.BACKENDS["aot"].models
DEAOT_MODELS = catalog.BACKENDS["deaot"].models
MODELS = {"aot": AOT_MODELS, "deaot": DEAOT_MODELS}
# Which engine code a run reproduces (aot_backend's docstring, "Engines"; contract 5.6-5.7).
ENGINES = catalog.ENGINES
DEFAULT_ENGINE = catalog.default("propagation", "engine")
DEFAULT_MODEL = {b: catalog.BACKENDS[b].default_model for b in MODELS}
# the published run's test-time views (params.yaml's defaults, catalog.DEFAULTS): the
# engine's defaults (aot_backend) and the verb's (verb.py)
PUBLISHED_SCALES = tuple(catalog.default("propagation", "scales"))
PUBLISHED_FLIP = bool(catalog.default("propagation", "flip"))
PUBLISHED_MAX_LONG_SIDE = float(catalog.default("propagation", "max_long_side"))  # 1.3x480x800/480

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


@dataclass(frozen=True)
class CheckpointTrust:
    """What loading a checkpoint may do: ``unpickle`` everything (``--trust-checkpoint``);
    ``sha256``: the hash its bytes must have (``--checkpoint-sha256``, the pin of
    ``checkpoints.lock``). The ``trust`` argument of :func:`load_checkpoint` is one of
    these or a plain bool (= ``unpickle``)."""

    unpickle: bool = False
    sha256: str | None = None


def _torch_load(path: Path, trust: bool | CheckpointTrust = False):
    """``torch.load`` on the CPU, restricted to tensors and plain containers
    (``weights_only=True``) where this PyTorch has that option, unless ``trust`` says
    ``unpickle``. Where it has not (torch < 1.13: the rvos image's 1.11), loading unpickles
    in full, and a pickle can run code: only a file whose bytes match its ``sha256`` pin,
    or one the user trusts, is loaded. A given pin is checked in every case, on the same
    open file that is then loaded."""
    import torch

    if not isinstance(trust, CheckpointTrust):
        trust = CheckpointTrust(unpickle=bool(trust))
    kwargs = {"map_location": "cpu"}
    safe = "weights_only" in inspect.signature(torch.load).parameters
    if safe:
        kwargs["weights_only"] = not trust.unpickle
    elif not trust.unpickle and trust.sha256 is None:
        raise KitError(
            f"{path}: PyTorch {torch.__version__} has no torch.load(weights_only=...), so "
            "loading would unpickle the whole file, and a checkpoint can run code that way; "
            "this one is not sha256-pinned. Pin it (its sha256 in checkpoints.lock: `rvos-kit "
            "fetch NAME --record`, which the pipeline passes as --checkpoint-sha256), or pass "
            "--trust-checkpoint if you trust the file"
        )
    try:
        with open(path, "rb") as f:
            if trust.sha256 is not None:
                _check_sha256(f, path, trust.sha256)
            return torch.load(f, **kwargs)
    except FileNotFoundError:
        raise KitError(f"{path}: checkpoint not found") from None
    except IsADirectoryError:
        raise KitError(f"{path}: is a folder; pass the checkpoint .pth file") from None
    except KitError:
        raise
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for a bad file
        text = str(e)
        unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if safe and not trust.unpickle and unsafe:
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


def _check_sha256(f, path: Path, want: str) -> None:
    h = hashlib.sha256()
    while block := f.read(1 << 20):
        h.update(block)
    if h.hexdigest() != want.lower():
        raise KitError(
            f"{path}: sha256 {h.hexdigest()}, but it is pinned as {want.lower()} "
            "(--checkpoint-sha256, from checkpoints.lock): not the file the lock records; "
            "`rvos-kit verify` checks every download, `rvos-kit fetch` gets it again"
        )
    f.seek(0)


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


# Keys a checkpoint may have or lack: unused by every forward pass (module docstring).
OPTIONAL_KEYS = frozenset({"LSTT.mask_token"})


def load_checkpoint(model, path, model_name: str, trust: bool = False) -> int:
    """Load ``path`` into ``model``; returns the number of optional keys
    (:data:`OPTIONAL_KEYS`) the checkpoint has and the network lacks, or lacks and the
    network has (0 for a checkpoint of exactly this network)."""
    path = Path(path)
    sd = checkpoint_state_dict(_torch_load(path, trust), path)
    own = model.state_dict()
    hint = (
        "pass the --model this checkpoint was trained as (swinl_aotl for AOT, swinl_deaotl "
        "for DeAOT)"
    )
    missing = [k for k in own if k not in sd and k not in OPTIONAL_KEYS]
    if missing:
        raise KitError(
            f"{path}: does not fit model {model_name!r}: {len(missing)} of its {len(own)} "
            f"tensors are missing (e.g. {missing[0]!r}); {hint}"
        )
    extra = [k for k in sd if k not in own and k not in OPTIONAL_KEYS]
    if extra:
        raise KitError(
            f"{path}: does not fit model {model_name!r}: {len(extra)} tensor(s) the network "
            f"does not have (e.g. {extra[0]!r}); {hint}"
        )
    skipped = sum(1 for k in OPTIONAL_KEYS if (k in sd) != (k in own))
    for k, v in own.items():
        if k not in sd:
            continue
        if tuple(sd[k].shape) != tuple(v.shape):
            raise KitError(
                f"{path}: does not fit model {model_name!r}: {k!r} has shape "
                f"{tuple(sd[k].shape)}, the model expects {tuple(v.shape)}"
            )
        if not sd[k].is_floating_point() and v.is_floating_point():
            raise KitError(f"{path}: {k!r} is not a floating-point tensor")
    model.load_state_dict({k: sd.get(k, v) for k, v in own.items()}, strict=True)
    return skipped
