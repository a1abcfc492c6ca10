"""Submission zip: ``Annotations/<video>/<exp_id>/<frame>.png`` for every meta expression
and frame (contract section 1), byte-for-byte the same on every run.

Determinism: entries in meta order (videos, expressions, frames), file entries only,
fixed timestamp 1980-01-01 00:00:00, Unix mode 0644, stored (not deflated: the PNGs are
already compressed, and storing keeps the bytes independent of the zlib build). The tree
is validated against meta first (missing or extra PNG -> error naming the file); the zip
is written to a temp name and renamed.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from tqdm import tqdm

from ..argtypes import declare_paths
from ..errors import KitError
from ..trees.digest import sha256_file
from ..trees.files import blame, discard
from ..trees.masktree import (
    check_tree,
    expression_files,
    png_header,
    read_png_bytes,
)
from ..trees.meta import Meta, infer_meta, load_meta
from ..trees.staging import OutputLock, remove_leftovers

FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def pack(
    root, out, meta: Meta | None = None, prefix: str = "Annotations", progress=True, sha256=None
) -> str:
    """Write the submission zip (and, with ``sha256``, the file ``<sha256>  <zip name>``
    beside it); returns its sha256. Both are written to temp names and renamed together
    once both are complete: a failure (a full disk) leaves both as they were."""
    root, out = Path(root), Path(out)
    if meta is None:
        meta = infer_meta(root)
    check_tree(root, meta)
    out.parent.mkdir(parents=True, exist_ok=True)
    lock = OutputLock(out)
    lock.acquire()  # one pack per zip; under it, temp zips of killed runs are removed
    remove_leftovers(out, ".tmp-")
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    sha = sha_tmp = None
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
            for v in tqdm(meta, unit="video", desc=f"pack -> {out.name}", disable=not progress):
                for e in v.exp_ids:
                    for path in expression_files(root, v, e):
                        data = read_png_bytes(path)
                        png_header(data, path)
                        info = zipfile.ZipInfo(f"{prefix}/{v.name}/{e}/{path.name}", FIXED_TIME)
                        info.external_attr = 0o100644 << 16
                        info.create_system = 3
                        info.compress_type = zipfile.ZIP_STORED
                        zf.writestr(info, data)
        digest = sha256_file(tmp, out.name)[0]
        if sha256 is not None:
            sha = Path(sha256)
            sha.parent.mkdir(parents=True, exist_ok=True)
            remove_leftovers(sha, ".tmp-")
            sha_tmp = sha.with_name(f".{sha.name}.tmp-{os.getpid()}")
            try:
                with open(sha_tmp, "wb") as f:
                    f.write(f"{digest}  {out.name}\n".encode())
            except OSError as e:
                blame(e, sha, sha_tmp)
                raise
        os.replace(tmp, out)
        if sha_tmp is not None:
            os.replace(sha_tmp, sha)
    except BaseException as e:
        discard(tmp)
        if sha_tmp is not None:
            discard(sha_tmp)
        blame(e, out, tmp)  # a full disk: name the output
        raise
    finally:
        lock.release()
    return digest


def run(args) -> int:
    meta = load_meta(args.meta) if args.meta else None
    if Path(args.out).suffix != ".zip":
        raise KitError(f"{args.out}: the submission must be a .zip file")
    digest = pack(args.root, args.out, meta, sha256=args.sha256)
    print(f"{digest}  {args.out}")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "pack",
        help="deterministic submission zip of a mask tree",
        description=__doc__,
    )
    p.add_argument("root", help="mask tree to pack (the final fusion)")
    p.add_argument("--out", required=True, help="submission .zip to write")
    p.add_argument("--meta", help="meta_expressions.json (default: read off the tree)")
    p.add_argument("--sha256", help="also write '<sha256>  <zip name>' to this file")
    declare_paths(p, reads=("root", "meta"), writes=("out", "sha256"))
    p.set_defaults(func=run)
