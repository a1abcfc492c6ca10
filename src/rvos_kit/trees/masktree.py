"""Mask trees: ``<root>/<video>/<exp_id>/<frame>.png`` (contract section 2).

Reading
    :func:`read_mask` returns a boolean foreground array. The rule is the published
    scripts' one, ``np.array(Image.open(p).convert('P')) == 255`` (``foreground="255"``,
    the ``challenge2023`` default), or ``foreground="nonzero"`` for producers that write
    other values. 8-bit grayscale PNGs (what every stage writes) are decoded by
    :mod:`rvos_kit.trees.pngcodec` (libdeflate + numpy unfiltering, OpenCV for other layouts),
    which returns the stored values unchanged (``convert('P')`` of an ``L`` image is the
    identity, checked in the tests). Under the published rule any other PNG (RGB, RGBA,
    palette, 16-bit) is an error naming the file and its mode: that rule reads a white
    RGB mask or a DAVIS-style palette mask (index 1 = object) as empty. With
    ``foreground="nonzero"`` such PNGs are read through PIL (palette: by index).

    Files are located by *name* against meta (:func:`expression_files`), never by sorted
    position: a missing or extra PNG is an error naming the file (contract section 9.4).

Writing
    :func:`encode_mask` (in :mod:`rvos_kit.trees.pngcodec`) produces exactly the bytes of PIL
    saving a uint8 mode-``L`` array as PNG with default settings, i.e. what the published
    ``Image.fromarray(m.astype(float32) * 255).convert('L').save(p)`` writes; Pillow is
    pinned for that. ``encoder="fast"``: same pixels, different bytes, much faster.

    :func:`~rvos_kit.trees.files.atomic_write_bytes` writes a temp file beside the target
    and renames it, so a killed run never leaves a truncated PNG.
    :class:`~rvos_kit.trees.staging.StagedTree` builds a whole output tree under a hidden
    staging folder and moves it into place only when the stage succeeds, so an output root
    is either the previous complete tree or the new one (and never a folder the kit did not
    create; see :mod:`rvos_kit.trees.staging`).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import KitError
from .files import atomic_write_bytes
from .meta import Video
from .pngcodec import ENCODERS as ENCODERS  # the codec, re-exported for its importers
from .pngcodec import decode_values, encode_mask, png_header
from .staging import StagedTree  # noqa: F401  (the tree-writing API lives in staging.py)

FOREGROUND_RULES = ("255", "nonzero")


# ----------------------------------------------------------------------------- reading
def png_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of a PNG, read from its header only."""
    with open(path, "rb") as f:
        w, h, _, _ = png_header(f.read(33), path)
    return h, w


def decode_mask(data: bytes, where: str | os.PathLike = "<bytes>", foreground: str = "255"):
    """Boolean foreground mask from PNG bytes (see module docstring for the rules)."""
    arr = decode_values(data, where)
    if arr is None:
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                if foreground == "255" and im.mode != "1":  # bilevel: convert('P') is 0/255
                    n = int(np.count_nonzero(np.asarray(im.convert("P")) == 255))
                    raise KitError(
                        f"{where}: mask PNG is PIL mode {im.mode}, not 8-bit grey; the "
                        "published rule (convert('P') == 255) is meant for 8-bit grey masks "
                        f"and reads {n} object pixel(s) here. If every non-zero pixel (or "
                        "palette index) is the object, pass --foreground nonzero"
                    )
                if foreground == "255":
                    arr = np.asarray(im.convert("P"))
                else:
                    arr = np.asarray(im if im.mode in ("L", "P") else im.convert("L"))
        except (OSError, ValueError, SyntaxError) as e:
            raise KitError(f"{where}: cannot decode PNG ({e}); re-create it") from None
    if foreground == "255":
        return arr == 255
    if foreground == "nonzero":
        return arr != 0
    raise KitError(f"unknown foreground rule {foreground!r}; use one of {FOREGROUND_RULES}")


