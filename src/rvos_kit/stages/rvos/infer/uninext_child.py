"""The child process of a UNINEXT run: the published ``projects/UNINEXT/train_net.py``,
unmodified, run as ``__main__`` after what this machine's libraries and the published tree
lack has been met from outside, in this process only::

    python -m rvos_kit.stages.rvos.infer.uninext_child \
        <UNINEXT>/projects/UNINEXT/train_net.py ARGS...

``ARGS`` are :func:`rvos_kit.stages.rvos.infer.uninext.command_line`'s, unchanged. What is
done before ``train_net.py`` runs, each with the upstream line it meets (docs/inference.md
lists the same):

Always:

- **``detectron2.utils.events``** is not in the published tree: ``UNINEXT/.gitignore`` L62
  ``events.*`` kept ``detectron2/utils/events.py`` out of the commit, and
  ``detectron2/engine/train_loop.py`` L13 (imported by ``train_net.py`` L22) imports it.
  A stand-in module gives the names imported (``EventStorage``, ``get_event_storage``,
  ``EventWriter``, ``CommonMetricPrinter``, ``JSONWriter``, ``TensorboardXWriter``);
  they are training-only, and using any of them raises.
- **``detectron2._C``**: when the imported ``detectron2`` (the published tree, first on
  ``sys.path``) has no compiled ``_C`` beside it (the shared archive is never built in
  place), the ``_C`` of the installed ``detectron2`` wheel, built by ``make`` from the same
  tree's ``setup.py`` and ``detectron2/layers/csrc``, is loaded as ``detectron2._C``
  (``detectron2/evaluation/fast_eval_api.py`` L8 imports it at start-up).
- **``transformers.modeling_utils``** no longer has ``apply_chunking_to_forward``,
  ``find_pruneable_heads_and_indices``, ``prune_linear_layer`` (moved to
  ``transformers.pytorch_utils``), which ``uninext/models/deformable_detr/vlfusion.py`` L7
  and ``modeling_bert.py`` L31 import from there: the same functions are given that name.
- **``pycocotools.ytvos``** (``uninext/data/ytvis_eval.py`` L14, ``data/datasets/ytvis.py``
  L201) exists only in the XD7479 cocoapi fork, which no package registry carries: if it is
  not installed, :mod:`.ytvos_standin` (the part of its ``YTVOS`` API those two files use)
  stands in.

With ``RVOS_KIT_UNINEXT_PATHS`` (a JSON object ``{published path: path here}``, set by the
driver outside a container) the fixed absolute paths are mapped, at the calls that use
them, for exactly those prefixes: ``BertConfig``/``BertModel``/``AutoTokenizer``
``.from_pretrained`` (``uninext/models/deformable_detr/bert_model.py`` L17, L19;
``uninext/uninext_vid.py`` L151; ``uninext/data/dataset_mapper_ytbvis.py`` L172), the
dataset loader and the evaluator's json (``data/datasets/ytvis.py`` L382-383, through
``load_ytvis_json`` and ``ytvis_eval.YTVOS``), and ``torch.save`` of the dump
(``detectron2/evaluation/evaluator.py`` L209-211).

With ``MODEL.DEVICE cpu`` in ``ARGS``:

- the compiled ``MultiScaleDeformableAttention`` op (CUDA kernels only;
  ``uninext/models/deformable_detr/ops/functions/ms_deform_attn_func.py`` L18) is replaced
  by :mod:`.msda_cpu`, whose forward calls that file's own ``ms_deform_attn_core_pytorch``;
- ``UNINEXT_VID.forward_text(captions, device="cuda")`` (``uninext/uninext_vid.py`` L319)
  gets the model's device instead of ``"cuda"``.

Nothing here reads or writes the published files; a shim that finds its target missing
(another commit) fails the run with one message instead of guessing.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import json
import os
import runpy
import sys
import types
from pathlib import Path

PATHS_ENV = "RVOS_KIT_UNINEXT_PATHS"
MSDA_ENV = "RVOS_KIT_UNINEXT_MSDA"  # "pytorch": the stand-in on a GPU too (issue 22)
MSDA_FUNCTIONS = (
    "projects/UNINEXT/uninext/models/deformable_detr/ops/functions/ms_deform_attn_func.py"
)


# transformers >= 4.x moved these from modeling_utils to pytorch_utils (same functions)
MOVED_TO_PYTORCH_UTILS = (
    "apply_chunking_to_forward", "find_pruneable_heads_and_indices", "prune_linear_layer",
)  # fmt: skip


class ShimError(RuntimeError):
    pass


# --------------------------------------------------------------------------- events
def _training_only(name):
    def refuse(*args, **kwargs):
        raise ShimError(
            f"detectron2.utils.events.{name}: not in the published tree (its .gitignore "
            "L62 'events.*' left detectron2/utils/events.py out); the kit's stand-in has "
            "only the names, for inference"
        )

    return refuse


def events_standin() -> types.ModuleType:
    mod = types.ModuleType("detectron2.utils.events")
    mod.__doc__ = "rvos-kit stand-in: detectron2/utils/events.py is missing from the commit"

    class EventWriter:
        def write(self):
            raise NotImplementedError

        def close(self):
            pass

    mod.EventWriter = EventWriter
    for name in ("EventStorage", "CommonMetricPrinter", "JSONWriter", "TensorboardXWriter"):
        mod.__dict__[name] = type(name, (EventWriter,), {"__init__": _training_only(name)})
    mod.get_event_storage = _training_only("get_event_storage")
    return mod


# --------------------------------------------------------------------------- imports
def install_modules() -> None:
    import detectron2

    here = Path(detectron2.__file__).parent
    if importlib.util.find_spec("detectron2.utils.events") is None:
        sys.modules["detectron2.utils.events"] = events_standin()
    if importlib.util.find_spec("detectron2._C") is None:
        detectron2._C = sys.modules["detectron2._C"] = _installed_c(here)
    import transformers.modeling_utils as mu

    for name in MOVED_TO_PYTORCH_UTILS:
        if not hasattr(mu, name):
            import transformers.pytorch_utils as pu

            setattr(mu, name, getattr(pu, name))
    try:
        import pycocotools.ytvos  # noqa: F401
    except ImportError:
        import pycocotools

        from . import ytvos_standin

        sys.modules["pycocotools.ytvos"] = ytvos_standin
        pycocotools.ytvos = ytvos_standin


def _installed_c(tree: Path) -> types.ModuleType:
    found = [  # every installed detectron2 (an in-tree egg-info lists no _C)
        dist.locate_file(f)
        for dist in importlib.metadata.distributions(name="detectron2")
        for f in dist.files or ()
        if str(f).startswith("detectron2/_C") and str(f).endswith(".so")
    ]
    if not found:
        raise ShimError(
            f"{tree}: no compiled detectron2._C here and no installed detectron2 wheel has "
            "one; `make upstream-venv` builds UNINEXT's detectron2 from the archive"
        )
    spec = importlib.util.spec_from_file_location("detectron2._C", found[0])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# --------------------------------------------------------------------------- paths
def path_mapper(table: dict[str, str]):
    pairs = sorted(table.items(), key=lambda kv: -len(kv[0]))

    def mapped(p):
        if not isinstance(p, (str, os.PathLike)):
            return p
        s = os.fspath(p)
        for published, here in pairs:
            if s == published or s.startswith(published.rstrip("/") + "/"):
                return here + s[len(published) :]
        return p

    return mapped


def _need(module, name: str):
    if not hasattr(module, name):
        raise ShimError(f"{module.__name__}.{name}: not found (not the pinned commit?)")
    return getattr(module, name)


def map_paths(table: dict[str, str]) -> None:
    import torch
    import transformers

    mapped = path_mapper(table)
    for cls in (transformers.BertConfig, transformers.BertModel, transformers.AutoTokenizer):
        real = cls.from_pretrained.__func__

        def from_pretrained(c, path, *args, _real=real, **kwargs):
            return _real(c, mapped(path), *args, **kwargs)

        cls.from_pretrained = classmethod(from_pretrained)

    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        return real_save(obj, mapped(f), *args, **kwargs)

    torch.save = save

    ytvis = importlib.import_module("detectron2.projects.uninext.data.datasets.ytvis")
    real_load = _need(ytvis, "load_ytvis_json")

    def load_ytvis_json(json_file, image_root, *args, **kwargs):
        return real_load(mapped(json_file), mapped(image_root), *args, **kwargs)

    ytvis.load_ytvis_json = load_ytvis_json

    ytvis_eval = importlib.import_module("detectron2.projects.uninext.data.ytvis_eval")
    real_ytvos = _need(ytvis_eval, "YTVOS")
    ytvis_eval.YTVOS = lambda annotation_file=None: real_ytvos(mapped(annotation_file))


# --------------------------------------------------------------------------- cpu
def pytorch_msda(uninext_root: Path) -> None:
    """The pure-PyTorch deformable attention in place of the compiled op."""
    from . import msda_cpu

    msda_cpu.bind(uninext_root, MSDA_FUNCTIONS)
    sys.modules["MultiScaleDeformableAttention"] = msda_cpu


def cpu(uninext_root: Path) -> None:
    pytorch_msda(uninext_root)
    vid = importlib.import_module("detectron2.projects.uninext.uninext_vid")
    cls = _need(vid, "UNINEXT_VID")
    real = _need(cls, "forward_text")

    def forward_text(self, captions, device):
        return real(self, captions, self.device if device == "cuda" else device)

    cls.forward_text = forward_text


# --------------------------------------------------------------------------- main
def prepare(script: Path, args: list[str], paths: dict[str, str] | None) -> None:
    """Everything above, in this process, for ``train_net.py`` run with ``args``."""
    root = script.parents[2]  # <UNINEXT>/projects/UNINEXT/train_net.py
    sys.argv = [str(script), *args]
    sys.path[0] = str(script.parent)  # what `python train_net.py` puts first
    if str(root) not in sys.path:
        sys.path.insert(1, str(root))
    install_modules()
    # (no zip(strict=...): the uninext image runs Python 3.9)
    if any(args[i : i + 2] == ["MODEL.DEVICE", "cpu"] for i in range(len(args) - 1)):
        cpu(root)
    elif os.environ.get(MSDA_ENV) == "pytorch":
        pytorch_msda(root)
    if paths:
        map_paths(paths)


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit(f"usage: python -m {__spec__.name} TRAIN_NET ARGS...")
    script = Path(argv[0]).resolve()
    table = os.environ.get(PATHS_ENV)
    prepare(script, argv[1:], json.loads(table) if table else None)
    runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
