"""The upstream check trusts bytes, not git, and nothing unlisted may sit on the import
paths (issue 21, cases 4 and 5). Real git repositories (``git init`` in a temp folder,
real ``assume-unchanged`` and ``refs/replace``), real files planted beside the verified
ones, and real child processes that import the code the way the drivers do.

A test repository cannot hold the pinned commit object itself (that commit has files the
shared archive lacks), so the git tests commit the archive's files and pin *that*
commit (``PINNED_COMMIT`` patched): every file still has the manifest's blob id.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rvos_kit.errors import KitError
from rvos_kit.stages.rvos.infer import upstream as up
from rvos_kit.stages.rvos.infer.upstream import verify_upstream

GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@t", "GIT_CONFIG_NOSYSTEM": "1", "HOME": "/nonexistent",
}  # fmt: skip


def git(root: Path, *args: str) -> str:
    r = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                       env=GIT_ENV, check=True)  # fmt: skip
    return r.stdout.strip()


def copy(upstream: Path, dest: Path, *folders: str) -> Path:
    for f in folders:
        shutil.copytree(upstream / f, dest / f)
    return dest


@pytest.fixture
def repo(upstream, tmp_path, monkeypatch) -> Path:
    """A git checkout of MUTR/ (the archive's bytes) whose HEAD is the pinned commit."""
    root = copy(upstream, tmp_path / "repo", "MUTR")
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-qm", "published")
    monkeypatch.setattr(up, "PINNED_COMMIT", git(root, "rev-parse", "HEAD"))
    verify_upstream(root, ("MUTR",))  # the untouched checkout passes
    return root


def test_an_edit_hidden_by_assume_unchanged_is_refused(repo):
    f = repo / "MUTR" / "opts.py"
    f.write_bytes(f.read_bytes() + b"import os; os.system('echo owned')\n")
    git(repo, "update-index", "--assume-unchanged", "MUTR/opts.py")
    assert git(repo, "status", "--porcelain", "--untracked-files=no") == ""  # git is fooled
    with pytest.raises(KitError, match=r"MUTR/opts\.py differs from the pinned commit"):
        verify_upstream(repo, ("MUTR",))


def test_a_replaced_pinned_commit_is_refused(repo):
    pinned = up.PINNED_COMMIT
    f = repo / "MUTR" / "opts.py"
    f.write_bytes(f.read_bytes() + b"TAMPERED = True\n")
    git(repo, "commit", "-qam", "tampered")
    tampered = git(repo, "rev-parse", "HEAD")
    git(repo, "replace", pinned, tampered)
    git(repo, "checkout", "-qf", "--detach", pinned)
    assert git(repo, "rev-parse", "HEAD") == pinned  # HEAD "is" the pinned commit
    assert git(repo, "status", "--porcelain", "--untracked-files=no") == ""
    assert b"TAMPERED" in f.read_bytes()
    with pytest.raises(KitError, match=r"MUTR/opts\.py differs"):
        verify_upstream(repo, ("MUTR",))


def test_a_checkout_at_another_commit_is_still_named(repo):
    git(repo, "commit", "-q", "--allow-empty", "-m", "later")
    with pytest.raises(KitError, match="not the pinned commit"):
        verify_upstream(repo, ("MUTR",))


@pytest.mark.parametrize(
    "planted",
    [
        "soc_test/einops.py",  # first on sys.path: shadows the installed einops
        "soc_test/transformers/__init__.py",  # a package folder shadowing transformers
        "soc_test/models/extra.py",
        "soc_test/models/ops/MultiScaleDeformableAttention.cpython-310-x86_64-linux-gnu.so",
        "soc_test/torch.abi3.so",
        "soc_test/yaml.pyc",  # a sourceless module
        "soc_test/__pycache__/einops.py",
        "soc_test/util/__init__.pyw",
    ],
)
def test_an_unlisted_importable_file_is_refused_by_name(upstream, tmp_path, planted):
    root = copy(upstream, tmp_path / "u", "soc_test")
    assert "nothing unlisted" in verify_upstream(root, ("soc_test",))
    p = root / planted
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"raise SystemExit('shadowed')\n")
    with pytest.raises(KitError, match=re.escape(f"{planted} is not a file of the pinned")):
        verify_upstream(root, ("soc_test",))


def test_what_python_cannot_import_from_there_is_allowed(upstream, tmp_path):
    """The published commit itself tracks build products, caches and an egg; users keep
    checkpoints and notes beside the code; the uninext image builds detectron2._C in
    place. None of it can be reached by an import from the model folder."""
    root = copy(upstream, tmp_path / "u", "soc_test", "UNINEXT")
    for rel in [
        "soc_test/notes.txt",
        "soc_test/checkpoints/soc_ft.pth",  # .pth here is a checkpoint, not a site file
        "soc_test/models/ops/build/lib.linux-x86_64-cpython-38/"
        "MultiScaleDeformableAttention.cpython-38-x86_64-linux-gnu.so",
        "soc_test/models/ops/build/lib.linux-x86_64-cpython-38/functions/__init__.py",
        "soc_test/models/ops/MultiScaleDeformableAttention.egg-info/top_level.txt",
        "soc_test/models/ops/dist/MultiScaleDeformableAttention-1.0-py3.8-linux-x86_64.egg",
        "soc_test/models/__pycache__/backbone.cpython-38.pyc",
        "soc_test/__pycache__/infer_refytb.cpython-310.opt-1.pyc",
        "soc_test/some-script.py",  # not an identifier: no import statement reaches it
        "UNINEXT/detectron2/_C.cpython-39-x86_64-linux-gnu.so",
    ]:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    (root / "soc_test" / "empty_dir").mkdir()
    verify_upstream(root, ("soc_test",))
    verify_upstream(root, ("UNINEXT",))
    (root / "UNINEXT" / "detectron2" / "_C.py").write_bytes(b"x")  # only the built .so
    with pytest.raises(KitError, match="UNINEXT/detectron2/_C.py is not a file"):
        verify_upstream(root, ("UNINEXT",))


