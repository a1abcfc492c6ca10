"""UNINEXT inference (``vit_huge``, ``convnext``): the published detectron2 run, driven from
outside, chunk by chunk.

UNINEXT is not imported: ``projects/UNINEXT/train_net.py`` runs unmodified in a child
process, steered by command-line config overrides only (inference.md §6, §9)::

    python <upstream>/UNINEXT/projects/UNINEXT/train_net.py --num-gpus 1 --eval-only --uni 1
        --config-file <upstream>/UNINEXT/projects/UNINEXT/configs/eval-vid/<backbone>.yaml
        DATASETS.TEST '("rvos-refytb-val",)' OUTPUT_DIR <work>/run MODEL.WEIGHTS <ckpt>
        SEED 42 DATALOADER.NUM_WORKERS 2

- one GPU per process (``--num-gpus 1`` runs ``main`` in-process: no DDP, so no rank
  overwrites another's dump);
- ``DATASETS.TEST`` only the Ref-YouTube-VOS set (the default list adds four Ref-DAVIS sets
  that re-save the dump and crash);
- a fixed ``SEED`` (the default -1 seeds from pid + time);
- no ``--resume``: with it a stale ``OUTPUT_DIR/last_checkpoint`` would win over
  ``MODEL.WEIGHTS``; on a fresh ``OUTPUT_DIR`` the two load the same weights.

The upstream code reads and writes fixed absolute paths; :data:`CONTAINER_PATHS` is the one
table of them and of what satisfies each. ``rvos-kit run`` turns its rows into
``docker run --volume`` options (:func:`container_mounts`); natively the child maps each
to the same place at the calls that use it (:func:`native_paths`, :mod:`.uninext_child`).
Each backbone has its own work folder (:func:`work_dir`), so convnext's dump (upstream names it
``vit_huge.pth`` for both) never lands on vit_huge's.

Bounded memory: the published evaluator keeps the whole split's dump in RAM until one
``torch.save`` at the end (~10^2 GB on the test split). Here the videos are cut into chunks
of ``--chunk-videos``; each chunk is one ``train_net.py`` run on a ``test.json`` listing
only that chunk (the same entries, ids included, that the full file has), and its dump is
handed to the model-folder writer (:class:`rvos_kit.stages.rvos.infer.core.ModelWriter`: masks +
scores, then deleted) before the next chunk. Peak memory is that of one chunk.

``test.json`` is built exactly as ``UNINEXT/conversion/convert_refytvos2ytvis_{val,test}.py``
would build it from the same meta and frames (:func:`conversion_json`; the tests compare
the bytes with the real scripts' output).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from ....errors import KitError

MODELS = {
    # model -> config under UNINEXT/projects/UNINEXT/configs/eval-vid/ (inference.md §6)
    "vit_huge": "video_joint_vit_huge_eval_rvos.yaml",
    "convnext": "video_joint_convnext_large_eval_rvos.yaml",
}
KIND = "probabilities"  # mask_logits holds sigmoid probabilities (uninext_vid.py L1345)
DATASET_NAME = "rvos-refytb-val"  # the only name uninext_vid.py's rvos branch accepts
DEFAULT_SEED = 42
DEFAULT_WORKERS = 2
PATHS_ENV = "RVOS_KIT_UNINEXT_PATHS"  # read by uninext_child
MSDA_ENV = "RVOS_KIT_UNINEXT_MSDA"  # read by uninext_child: "pytorch" on a GPU (issue 22)
DUMP_NAME = "vit_huge.pth"  # what evaluator.py L209 writes, for both backbones
CHILD = "rvos_kit.stages.rvos.infer.uninext_child"  # runs train_net.py (its docstring: the shims)

# Every absolute path the UNINEXT inference path hard-codes, and what satisfies it.
# (path inside the container, source, mode, where upstream names it). Sources:
#   pretrained:<sub>  <--pretrained>/<sub>     (the Hugging Face folder)
#   work:<sub>        <work_dir(--out)>/<sub>  (kit-owned scratch, created by the runner)
# The dataset folder is kit-owned: it holds the generated test.json and a symlink
# test/JPEGImages -> --images (mounted read-only at its own path by the runner), so one
# mount serves both ytvis.py paths and a valid run reads valid frames as "test".
BERT = "/mnt/data_16TB/lzy23/pretrained/bert-base-uncased"
DATASET_ROOT = "/mnt/data_16TB/lzy23/rvosdata/refer_youtube_vos"
DUMP_DIR = "/mnt/data_16TB/lzy23/test/model_pth"
CONTAINER_PATHS = (
    (BERT, "pretrained:bert-base-uncased", "ro",
     "uninext/models/deformable_detr/bert_model.py L17,L19; uninext/uninext_vid.py L151; "
     "uninext/data/dataset_mapper_ytbvis.py L172"),
    (DATASET_ROOT, "work:dataset", "ro",
     "uninext/data/datasets/ytvis.py L382-383 (test.json, test/JPEGImages)"),
    (DUMP_DIR, "work:model_pth", "rw",
     "detectron2/evaluation/evaluator.py L209-211 (torch.save of vit_huge.pth)"),
)  # fmt: skip


# --------------------------------------------------------------------------- json
def frame_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(H, W)`` as ``cv2.imread(path).shape[:-1]`` gives it: the decoded size, turned by
    the EXIF orientation (cv2's default IMREAD_COLOR applies it; tags 5-8 swap H and W)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
            try:
                orientation = im.getexif().get(0x0112, 1)
            except Exception:  # a broken EXIF block: cv2 ignores it too
                orientation = 1
    except FileNotFoundError:
        raise KitError(f"{path}: frame not found") from None
    except OSError as e:
        raise KitError(f"{path}: not a readable image ({e})") from None
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


def conversion_json(meta_videos: dict, images: str | os.PathLike) -> dict:
    """What ``convert_refytvos2ytvis_{val,test}.py`` writes for these meta videos (a
    ``meta_expressions.json`` ``videos`` object) and frames: one entry per expression,
    videos sorted, expressions in meta order, ``id`` counting from 1, H and W from each
    video's first meta frame."""
    doc = {"videos": [], "categories": [{"supercategory": "object", "id": 1, "name": "object"}]}
    idx = 0
    for video in sorted(meta_videos):
        entry = meta_videos[video]
        expressions = entry["expressions"]
        frames = [os.path.join(video, x + ".jpg") for x in entry["frames"]]
        if not frames:
            raise KitError(f"meta: video {video!r} lists no frames")
        h, w = frame_size(Path(images) / frames[0])
        for exp_id in expressions:
            idx += 1
            doc["videos"].append(
                {"height": h, "width": w, "length": len(frames), "file_names": frames,
                 "id": idx, "expressions": [expressions[exp_id]["exp"]], "video": video,
                 "exp_id": exp_id}
            )  # fmt: skip
    return doc


