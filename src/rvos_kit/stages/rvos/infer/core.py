"""What every model's inference shares: input checks, video selection, the model folder
writer that streams chunks of dumps into ``Annotations/`` + ``scores.json``, and the merge
of shard folders.

The model folder is the one ``import-pth`` writes (contract section 3)::

    MODEL_DIR/Annotations/<video>/<exp_id>/<frame>.png   binarised dump (the published threshold)
    MODEL_DIR/scores.json                                {video: {exp_id: class_info}}, meta order
    MODEL_DIR/Annotations_sigmoid_odd/...                probability models only (spec 9.1)
    MODEL_DIR/Annotations_pngrun/...                     only with png_run: the tree the
                                                         published *PNG script* writes (mutr:
                                                         input short side 432; quirk 9.6)

The whole folder is built in ``.MODEL_DIR.partial`` and renamed into place at the end, so
an interrupted run never leaves a half-written model folder.
"""

from __future__ import annotations

import importlib
import math
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .... import catalog
from ....catalog import DEVICES, PNG_RUN_TREE, SPLITS
from ....errors import KitError
from ....trees.jsonfiles import read_json, write_json
from ....trees.masktree import StagedTree, check_merged, check_tree, copy_file_atomic
from ....trees.meta import Meta, Video, parse_meta
from ..dumps import _load_dump, _PageReleaser, odd_expressions, plan_dumps, write_videos

# model -> its catalogue row: driver module under rvos_kit.stages.rvos.infer, kind of its
# dump, the upstream folders it runs (rvos_kit.catalog, the model catalogue)
MODELS = catalog.MODELS
# the deformable-attention path (issue 22, catalog.MSDA_PATHS): the compiled CUDA op or the
# pure-PyTorch ms_deform_attn_core_pytorch; None = by device (compiled on cuda, pytorch on cpu)
MSDA_PATHS = catalog.MSDA_PATHS
# what a model folder may hold; anything else means --out is not a folder the kit made
_MODEL_DIR_ENTRIES = {"Annotations", "Annotations_sigmoid_odd", PNG_RUN_TREE, "scores.json"}


@dataclass
class Request:
    """Everything a driver needs; paths are absolute."""

    model: str
    meta: Meta
    meta_videos: dict  # json.load(meta)["videos"]: what the upstream workers index
    images: Path  # <images>/<video>/<frame>.jpg (the split's JPEGImages)
    split: str
    upstream: Path
    checkpoint: Path
    pretrained: Path
    device: str = "cuda"
    png_run: bool = False
    chunk: int = 1  # videos per call of the upstream worker (bounds host memory)
    work: Path = field(default_factory=Path)  # scratch folder inside the staging folder
    msda: str | None = None  # MSDA_PATHS; None = by device

    @property
    def msda_path(self) -> str:
        """The deformable-attention path this run takes (see :data:`MSDA_PATHS`)."""
        return self.msda or ("compiled" if self.device == "cuda" else "pytorch")

    @property
    def kind(self) -> str:
        return MODELS[self.model].kind


def load_driver(model: str):
    """The driver module of ``model`` (``rvos_kit.stages.rvos.infer.<name>``)."""
    if model not in MODELS:
        raise KitError(f"unknown model {model!r}; use one of {', '.join(MODELS)}")
    name = MODELS[model].driver
    try:
        return importlib.import_module(f"rvos_kit.stages.rvos.infer.{name}")
    except ModuleNotFoundError as e:
        if e.name == f"rvos_kit.stages.rvos.infer.{name}":
            raise KitError(
                f"infer --model {model}: not available yet (no driver {name}.py)"
            ) from None
        raise


def chunks(items: list, n: int):
    for i in range(0, len(items), max(1, n)):
        yield items[i : i + max(1, n)]


