"""PNG codec: the fast grey decoder equals PIL on every filter type; PIL-identical encoding."""

from __future__ import annotations

import importlib.util
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rvos_kit.errors import KitError
from rvos_kit.trees import pngcodec
from rvos_kit.trees.pngcodec import EncodeCache, decode_values, encode_mask, fast_decode
from rvos_kit.trees.synthetic import ellipse

ROOT = Path(__file__).resolve().parents[1]


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_fusion", ROOT / "bench" / "fusion.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(params=["c", "numpy"])
def unfilter(request, monkeypatch):
    """Each decoding test runs on the compiled unfilter (setup.py builds it wherever a C
    compiler exists, as here and in CI) and on the numpy path that replaces it elsewhere."""
    if request.param == "c":
        assert pngcodec._c_unfilter is not None, "rvos_kit.trees._unfilter was not built"
    else:
        monkeypatch.setattr(pngcodec, "_c_unfilter", None)
    return request.param


# ---------------------------------------------- an independent PNG writer (spec 9, 10)
def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def filtered_png(arr: np.ndarray, filters, idat_chunks: int = 1) -> bytes:
    """An 8-bit grey PNG of ``arr`` whose row i uses filter type ``filters[i]``, written
    from the PNG specification with plain Python loops."""
    h, w = arr.shape
    img = arr.astype(int).tolist()
    raw = bytearray()
    for y in range(h):
        ftype = int(filters[y])
        up = img[y - 1] if y else [0] * w
        row = img[y]
        raw.append(ftype)
        for x in range(w):
            a = row[x - 1] if x else 0
            b = up[x]
            c = up[x - 1] if x else 0
            pred = [0, a, b, (a + b) // 2, _paeth(a, b, c)][ftype]
            raw.append((row[x] - pred) & 255)
    z = zlib.compress(bytes(raw), 6)

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload))
            + kind
            + payload
            + struct.pack(">I", zlib.crc32(kind + payload))
        )

    cut = np.linspace(0, len(z), idat_chunks + 1).astype(int)
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)),
            *(chunk(b"IDAT", z[cut[i] : cut[i + 1]]) for i in range(idat_chunks)),
            chunk(b"IEND", b""),
        ]
    )


def images(rng, h, w):
    mask = ellipse(h, w, h / 2, w / 2, h / 3, w / 3).astype(np.uint8) * np.uint8(255)
    return {
        "mask": mask,
        "noisy mask": np.where(rng.random((h, w)) < 0.1, 255 - mask, mask).astype(np.uint8),
        "random": rng.integers(0, 256, (h, w), dtype=np.uint8),
        "ramp": np.add.outer(np.arange(h) * 7, np.arange(w) * 3).astype(np.uint8),
    }


@pytest.mark.parametrize("first", [0, 1, 2, 3, 4])
def test_every_filter_type_decodes_to_the_pixels(rng, first, unfilter):
    """Rows with every filter type, including as the first row and in long runs of one
    type (chains of Up and Paeth rows), in several IDAT chunks: PIL, decode_values and
    (where it applies: always in C) the fast path all give back the pixels."""
    h, w = 37, 53
    patterns = {
        "random": np.r_[first, rng.integers(0, 5, h - 1)],
        "runs": np.r_[first, np.repeat(rng.permutation(5), 8)[: h - 1]],
        "no average": np.r_[first if first != 3 else 4, rng.choice([0, 1, 2, 4], h - 1)],
        "all first": np.full(h, first),
    }
    for name, arr in images(rng, h, w).items():
        for pname, filters in patterns.items():
            data = filtered_png(arr, filters, idat_chunks=3)
            assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), arr)  # the writer
            got = decode_values(data)
            assert got.dtype == np.uint8 and np.array_equal(got, arr), (name, pname)
            padded = decode_values(data, padded=True)
            assert padded.shape == (h, w + 1) and np.array_equal(padded[:, 1:], arr)
            fast = fast_decode(data)
            if unfilter == "c" or (3 not in filters and name != "random"):  # no fallback
                assert fast is not None, (name, pname)
            if fast is not None:
                assert np.array_equal(fast, arr), (name, pname)


def test_paeth_with_many_changes_above(rng, unfilter):
    """numpy: falls back to OpenCV; C: the fast path. Same pixels."""
    arr = rng.integers(0, 256, (4, 300), dtype=np.uint8)
    data = filtered_png(arr, [0, 4, 4, 4])
    fast = fast_decode(data)
    assert fast is None if unfilter == "numpy" else np.array_equal(fast, arr)
    assert np.array_equal(decode_values(data), arr)


