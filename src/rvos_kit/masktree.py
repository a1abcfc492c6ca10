"""Mask trees: ``<root>/<video>/<exp_id>/<frame>.png`` (spec section 2).

Reading
    :func:`read_mask` returns a boolean foreground array. The rule is the published
    scripts' one, ``np.array(Image.open(p).convert('P')) == 255`` (``foreground="255"``,
    the ``challenge2023`` default), or ``foreground="nonzero"`` for producers that write
    other values. 8-bit grayscale PNGs (what every stage writes) are decoded with OpenCV,
    which returns the stored values unchanged (``convert('P')`` of an ``L`` image is the
    identity, checked in the tests); anything else goes through PIL exactly as published.

    Fast path (written by hand, for speed): decoding a 720p mask PNG is bound by zlib's
    inflate (~1.5 ms of OpenCV's ~1.9 ms here). :func:`decode_values` therefore parses the
    chunks itself (checking every CRC), inflates with libdeflate (the ``deflate``
    package, ~0.08 ms, Adler-32 checked) and undoes the PNG row filters None/Sub/Up with
    numpy. Images that use the Average or Paeth filters (rare for masks), interlacing or
    any other layout are decoded by OpenCV instead. Both paths are compared with PIL on
    every 8-bit value in the tests.

    Files are located by *name* against meta (:func:`expression_files`), never by sorted
    position: a missing or extra PNG is an error naming the file (spec section 9.4).

Writing
    :func:`encode_mask` produces exactly the bytes of PIL saving a uint8 mode-``L`` array
    as PNG with default settings, i.e. what the published
    ``Image.fromarray(m.astype(float32) * 255).convert('L').save(p)`` writes. The bytes
    depend on Pillow's encoder and zlib, which is why Pillow is pinned. ``encoder="fast"``
    writes rows unfiltered, deflated by ISA-L at level 1: same pixels, different (not
    PIL-identical) bytes, ~30x faster to encode.

    :func:`atomic_write_bytes` writes a temp file beside the target and renames it, so a
    killed run never leaves a truncated PNG. :class:`StagedTree` builds a whole output
    tree under a hidden staging folder and moves it into place only when the stage
    succeeds, so an output root is either the previous complete tree or the new one.
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import zlib
from pathlib import Path

import cv2
import deflate
import numpy as np
from isal import isal_zlib
from PIL import Image

from .errors import KitError
from .meta import Video

FOREGROUND_RULES = ("255", "nonzero")
ENCODERS = ("pil", "fast")
_PNG_SIG = b"\x89PNG\r\n\x1a\n"

cv2.setNumThreads(1)


# ----------------------------------------------------------------------------- reading
def png_header(data: bytes, where: str | os.PathLike = "<bytes>") -> tuple[int, int, int, int]:
    """(width, height, bit depth, colour type) from a PNG's IHDR chunk."""
    if len(data) < 33 or data[:8] != _PNG_SIG or data[12:16] != b"IHDR":
        raise KitError(f"{where}: not a PNG file (bad signature or header); re-create it")
    w, h, depth, ctype = struct.unpack(">IIBB", data[16:26])
    return w, h, depth, ctype


def png_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of a PNG, read from its header only."""
    with open(path, "rb") as f:
        w, h, _, _ = png_header(f.read(33), path)
    return h, w


def _idat(data: bytes) -> bytes | None:
    """Concatenated IDAT payload of a PNG whose chunk CRCs all check, else None."""
    pos, n, parts = 8, len(data), []
    while pos + 12 <= n:
        length, ctype = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        if (
            end > n
            or zlib.crc32(data[pos + 4 : end - 4]) != struct.unpack_from(">I", data, end - 4)[0]
        ):
            return None
        if ctype == b"IDAT":
            parts.append(data[pos + 8 : end - 4])
        elif ctype == b"IEND":
            return b"".join(parts)
        pos = end
    return None


def _unfilter_gray8(raw: bytes, h: int, w: int) -> np.ndarray | None:
    """Undo PNG row filters None (0), Sub (1) and Up (2) of an 8-bit grey image; None if
    any row uses another filter."""
    rows = np.frombuffer(raw, np.uint8).reshape(h, w + 1)
    filters = rows[:, 0]
    if filters.max(initial=0) > 2:
        return None
    out = rows[:, 1:].copy()
    sub = filters == 1
    if sub.any():  # running sum along the row; uint16 accumulates ~4x faster, then wraps
        out[sub] = np.cumsum(out[sub], axis=1, dtype=np.uint16)
    for i in np.flatnonzero(filters == 2).tolist():  # add the row above (zeros above row 0)
        if i:
            np.add(out[i], out[i - 1], out=out[i])
    return out


def decode_values(data: bytes, where: str | os.PathLike = "<bytes>") -> np.ndarray | None:
    """The stored 8-bit grey values of a grayscale PNG, or None when the PNG is of another
    kind (palette, RGB, 16-bit, ...), for which the caller must use PIL's conversion."""
    w, h, depth, ctype = png_header(data, where)
    if depth != 8 or ctype != 0:
        return None
    if data[28] == 0:  # not interlaced: try the fast path
        idat = _idat(data)
        if idat is not None:
            try:
                raw = deflate.zlib_decompress(idat, h * (w + 1))
            except deflate.DeflateError:
                raw = None
            if raw is not None and len(raw) == h * (w + 1):
                arr = _unfilter_gray8(raw, h, w)
                if arr is not None:
                    return arr
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.shape != (h, w) or arr.dtype != np.uint8:
        raise KitError(f"{where}: corrupt or truncated PNG; re-create it")
    return arr