@pytest.mark.parametrize("kind", ["file", "dir", "listed"])
def test_symlinks_are_refused(upstream, tmp_path, kind):
    root = copy(upstream, tmp_path / "u", "MUTR")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "data.txt").write_text("x")
    if kind == "file":
        link = root / "MUTR" / "README.link"
        link.symlink_to(elsewhere / "data.txt")
    elif kind == "dir":
        link = root / "MUTR" / "models" / "more"
        link.symlink_to(elsewhere, target_is_directory=True)
    else:  # a listed file replaced by a link to identical bytes
        link = root / "MUTR" / "opts.py"
        (elsewhere / "opts.py").write_bytes(link.read_bytes())
        link.unlink()
        link.symlink_to(elsewhere / "opts.py")
    with pytest.raises(KitError, match=f"{link.relative_to(root)} is a symlink"):
        verify_upstream(root, ("MUTR",))


IMPORT_OPTS = """
import sys
from pathlib import Path
root = Path(sys.argv[1])
if sys.argv[2] == "guarded":
    from rvos_kit.stages.rvos.infer.upstream import guard_imports
    guard_imports(root, root / "MUTR")
sys.path.insert(0, str(root / "MUTR"))
import opts
print("PLANTED" if getattr(opts, "PLANTED", False) else "published", opts.__file__)
"""


def _import_opts(root: Path, mode: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run([sys.executable, "-c", IMPORT_OPTS, str(root), mode],
                          capture_output=True, text=True, env=env, cwd=root)  # fmt: skip


def test_a_planted_pyc_in_pycache_is_never_read(upstream, tmp_path):
    """__pycache__ files are allowed by the check (Python writes them, the commit tracks
    some), so they must never be used: a .pyc whose header matches the published
    source's mtime and size is what a plain import runs instead of the source; the
    drivers' guarded import compiles the checked source."""
    root = copy(upstream, tmp_path / "u", "MUTR")
    src = root / "MUTR" / "opts.py"
    st = src.stat()
    code = compile("PLANTED = True\n", str(src), "exec")
    ext = importlib.import_module("importlib._bootstrap_external")
    pyc = Path(importlib.util.cache_from_source(str(src)))
    pyc.parent.mkdir(exist_ok=True)
    pyc.write_bytes(ext._code_to_timestamp_pyc(code, int(st.st_mtime), st.st_size))
    verify_upstream(root, ("MUTR",))  # allowed: a cache file...
    plain = _import_opts(root, "plain")
    assert plain.stdout.startswith("PLANTED"), plain.stderr  # ...that a plain import runs
    guarded = _import_opts(root, "guarded")
    assert guarded.returncode == 0, guarded.stderr
    assert guarded.stdout.startswith("published"), guarded.stdout
    # and the guarded import wrote no bytecode of its own
    assert sorted(p.name for p in pyc.parent.iterdir()) == [pyc.name]


def test_a_file_changed_after_the_check_is_refused_at_import(upstream, tmp_path):
    root = copy(upstream, tmp_path / "u", "MUTR")
    verify_upstream(root, ("MUTR",))
    src = root / "MUTR" / "opts.py"
    src.write_bytes(src.read_bytes() + b"PLANTED = True\n")
    r = _import_opts(root, "guarded")
    assert r.returncode != 0
    assert "MUTR/opts.py changed after the check against the pinned commit" in r.stderr
    (root / "MUTR" / "util" / "planted.py").write_text("x = 1\n")
    r = subprocess.run(
        [sys.executable, "-c", IMPORT_OPTS.replace("import opts\n", "import util.planted\n")
         .replace('print("PLANTED" if getattr(opts, "PLANTED", False) else "published", '
                  "opts.__file__)", ""), str(root), "guarded"],
        capture_output=True, text=True, cwd=root,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )  # fmt: skip
    assert r.returncode != 0
    assert "MUTR/util/planted.py is not a file of the pinned commit" in r.stderr


def test_the_full_published_commit_and_the_archive_pass_fast(upstream):
    """Every folder of the archive (873 files) is hashed and walked in well under a
    second (measured 0.03-0.11 s per call on the 2-core CI machine)."""
    import time

    t0 = time.perf_counter()
    verify_upstream(upstream, ("soc_test", "MUTR", "ReferFormer"))
    verify_upstream(upstream, ("UNINEXT",))
    assert time.perf_counter() - t0 < 5
