"""``rvos-kit import-pth``: the original RVOS ``.pth`` dumps as a model folder (the
``imported`` source of a model; ``rvos-kit infer`` writes its folder with the same code).

Converts an original RVOS dump ``{video: {exp_id: {"mask_logits": FloatTensor[T,H,W],
"class_info": [T floats]}}}`` (one file, or the published split chunks) into
``MODEL_DIR/Annotations/`` (binarised exactly as contract section 3: logit models
``torch.sigmoid(x.float()) > 0.5``, probability models ``p > 0.5``) and
``MODEL_DIR/scores.json`` (``{video: {exp_id: class_info}}``). For probability models
it also writes ``MODEL_DIR/Annotations_sigmoid_odd/``: for the trailing odd expression
of each video with an odd number of expressions, ``torch.sigmoid(p.float()) > 0.5``,
the mask the published stage-1 odd branch used (contract section 9.1; ``vote --odd-from``).
Dumps are read with ``torch.load(mmap=True, weights_only=True)`` one frame at a time,
and the pages of each frame are handed back to the kernel once written, so peak memory
stays at a few frames whatever the size of the dump.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

from ... import catalog
from ...argtypes import declare_paths
from ...errors import KitError
from ...trees.jsonfiles import write_json
from ...trees.masktree import StagedTree, write_mask
from ...trees.meta import Meta, load_meta

KINDS = ("logits", "probabilities")


# ----------------------------------------------------------------------------- import-pth
class _PageReleaser:
    """Hands the pages of an mmap'ed tensor back to the kernel (``madvise(DONTNEED)``)
    once they have been read, so the resident size does not grow with the dump.

    Only ranges inside a mapping of one of ``files`` (read off ``/proc/self/maps``) are
    ever released: on a private, never-written file mapping DONTNEED just drops clean
    pages, which are read again from the file if touched. Anywhere else (another OS, an
    anonymous buffer) it does nothing."""

    def __init__(self, files):
        self.ranges: list[tuple[int, int]] = []
        self.madvise = None
        try:
            import ctypes
            import mmap

            self.page = mmap.PAGESIZE
            self.flag = getattr(mmap, "MADV_DONTNEED", None)
            libc = ctypes.CDLL(None, use_errno=True)
            libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
            libc.madvise.restype = ctypes.c_int
            wanted = {os.path.realpath(f) for f in files}
            with open("/proc/self/maps") as f:
                for line in f:
                    fields = line.split(maxsplit=5)
                    if len(fields) == 6 and fields[5].strip() in wanted:
                        lo, hi = (int(x, 16) for x in fields[0].split("-"))
                        self.ranges.append((lo, hi))
            if self.flag is not None and self.ranges:
                self.madvise = libc.madvise
        except (OSError, AttributeError):
            self.madvise = None

    def __call__(self, t) -> None:
        if self.madvise is None or t.numel() == 0:
            return
        start = t.data_ptr()
        end = start + t.numel() * t.element_size()
        lo = start - start % self.page
        hi = end + (-end) % self.page
        for a, b in self.ranges:
            if a <= lo and hi <= b:
                self.madvise(lo, hi - lo, self.flag)
                return


def _load_dump(path: Path, trusted: bool = False):
    """``trusted``: a dump the kit's own inference run has just written. On a torch without
    ``weights_only`` allow-lists (< 2.4: the images' 1.10 and 1.11) only such a dump is
    loaded, with a plain ``torch.load`` (no mmap before 2.1: one chunk in memory)."""
    import pickle

    import torch

    if not hasattr(torch.serialization, "safe_globals"):
        if not trusted:
            raise KitError(
                f"{path}: loading a dump safely (weights_only) needs torch >= 2.4, this is "
                f"{torch.__version__}; run import-pth natively (.venv)"
            )
        return torch.load(path, map_location="cpu")

    safe = []
    try:  # class_info saved as numpy scalars: allow exactly those reconstructors
        import numpy as np

        scalar = np._core.multiarray.scalar
        safe = [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype]
        safe += [getattr(np.dtypes, n) for n in ("Float32DType", "Float64DType", "Float16DType")]
    except AttributeError:  # pragma: no cover - other numpy layouts
        pass
    try:
        with torch.serialization.safe_globals(safe):
            return torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except FileNotFoundError:
        raise KitError(f"{path}: dump not found") from None
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()
        hint = next((ln.strip() for ln in first if "Unsupported global" in ln), first[0])
        raise KitError(
            f"{path}: holds objects other than tensors, dicts, lists and numbers, so it is "
            f"not loaded (weights_only): {hint[:200]}"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise KitError(
            f"{path}: cannot be memory-mapped as a torch.save zip archive ({msg}); the kit "
            "needs the default (zip) format of torch >= 1.6"
        ) from None


def _scores(raw, where: str, n: int) -> list[float]:
    import torch

    if isinstance(raw, torch.Tensor):
        if raw.dim() != 1:
            raise KitError(f"{where}: class_info must be 1-D, got shape {tuple(raw.shape)}")
        vals = raw.double().tolist()
    elif isinstance(raw, (list, tuple)):
        vals = []
        for v in raw:
            if isinstance(v, torch.Tensor) and v.numel() == 1:
                v = v.item()
            try:
                if isinstance(v, (bool, str)):
                    raise TypeError
                vals.append(float(v))
            except (TypeError, ValueError):
                raise KitError(f"{where}: class_info holds {v!r}, not a number") from None
    else:
        raise KitError(f"{where}: class_info must be a list of floats, got {type(raw).__name__}")
    if len(vals) != n:
        raise KitError(f"{where}: class_info has {len(vals)} scores but mask_logits {n} frames")
    bad = [v for v in vals if not math.isfinite(v)]
    if bad:
        raise KitError(f"{where}: class_info holds {bad[0]!r}")
    return vals


def plan_dumps(dumps: list, meta: Meta, where_files: list[Path]) -> dict[str, int]:
    """Check every dump's structure against meta before any work: ``{video: dump index}``.
    Looks at shapes and dtypes only (no tensor data is read)."""
    import torch

    owner: dict[str, int] = {}
    meta_names = {v.name: v for v in meta}
    if len(dumps) != len(where_files):  # zip(strict=) is 3.10+ (the uninext image: 3.9)
        raise ValueError("one path per dump")
    for i, (d, path) in enumerate(zip(dumps, where_files)):  # noqa: B905
        if not isinstance(d, dict):
            raise KitError(f"{path}: expected {{video: {{exp_id: {{mask_logits, class_info}}}}}}")
        for vid, exps in d.items():
            where = f"{path}: video {vid!r}"
            if vid in owner:
                raise KitError(
                    f"{where} is also in {where_files[owner[vid]]}: a video must be in one "
                    "chunk only; pass each split chunk once"
                )
            v = meta_names.get(vid)
            if v is None:
                raise KitError(f"{where} is not in meta; pass the meta of this dump's split")
            if not isinstance(exps, dict):
                raise KitError(f"{where}: expected {{exp_id: {{mask_logits, class_info}}}}")
            keys = [str(k) for k in exps]
            missing = [e for e in v.exp_ids if e not in keys]
            extra = [k for k in keys if k not in v.exp_ids]
            if missing or extra:
                what = f"lacks expression {missing[0]!r}" if missing else f"has {extra[0]!r}"
                raise KitError(f"{where} {what}, unlike meta ({list(v.exp_ids)})")
            for k, entry in exps.items():
                w = f"{path}: {vid}/{k}"
                if not isinstance(entry, dict) or "mask_logits" not in entry:
                    raise KitError(f'{w}: expected {{"mask_logits": tensor, "class_info": [...]}}')
                x = entry["mask_logits"]
                if not isinstance(x, torch.Tensor) or x.dim() != 3 or not x.is_floating_point():
                    shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                    raise KitError(
                        f"{w}: mask_logits must be a float tensor [T, H, W], got {shape}"
                    )
                if x.shape[0] != len(v.frames):
                    raise KitError(
                        f"{w}: mask_logits has {x.shape[0]} frames but meta lists "
                        f"{len(v.frames)} for video {vid!r}; pass the matching --meta"
                    )
                if "class_info" not in entry:
                    raise KitError(f"{w}: no class_info")
            owner[vid] = i
    missing = [v.name for v in meta if v.name not in owner]
    if missing:
        raise KitError(
            f"the dump(s) hold {len(owner)} of the {len(meta)} videos meta lists (first "
            f"missing: {missing[0]!r}); pass every split chunk, or the meta of their split"
        )
    return owner


def odd_expressions(meta: Meta) -> set[tuple[str, str]]:
    """(video, exp_id) of the trailing expression of each video with an odd count."""
    return {(v.name, v.exp_ids[-1]) for v in meta if len(v.exp_ids) % 2 == 1}


def write_videos(
    dump: dict, where, videos, kind: str, ann_root: Path, odd_root: Path | None,
    scores: dict, encoder: str = "pil", release=None, bar=None,
) -> int:  # fmt: skip
    """Binarise every expression of ``videos`` (meta :class:`Video` s, all in ``dump``, which
    :func:`plan_dumps` has checked) into ``ann_root/<video>/<exp_id>/<frame>.png``, and for
    probability models the trailing odd expressions also into ``odd_root``; record each
    expression's ``class_info`` in ``scores[video][exp_id]``. Returns the number of masks.
    Shared by ``import-pth`` and ``infer`` (which streams one chunk of videos at a time)."""
    import torch

    odd = odd_expressions(videos) if kind == "probabilities" else set()
    n_masks = 0
    for v in videos:
        exps = {str(k): e for k, e in dump[v.name].items()}
        scores[v.name] = {}
        for e in v.exp_ids:
            entry = exps[e]
            x = entry["mask_logits"]
            scores[v.name][e] = _scores(entry["class_info"], f"{where}: {v.name}/{e}", x.shape[0])
            d = ann_root / v.name / e
            d.mkdir(parents=True)
            d_odd = None
            if (v.name, e) in odd:
                d_odd = odd_root / v.name / e
                d_odd.mkdir(parents=True)
            for t, frame in enumerate(v.frames):
                f = x[t]
                if kind == "logits":
                    m = torch.sigmoid(f.float()) > 0.5
                else:
                    m = f > 0.5
                write_mask(d / f"{frame}.png", m.numpy(), encoder)
                if d_odd is not None:
                    m_odd = torch.sigmoid(f.float()) > 0.5
                    write_mask(d_odd / f"{frame}.png", m_odd.numpy(), encoder)
                n_masks += 1
                if release is not None:
                    release(f)
            del x, entry
            if bar is not None:
                bar.update(1)
    return n_masks


def import_pth(dump_paths, kind: str, out_dir, meta: Meta, encoder: str = "pil") -> dict:
    from tqdm import tqdm

    if kind not in KINDS:
        raise KitError(f"unknown --kind {kind!r}; use one of {KINDS}")
    paths = [Path(p) for p in dump_paths]
    if len({os.path.realpath(p) for p in paths}) != len(paths):
        raise KitError("the same dump file is given twice")
    out_dir = Path(out_dir)
    dumps = [_load_dump(p) for p in paths]
    owner = plan_dumps(dumps, meta, paths)
    release = _PageReleaser(paths)
    odd = odd_expressions(meta) if kind == "probabilities" else set()

    scores: dict[str, dict[str, list[float]]] = {}
    n_masks = 0
    # One unit: Annotations, Annotations_sigmoid_odd and scores.json appear together.
    with StagedTree(out_dir) as model_dir:
        ann_root = model_dir.path / "Annotations"
        odd_root = model_dir.path / "Annotations_sigmoid_odd"
        bar = tqdm(
            total=sum(len(v.exp_ids) for v in meta),
            desc=f"import {kind}",
            unit="expr",
            file=sys.stderr,
        )
        with bar:
            for v in meta:
                i = owner[v.name]
                n_masks += write_videos(
                    dumps[i], paths[i], [v], kind, ann_root,
                    odd_root if kind == "probabilities" else None, scores, encoder, release, bar,
                )  # fmt: skip
        if kind == "probabilities":
            odd_root.mkdir(exist_ok=True)
        write_json(model_dir.path / "scores.json", scores)
    return {"videos": len(meta), "masks": n_masks, "odd": len(odd)}


def run_import_pth(args) -> int:
    meta = load_meta(args.meta)
    r = import_pth(args.dumps, args.kind, args.out, meta, args.encoder)
    extra = (
        f"; Annotations_sigmoid_odd holds {r['odd']} trailing odd expressions (quirk 9.1)"
        if args.kind == "probabilities"
        else ""
    )
    print(
        f"{r['masks']} masks of {r['videos']} videos -> {Path(args.out) / 'Annotations'}, "
        f"scores.json{extra}"
    )
    return 0


# ----------------------------------------------------------------------------- CLI
def register(sub) -> None:
    p = sub.add_parser(
        "import-pth",
        help="convert original RVOS .pth dumps into Annotations/ + scores.json",
        description=__doc__,
    )
    p.add_argument("dumps", nargs="+", metavar="DUMP.pth", help="one dump, or all split chunks")
    p.add_argument(
        "--kind",
        required=True,
        choices=KINDS,
        help=" or ".join(
            f"{k} ({', '.join(n for n, r in catalog.MODELS.items() if r.kind == k)})"
            for k in catalog.MODEL_KINDS
        ),
    )
    p.add_argument("--out", required=True, help="model folder: gets Annotations/, scores.json")
    p.add_argument(
        "--meta", required=True, help="meta_expressions.json (frame names, expression order)"
    )
    p.add_argument(
        "--encoder",
        choices=("pil", "fast"),
        default="pil",
        help="PNG encoder: pil = the published bytes (default), fast = same pixels",
    )
    declare_paths(p, reads=("dumps", "meta"), writes=("out",))
    p.set_defaults(func=run_import_pth)
