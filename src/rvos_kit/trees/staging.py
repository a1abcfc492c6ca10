"""Staged output folders: built aside, committed whole, never replacing what the kit did
not make.

Every verb that writes a folder (a mask tree, a model folder, a sample, a report) goes
through :class:`StagedTree`:

- **Ownership.** The kit marks each folder it commits with a sibling file
  ``.<name>.rvos-kit`` (beside the folder, not inside it, so a tree's content and its DVC
  hash stay exactly the masks). An existing ``--out`` that is not empty and has no such
  mark is refused before any work starts: nothing the user put there is ever replaced.
  ``--out .`` (or any folder holding the current one) is refused too.
- **One writer.** The mark doubles as a lock file: the run holds an exclusive
  ``flock`` on it from start to commit, so a second run on the same output fails at once
  naming the output (the kernel drops the lock when a process dies, even by SIGKILL).
  Within one process the lock is re-entrant: a sharded stage holds it (:func:`held_output`)
  from before its input checks until the merged tree is committed, and the merge's own
  :class:`StagedTree` joins that hold instead of locking again (its shards write only
  into ``.<name>.shards``, which only the holder creates or removes).
- **Per-run staging.** The tree is built in ``.<name>.partial-<pid>`` and renamed into
  place on success; leftovers of killed runs are removed at the next start (under the
  lock, so never another live run's). Stages that resume (``resume=True``) use the fixed
  ``.<name>.partial`` instead and keep it when interrupted.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import shutil
import sys
from pathlib import Path

from ..errors import KitError
from .files import blame

MARK = "written by rvos-kit; this folder is replaced when the kit writes it again\n"


def mark_path(out_root: str | os.PathLike) -> Path:
    """The ownership mark / lock file of an output folder."""
    p = Path(os.path.abspath(out_root))
    return p.with_name(f".{p.name}.rvos-kit")


def _remove(p: Path) -> None:
    if p.is_symlink() or p.is_file():
        p.unlink()
    elif p.is_dir():
        shutil.rmtree(p)


def remove_leftovers(out: str | os.PathLike, *kinds: str, keep: Path | None = None) -> None:
    """Remove ``.<name><kind><pid>`` entries beside ``out`` left by killed runs (temp
    files, staging folders); call it only while holding the output's lock. Symbolic
    links are removed, never followed."""
    out = Path(os.path.abspath(out))
    for p in out.parent.iterdir():
        if p != keep and p.name.startswith(tuple(f".{out.name}{k}" for k in kinds)):
            _remove(p)


def _check_not_cwd(out: str | os.PathLike, flag: str) -> None:
    p = Path(os.path.abspath(out))
    cwd = Path(os.getcwd())
    if p == cwd or p in cwd.parents:
        raise KitError(
            f"{flag} {out}: is the current folder (or holds it); the output replaces the "
            f"whole folder: name a new one, e.g. {flag} out"
        )


def check_replaceable(out_root: str | os.PathLike, flag: str = "--out") -> None:
    """Refuse (:class:`KitError`) an output folder the kit may not replace."""
    shown = Path(out_root)
    p = Path(os.path.abspath(out_root))
    _check_not_cwd(shown, flag)
    if p.is_symlink() or (p.exists() and not p.is_dir()):
        raise KitError(f"{flag} {shown}: exists and is not a folder; remove it or choose another")
    if p.is_dir() and any(os.scandir(p)):
        mark = mark_path(p)
        try:
            ours = mark.read_text(encoding="utf-8") == MARK
        except (OSError, UnicodeDecodeError):
            ours = False
        if not ours:
            raise KitError(
                f"{flag} {shown}: exists, is not empty and was not written by rvos-kit "
                f"(no {mark.name} beside it); it would be replaced: choose a new folder "
                "or remove this one yourself"
            )


# Locks this process holds: lock file -> [fd, depth] (an OutputLock is re-entrant in a process).
_HELD: dict[str, list[int]] = {}


class OutputLock:
    """Exclusive, non-blocking lock on an output (held until :meth:`release` or exit).

    Re-entrant within a process: acquiring a lock this process already holds joins that
    hold (same descriptor); only the outermost :meth:`release` unlocks."""

    def __init__(self, out_root: str | os.PathLike, flag: str = "--out"):
        self.out_root, self.flag = Path(out_root), flag
        self.path = mark_path(out_root)
        self.fd: int | None = None
        self._nested = False

    def acquire(self) -> None:
        held = _HELD.get(str(self.path))
        if held is not None and held[1] > 0:
            held[1] += 1
            self.fd, self._nested = held[0], True
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_symlink() or (self.path.exists() and not self.path.is_file()):
            raise KitError(f"{self.path}: expected the kit's lock file; remove it")
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as e:  # a read-only folder: name the output, not the lock file
                blame(e, self.out_root, self.path)
                raise
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise KitError(
                    f"{self.flag} {self.out_root}: another rvos-kit run is writing this "
                    f"output right now (it holds {self.path.name}); wait for it to finish "
                    "or stop it"
                ) from None
            try:  # the file we locked may have been removed by a run that just failed
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self.fd = fd
                _HELD[str(self.path)] = [fd, 1]
                return
            os.close(fd)

    def mark(self) -> None:
        """Record that the kit wrote the folder (before it is renamed into place)."""
        assert self.fd is not None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, MARK.encode(), 0)

    def release(self) -> None:
        """Unlock; a lock file that marks nothing is removed (a run that locks it next
        re-checks the inode it locked, see :meth:`acquire`). A nested hold only leaves."""
        if self.fd is not None and self._nested:
            _HELD[str(self.path)][1] -= 1
            self.fd, self._nested = None, False
        elif self.fd is not None:
            _HELD.pop(str(self.path), None)
            if os.fstat(self.fd).st_size == 0:
                self.path.unlink(missing_ok=True)
            os.close(self.fd)
            self.fd = None


@contextlib.contextmanager
def held_output(out_root: str | os.PathLike, flag: str = "--out"):
    """Hold the lock of output folder ``out_root`` for the ``with`` block, after the
    checks of :func:`check_replaceable` (before and again under the lock). A verb that
    works long before it writes (a sharded stage: its input checks, Ray, the shards)
    takes it first, so that a second run on the same output fails at once; the
    :class:`StagedTree` that finally commits joins the hold."""
    check_replaceable(out_root, flag)
    lock = OutputLock(out_root, flag)
    lock.acquire()
    try:
        check_replaceable(out_root, flag)
        yield lock
    finally:
        lock.release()


class StagedTree:
    """Build an output folder in a staging folder beside it and move it to ``out_root``
    only on success (see the module docstring).

    On an exception the staging folder is removed (unless ``resume``, where it is kept
    for the next run except on bad input, a :class:`KitError`) and ``out_root`` is left
    as it was.
    """

    def __init__(self, out_root: str | os.PathLike, resume: bool = False, flag: str = "--out"):
        self.shown = Path(out_root)
        self.out_root = Path(os.path.abspath(out_root))
        self.resume = resume
        self.flag = flag
        name = self.out_root.name
        self.path = self.out_root.with_name(
            f".{name}.partial" if resume else f".{name}.partial-{os.getpid()}"
        )
        self.lock = OutputLock(self.out_root, flag)

    def _clean_leftovers(self) -> None:
        """Staging and swap folders of earlier runs that were killed (we hold the lock).
        A run killed between the two renames of its commit left the output moved aside
        (``.<name>.old-<pid>``) and none in place: that previous output is put back."""
        name = self.out_root.name
        if not (self.out_root.exists() or self.out_root.is_symlink()):
            olds = [p for p in self.out_root.parent.glob(f".{glob.escape(name)}.old-*")
                    if p.is_dir() and not p.is_symlink()]  # fmt: skip
            if len(olds) == 1:
                os.replace(olds[0], self.out_root)
                print(f"note: {self.shown}: put back the previous output (a run was killed "
                      "while replacing it)", file=sys.stderr)  # fmt: skip
        remove_leftovers(self.out_root, ".partial-", ".old-", keep=self.path)

    def __enter__(self) -> StagedTree:
        check_replaceable(self.shown, self.flag)  # before creating anything
        self.lock.acquire()
        try:
            check_replaceable(self.shown, self.flag)  # again, now that no one else writes
            self._clean_leftovers()
            if self.path.is_symlink() or (self.path.exists() and not self.path.is_dir()):
                _remove(self.path)
            if self.path.exists() and not self.resume:
                shutil.rmtree(self.path)
            self.path.mkdir(exist_ok=True)
        except BaseException:
            self.lock.release()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if exc_type is not None:
                blame(exc, self.shown, self.path, self.lock.path)  # a full disk: name --out
                if not self.resume or exc_type is KitError:
                    shutil.rmtree(self.path, ignore_errors=True)
                return False
            self.commit()
        finally:
            self.lock.release()
        return False

    def discard(self) -> None:
        """Empty the staging folder (a resume record that no longer matches)."""
        shutil.rmtree(self.path, ignore_errors=True)
        self.path.mkdir()

    def commit(self) -> None:
        self.lock.mark()
        old = None
        if self.out_root.exists() or self.out_root.is_symlink():
            old = self.out_root.with_name(f".{self.out_root.name}.old-{os.getpid()}")
            os.replace(self.out_root, old)
        os.replace(self.path, self.out_root)
        if old is not None:
            _remove(old)


# ------------------------------------------------------------- outputs never on inputs
def _real(path: str) -> Path:
    return Path(os.path.realpath(os.path.expanduser(path)))


def _same(a: str, b: str) -> bool:
    if _real(a) == _real(b):
        return True
    try:  # hard links, bind mounts: the same file under two names
        return os.path.samefile(a, b)
    except OSError:
        return False


def _inside(a: str, b: str) -> bool:
    """``a`` lies (strictly) inside the folder ``b``, after symbolic links."""
    return _real(b) in _real(a).parents


def check_outputs(
    reads: list[tuple[str, str]],
    writes: list[tuple[str, str]],
    writes_into: list[tuple[str, str]] = (),
) -> None:
    """Refuse (:class:`KitError`, before any work) an output of a command that would
    destroy or change one of its inputs: an output that is an input (after symbolic and
    hard links), holds one (replacing it deletes the input) or lies inside an input folder;
    two outputs that are one path, or one inside the other. Entries are ``(flag, path)``;
    ``writes`` are replaced whole, ``writes_into`` are folders files are added to (they
    may hold an input, e.g. the downloads folder holding the lock file)."""
    fix = "choose another output path"
    for wl, w in writes:
        _check_not_cwd(w, wl)
    for wl, w in [*writes, *writes_into]:
        whole = (wl, w) in writes
        for rl, r in reads:
            if _same(w, r):
                why = "the same file: writing it would destroy that input"
            elif whole and _inside(r, w):
                why = "it holds that input: replacing it would delete it"
            elif _inside(w, r):
                why = "it lies inside that input folder: writing there would change it"
            else:
                continue
            raise KitError(f"{wl} {w}: overlaps the input {rl} {r} ({why}); {fix}")
    outs = [*writes, *writes_into]
    for i, (al, a) in enumerate(outs):
        for bl, b in outs[i + 1 :]:
            if _same(a, b):
                raise KitError(f"{al} {a} and {bl} {b}: one path for two outputs; {fix}")
            for (xl, x), (yl, y) in (((al, a), (bl, b)), ((bl, b), (al, a))):
                if (yl, y) in writes and _inside(x, y):
                    raise KitError(
                        f"{xl} {x}: lies inside the output {yl} {y}, which is replaced whole; {fix}"
                    )