def test_pil_written_photos_equal_pil(rng, unfilter):
    """PIL's own filter choice on noise, ramps and masks (many Paeth rows with many
    changes): the decode equals PIL's pixels, and the C path takes every one."""
    for arr in images(rng, 64, 97).values():
        for img in (arr, np.clip(arr.astype(int) + rng.integers(-3, 4, arr.shape), 0, 255)):
            buf = io.BytesIO()
            Image.fromarray(img.astype(np.uint8), "L").save(buf, "PNG")
            data = buf.getvalue()
            want = np.asarray(Image.open(io.BytesIO(data)))
            assert np.array_equal(decode_values(data), want)
            if unfilter == "c":
                assert np.array_equal(fast_decode(data), want)


def test_pil_written_masks_take_the_fast_path(tmp_path, unfilter):
    """Masks like real model output, written by PIL with default settings (the bench's
    data): rows use None, Sub, Up and Paeth, and every PNG decodes by the fast path to
    exactly PIL's values."""
    bench = load_bench()
    sources, _ = bench.make_data(tmp_path, 1, 2, 6, 2, seed=3)
    pngs = [p.read_bytes() for s in sources for p in sorted(s.rglob("*.png"))]
    assert {0, 1, 2, 4} <= set(bench.filter_mix(pngs))
    for data in pngs:
        fast = fast_decode(data)
        assert fast is not None
        assert np.array_equal(fast, np.asarray(Image.open(io.BytesIO(data))))


def test_other_layouts_use_opencv_or_pil(rng, unfilter):
    arr = rng.integers(0, 256, (31, 47), dtype=np.uint8)
    data = bytearray(filtered_png(arr, [0] * 31))
    data[28] = 1  # Adam7 interlacing (PIL does not write it): not for the fast path
    data[29:33] = struct.pack(">I", zlib.crc32(data[12:29]))
    assert fast_decode(bytes(data)) is None
    buf = io.BytesIO()
    Image.fromarray(arr, "L").convert("RGB").save(buf, "PNG")
    assert decode_values(buf.getvalue()) is None  # the caller converts with PIL


def test_invalid_filter_byte_is_not_decoded_by_the_fast_path(rng, unfilter):
    arr = rng.integers(0, 256, (6, 9), dtype=np.uint8)
    data = filtered_png(arr, [0, 1, 2, 3, 4, 0])
    idat = data.index(b"IDAT")
    raw = bytearray(zlib.decompress(data[idat + 4 : -16]))
    raw[5 * 10] = 5  # the last row's filter byte: no such filter
    z = zlib.compress(bytes(raw))
    bad = b"".join(
        [
            data[: idat - 4],
            struct.pack(">I", len(z)),
            b"IDAT",
            z,
            struct.pack(">I", zlib.crc32(b"IDAT" + z)),
            data[-12:],
        ]
    )
    assert fast_decode(data) is not None or unfilter == "numpy"
    assert fast_decode(bad) is None


def test_corrupt_stream_is_refused(rng, unfilter):
    arr = (rng.random((40, 50)) < 0.5).astype(np.uint8) * 255
    data = bytearray(filtered_png(arr, rng.integers(0, 5, 40)))
    data[-20] ^= 0x55  # in the IDAT payload: CRC fails, OpenCV refuses too
    assert fast_decode(bytes(data)) is None
    with pytest.raises(KitError, match="m.png: corrupt or truncated"):
        decode_values(bytes(data), "m.png")


def test_encode_cache_by_content(rng):
    enc = EncodeCache("pil", size=2)
    a = rng.random((30, 40)) > 0.5
    b = a.copy()
    b[17, 23] ^= True  # one pixel apart
    assert enc(a) == encode_mask(a) and enc(b) == encode_mask(b)
    assert enc(a.copy()) == encode_mask(a) and enc(np.zeros((30, 40), bool))
    assert (enc.hits, enc.misses) == (1, 3)
    assert enc(np.zeros((40, 30), bool)) == encode_mask(np.zeros((40, 30), bool))  # shape
    assert enc(b) == encode_mask(b) and enc.misses == 5  # evicted (size 2), re-encoded
    with pytest.raises(KitError, match="unknown PNG encoder"):
        EncodeCache("png")


def test_codec_names_still_importable_from_masktree():
    from rvos_kit.trees import masktree

    for name in ("ENCODERS", "decode_values", "encode_mask", "png_header"):
        assert getattr(masktree, name) is getattr(pngcodec, name)