def decode_mask(data: bytes, where: str | os.PathLike = "<bytes>", foreground: str = "255"):
    """Boolean foreground mask from PNG bytes (see module docstring for the rules)."""
    arr = decode_values(data, where)
    if arr is None:
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.load()
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


def read_mask(path: str | os.PathLike, foreground: str = "255") -> np.ndarray:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise KitError(f"{path}: mask PNG not found") from None
    return decode_mask(data, path, foreground)


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
            "would silently shift frames here (spec 9.4): regenerate this expression"
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


# ----------------------------------------------------------------------------- writing
def _chunk(ctype: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + ctype
        + payload
        + struct.pack(">I", zlib.crc32(ctype + payload))
    )


def encode_mask(mask: np.ndarray, encoder: str = "pil") -> bytes:
    """PNG bytes of a mask (bool, or uint8 already 0/255) as an 8-bit grayscale image."""
    if mask.dtype == np.bool_:
        values = mask.view(np.uint8) * np.uint8(255)
    else:
        values = np.ascontiguousarray(mask, dtype=np.uint8)
    if encoder == "pil":
        buf = io.BytesIO()
        Image.fromarray(values, "L").save(buf, "PNG")
        return buf.getvalue()
    if encoder == "fast":
        # 8-bit grey, no filter, ISA-L deflate level 1 (~10x faster than zlib's): a valid
        # PNG with the same pixels, not PIL's bytes.
        h, w = values.shape
        raw = np.zeros((h, w + 1), np.uint8)
        raw[:, 1:] = values
        return b"".join(
            (
                _PNG_SIG,
                _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)),
                _chunk(b"IDAT", isal_zlib.compress(raw.tobytes(), 1)),
                _chunk(b"IEND", b""),
            )
        )
    raise KitError(f"unknown PNG encoder {encoder!r}; use one of {ENCODERS}")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder + rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_mask(path: str | os.PathLike, mask: np.ndarray, encoder: str = "pil") -> None:
    atomic_write_bytes(path, encode_mask(mask, encoder))


def copy_file_atomic(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy a file byte for byte, atomically at the destination."""
    with open(src, "rb") as f:
        atomic_write_bytes(dst, f.read())


class StagedTree:
    """Build an output tree in ``<parent>/.<name>.partial`` and move it to ``out_root``
    only on success.

    On an exception the staging folder is removed (unless ``resume``) and ``out_root``
    is left as it was. A previous run killed with SIGKILL leaves a staging folder behind:
    it is wiped at the next start, or reused when ``resume=True`` (long stages that skip
    frames already written; every file in it was written atomically).
    """

    def __init__(self, out_root: str | os.PathLike, resume: bool = False):
        self.out_root = Path(out_root)
        self.resume = resume
        self.path = self.out_root.parent / f".{self.out_root.name}.partial"

    def __enter__(self) -> StagedTree:
        self.out_root.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and not self.resume:
            shutil.rmtree(self.path)
        self.path.mkdir(exist_ok=True)
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            if not self.resume or exc_type is KitError:
                shutil.rmtree(self.path, ignore_errors=True)
            return False
        self.commit()
        return False

    def commit(self) -> None:
        old = None
        if self.out_root.exists() or self.out_root.is_symlink():
            old = self.out_root.parent / f".{self.out_root.name}.old-{os.getpid()}"
            os.replace(self.out_root, old)
        os.replace(self.path, self.out_root)
        if old is not None:
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old)
            else:
                old.unlink()