def read_png_bytes(path: str | os.PathLike) -> bytes:
    """The bytes of a tree's PNG; a clean error when it is missing, a folder, unreadable."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise KitError(f"{path}: mask PNG not found") from None
    except IsADirectoryError:
        raise KitError(f"{path}: a folder where a mask PNG should be; remove it") from None
    except OSError as e:
        raise KitError(f"{path}: cannot read ({e.strerror})") from None


def read_mask(path: str | os.PathLike, foreground: str = "255") -> np.ndarray:
    return decode_mask(read_png_bytes(path), path, foreground)


def expression_dir(root: str | os.PathLike, video: str, exp_id: str) -> Path:
    return Path(root) / video / exp_id


def expression_files(root: str | os.PathLike, video: Video, exp_id: str) -> list[Path]:
    """The PNG paths of one expression, in meta frame order, after checking that the
    folder holds exactly the frames meta lists (no missing, no extra PNG)."""
    d = expression_dir(root, video.name, exp_id)
    try:
        names = os.listdir(d)
    except FileNotFoundError:
        raise KitError(
            f"{d}: expression folder missing (meta lists expression {exp_id!r} of video "
            f"{video.name!r}); produce it or pass the right --meta"
        ) from None
    except NotADirectoryError:
        raise KitError(f"{d}: expected an expression folder, found a file") from None
    present = {n[:-4] for n in names if n.endswith(".png")}
    missing = [f for f in video.frames if f not in present]
    if missing:
        raise KitError(
            f"{d / (missing[0] + '.png')}: missing ({len(missing)} of the {len(video.frames)} "
            f"frames meta lists for {video.name}/{exp_id} are absent); the published scripts "
            "would silently shift frames here (contract section 9.4): regenerate this expression"
        )
    extra = sorted(present.difference(video.frames))
    if extra:
        raise KitError(
            f"{d / (extra[0] + '.png')}: not a frame of video {video.name!r} in meta "
            f"({len(extra)} unexpected PNG(s) in {d}); remove them or pass the matching --meta"
        )
    return [d / (f + ".png") for f in video.frames]


def check_tree(root: str | os.PathLike, videos, exp_ids=None) -> None:
    """Check names (not pixels) of a whole tree against meta before any work starts.

    ``exp_ids`` maps video name -> the expression ids to check (default: all in meta)."""
    root = Path(root)
    if not root.is_dir():
        raise KitError(
            f"{root}: mask tree not found (expected <root>/<video>/<exp_id>/<frame>.png)"
        )
    for v in videos:
        for e in exp_ids[v.name] if exp_ids is not None else v.exp_ids:
            expression_files(root, v, e)


def tree_files(root: str | os.PathLike) -> set[str]:
    """Every entry of a tree below ``root``, as relative POSIX paths: files (hidden ones
    too) and folders that hold nothing (a symbolic link counts as a file, never followed)."""
    root = Path(root)
    found: set[str] = set()
    for d, dirs, files in os.walk(root):
        rel = Path(d).relative_to(root)
        found.update((rel / f).as_posix() for f in files)
        found.update((rel / x).as_posix() for x in dirs if os.path.islink(os.path.join(d, x)))
        if not dirs and not files and d != str(root):
            found.add(rel.as_posix() + "/")
    return found


def check_merged(root: str | os.PathLike, videos, what: str, exp_ids=None) -> None:
    """The check every merge runs on its result before the commit: the tree ``root``
    holds exactly ``<video>/<exp_id>/<frame>.png`` for every video of ``videos`` (a
    :class:`~rvos_kit.trees.meta.Meta` or a list of its videos), every expression
    (``exp_ids``: video name -> the expression ids it must hold; default all) and every
    frame: nothing missing, nothing else (no other video, file, temp file or empty
    folder). ``what`` names the merge in the error (e.g. the shards it joined)."""
    want = {
        f"{v.name}/{e}/{f}.png"
        for v in videos
        for e in (exp_ids.get(v.name, ()) if exp_ids is not None else v.exp_ids)
        for f in v.frames
    }
    have = tree_files(root) if Path(root).is_dir() else set()
    missing, extra = sorted(want - have), sorted(have - want)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (first: {missing[0]})")
        if extra:
            parts.append(f"{len(extra)} not in meta (first: {extra[0]})")
        raise KitError(
            f"{what}: does not hold exactly the masks meta lists: {'; '.join(parts)}; "
            "nothing was written"
        )


# ----------------------------------------------------------------------------- writing
def write_mask(path: str | os.PathLike, mask: np.ndarray, encoder: str = "pil") -> None:
    atomic_write_bytes(path, encode_mask(mask, encoder))


def copy_file_atomic(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy a file byte for byte, atomically at the destination."""
    atomic_write_bytes(dst, read_png_bytes(src))