def shard_videos(names: list[str], shard: int, of: int) -> list[str]:
    """Part ``shard`` (1-based) of ``of`` contiguous parts of ``names`` (meta order);
    sizes differ by at most one, earlier parts are the larger."""
    if not 1 <= shard <= of:
        raise KitError(f"--shard {shard}/{of}: need 1 <= I <= N")
    q, r = divmod(len(names), of)
    start = (shard - 1) * q + min(shard - 1, r)
    return names[start : start + q + (1 if shard <= r else 0)]


def select_videos(meta: Meta, videos=None, shard: tuple[int, int] | None = None) -> list[Video]:
    """Meta's videos (meta order), restricted to ``videos`` (names) and then to a shard."""
    names = [v.name for v in meta]
    if videos is not None:
        wanted = list(dict.fromkeys(videos))
        unknown = [v for v in wanted if v not in set(names)]
        if unknown:
            raise KitError(f"--videos: {unknown[0]!r} is not in meta ({len(unknown)} such)")
        names = [n for n in names if n in set(wanted)]
    if shard is not None:
        names = shard_videos(names, *shard)
    keep = set(names)
    return [v for v in meta if v.name in keep]


def _check_frames(images: Path, videos: list[Video]) -> None:
    if not images.is_dir():
        raise KitError(f"{images}: --images folder not found (<images>/<video>/<frame>.jpg)")
    for v in videos:
        for f in v.frames:
            p = images / v.name / f"{f}.jpg"
            if not p.is_file():
                raise KitError(
                    f"{p}: frame missing (meta lists it for video {v.name!r}); pass the "
                    "JPEGImages folder of the split this meta is for"
                )


def _check_out(out_dir: Path) -> None:
    if out_dir.is_file():
        raise KitError(f"{out_dir}: --out is a file; it must be a model folder")
    if out_dir.is_dir():
        other = sorted(set(os.listdir(out_dir)) - _MODEL_DIR_ENTRIES)
        if other:
            raise KitError(
                f"{out_dir}: holds {other[0]!r}, so it is not a model folder the kit wrote; "
                "refusing to replace it (pick an empty or new --out)"
            )


