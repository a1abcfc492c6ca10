"""PNG codec of mask trees: 8-bit grey decode at the inflate floor, PIL-identical encode.

Decoding (:func:`decode_values`)
    A 720x1280 mask PNG written by PIL is ~3 KB of deflate that expands to 0.9 MB of
    filtered rows, so decoding is bound by inflate. Measured per image on masks like real
    model output (``bench/fusion.py`` data: smooth wavy blobs saved by PIL with default
    settings, so rows use the None, Sub, Up and Paeth filters), process CPU time of 320
    images, min and median of 5 passes, 2026-11-27, this 2-core VM shared with other jobs
    (load average ~8):

    ==========================================  =====  ======
    decoder                                     min    median
    ==========================================  =====  ======
    Pillow 13.0 ``Image.open`` + load           2.76   3.14 ms
    OpenCV 5.0 ``cv2.imdecode``                 1.77   1.90 ms
    pyspng 0.1.4 (libspng) ``load``             1.49   1.54 ms
    imagecodecs 2026.3.6 ``png_decode``         1.67   1.73 ms
    imagecodecs 2026.3.6 ``spng_decode``        1.73   1.80 ms
    zlib ``decompress`` alone                   1.46   1.57 ms
    libdeflate (``deflate``) inflate alone      0.074  0.079 ms
    floor: libdeflate + one copy of the rows    0.096  0.102 ms
    this module's fast path, C unfilter         0.138  0.140 ms
    the same, numpy unfilter (the fallback)     0.381  0.386 ms
    numba 0.68 loop + libdeflate (not used)     0.29   0.31 ms
    ==========================================  =====  ======

    (fast path and floor re-measured 2026-11-27 06:37 UTC, load average ~7.7: floor
    0.106 / 0.107 ms.) Every maintained decoder is 15-30x the floor (they all inflate
    with zlib), so the fast path is written here, and kept small: the chunks are parsed
    (every CRC checked), the IDAT stream is inflated by libdeflate (Adler-32 checked), and
    the row filters (all five) are undone in place in libdeflate's output by one C loop,
    ``rvos_kit.trees._unfilter`` (``_unfilter.c``, ~60 lines, built by ``setup.py`` on ``pip
    install``; it uses only the buffer protocol): 1.3x the floor. numba was measured
    (above) and not used: 0.2-0.7 s to import and 1.4 s to compile in every process.

    Where the extension was not built (no C compiler; the uninext image's pure-Python
    wheel) the same rows are unfiltered with numpy, ~3.6x the floor: None rows stay, all
    Sub rows are one running sum along the rows, each Up row is one vector add of the row
    above (numpy's running sum down the columns is slower than this loop), and each Paeth
    row is a running sum between the positions where the row above changes value (few on
    a mask: between them Paeth predicts from the left pixel, i.e. acts as Sub), with the
    full predictor evaluated in Python integers only at those positions; images with
    Average rows (not seen on masks PIL writes) or Paeth rows with more than 64 changes
    above (photographs, noise) go to OpenCV. On either path, interlacing or any layout
    other than non-interlaced 8-bit grey is decoded by OpenCV. The tests run every
    decoding case on both unfilters and compare with PIL on every filter type.

Encoding (:func:`encode_mask`)
    ``encoder="pil"`` produces exactly the bytes of PIL saving a uint8 mode-``L`` array as
    PNG with default settings, i.e. what the published
    ``Image.fromarray(m.astype(float32) * 255).convert('L').save(p)`` writes: it *is*
    that PIL call (the bytes depend on Pillow's filter choice and zlib, which is why
    Pillow is pinned), so its cost is the floor of byte-identical output. What can be
    skipped is repeated work: :class:`EncodeCache` returns the bytes of a mask already
    encoded (empty masks, repeated frames), keyed by the mask's content.
    ``encoder="fast"`` writes rows unfiltered, deflated by ISA-L at level 1: same pixels,
    different (not PIL-identical) bytes, ~25x faster to encode.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections import OrderedDict

import cv2
import deflate
import numpy as np
from isal import isal_zlib
from PIL import Image

from ..catalog import ENCODERS  # noqa: F401 (the value set of params.yaml's encoder)
from ..errors import KitError

try:  # the compiled unfilter (setup.py); absent where the build had no C compiler
    from ._unfilter import unfilter_gray8 as _c_unfilter
except ImportError:  # the numpy path below gives the same pixels
    _c_unfilter = None

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# A Paeth row is unfiltered with one Python step per value change in the row above; past
# this many changes (not a mask) OpenCV's C loop is faster.
_PAETH_MAX_CHANGES = 64

cv2.setNumThreads(1)


# ---------------------------------------------------------------------------- decoding
def png_header(data: bytes, where: str | os.PathLike = "<bytes>") -> tuple[int, int, int, int]:
    """(width, height, bit depth, colour type) from a PNG's IHDR chunk."""
    if len(data) < 33 or data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR":
        raise KitError(f"{where}: not a PNG file (bad signature or header); re-create it")
    w, h, depth, ctype = struct.unpack(">IIBB", data[16:26])
    return w, h, depth, ctype


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


