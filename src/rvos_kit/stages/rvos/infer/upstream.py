"""Prove that ``--upstream`` is the published code at the pinned commit, before importing it.

The published solution (github.com/RobertLuo1/iccv2023_RVOS_Challenge) is pinned at
:data:`PINNED_COMMIT`. ``upstream-c538b0d.tsv`` beside this file lists the git blob id,
mode and path of every file of that commit that the shared source archive holds
(metadata only: no upstream code is in this repository).

The check reads the bytes themselves, in every kind of folder (an unpacked archive, a
copy inside an image, a git checkout): git's own view is not trusted, since a file
edited and hidden with ``git update-index --assume-unchanged``, or a
``refs/replace/<pinned commit>`` pointing at another commit, looks clean to
``git status``. For the folders a model needs (``soc_test/``, ``UNINEXT/``, ...):

- every manifest file under them exists, is a regular file (not a symlink) and has
  exactly the listed blob id (``git hash-object``, computed here without git);
- nothing under them is a symlink;
- nothing importable that the manifest does not list lies on an import path. Each
  folder is put first on ``sys.path`` (UNINEXT's child also gets
  ``UNINEXT/projects/UNINEXT``, reached through identifier-named folders), so a planted
  ``soc_test/einops.py`` or ``soc_test/transformers/__init__.py`` would shadow the
  installed package. Refused: a file ending in ``.py .pyw .pyc .pyo .so .pyd`` whose
  name (up to its first dot) and every folder between it and the model folder are
  Python identifiers (what ``import a.b.c`` can reach), unless listed. Not refused:
  files under a folder Python cannot import from (``build/lib.linux-x86_64-3.8/``,
  ``*.egg-info/``: the published commit tracks such build products, and building the
  op in place makes them), folders holding no importable file (they run no code),
  data and ``.pth`` files (Python reads ``.pth`` path files only from site folders,
  which these never are; here ``.pth`` is a checkpoint), and :data:`BUILT_IN_PLACE`
  (``detectron2._C``, which the uninext image builds with ``build_ext --inplace``).
- ``__pycache__/<module>.<tag>.pyc`` files are allowed (Python writes them when it may,
  and the published commit tracks some) but never read: the in-process drivers import
  the upstream code through :func:`guard_imports`, whose loader compiles the source
  bytes it has just checked against the manifest and reads or writes no bytecode, and
  UNINEXT's child runs with ``PYTHONPYCACHEPREFIX`` set to its own work folder.

A git checkout (``<root>/.git`` exists) must also have the pinned commit as ``HEAD``
(the clearer message when a checkout is simply at another commit).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.machinery
import os
import subprocess
import sys
from pathlib import Path

from ....errors import KitError

PINNED_COMMIT = "c538b0dca85da0719b32ea45253f8b3077defea6"
REPOSITORY = "github.com/RobertLuo1/iccv2023_RVOS_Challenge"
MANIFEST = Path(__file__).with_name("upstream-c538b0d.tsv")
# Endings of files an import statement can load (any interpreter's: cpython-38 .so too).
IMPORTABLE = (".py", ".pyw", ".pyc", ".pyo", ".so", ".pyd")
# Unlisted modules a kit image builds inside the tree: module path -> who builds it.
BUILT_IN_PLACE = {
    "UNINEXT/detectron2/_C": "docker/uninext.Dockerfile (setup.py build_ext --inplace)",
}


def git_blob_id(path: str | os.PathLike) -> str:
    """``git hash-object PATH``: sha1 of ``b"blob <size>\\0" + content``."""
    return _blob_id(Path(path).read_bytes())


def _blob_id(data: bytes) -> str:
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


@functools.lru_cache(maxsize=1)
def _pinned() -> dict[str, str]:
    return manifest()


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
    how = "files"
    if (root / ".git").exists():
        _check_git_head(root)
        how = f"files of the git checkout at {PINNED_COMMIT[:12]}"
    n = _verify_blobs(root, folders)
    for folder in folders:
        _refuse_unlisted(root, folder)
    return (
        f"{n} {how} under {', '.join(folders)} match {PINNED_COMMIT[:12]} blob for blob; "
        "nothing unlisted on their import paths"
    )


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


def _check_git_head(root: Path) -> None:
    head = _git(root, "rev-parse", "HEAD").strip()
    if head != PINNED_COMMIT:
        raise KitError(
            f"{root}: git HEAD is {head[:12]}, not the pinned commit {PINNED_COMMIT[:12]} of "
            f"{REPOSITORY}; run `git -C {root} checkout {PINNED_COMMIT}`"
        )


def _unmodified() -> str:
    return (
        "the kit runs the published code unmodified (a git checkout: `git checkout -- .` "
        "restores it; `git update-index --no-assume-unchanged` and `git replace -d` undo "
        "what hides a change from git)"
    )


def _verify_blobs(root: Path, folders) -> int:
    want = {rel: blob for rel, blob in _pinned().items() if _under(rel, folders)}
    for rel, blob in sorted(want.items()):
        p = root / rel
        if p.is_symlink():
            raise KitError(f"{root}: {rel} is a symlink; the pinned commit has a file there")
        if not p.is_file():
            raise KitError(
                f"{root}: {rel} is missing; --upstream is not {REPOSITORY} at {PINNED_COMMIT[:12]}"
            )
        got = git_blob_id(p)
        if got != blob:
            raise KitError(
                f"{root}: {rel} differs from the pinned commit {PINNED_COMMIT[:12]} (blob "
                f"{got[:12]}, expected {blob[:12]}); {_unmodified()}"
            )
    return len(want)


def _module_path(rel_parts: tuple[str, ...]) -> str | None:
    """``a/b/name`` when ``a/b/name.<...><importable ending>`` can be imported as
    ``a.b.name`` from the model folder (``rel_parts`` starts below it), else None."""
    *dirs, name = rel_parts
    if not name.endswith(IMPORTABLE):
        return None
    stem = name.split(".", 1)[0]
    if not stem.isidentifier() or not all(d.isidentifier() for d in dirs):
        return None
    if dirs and dirs[-1] == "__pycache__" and name.endswith(".pyc") and name.count(".") >= 2:
        return None  # <module>.<cache tag>.pyc: never read (see the module docstring)
    return "/".join([*dirs, stem])


def _refuse_unlisted(root: Path, folder: str) -> None:
    listed = _pinned()
    top = root / folder
    if top.is_symlink():
        raise KitError(f"{root}: {folder}/ is a symlink; the kit imports only a real folder")

    def fail(e: OSError):
        raise KitError(f"{e.filename}: cannot be read to check the upstream folder ({e.strerror})")

    for dirpath, dirnames, filenames in os.walk(top, onerror=fail):
        here = Path(dirpath)
        for name in dirnames + filenames:
            if (here / name).is_symlink():
                rel = (here / name).relative_to(root).as_posix()
                raise KitError(
                    f"{root}: {rel} is a symlink; nothing under {folder}/ may lead elsewhere "
                    "(the kit checks and imports only the files themselves): remove it"
                )
        for name in filenames:
            rel = (here / name).relative_to(root).as_posix()
            if rel in listed:
                continue
            module = _module_path(Path(rel).parts[1:])
            if module is None or (f"{folder}/{module}" in BUILT_IN_PLACE and name.endswith(".so")):
                continue
            raise KitError(
                f"{root}: {rel} is not a file of the pinned commit {PINNED_COMMIT[:12]}, and "
                f"{folder}/ is on sys.path, so it could be imported in place of the code (or "
                "the installed package) of that name; remove it: the kit runs the published "
                "code unmodified"
            )


# ----------------------------------------------------------------------- importing it
class _CheckedSourceLoader(importlib.machinery.SourceFileLoader):
    """Compiles exactly the bytes it has read, after checking them against the manifest;
    reads and writes no bytecode (a planted ``__pycache__`` file is never used)."""

    root: Path  # set on the subclass made by guard_imports

    def get_code(self, fullname):
        data = self.get_data(self.path)
        rel = Path(self.path).relative_to(self.root).as_posix()
        want = _pinned().get(rel)
        if want is None or _blob_id(data) != want:
            why = "is not a file of" if want is None else "changed after the check against"
            raise KitError(
                f"{self.root}: {rel} {why} the pinned commit {PINNED_COMMIT[:12]}; {_unmodified()}"
            )
        return self.source_to_code(data, self.path)


def guard_imports(root: str | os.PathLike, code_root: str | os.PathLike) -> None:
    """Route every import from ``code_root`` (and below) through
    :class:`_CheckedSourceLoader`: only manifest sources, checked as they are read. Call
    before ``code_root`` is put on ``sys.path``; once per process and folder."""
    root, code = Path(root), str(Path(code_root))
    if any(getattr(h, "_rvos_kit_code", None) == code for h in sys.path_hooks):
        return
    loader = type("CheckedSourceLoader", (_CheckedSourceLoader,), {"root": root})
    details = (loader, importlib.machinery.SOURCE_SUFFIXES)

    def hook(path):
        p = os.path.abspath(path)
        if p == code or p.startswith(code + os.sep):
            return importlib.machinery.FileFinder(p, details)
        raise ImportError("not the guarded upstream folder")

    hook._rvos_kit_code = code
    sys.path_hooks.insert(0, hook)
    for cached in list(sys.path_importer_cache):
        p = os.path.abspath(cached) if isinstance(cached, str) else ""
        if p == code or p.startswith(code + os.sep):
            del sys.path_importer_cache[cached]