class ModelWriter:
    """Builds a model folder for ``videos`` from the upstream dumps a driver hands in, one
    chunk at a time (:meth:`add_dump`), plus named extra trees (:meth:`tree`)."""

    def __init__(self, out_dir, videos: list[Video], kind: str, encoder: str = "pil",
                 keep_dumps=None, on_video=None):  # fmt: skip
        self.out_dir = Path(out_dir)
        self.videos = videos
        self.kind = kind
        self.encoder = encoder
        self.keep_dumps = Path(keep_dumps) if keep_dumps else None
        self.stage = StagedTree(self.out_dir)
        self.scores: dict[str, dict] = {}
        self.trees: list[str] = []
        self.n_masks = 0
        self._byname = {v.name: v for v in videos}
        self.on_video = on_video  # called with each video's name once its dump is written

    def __enter__(self) -> ModelWriter:
        _check_out(self.out_dir)
        self.stage.__enter__()
        self.ann = self.stage.path / "Annotations"
        self.ann.mkdir()
        self.odd = None
        if self.kind == "probabilities":
            self.odd = self.stage.path / "Annotations_sigmoid_odd"
            self.odd.mkdir()
        self.work = self.stage.path / ".work"
        self.work.mkdir()
        return self

    def add_dump(self, path) -> list[str]:
        """Convert one upstream dump (``{video: {exp_id: {mask_logits, class_info}}}`` holding
        complete videos of this request, none seen before) and delete it (or move it to
        ``keep_dumps``). Returns the videos it held."""
        path = Path(path)
        dump = _load_dump(path, trusted=True)  # its own run's dump (torch < 2.4 in images)
        if not isinstance(dump, dict):
            raise KitError(f"{path}: the upstream worker wrote {type(dump).__name__}, not a dict")
        names = [str(k) for k in dump]
        for n in names:
            if n not in self._byname:
                raise KitError(f"{path}: video {n!r} was not asked for")
            if n in self.scores:
                raise KitError(f"{path}: video {n!r} was already written by an earlier chunk")
        chunk = [self._byname[n] for n in names]
        plan_dumps([dump], Meta(tuple(chunk)), [path])
        odd = self.odd if self.odd is not None else None
        self.n_masks += write_videos(
            dump, path, chunk, self.kind, self.ann, odd, self.scores, self.encoder,
            _PageReleaser([path]),
        )  # fmt: skip
        del dump
        if self.keep_dumps is not None:
            self.keep_dumps.mkdir(parents=True, exist_ok=True)
            shutil.move(str(path), self.keep_dumps / path.name)
        else:
            path.unlink()
        for n in names if self.on_video else ():
            self.on_video(n)
        return names

    def tree(self, name: str) -> Path:
        """Staging path of an extra tree ``MODEL_DIR/<name>`` that the driver fills."""
        if name in _MODEL_DIR_ENTRIES - {PNG_RUN_TREE}:
            raise KitError(f"internal: {name} is written from the dumps")
        p = self.stage.path / name
        p.mkdir(exist_ok=True)
        if name not in self.trees:
            self.trees.append(name)
        return p

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            try:
                self._finish()
            except BaseException:
                self.stage.__exit__(*sys.exc_info())
                raise
        return self.stage.__exit__(exc_type, exc, tb)

    def _finish(self) -> None:
        missing = [v.name for v in self.videos if v.name not in self.scores]
        if missing:
            raise KitError(
                f"the upstream worker returned no dump for {len(missing)} of the "
                f"{len(self.videos)} videos (first: {missing[0]!r})"
            )
        shutil.rmtree(self.work)
        check_merged(self.ann, self.videos, f"infer -> {self.out_dir} (Annotations/)")
        for name in self.trees:
            check_tree(self.stage.path / name, self.videos)
        ordered = {v.name: self.scores[v.name] for v in self.videos}
        write_json(self.stage.path / "scores.json", ordered)


def load_meta_file(path) -> tuple[Meta, dict]:
    obj = read_json(path, "meta_expressions file")
    return parse_meta(obj, str(path)), obj["videos"]