def _paeth_row(f: np.ndarray, up: np.ndarray) -> bool:
    """Undo the Paeth filter of one row in place (``f``: the filtered bytes, ``up``: the
    decoded row above); False, leaving ``f`` as it was, past ``_PAETH_MAX_CHANGES``
    changes in ``up``.

    Where ``up[i] == up[i-1]`` the predictor is the left pixel, so the row is a running
    sum of ``f`` plus a constant per stretch between changes of ``up``. At the first
    position ``s`` of a stretch the full predictor is evaluated (Python integers), with
    ``run[s-1]`` (the running sum to the left) giving both the left pixel and the
    stretch's constant: ``x[s] = f[s] + pred = run[s] + (pred - run[s-1])``."""
    changed = (up[1:] != up[:-1]).nonzero()[0]  # stretch starts - 1
    if len(changed) > _PAETH_MAX_CHANGES:
        return False
    run = f.cumsum(dtype=np.uint16)
    run_at, up_at = run.item, up.item
    offset = up_at(0)  # first pixel: left and upper-left are 0, so pred = up[0]
    if not len(changed):
        np.add(run, offset, out=f, casting="unsafe")
        return True
    offsets = [offset]
    bounds = [0]
    for e in changed.tolist():  # a stretch starts at e + 1: full predictor there
        r, b, c = run_at(e), up_at(e + 1), up_at(e)
        a = (r + offset) & 255  # the left pixel x[e]
        pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
        offset = ((a if pa <= pb and pa <= pc else b if pb <= pc else c) - r) & 255
        offsets.append(offset)
        bounds.append(e + 1)
    bounds.append(f.size)
    lengths = [bounds[k + 1] - bounds[k] for k in range(len(offsets))]
    np.add(run, np.repeat(np.array(offsets, np.uint16), lengths), out=f, casting="unsafe")
    return True


def unfilter_gray8(raw: bytearray, h: int, w: int) -> np.ndarray | None:
    """The rows of an inflated 8-bit grey, non-interlaced PNG stream (``h`` rows of a
    filter byte + ``w`` bytes), unfiltered in place in ``raw`` and returned as an (h, w + 1)
    array whose column 0 still holds the filter bytes; None when a filter byte is invalid,
    or (numpy path only) a row uses the Average filter or a Paeth row is not mask-like
    (``raw`` is then spoilt; the caller uses OpenCV). The compiled loop (every filter
    type) is used when it was built, else numpy."""
    rows = np.frombuffer(raw, np.uint8).reshape(h, w + 1)
    if _c_unfilter is not None:
        return rows if _c_unfilter(raw, h, w) else None
    return _numpy_unfilter(rows, h, w)


