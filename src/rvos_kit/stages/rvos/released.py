"""``rvos-kit import-zip``: a released Annotations zip of the original solution as a mask
tree (the ``released`` source of a model or fusion node).

Unpacks a released Annotations zip into a canonical mask tree
``<ROOT>/<video>/<exp_id>/<frame>.png`` whatever its inner nesting (``Annotations/``,
``test/soc/Annotations/``, none, ...): every PNG must sit exactly three levels below
one common prefix, which is stripped. Entries that could escape the target (absolute
paths, ``..``, drive letters, symlinks) refuse the whole archive before anything is
written. The tree is built in a staging folder and moved into place on success.
"""

from __future__ import annotations

import re
import stat
import sys
import zipfile
from collections import Counter
from pathlib import Path

from ...argtypes import declare_paths
from ...errors import KitError
from ...trees.files import atomic_write_bytes
from ...trees.masktree import StagedTree, check_tree, png_header
from ...trees.meta import Meta, load_meta

# Zip-bomb caps. A mask PNG is a few kB; stored raw (no compression at all) an 8-bit grey
# 1280x720 frame is 0.92 MB. Each entry is read with a hard limit: what its own PNG header
# (width x height x channels) could need uncompressed plus 64 kB, never over 32 MiB; the
# whole archive at most 4 MiB per frame meta lists (with --meta).
MAX_PNG_BYTES = 32 << 20
MAX_BYTES_PER_META_FRAME = 4 << 20
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # PNG colour type -> samples per pixel
_JUNK = ("__MACOSX",)
_JUNK_FILES = (".DS_Store", "Thumbs.db")