def json_bytes(doc: dict) -> bytes:
    """The bytes ``json.dump(doc, open(path, 'w'))`` writes (upstream's call)."""
    return json.dumps(doc).encode("ascii")


def subset(doc: dict, videos) -> dict:
    """The entries of ``doc`` for ``videos`` (ids kept), for one chunk or shard."""
    keep = set(videos)
    return {
        "videos": [e for e in doc["videos"] if e["video"] in keep],
        "categories": doc["categories"],
    }


# --------------------------------------------------------------------------- command
def config_file(upstream: str | os.PathLike, model: str) -> Path:
    return Path(upstream) / "UNINEXT/projects/UNINEXT/configs/eval-vid" / MODELS[model]


def command_line(
    model: str,
    upstream: str | os.PathLike,
    checkpoint: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    seed: int = DEFAULT_SEED,
    workers: int = DEFAULT_WORKERS,
    device: str = "cuda",
    python: str | None = None,
) -> list[str]:
    """The child's argv (run with cwd = ``<upstream>/UNINEXT``): ``python -m`` :data:`CHILD`
    (it meets what the tree and today's libraries lack, then runs ``train_net.py`` as
    ``__main__``) followed by exactly the ``train_net.py`` command line."""
    if model not in MODELS:
        raise KitError(f"{model!r} is not a UNINEXT model ({', '.join(MODELS)})")
    root = Path(upstream) / "UNINEXT"
    argv = [
        python or sys.executable, "-m", CHILD, str(root / "projects/UNINEXT/train_net.py"),
        "--num-gpus", "1", "--eval-only", "--uni", "1",
        "--config-file", str(config_file(upstream, model)),
        "DATASETS.TEST", f'("{DATASET_NAME}",)',
        "OUTPUT_DIR", str(output_dir),
        "MODEL.WEIGHTS", str(checkpoint),
        "SEED", str(seed),
        "DATALOADER.NUM_WORKERS", str(workers),
    ]  # fmt: skip
    if device != "cuda":
        argv += ["MODEL.DEVICE", device]
    return argv