def _numpy_unfilter(rows: np.ndarray, h: int, w: int) -> np.ndarray | None:
    """:func:`unfilter_gray8` without the compiled loop."""
    ftype = rows[:, 0].copy()
    if ftype.max(initial=0) > 4 or (ftype == 3).any():
        return None
    out = rows[:, 1:]  # None rows are final
    sub = np.flatnonzero(ftype == 1)
    if sub.size:  # running sum along the row; uint16 accumulates faster, then wraps
        out[sub] = np.cumsum(out[sub], axis=1, dtype=np.uint16)
    dep = (ftype >= 2).nonzero()[0].tolist()  # Up and Paeth rows, in order
    if dep:
        kinds = ftype.tolist()
        last, row = -1, np.zeros(w, np.uint8)  # row: the row above row 0
        for i in dep:
            above = row if i == last + 1 else out[i - 1]
            row = out[i]
            if kinds[i] == 2:  # Up: add the row above (one numpy running sum down the
                row += above  # columns is slower than this loop)
            elif not _paeth_row(row, above):
                return None
            last = i
    return rows


def fast_decode(data: bytes, padded: bool = False) -> np.ndarray | None:
    """The grey values of a non-interlaced 8-bit grey PNG by the fast path (an (h, w)
    uint8 view with a row stride of w + 1; with ``padded``, the (h, w + 1) array itself,
    column 0 holding the filter bytes), or None when the fast path does not apply (other
    layout, Average filter, bad CRC or stream)."""
    if len(data) < 33 or data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR":
        return None
    w, h, depth, ctype, comp, filt, interlace = struct.unpack(">IIBBBBB", data[16:29])
    if (depth, ctype, comp, filt, interlace) != (8, 0, 0, 0, 0) or not w or not h:
        return None
    idat = _idat(data)
    if idat is None:
        return None
    size = h * (w + 1)
    try:
        raw = deflate.zlib_decompress(idat, size)
    except deflate.DeflateError:
        return None
    if len(raw) != size:
        return None
    rows = unfilter_gray8(raw, h, w)
    return rows if rows is None or padded else rows[:, 1:]


def decode_values(
    data: bytes, where: str | os.PathLike = "<bytes>", padded: bool = False
) -> np.ndarray | None:
    """The stored 8-bit grey values of a grayscale PNG, or None when the PNG is of another
    kind (palette, RGB, 16-bit, ...), for which the caller must use PIL's conversion.

    ``padded``: an (h, w + 1) array whose column 0 is not pixel data (values 0-4), the
    fast path's own layout; whole-array operations on it run on contiguous memory, ~1.5x
    faster than on the (h, w) view."""
    w, h, depth, ctype = png_header(data, where)
    if depth != 8 or ctype != 0:
        return None
    arr = fast_decode(data, padded)
    if arr is not None:
        return arr
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.shape != (h, w) or arr.dtype != np.uint8:
        raise KitError(f"{where}: corrupt or truncated PNG; re-create it")
    if padded:
        rows = np.zeros((h, w + 1), np.uint8)
        rows[:, 1:] = arr
        return rows
    return arr


# ---------------------------------------------------------------------------- encoding
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
                PNG_SIGNATURE,
                _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)),
                _chunk(b"IDAT", isal_zlib.compress(raw.tobytes(), 1)),
                _chunk(b"IEND", b""),
            )
        )
    raise KitError(f"unknown PNG encoder {encoder!r}; use one of {ENCODERS}")


class EncodeCache:
    """:func:`encode_mask` of boolean masks, remembering the last ``size`` distinct masks
    by content (shape + packed bits, compared in full: no hash is trusted), so that empty
    masks and repeated frames are encoded once. ``hits``/``misses`` count the calls."""

    def __init__(self, encoder: str = "pil", size: int = 32):
        if encoder not in ENCODERS:
            raise KitError(f"unknown PNG encoder {encoder!r}; use one of {ENCODERS}")
        self.encoder, self.size = encoder, size
        self._cache: OrderedDict[tuple, bytes] = OrderedDict()
        self.hits = self.misses = 0

    def __call__(self, mask: np.ndarray) -> bytes:
        key = (mask.shape, np.packbits(mask).tobytes())
        data = self._cache.get(key)
        if data is not None:
            self._cache.move_to_end(key)
            self.hits += 1
            return data
        self.misses += 1
        data = encode_mask(mask, self.encoder)
        self._cache[key] = data
        if len(self._cache) > self.size:
            self._cache.popitem(last=False)
        return data