# ----------------------------------------------------------------------------- import-zip
def _zip_parts(info: zipfile.ZipInfo, zip_path) -> list[str]:
    """Path components of an entry, after refusing anything that could escape the target."""
    name = info.filename
    where = f"{zip_path}: entry {name!r}"
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise KitError(f"{where} is a symbolic link; refusing the archive (zip-slip guard)")
    if "\0" in name:
        raise KitError(f"{where} has a NUL byte in its name; refusing the archive")
    norm = name.replace("\\", "/")
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm):
        raise KitError(f"{where} is an absolute path; refusing the archive (zip-slip guard)")
    parts = [p for p in norm.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise KitError(f"{where} contains '..'; refusing the archive (zip-slip guard)")
    if info.create_system == 3 and mode and not info.is_dir():
        if not (stat.S_ISREG(mode) or stat.S_IFMT(mode) == 0):
            raise KitError(f"{where} is not a regular file (mode {oct(mode)}); refusing")
    return parts


def plan_zip(zf: zipfile.ZipFile, zip_path, inner: str | None = None):
    """``(prefix, [(info, (video, exp_id, frame_file))], skipped)`` for a released zip."""
    pngs, other = [], []
    seen: dict[tuple, str] = {}
    for info in zf.infolist():
        parts = _zip_parts(info, zip_path)  # every entry is checked, used or not
        if info.is_dir() or not parts:
            continue
        if parts[0] in _JUNK or parts[-1] in _JUNK_FILES or parts[-1].startswith("._"):
            continue
        if parts[-1].endswith(".png"):
            key = tuple(parts)
            if key in seen:
                raise KitError(f"{zip_path}: entry {info.filename!r} appears twice")
            seen[key] = info.filename
            pngs.append((info, parts))
        else:
            other.append(info.filename)
    if inner is not None:
        want = [p for p in inner.replace("\\", "/").split("/") if p not in ("", ".")]
        chosen = [(i, p) for i, p in pngs if len(p) == len(want) + 3 and p[: len(want)] == want]
        if not chosen:
            raise KitError(f"{zip_path}: no PNG at <{inner}>/<video>/<exp_id>/<frame>.png")
        skipped = len(pngs) - len(chosen) + len(other)
        pngs, prefix = chosen, want
    else:
        shallow = [i.filename for i, p in pngs if len(p) < 3]
        if shallow:
            raise KitError(
                f"{zip_path}: {shallow[0]!r} is not inside <video>/<exp_id>/ folders: "
                "not an Annotations archive"
            )
        prefixes = Counter("/".join(p[:-3]) for _, p in pngs)
        if len(prefixes) > 1:
            listed = ", ".join(f"{k or '<top>'!r} ({n} PNGs)" for k, n in prefixes.most_common(5))
            raise KitError(
                f"{zip_path}: PNGs sit under several folders ({listed}); pick one with "
                "--inner PREFIX"
            )
        prefix = pngs[0][1][:-3] if pngs else []
        skipped = len(other)
    if not pngs:
        raise KitError(f"{zip_path}: no PNG masks inside; not an Annotations archive")
    return "/".join(prefix), [(i, tuple(p[-3:])) for i, p in pngs], skipped, other


def _png_bound(header: bytes, where: str) -> int:
    """Most bytes a PNG with this header can take (all raw, stored deflate blocks)."""
    w, h, depth, ctype = png_header(header, where)
    row = (w * _CHANNELS.get(ctype, 4) * max(depth, 8) + 7) // 8 + 1
    raw = h * row
    return raw + raw // 64 + (64 << 10)


def _read_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> bytes:
    """An entry's bytes, inflating at most what its PNG header allows (never zf.read())."""
    with zf.open(info) as f:
        head = f.read(33)
        limit = min(_png_bound(head, where), MAX_PNG_BYTES)
        if info.file_size > limit:
            raise KitError(
                f"{where}: declares {info.file_size} bytes uncompressed, more than a PNG of "
                f"its size can hold ({limit}); refusing the archive (zip bomb guard)"
            )
        rest = f.read(limit - len(head) + 1)
    if len(head) + len(rest) > limit:
        raise KitError(
            f"{where}: inflates to more than {limit} bytes, more than a PNG of its size can "
            "hold; refusing the archive (zip bomb guard)"
        )
    return head + rest


def import_zip(zip_path, out_root, meta: Meta | None = None, inner: str | None = None) -> dict:
    from tqdm import tqdm

    zip_path, out_root = Path(zip_path), Path(out_root)
    try:
        zf = zipfile.ZipFile(zip_path)
    except FileNotFoundError:
        raise KitError(f"{zip_path}: zip file not found") from None
    except (zipfile.BadZipFile, OSError) as e:
        raise KitError(f"{zip_path}: not a readable zip archive ({e})") from None
    with zf:
        prefix, entries, skipped, other = plan_zip(zf, zip_path, inner)
        for info, (_video, _exp_id, fname) in entries:
            if fname == ".png":
                raise KitError(f"{zip_path}: entry {info.filename!r} is not a mask PNG")
            if info.file_size > MAX_PNG_BYTES:
                raise KitError(
                    f"{zip_path}: entry {info.filename!r} declares {info.file_size} bytes "
                    f"uncompressed; a mask PNG is never over {MAX_PNG_BYTES}: refusing the "
                    "archive (zip bomb guard)"
                )
        videos = {v for _, (v, _, _) in entries}
        if meta is not None:
            extra = sorted(videos.difference(v.name for v in meta))
            if extra:
                raise KitError(
                    f"{zip_path}: video {extra[0]!r} is not in meta ({len(extra)} such); "
                    "pass the meta of the split this archive is for"
                )
            cap = meta.n_masks * MAX_BYTES_PER_META_FRAME
            declared = sum(info.file_size for info, _ in entries)
            if len(entries) > meta.n_masks or declared > cap:
                raise KitError(
                    f"{zip_path}: {len(entries)} PNGs declaring {declared} bytes uncompressed, "
                    f"more than the {meta.n_masks} frames meta lists can hold ({cap} bytes); "
                    "refusing the archive (zip bomb guard)"
                )
        with StagedTree(out_root) as st:
            made = set()
            for info, (video, exp_id, fname) in tqdm(
                entries, desc=f"unzip {zip_path.name}", unit="png", file=sys.stderr
            ):
                d = st.path / video / exp_id
                if d not in made:
                    d.mkdir(parents=True, exist_ok=True)
                    made.add(d)
                try:
                    data = _read_entry(zf, info, f"{zip_path}: {info.filename}")
                except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
                    raise KitError(
                        f"{zip_path}: entry {info.filename!r} is corrupt ({e})"
                    ) from None
                png_header(data, f"{zip_path}: {info.filename}")
                atomic_write_bytes(d / fname, data)
            if meta is not None:
                missing = [v.name for v in meta if v.name not in videos]
                if missing:
                    raise KitError(
                        f"{zip_path}: holds {len(videos)} of the {len(meta)} videos meta lists "
                        f"(first missing: {missing[0]!r}); pass the meta of this split"
                    )
                check_tree(st.path, meta)
    return {
        "prefix": prefix,
        "pngs": len(entries),
        "videos": len(videos),
        "skipped": skipped,
        "other": other[:5],
    }


def run_import_zip(args) -> int:
    meta = load_meta(args.meta) if args.meta else None
    r = import_zip(args.zip, args.out, meta, args.inner)
    print(
        f"{r['pngs']} PNGs of {r['videos']} videos from {args.zip} "
        f"(inner folder {r['prefix'] or '<top>'!r}) -> {args.out}"
    )
    if r["skipped"]:
        print(
            f"skipped {r['skipped']} other entries (e.g. {', '.join(r['other'][:3]) or '-'})",
            file=sys.stderr,
        )
    return 0


# ----------------------------------------------------------------------------- CLI
def register(sub) -> None:
    z = sub.add_parser(
        "import-zip",
        help="unpack a released Annotations zip into a canonical mask tree (zip-slip safe)",
        description=__doc__,
    )
    z.add_argument("zip", help="released Annotations zip")
    z.add_argument("--out", required=True, help="tree root to create: <out>/<video>/<exp>/<f>.png")
    z.add_argument("--meta", help="meta_expressions.json: check every expression and frame")
    z.add_argument(
        "--inner",
        metavar="PREFIX",
        help="folder inside the zip holding <video>/<exp_id>/<frame>.png, when it has several",
    )
    declare_paths(z, reads=("zip", "meta"), writes=("out",))
    z.set_defaults(func=run_import_zip)
