"""Calling the published workers of the three Swin codebases (SOC, MUTR, ReferFormer)
without editing them.

Each codebase is imported from its own folder (``soc_test/``, ``MUTR/``,
``ReferFormer/``) with that folder first on ``sys.path`` and as the working directory, as
its shell scripts run it; every module of it is compiled from source bytes checked
against the manifest as they are read (``upstream.guard_imports``: no bytecode). Its
``sub_processor`` workers take the video list, meta, frame folder and output paths as
parameters, so the kit passes them; everything else the scripts hard-code is handled
from outside, in this process, before the call:

- **output paths**: the pth workers ``torch.save`` their dump to
  ``args.ensemble_save_path/args.version`` (MUTR reads ``args.ensembe_save_path``, a typo
  that crashes the published run after the whole inference: the driver sets both); the
  kit points them at a scratch file per chunk and converts it at once.
- **the 305-video assert and the test-only meta** live in ``main()``, which is not
  called; the workers get the chosen split's meta and videos.
- **text encoder paths** hard-coded in MUTR/ReferFormer (``models/mutr.py`` L127,
  ``models/referformer.py`` L127) are local variables passed to
  ``RobertaTokenizerFast/RobertaModel.from_pretrained``; the driver replaces those two
  *module attributes* of the model module by subclasses whose ``from_pretrained`` maps
  exactly the published path to ``--pretrained/roberta-base`` (any other path is an
  error) and loads offline. SOC takes the path from its config, which the driver builds.
- **checkpoints** are read by ``torch.load(path, map_location='cpu')``; torch >= 2.6
  defaults to ``weights_only=True``, which the published files (they pickle an
  ``argparse.Namespace``) may fail, so for exactly the ``--checkpoint`` file (and SOC's
  Kinetics backbone file) the kit loads with ``weights_only=False``, as torch did when
  they were written, once per process.
- **the model is built once per process**: ``build_model`` in the worker's module is
  wrapped so that every chunk reuses the model built (after seeding as ``main()`` does)
  for the first one; the worker still loads the checkpoint into it every call.
- ``--device cpu``: ``torch.cuda.set_device`` becomes a no-op, and a module named
  ``MultiScaleDeformableAttention`` whose forward calls the upstream
  ``ms_deform_attn_core_pytorch`` stands in for the compiled op (``msda_cpu.py``); on a
  GPU the same stand-in is used with ``--msda pytorch`` (``Request.msda_path``).
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
import random
import sys
import threading
from pathlib import Path

from ....errors import KitError
from .core import PNG_RUN_TREE, Request, chunks
from .upstream import guard_imports

ROBERTA = "roberta-base"
_IMPORTED: dict[str, str] = {}  # which upstream folder this process has imported
_CACHE: dict = {}  # per process: built model, loaded checkpoint files


def roberta_dir(req: Request) -> Path:
    return req.pretrained / ROBERTA


def check_roberta(req: Request) -> None:
    d = roberta_dir(req)
    if not (d / "config.json").is_file():
        raise KitError(
            f"{d}: no config.json; --pretrained must hold {ROBERTA}/ in the Hugging Face "
            "save_pretrained layout (config.json, vocab.json, merges.txt, weights)"
        )


def _install_msda(path: str, code_root: Path) -> None:
    if path == "pytorch":
        from . import msda_cpu

        msda_cpu.bind(code_root)
        sys.modules["MultiScaleDeformableAttention"] = msda_cpu
        return
    try:
        import MultiScaleDeformableAttention  # noqa: F401
    except ImportError:
        raise KitError(
            "the compiled MultiScaleDeformableAttention op is not installed in this Python "
            "environment (it is in the rvos Docker image: run through `rvos-kit run`); "
            "--msda pytorch (or --device cpu) uses the pure-PyTorch reference instead"
        ) from None


def _read_video_placeholder(*args, **kwargs):
    raise RuntimeError("torchvision.io.read_video is not available (training-only path)")


@contextlib.contextmanager
def upstream_code(req: Request, folder: str, trusted_files: tuple[Path, ...] = ()):
    """Make ``<upstream>/<folder>`` importable as its scripts expect, for this process.

    ``torch.load`` of ``--checkpoint`` (memory-mapped and cached: every chunk reloads it) and of
    ``trusted_files`` uses ``weights_only=False`` (and ``map_location='cpu'`` on the CPU)."""
    import torch
    import torchvision.io

    code_root = req.upstream / folder
    prev = _IMPORTED.get("folder")
    if prev is not None and prev != str(code_root):
        raise KitError(
            f"this process already imported {prev}; the five codebases share module names "
            "(models, util, opts), so run one model per process"
        )
    _IMPORTED["folder"] = str(code_root)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    guard_imports(req.upstream, code_root)  # manifest sources only, no bytecode
    if str(code_root) not in sys.path:
        sys.path.insert(0, str(code_root))
    _install_msda(req.msda_path, code_root)
    if not hasattr(torchvision.io, "read_video"):  # removed in torchvision 0.29; training only
        torchvision.io.read_video = _read_video_placeholder

    real_load, real_set_device = torch.load, torch.cuda.set_device
    ckpt = os.path.realpath(req.checkpoint)
    trusted = {os.path.realpath(p) for p in trusted_files} | {ckpt}
    # named parameters only: torch 1.x passes unknown keywords on to pickle
    named = inspect.signature(real_load).parameters
    can_mmap = "mmap" in named  # torch >= 2.1

    def load(f, *args, **kwargs):
        key = os.path.realpath(f) if isinstance(f, (str, os.PathLike)) else None
        if key not in trusted:
            return real_load(f, *args, **kwargs)
        if "weights_only" in named:  # torch >= 1.13; defaults to True from 2.6
            kwargs["weights_only"] = False
        if req.device == "cpu" and not args:
            kwargs.setdefault("map_location", "cpu")
        if key != ckpt:
            return real_load(f, *args, **kwargs)
        if ("checkpoint", key) not in _CACHE:
            loaded = None
            if can_mmap:
                try:  # memory-mapped: the cached copy costs page cache, not heap
                    loaded = real_load(f, *args, mmap=True, **kwargs)
                except RuntimeError:  # a legacy (non-zip) torch.save file cannot be mapped
                    loaded = None
            _CACHE[("checkpoint", key)] = (
                loaded if loaded is not None else real_load(f, *args, **kwargs)
            )
        return _CACHE[("checkpoint", key)]

    cwd = os.getcwd()
    torch.load = load
    if req.device == "cpu":
        torch.cuda.set_device = lambda device: None
    try:
        os.chdir(code_root)
        yield code_root
    finally:
        os.chdir(cwd)
        torch.load, torch.cuda.set_device = real_load, real_set_device


def seed_as_main(seed: int) -> None:
    """What every upstream ``main()`` does before building the model (rank 0)."""
    import numpy as np
    import torch

    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def build_once(worker_module, seed: int, key: str) -> None:
    """Wrap ``worker_module.build_model`` so that the model of run ``key`` (``"pth"``,
    ``"png"``) is built once per process, seeded as ``main()`` seeds, and reused by every
    later call (chunk). One model is held at a time."""
    real = getattr(worker_module.build_model, "_rvos_kit_real", worker_module.build_model)

    def build_model(args):
        if _CACHE.get("model_key") != key:
            _CACHE.pop("model", None)
            seed_as_main(seed)
            _CACHE["model"] = real(args)
            _CACHE["model_key"] = key
        return _CACHE["model"]

    build_model._rvos_kit_real = real
    worker_module.build_model = build_model


def redirect_from_pretrained(module, names: tuple[str, ...], published: str, target: Path):
    """Replace ``module.<name>`` (a transformers class) by a subclass whose
    ``from_pretrained(published)`` loads ``target`` offline; any other path is an error."""
    for name in names:
        real = getattr(module, name)
        if getattr(real, "_rvos_kit_redirect", None) == str(target):
            continue

        def from_pretrained(cls, path, *args, _real=real, _name=name, **kwargs):
            if str(path) != published:
                raise KitError(
                    f"{module.__name__}: {_name}.from_pretrained({path!r}) is not the path "
                    f"the pinned commit hard-codes ({published!r})"
                )
            kwargs["local_files_only"] = True
            return _real.from_pretrained(str(target), *args, **kwargs)

        sub = type(real.__name__, (real,), {"from_pretrained": classmethod(from_pretrained)})
        sub._rvos_kit_redirect = str(target)
        setattr(module, name, sub)


def import_worker(name: str):
    return importlib.import_module(name)


def pth_run(req: Request, videos, out, worker, args) -> None:
    """Call ``worker.sub_processor(args, meta_videos, images, chunk)`` per chunk of videos;
    each chunk's dump goes to a scratch file that ``out`` converts and deletes."""
    args.ensemble_save_path = str(req.work)
    args.ensembe_save_path = args.ensemble_save_path  # MUTR L172 reads this misspelt name
    for i, part in enumerate(chunks([v.name for v in videos], req.chunk)):
        args.version = f"chunk{i:05d}.pth"
        worker.sub_processor(args, req.meta_videos, str(req.images), part)
        out.add_dump(req.work / args.version)