def infer_videos(
    model: str,
    videos: list[str] | None,
    *,
    meta,
    images,
    split: str,
    upstream,
    checkpoint,
    pretrained,
    out_dir,
    device: str = "cuda",
    png_run: bool = False,
    chunk: int = 1,
    keep_dumps=None,
    encoder: str = "pil",
    msda: str | None = None,
    on_video=None,
) -> dict:
    """Run the published inference code of ``model`` on ``videos`` (names from the meta
    file ``meta``; ``None`` = all) and write the model folder ``out_dir`` for exactly
    those videos.

    - The upstream folder is checked against the pinned commit before anything of it
      is imported (:func:`rvos_kit.stages.rvos.infer.upstream.verify_upstream`).
    - The upstream worker is called on ``chunk`` videos at a time; each chunk's dump is
      converted into the tree and ``scores.json`` and deleted before the next, so host
      memory is bounded by one chunk, whatever the number of videos.
    - Output depends only on the videos, not on how they are grouped: folders written
      for disjoint subsets and joined with :func:`merge_shards` are byte-identical to
      one run over their union (the scale helper calls this per shard).
    - ``on_video(name)`` is called as each video's masks are written (a shard's progress).

    Returns ``{"videos", "masks", "verified"}``.
    """
    from .upstream import verify_upstream

    if model not in MODELS:
        raise KitError(f"unknown model {model!r}; use one of {', '.join(MODELS)}")
    if split not in SPLITS:
        raise KitError(f"unknown split {split!r}; use one of {SPLITS}")
    if device not in DEVICES:
        raise KitError(f"unknown device {device!r}; use one of {DEVICES}")
    if chunk < 1:
        raise KitError("chunk must be >= 1 video")
    if msda is not None and msda not in MSDA_PATHS:
        raise KitError(f"unknown msda path {msda!r}; use one of {MSDA_PATHS}")
    if msda == "compiled" and device == "cpu":
        raise KitError(
            "--msda compiled needs --device cuda (the compiled op has CUDA kernels only); "
            "use --msda pytorch, or leave --msda out to choose by device"
        )
    meta_path = Path(meta).resolve()
    full_meta, meta_videos = load_meta_file(meta_path)
    chosen = select_videos(full_meta, videos)
    images, upstream = Path(images).resolve(), Path(upstream).resolve()
    checkpoint, pretrained = Path(checkpoint).resolve(), Path(pretrained).resolve()
    out_dir = Path(out_dir).resolve()
    _check_frames(images, chosen)
    if not checkpoint.is_file():
        raise KitError(f"{checkpoint}: --checkpoint file not found")
    if not pretrained.is_dir():
        raise KitError(f"{pretrained}: --pretrained folder not found")
    driver = load_driver(model)
    verified = verify_upstream(upstream, MODELS[model].upstream)
    print(f"infer {model}: upstream {verified}", file=sys.stderr)
    req = Request(
        model=model, meta=Meta(tuple(chosen)), meta_videos=meta_videos, images=images,
        split=split, upstream=upstream, checkpoint=checkpoint, pretrained=pretrained,
        device=device, png_run=png_run, chunk=chunk, msda=msda,
    )  # fmt: skip
    if hasattr(driver, "check"):
        driver.check(req)
    with ModelWriter(out_dir, chosen, req.kind, encoder, keep_dumps, on_video) as w:
        req.work = w.work
        if png_run:
            w.tree(PNG_RUN_TREE)  # present (maybe empty) in every shard
        if chosen:
            driver.run(req, chosen, w)
        n = w.n_masks
    return {"videos": len(chosen), "masks": n, "verified": verified}


def _shard_scores(d: Path, byname: dict[str, Video]) -> dict:
    """A shard's ``scores.json``, checked: ``{video of meta: {every exp_id of it: one
    finite score per frame}}``."""
    path = d / "scores.json"
    s = read_json(path, "shard scores.json")
    if not isinstance(s, dict):
        raise KitError(f"{path}: not {{video: {{exp_id: [scores]}}}}")
    for vid, per in s.items():
        v = byname.get(vid)
        if v is None:
            raise KitError(f"{path}: video {vid!r} is not in meta")
        if not isinstance(per, dict) or set(per) != set(v.exp_ids):
            got = sorted(per) if isinstance(per, dict) else type(per).__name__
            raise KitError(
                f"{path}: {vid} has expressions {got}, meta lists {list(v.exp_ids)}; "
                "re-run that shard"
            )
        for e, vals in per.items():
            ok = isinstance(vals, list) and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                for x in vals
            )
            if not ok or len(vals) != len(v.frames):
                n = len(vals) if isinstance(vals, list) else type(vals).__name__
                raise KitError(
                    f"{path}: {vid}/{e} holds {n} scores, not {len(v.frames)} finite numbers "
                    "(one per frame meta lists); the shard is truncated or damaged: re-run it"
                )
    return s


def _tree_expressions(name: str, videos: list[Video]) -> dict[str, list[str]] | None:
    """What tree ``name`` of a model folder holds per video (None: every expression)."""
    if name != "Annotations_sigmoid_odd":
        return None
    odd = odd_expressions(Meta(tuple(videos)))
    return {v.name: [e for e in v.exp_ids if (v.name, e) in odd] for v in videos}


