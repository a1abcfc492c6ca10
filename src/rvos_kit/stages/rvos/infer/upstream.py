"""Prove that ``--upstream`` is the published code at the pinned commit, before importing it.

The published solution (github.com/RobertLuo1/iccv2023_RVOS_Challenge) is pinned at
:data:`PINNED_COMMIT`. ``upstream-c538b0d.tsv`` beside this file lists the git blob id,
mode and path of every file of that commit that the shared source archive holds
(metadata only: no upstream code is in this repository).

- A git checkout (``<root>/.git`` exists): ``HEAD`` must be the pinned commit and the
  tracked files under the folders a model needs must be unmodified
  (``git status --porcelain --untracked-files=no``). Untracked files (an editable
  install's ``egg-info``, a built ``.so``) are allowed.
- Any other folder (an unpacked archive, a copy inside an image): every manifest file
  under those folders must exist with exactly the listed blob id (``git hash-object``,
  computed here without git).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from ....errors import KitError

PINNED_COMMIT = "c538b0dca85da0719b32ea45253f8b3077defea6"
REPOSITORY = "github.com/RobertLuo1/iccv2023_RVOS_Challenge"
MANIFEST = Path(__file__).with_name("upstream-c538b0d.tsv")


def git_blob_id(path: str | os.PathLike) -> str:
    """``git hash-object PATH``: sha1 of ``b"blob <size>\\0" + content``."""
    data = Path(path).read_bytes()
    h = hashlib.sha1(b"blob %d\0" % len(data))
    h.update(data)
    return h.hexdigest()


def manifest(path: str | os.PathLike = MANIFEST) -> dict[str, str]:
    """``{relative path: blob id}`` of the pinned commit's files."""
    out: dict[str, str] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        blob, _mode, rel = line.split("\t", 2)
        out[rel] = blob
    return out


def _under(rel: str, folders) -> bool:
    return any(rel == f or rel.startswith(f.rstrip("/") + "/") for f in folders)


def verify_upstream(root: str | os.PathLike, folders: tuple[str, ...]) -> str:
    """Check ``root`` (the repository root: holds ``soc_test/``, ``MUTR/``, ...) before any
    of its code is imported. Returns how it was verified (for the log); raises
    :class:`KitError` naming the first difference otherwise."""
    root = Path(root)
    if not root.is_dir():
        raise KitError(f"{root}: --upstream folder not found (the published repository root)")
    missing = [f for f in folders if not (root / f).is_dir()]
    if missing:
        raise KitError(
            f"{root}: no {missing[0]}/ folder: --upstream must be the root of {REPOSITORY} "
            f"at {PINNED_COMMIT[:7]} (the folder that holds soc_test/, MUTR/, ReferFormer/, "
            "UNINEXT/)"
        )
    if (root / ".git").exists():
        return _verify_git(root, folders)
    return _verify_blobs(root, folders)


def _git(root: Path, *args: str) -> str:
    try:
        r = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, check=False
        )
    except FileNotFoundError:
        raise KitError(f"{root}: is a git checkout but git is not installed") from None
    if r.returncode != 0:
        raise KitError(f"{root}: git {' '.join(args)} failed: {r.stderr.strip()[:200]}")
    return r.stdout


def _verify_git(root: Path, folders) -> str:
    head = _git(root, "rev-parse", "HEAD").strip()
    if head != PINNED_COMMIT:
        raise KitError(
            f"{root}: git HEAD is {head[:12]}, not the pinned commit {PINNED_COMMIT[:12]} of "
            f"{REPOSITORY}; run `git -C {root} checkout {PINNED_COMMIT}`"
        )
    dirty = _git(root, "status", "--porcelain", "--untracked-files=no", "--", *folders)
    if dirty.strip():
        first = dirty.strip().splitlines()[0]
        raise KitError(
            f"{root}: tracked upstream files are modified ({first.strip()!r}); the kit runs "
            "the published code unmodified: `git checkout -- .` restores it"
        )
    return f"git checkout at {PINNED_COMMIT[:12]}, clean under {', '.join(folders)}"


def _verify_blobs(root: Path, folders) -> str:
    want = {rel: blob for rel, blob in manifest().items() if _under(rel, folders)}
    for rel, blob in sorted(want.items()):
        p = root / rel
        if not p.is_file():
            raise KitError(
                f"{root}: {rel} is missing; --upstream is not {REPOSITORY} at {PINNED_COMMIT[:12]}"
            )
        got = git_blob_id(p)
        if got != blob:
            raise KitError(
                f"{root}: {rel} differs from the pinned commit {PINNED_COMMIT[:12]} (blob "
                f"{got[:12]}, expected {blob[:12]}); the kit runs the published code unmodified"
            )
    return f"{len(want)} files under {', '.join(folders)} match {PINNED_COMMIT[:12]} blob for blob"
