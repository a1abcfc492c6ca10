"""The published MultiScaleDeformableAttention op, made to compile on torch >= 2.6, in a copy.

    python tools/apply_msda_patch.py UPSTREAM OPS DEST [--patch FILE]

UPSTREAM is the published repository's root (holds ``soc_test/``, ``MUTR/``, ...), OPS one
of :data:`OPS_FOLDERS` (relative to it), DEST a folder that must not exist yet. In order:

1. the kit's upstream check (:func:`rvos_kit.stages.rvos.infer.upstream.verify_upstream`)
   of the whole model folder OPS lies in: every file blob for blob the pinned commit's;
2. OPS is copied to DEST, without the build products the published tree carries
   (``build/``, ``dist/``, ``*.egg-info``, ``*.so``, ``*.o``, ``__pycache__``);
3. ``docker/patches/msda-torch2.patch`` is applied to the copy, strictly: every hunk at
   its own line numbers, every context and removed line exactly as in the file (no
   offset, no fuzz), else nothing is written and it stops naming the hunk;
4. the copy is checked to hold no ``.type()`` call any more.

The original is never touched. Used by docker/modern.Dockerfile and ``make modern-venv``
(then ``docker/build-cuda-op.py DEST WHEELDIR`` builds it); :func:`parse_patch` and
:func:`renames_only` are what tests/test_msda_patch.py checks the patch with. Python 3.9+,
no dependency but the kit itself.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
PATCH = HERE.parent / "docker" / "patches" / "msda-torch2.patch"
# The four vendored copies of the op in the published commit (byte-identical: the
# manifest's blob ids are the same for each of their files).
OPS_FOLDERS = (
    "soc_test/models/ops",
    "MUTR/models/ops",
    "ReferFormer/models/ops",
    "UNINEXT/projects/UNINEXT/uninext/models/deformable_detr/ops",
)
BUILD_PRODUCTS = ("build", "dist", "*.egg-info", "*.so", "*.o", "__pycache__")
# What a changed line may do: only these spellings, old -> new.
RENAMES = (
    (re.compile(r"AT_DISPATCH_FLOATING_TYPES\((\w+)\.type\(\)"),
     r"AT_DISPATCH_FLOATING_TYPES(\1.scalar_type()"),
    (re.compile(r"\b(\w+)\.type\(\)\.is_cuda\(\)"), r"\1.is_cuda()"),
)  # fmt: skip
_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


class PatchError(Exception):
    pass


@dataclass
class Hunk:
    old_start: int  # 1-based
    old: list[str]  # context and removed lines, in order
    new: list[str]  # context and added lines, in order
    removed: list[str]
    added: list[str]


@dataclass
class FilePatch:
    path: str  # relative to the ops folder (a/ b/ prefixes stripped)
    hunks: list[Hunk]


def _strip(name: str) -> str:
    name = name.split("\t", 1)[0].strip()
    return name[2:] if name.startswith(("a/", "b/")) else name


def parse_patch(text: str) -> list[FilePatch]:
    """A unified diff (text before the first ``---`` is a comment) as file patches; only
    changes of existing files are accepted (no creation, deletion or rename)."""
    lines = text.splitlines()
    files: list[FilePatch] = []
    i = 0
    while i < len(lines):
        if not lines[i].startswith("--- "):
            if files and lines[i].strip():
                raise PatchError(f"line {i + 1}: text between file patches: {lines[i]!r}")
            i += 1
            continue
        if i + 1 >= len(lines) or not lines[i + 1].startswith("+++ "):
            raise PatchError(f"line {i + 1}: '---' without '+++'")
        old, new = _strip(lines[i][4:]), _strip(lines[i + 1][4:])
        if old != new or old == "/dev/null":
            raise PatchError(f"line {i + 1}: only edits of existing files ({old} -> {new})")
        fp = FilePatch(old, [])
        i += 2
        while i < len(lines) and lines[i].startswith("@@"):
            m = _HUNK.match(lines[i])
            if not m:
                raise PatchError(f"line {i + 1}: bad hunk header {lines[i]!r}")
            n_old = int(m[2]) if m[2] is not None else 1
            n_new = int(m[4]) if m[4] is not None else 1
            h = Hunk(int(m[1]), [], [], [], [])
            i += 1
            while len(h.old) < n_old or len(h.new) < n_new:
                if i >= len(lines):
                    raise PatchError(f"{fp.path}: hunk at line {h.old_start} is cut short")
                ln = lines[i]
                tag, body = (ln[:1], ln[1:]) if ln else (" ", "")
                if tag == " ":
                    h.old.append(body)
                    h.new.append(body)
                elif tag == "-":
                    h.old.append(body)
                    h.removed.append(body)
                elif tag == "+":
                    h.new.append(body)
                    h.added.append(body)
                elif ln.startswith("\\"):
                    raise PatchError(f"{fp.path}: '\\ No newline at end of file' not supported")
                else:
                    raise PatchError(f"{fp.path}: bad hunk line {ln!r}")
                i += 1
            if len(h.old) != n_old or len(h.new) != n_new:
                raise PatchError(f"{fp.path}: hunk at line {h.old_start}: counts do not match")
            fp.hunks.append(h)
        if not fp.hunks:
            raise PatchError(f"{fp.path}: no hunks")
        files.append(fp)
    if not files:
        raise PatchError("no file patches found")
    return files


def renames_only(files: list[FilePatch]) -> list[str]:
    """Why the patch is more than the API renames (empty: it is exactly them). Every hunk
    must remove and add the same number of lines, and each added line must be its removed
    line with :data:`RENAMES` applied, which must change it."""
    problems = []
    for fp in files:
        for h in fp.hunks:
            if len(h.removed) != len(h.added):
                problems.append(f"{fp.path}@{h.old_start}: lines added or dropped")
                continue
            for old, new in zip(h.removed, h.added):  # noqa: B905 (Python 3.9)
                want = old
                for rx, repl in RENAMES:
                    want = rx.sub(repl, want)
                if want == old:
                    problems.append(f"{fp.path}@{h.old_start}: {old.strip()!r} has no rename")
                elif new != want:
                    problems.append(f"{fp.path}@{h.old_start}: {new.strip()!r} != {want.strip()!r}")
    return problems


def apply_to(tree: Path, files: list[FilePatch]) -> dict[str, int]:
    """Apply strictly to the files under ``tree``; all or nothing. Returns {path: lines
    changed}."""
    out: dict[str, tuple[Path, str]] = {}
    changed: dict[str, int] = {}
    for fp in files:
        path = tree / fp.path
        if not path.is_file() or path.is_symlink():
            raise PatchError(f"{path}: no such file to patch")
        data = path.read_bytes().decode("utf-8")
        lines = data.split("\n")
        for h in sorted(fp.hunks, key=lambda x: -x.old_start):
            at = h.old_start - 1
            if lines[at : at + len(h.old)] != h.old:
                raise PatchError(
                    f"{path}: hunk at line {h.old_start} does not match the file exactly; "
                    "is this the verified published source?"
                )
            lines[at : at + len(h.old)] = h.new
        out[fp.path] = (path, "\n".join(lines))
        changed[fp.path] = sum(len(h.added) for h in fp.hunks)
    for path, text in out.values():
        tmp = path.with_name(f".{path.name}.patching")
        tmp.write_bytes(text.encode("utf-8"))
        os.replace(tmp, path)
    return changed


def leftover_type_calls(tree: Path) -> list[str]:
    """``file:line`` of every ``.type()`` still in the C++/CUDA sources."""
    hits = []
    for p in sorted(tree.rglob("*")):
        if p.suffix in (".cpp", ".cu", ".h", ".cuh") and p.is_file():
            for n, ln in enumerate(p.read_text().splitlines(), 1):
                if ".type()" in ln:
                    hits.append(f"{p.relative_to(tree)}:{n}")
    return hits


def patched_copy(upstream: Path, ops: str, dest: Path, patch: Path = PATCH) -> str:
    """Steps 1-4 of the module docstring; returns a one-line summary."""
    from rvos_kit.stages.rvos.infer.upstream import verify_upstream

    if ops not in OPS_FOLDERS:
        raise PatchError(f"{ops}: not one of the op's folders ({', '.join(OPS_FOLDERS)})")
    if dest.exists():
        raise PatchError(f"{dest} already exists; give a new folder")
    files = parse_patch(patch.read_text())
    problems = renames_only(files)
    if problems:
        raise PatchError(f"{patch}: more than the API renames: {problems[0]}")
    verified = verify_upstream(upstream, (ops.split("/", 1)[0],))
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        tree = work / "ops"
        shutil.copytree(upstream / ops, tree, ignore=shutil.ignore_patterns(*BUILD_PRODUCTS))
        changed = apply_to(tree, files)
        left = leftover_type_calls(tree)
        if left:
            raise PatchError(f"{left[0]}: a .type() call the patch did not rename")
        os.replace(tree, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    n = sum(changed.values())
    return f"apply_msda_patch: {upstream}/{ops} ({verified}) -> {dest}: {n} lines renamed"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("upstream", type=Path, help="the published repository root")
    ap.add_argument("ops", help="the op's folder relative to it: " + ", ".join(OPS_FOLDERS))
    ap.add_argument("dest", type=Path, help="a new folder for the patched copy")
    ap.add_argument("--patch", type=Path, default=PATCH)
    a = ap.parse_args(argv)
    from rvos_kit.errors import KitError

    try:
        print(patched_copy(a.upstream.resolve(), a.ops, a.dest.resolve(), a.patch))
    except (PatchError, KitError) as e:
        print(f"apply_msda_patch: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