def child_env(
    upstream: str | os.PathLike, paths: dict[str, str] | None = None, msda: str | None = None
) -> dict[str, str]:
    """``UNINEXT/`` first on PYTHONPATH: ``uninext/__init__.py`` imports ``vot_tool`` from
    there (inference.md §1.1), and ``detectron2`` is imported from the published tree
    itself. ``paths`` (``{published path: path here}``, natively) goes to the child as
    :data:`~rvos_kit.stages.rvos.infer.uninext_child.PATHS_ENV`; ``msda="pytorch"`` as
    :data:`MSDA_ENV` (the pure-PyTorch deformable attention on a GPU too)."""
    env = dict(os.environ)
    env.pop(MSDA_ENV, None)
    if msda == "pytorch":
        env[MSDA_ENV] = "pytorch"
    root = str(Path(upstream) / "UNINEXT")
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop(PATHS_ENV, None)
    if paths:
        env[PATHS_ENV] = json.dumps(paths, sort_keys=True)
    return env


# --------------------------------------------------------------------------- paths
def work_dir(out: str | os.PathLike) -> Path:
    """Kit-owned scratch beside the model folder (never inside it: DVC owns ``--out``)."""
    out = Path(out)
    return out.parent / f".{out.name}.uninext-work"


def _source(source: str, pretrained: Path, work: Path) -> Path:
    kind, _, sub = source.partition(":")
    return (pretrained if kind == "pretrained" else work) / sub


def container_mounts(out, pretrained) -> list[tuple[str, str, str]]:
    """``(host path, container path, mode)`` for every row of :data:`CONTAINER_PATHS`."""
    work, pretrained = work_dir(out).resolve(), Path(pretrained).resolve()
    return [(str(_source(src, pretrained, work)), path, mode)
            for path, src, mode, _ in CONTAINER_PATHS]  # fmt: skip


def prepare_work(out) -> list[Path]:
    """Create the work folders the mounts need (before ``docker run``: Docker would create
    a missing one as root). Returns them."""
    work = work_dir(out)
    made = []
    for _, src, _, _ in CONTAINER_PATHS:
        if src.startswith("work:"):
            p = work / src.partition(":")[2]
            p.mkdir(parents=True, exist_ok=True)
            made.append(p)
    return made


def native_paths(out, pretrained) -> dict[str, str]:
    """Natively (no container) the child maps each hard-coded path, at the calls that use
    it, to where the mount would have put it: ``{published path: path here}``."""
    return {path: host for host, path, _mode in container_mounts(out, pretrained)}


