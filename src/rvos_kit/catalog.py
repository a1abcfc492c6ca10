"""What the kit knows about the solution, each fact in one place: the fixed value sets
(enums) and the value defaults of params.yaml, the **model catalogue** (one row per RVOS
model) and the **backend catalogue** (one row per propagation backend).

Plain Python on purpose: the verbs read their defaults from here, and they run in the
published models' images too (Python 3.10, no pydantic). The params.yaml schema built on
these facts is :mod:`rvos_kit.config`; docs/extending.md says how to add a model or a
backend (one driver file and one :func:`register_model` row).

Who reads a model row: the schema (which names may be inferred, imported or released, and
the kind each outputs), the DAG builder (the inference stage's command, pretrained deps,
the PNG-run tree), preflight (image, pretrained parts), ``rvos-kit run`` (which image a
``rvos_<model>`` stage runs in), ``rvos-kit infer`` (the driver module, the upstream
folders it verifies) and ``make-sample`` (the synthetic model's error profile).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import __version__

# ------------------------------------------------------------------ value sets
COMPAT_MODES = ("challenge2023", "corrected")
MODEL_KINDS = ("logits", "probabilities")
MODEL_SOURCES = ("tree", "imported", "released", "infer")
FUSION_SOURCES = ("compute", "released")
SPLITS = ("valid", "test")
DEVICES = ("cuda", "cpu")
PAIRINGS = ("consecutive", "none")  # stage 1/2 voting (stages/fusion.py)
ODD_RULES = ("vote", "first")
ENCODERS = ("pil", "fast")  # the PNG codec (trees/pngcodec.py)
RUNNER_MODES = ("native", "docker")
# runner.stack: ``published`` runs each GPU stage in its model's image of the published
# stack (torch 1.10/1.11 + CUDA 11.3); ``modern`` runs every GPU stage in one image of the
# current stack (runner.images.modern, docker/modern.Dockerfile).
STACKS = ("published", "modern")
# infer.msda: the compiled deformable-attention CUDA op, or the pure-PyTorch
# ms_deform_attn_core_pytorch the upstream code ships. Absent: by device (compiled on cuda,
# pytorch on cpu: what the kit always did).
MSDA_PATHS = ("compiled", "pytorch")
# Which engine code an AOT / DeAOT run reproduces (contract 5.6-5.7).
ENGINES = ("published_aot_fork", "aot_benchmark")

# ------------------------------------------------------------------ defaults
# Every value default of params.yaml, once: the schema (rvos_kit.config) declares its
# fields with these, and the verbs take their command-line defaults from here.
DEFAULTS: dict[str, dict] = {
    "": {"compat": "challenge2023", "device": "cuda", "encoder": "pil"},
    "data": {"split": "test"},
    "paths": {"lock": "checkpoints.lock", "downloads": ".", "checkpoints": "checkpoints"},
    "runner": {
        "mode": "native",
        "gpus": "all",
        "shm_size": "8g",
        "network": "none",
        "allow_mounts_outside_project": False,
        "stack": "published",
    },  # fmt: skip
    "infer": {"pretrained": "checkpoints/pretrained", "chunk_videos": 1},
    "sample": {"seed": 0, "videos": 6, "frames": 12, "height": 96, "width": 160},
    "propagation": {
        "scales": (0.8, 1.0, 1.2),
        "flip": True,
        "max_long_side": 1040,
        "engine": "published_aot_fork",
        "share_encoder": True,
        "encoder_cache_mb": None,  # caps in MiB on the measured budgets (None: measured only)
        "host_cache_mb": None,
    },  # fmt: skip
    "fusion": {
        "source": "compute",
        "pairing": "consecutive",
        "pair_threshold": 4,
        "odd": "vote",
        "odd_threshold": 3,
    },  # fmt: skip
    "submission": {"sha256": "submission.sha256"},
    "scale": {"address": "local", "shards": "auto", "max_retries": 2},
}


def default(section: str, key: str):
    """The default of ``<section>.<key>`` (``section`` "" for a top-level key)."""
    return DEFAULTS[section][key]


# ------------------------------------------------------------------ images
# runner.images: image key -> reference (the images `make images` builds).
IMAGES = {
    "rvos": f"rvos-kit/rvos:{__version__}",
    "uninext": f"rvos-kit/uninext:{__version__}",
    "modern": f"rvos-kit/modern:{__version__}",
}

# What one inference shard asks Ray for when scale.needs.infer does not say.
INFER_NEEDS = {"cpus": 4, "gpus": 1}


# ------------------------------------------------------------------ models
@dataclass(frozen=True)
class ModelRow:
    """One RVOS model the kit can infer, import or download (``models.<name>``)."""

    name: str
    kind: str  # its raw output: logits | probabilities (spec 3)
    driver: str  # module under rvos_kit.stages.rvos.infer that runs its published code
    image: str  # the runner.images key its rvos_<name> stage runs in
    upstream: tuple[str, ...] = ()  # folders of the published code it runs (verified)
    pretrained: tuple[str, ...] = ()  # what it reads under infer.pretrained
    lock: tuple[str, ...] = ()  # the checkpoints.lock entries its rvos_<name> stage reads
    png_run: str | None = None  # a second tree its inference writes (quirk 9.6)
    sample: tuple | None = None  # make-sample: P(wrong object), jitter px, P(blob), P(miss)
    label: str = ""  # for help texts

    @property
    def stage(self) -> str:
        return f"rvos_{self.name}"


SWIN_KINETICS = "swin_base_patch244_window877_kinetics400_22k.pth"
PNG_RUN_TREE = "Annotations_pngrun"  # MUTR's PNG run: input short side 432, not 360
_ROBERTA = ("roberta_base_config", "roberta_base_model", "roberta_base_tokenizer",
            "roberta_base_vocab", "roberta_base_merges")  # fmt: skip
_BERT = ("bert_base_uncased_config", "bert_base_uncased_vocab", "bert_base_uncased_model")

MODELS: dict[str, ModelRow] = {}


def register_model(row: ModelRow) -> ModelRow:
    """Add a row to the model catalogue (docs/extending.md); a name is registered once."""
    if row.name in MODELS and MODELS[row.name] != row:
        raise ValueError(f"model {row.name!r} is already in the catalogue")
    if row.kind not in MODEL_KINDS:
        raise ValueError(f"model {row.name!r}: kind must be one of {', '.join(MODEL_KINDS)}")
    if row.image not in IMAGES and row.image:
        raise ValueError(f"model {row.name!r}: image {row.image!r} is not in catalog.IMAGES")
    MODELS[row.name] = row
    return row


def unregister_model(name: str) -> None:
    """Drop a row (tests that register a toy model clean up with this)."""
    MODELS.pop(name, None)


# The five models of the published solution, in spec order (the order of make-sample's
# random streams: do not reorder).
for _row in (
    ModelRow("soc", "logits", "soc", "rvos", ("soc_test",), ("roberta-base", SWIN_KINETICS),
             ("soc", *_ROBERTA, "video_swin_base"), sample=(0.20, 2, 0.15, 0.08),
             label="SOC"),
    ModelRow("mutr", "logits", "mutr", "rvos", ("MUTR",), ("roberta-base",),
             ("mutr", *_ROBERTA), png_run=PNG_RUN_TREE, sample=(0.25, 3, 0.20, 0.10),
             label="MUTR"),
    ModelRow("referformer_ft", "logits", "referformer", "rvos", ("ReferFormer",),
             ("roberta-base",), ("referformer_ft", *_ROBERTA), sample=(0.20, 2, 0.25, 0.10),
             label="ReferFormer fine-tuned"),
    ModelRow("vit_huge", "probabilities", "uninext", "uninext", ("UNINEXT",),
             ("bert-base-uncased",), ("vit_huge", *_BERT), sample=(0.15, 2, 0.15, 0.06),
             label="UNINEXT ViT-H"),
    ModelRow("convnext", "probabilities", "uninext", "uninext", ("UNINEXT",),
             ("bert-base-uncased",), ("convnext", *_BERT), sample=(0.25, 3, 0.20, 0.12),
             label="UNINEXT ConvNeXt-L"),
):  # fmt: skip
    register_model(_row)


# ------------------------------------------------------------------ backends
@dataclass(frozen=True)
class BackendRow:
    """One propagation backend (``propagation.<prop>.backend``)."""

    name: str
    gpu: bool  # runs a network (CUDA in production): preflight checks a GPU
    image: str | None  # the runner.images key it runs in; None: natively (CPU work)
    checkpoint: str | None  # the checkpoints.lock entry of its weights
    default_model: str | None  # the network when propagation.<prop>.model is not given
    models: tuple[str, ...]  # the networks it can run (propagation.<prop>.model)
    needs: tuple[tuple[str, float], ...]  # what one shard asks Ray for (scale.needs.<name>)
    label: str = ""
    driver: str = ""  # "module:Class" under rvos_kit.stages.propagate

    @property
    def takes_model(self) -> bool:
        return self.default_model is not None


BACKENDS: dict[str, BackendRow] = {}


def register_backend(row: BackendRow) -> BackendRow:
    if row.name in BACKENDS and BACKENDS[row.name] != row:
        raise ValueError(f"backend {row.name!r} is already in the catalogue")
    if row.image is not None and row.image not in IMAGES:
        raise ValueError(f"backend {row.name!r}: image {row.image!r} is not in catalog.IMAGES")
    if not dict(row.needs).keys() == {"cpus", "gpus"}:
        raise ValueError(f"backend {row.name!r}: needs must give cpus and gpus")
    if row.gpu and not dict(row.needs)["gpus"]:
        raise ValueError(f"backend {row.name!r} runs on a GPU: its needs must ask for one")
    BACKENDS[row.name] = row
    return row


for _row in (
    BackendRow("aot", True, "rvos", "aot_swinl", "swinl_aotl",
               ("swinl_aotl", "aott", "aots", "aotb", "aotl", "r50_aotl", "r101_aotl",
                "rs101_aotl", "swinb_aotl"),
               (("cpus", 2), ("gpus", 1)), "AOT (published fork)", "aot_backend:AOTBackend"),
    BackendRow("deaot", True, "rvos", "deaot_swinl", "swinl_deaotl",
               ("swinl_deaotl", "deaott", "deaots", "deaotb", "deaotl", "r50_deaotl",
                "swinb_deaotl"),
               (("cpus", 2), ("gpus", 1)), "DeAOT", "aot_backend:AOTBackend"),
    BackendRow("flow", False, None, None, None, (), (("cpus", 1), ("gpus", 0)),
               "optical flow (CPU)", "flow_backend:FlowBackend"),
):  # fmt: skip
    register_backend(_row)


def default_needs() -> dict[str, dict]:
    """scale.needs when params.yaml does not say: per backend, and for inference."""
    return {**{b.name: dict(b.needs) for b in BACKENDS.values()}, "infer": dict(INFER_NEEDS)}


def default_stages() -> dict[str, str]:
    """runner.stages when params.yaml does not say: stage (or verb) -> image key."""
    # the sharded propagate stages: the image of the backends that have one (flow: native)
    stages = {"propagate": next(b.image for b in BACKENDS.values() if b.image)}
    stages.update({m.stage: m.image for m in MODELS.values() if m.image})
    return stages