def png_run(req: Request, videos, out, worker, args) -> None:
    """Call the PNG worker ``sub_processor(lock, 0, args, meta_videos, <tree>, <vis>,
    images, chunk)`` per chunk; it writes its PNGs straight into ``PNG_RUN_TREE``."""
    tree = out.tree(PNG_RUN_TREE)
    vis = req.work / "visualize"  # only written with --visualize, which is never set
    lock = threading.Lock()
    for part in chunks([v.name for v in videos], req.chunk):
        worker.result_dict = {}  # module globals main() creates (mp.Manager dicts);
        worker.key_frame_dict = {}  # SOC's worker writes both, MUTR/ReferFormer's the first
        worker.sub_processor(
            lock, 0, args, req.meta_videos, str(tree), str(vis), str(req.images), part
        )


def detr_args(req: Request, script: str, flags: list[str], with_version: bool):
    """``argparse`` as the MUTR/ReferFormer ``__main__`` builds it, on the published flags
    plus the checkpoint, split and device."""
    import argparse

    import opts  # the codebase's own opts.py (its folder is first on sys.path)

    parser = argparse.ArgumentParser(script, parents=[opts.get_args_parser()])
    if with_version:
        parser.add_argument("--version", type=str)
    cli = [*flags, "--resume", str(req.checkpoint), "--split", req.split,
           "--device", req.device,
           # the pth workers set CUDA_VISIBLE_DEVICES to this: keep what the runner set
           "--cuda_id", os.environ.get("CUDA_VISIBLE_DEVICES", "0")]  # fmt: skip
    args = parser.parse_args(cli)
    args.masks = True  # main() sets it
    return args