# --------------------------------------------------------------------------- running
def _write_chunk_json(dataset: Path, doc: dict, images: Path) -> None:
    from ....trees.files import atomic_write_bytes

    link = dataset / "test" / "JPEGImages"
    link.parent.mkdir(parents=True, exist_ok=True)
    target = str(Path(images).resolve())
    if (
        link.is_symlink()
        and os.readlink(link) != target
        or (link.exists() and not link.is_symlink())
    ):
        raise KitError(f"{link}: exists and is not a link to {target}; remove {dataset}")
    if not link.is_symlink():
        os.symlink(target, link)
    atomic_write_bytes(dataset / "test.json", json_bytes(doc))


def run_chunk(argv: list[str], cwd: Path, env: dict, dump: Path, log: Path) -> None:
    """One ``train_net.py`` run; its dump must appear, else one clear error."""
    dump.unlink(missing_ok=True)
    with open(log, "ab") as f:
        try:
            rc = subprocess.run(
                argv, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT
            ).returncode
        except OSError as e:
            raise KitError(f"cannot start {argv[0]}: {e}") from None
    if rc != 0:
        tail = log.read_bytes()[-1500:].decode("utf-8", "replace")
        raise KitError(f"UNINEXT train_net.py exited with {rc} (log: {log}):\n{tail}")
    if not dump.is_file():
        raise KitError(f"UNINEXT finished but wrote no {dump} (log: {log})")


def check(req) -> None:
    """Before anything runs (called by :func:`rvos_kit.stages.rvos.infer.core.infer_videos`)."""
    bert = req.pretrained / "bert-base-uncased"
    if not bert.is_dir():
        raise KitError(
            f"{bert}: not found (UNINEXT's text encoder, save_pretrained layout); "
            f"`rvos-kit fetch --used-by rvos_{req.model}` gets it"
        )


def run(req, videos, out) -> None:
    """The driver contract of :mod:`rvos_kit.stages.rvos.infer.core`: one ``train_net.py``
    run per chunk of ``req.chunk`` videos, each chunk's dump handed to ``out.add_dump``
    (converted into the model folder, then deleted) before the next chunk starts."""
    from .core import chunks

    in_container = os.environ.get("RVOS_KIT_IN_CONTAINER") == "1"
    work = work_dir(out.out_dir)
    prepare_work(out.out_dir)
    doc = conversion_json({v.name: req.meta_videos[v.name] for v in videos}, req.images)
    dataset, dump = work / "dataset", work / "model_pth" / DUMP_NAME
    paths = None if in_container else native_paths(out.out_dir, req.pretrained)
    env = child_env(req.upstream, paths, req.msda_path if req.device != "cpu" else None)
    # bytecode only from (and to) the kit's own folder: a __pycache__ file in the checked
    # tree is never read (rvos_kit/stages/rvos/infer/upstream.py)
    env["PYTHONPYCACHEPREFIX"] = str((work / "pycache").resolve())
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # the prefix fills once, for every chunk
    log = work / "train_net.log"
    log.unlink(missing_ok=True)
    names = [v.name for v in videos]
    for i, chunk in enumerate(chunks(names, req.chunk)):
        _write_chunk_json(dataset, subset(doc, chunk), req.images)
        run_dir = work / "run"
        if run_dir.exists():
            shutil.rmtree(run_dir)
        argv = command_line(req.model, req.upstream, req.checkpoint, run_dir,
                            device=req.device)  # fmt: skip
        print(f"infer {req.model}: UNINEXT chunk {i + 1} ({len(chunk)} videos)",
              file=sys.stderr, flush=True)  # fmt: skip
        run_chunk(argv, req.upstream / "UNINEXT", env, dump, log)
        mine = req.work / f"uninext-{i:05d}.pth"
        shutil.move(str(dump), mine)
        got = out.add_dump(mine)
        if sorted(got) != sorted(chunk):
            raise KitError(f"UNINEXT chunk {i + 1}: the dump holds {sorted(got)}, not {chunk}")
    shutil.rmtree(work)