def _check_shard(d: Path, mine: list[Video], trees: set[str], owner: dict, dirs: list):
    """A shard's trees hold exactly the videos its scores.json lists (a copy of another
    shard's video names both shards), and exactly their masks."""
    names = {v.name for v in mine}
    for name in sorted(trees):
        root = d / name
        for vid in sorted(set(os.listdir(root)) - names):
            if vid in owner:
                raise KitError(
                    f"{root / vid}: video {vid!r} is in two shards, {dirs[owner[vid]]} "
                    f"(whose scores.json lists it) and {d}; pass shards of disjoint videos"
                )
            raise KitError(
                f"{root / vid}: not a video of this shard (its scores.json does not list "
                f"{vid!r}); remove it or re-run the shard"
            )
        check_merged(root, mine, f"shard {d} ({name}/)", _tree_expressions(name, mine))


def merge_shards(shard_dirs, meta, out_dir, videos: list[str] | None = None) -> dict:
    """Join model folders written for disjoint subsets of videos into one model folder
    for ``videos`` (default: every video of ``meta``): trees are unioned file by file,
    ``scores.json`` is rewritten in meta order. Byte-identical to one run over them all.

    Each shard is checked first: only model-folder entries, a ``scores.json`` with one
    finite score per frame of every expression of its videos, trees that hold exactly
    those videos' masks; a video in two shards is an error naming both. The merged folder
    is checked against meta before the commit
    (:func:`~rvos_kit.trees.masktree.check_merged`)."""
    meta_obj, _ = load_meta_file(Path(meta))
    want = select_videos(meta_obj, videos)
    byname = {v.name: v for v in meta_obj}
    dirs = [Path(d) for d in shard_dirs]
    owner: dict[str, int] = {}
    scores: dict[str, dict] = {}
    trees: set[str] | None = None
    for i, d in enumerate(dirs):
        if not d.is_dir():
            raise KitError(f"{d}: shard folder not found")
        junk = sorted(set(os.listdir(d)) - _MODEL_DIR_ENTRIES)
        if junk:
            raise KitError(
                f"{d / junk[0]}: not part of a model folder (a shard holds only "
                f"{', '.join(sorted(_MODEL_DIR_ENTRIES))}); remove it or pass the right shard"
            )
        s = _shard_scores(d, byname)
        for vid in s:
            if vid in owner:
                raise KitError(f"{d}: video {vid!r} is also in shard {dirs[owner[vid]]}")
            owner[vid] = i
        scores.update(s)
        names = {p.name for p in d.iterdir() if p.name.startswith("Annotations")}
        for n in names:
            if not (d / n).is_dir() or (d / n).is_symlink():
                raise KitError(f"{d / n}: not a folder")
        if trees is None:
            trees = names
        elif names != trees:
            raise KitError(f"{d}: holds trees {sorted(names)}, unlike {dirs[0]} ({sorted(trees)})")
    wanted = {v.name for v in want}
    extra = sorted(set(owner) - wanted)
    if extra:
        raise KitError(f"{dirs[owner[extra[0]]]}: video {extra[0]!r} is not asked for")
    missing = [v.name for v in want if v.name not in owner]
    if missing:
        raise KitError(f"the shards hold no video {missing[0]!r} ({len(missing)} missing)")
    for i, d in enumerate(dirs):
        mine = [v for v in want if owner[v.name] == i]
        _check_shard(d, mine, trees or set(), owner, dirs)
    _check_out(Path(out_dir))
    n = 0
    with StagedTree(Path(out_dir)) as st:
        for name in sorted(trees or ()):
            (st.path / name).mkdir()
            for v in want:
                src = dirs[owner[v.name]] / name / v.name
                if not src.is_dir():
                    continue  # e.g. Annotations_sigmoid_odd holds only odd expressions
                for e in sorted(os.listdir(src)):
                    (st.path / name / v.name / e).mkdir(parents=True)
                    for f in sorted(os.listdir(src / e)):
                        copy_file_atomic(src / e / f, st.path / name / v.name / e / f)
                        n += 1
            where = f"infer-merge -> {out_dir} ({name}/)"
            check_merged(st.path / name, want, where, _tree_expressions(name, want))
        write_json(st.path / "scores.json", {v.name: scores[v.name] for v in want})
    return {"videos": len(want), "files": n, "shards": len(dirs)}