def run_detr_style(req: Request, videos, out, drv) -> None:
    """MUTR and ReferFormer (ReferFormer-derived codebases): the pth worker, then the PNG
    worker if asked. ``drv`` is the driver module: FOLDER, MODEL_MODULE, PUBLISHED_ROBERTA,
    SCRIPT, PTH_WORKER/PTH_FLAGS, PNG_WORKER/PNG_FLAGS, PTH_PARSER_HAS_VERSION."""
    runs = [("pth", drv.PTH_WORKER, drv.PTH_FLAGS, drv.PTH_PARSER_HAS_VERSION, pth_run)]
    if req.png_run:
        runs.append(("png", drv.PNG_WORKER, drv.PNG_FLAGS, False, png_run))
    with upstream_code(req, drv.FOLDER):
        for key, worker_name, flags, with_version, call in runs:
            worker = import_worker(worker_name)
            redirect_from_pretrained(
                importlib.import_module(drv.MODEL_MODULE), ("RobertaTokenizerFast", "RobertaModel"),
                drv.PUBLISHED_ROBERTA, roberta_dir(req),
            )  # fmt: skip
            args = detr_args(req, drv.SCRIPT, flags, with_version)
            build_once(worker, args.seed, f"{key}:{req.checkpoint}:{req.device}")
            call(req, videos, out, worker, args)
