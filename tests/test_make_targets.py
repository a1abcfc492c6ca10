"""The Makefile as a newcomer meets it: `make audit` without the dataset stops before any
download and names what is missing; `make help` shows real values, not `$(VAR)`. Each
runs the real `make` on a copy of the files the targets read, with an environment folder
whose `bin/` links to the interpreter running these tests (nothing is installed)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# what the Makefile's environment stamp depends on (copied so the stamp is newer)
STAMP_DEPS = ("pyproject.toml", "setup.py", "src/rvos_kit/trees/_unfilter.c",
              "constraints.txt", "requirements-nodeps.txt")  # fmt: skip

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="no make")


def clone(tmp_path: Path) -> Path:
    repo = tmp_path / "clone"
    for f in ("Makefile", "checkpoints.lock", "audit/params.yaml", *STAMP_DEPS):
        (repo / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / f, repo / f)
    venv = repo / ".venv"
    (venv / "bin").mkdir(parents=True)
    for tool in ("python", "rvos-kit", "dvc"):
        (venv / "bin" / tool).symlink_to(BIN / tool)
    time.sleep(0.01)
    (venv / ".rvos-kit-installed").touch()
    return repo


def make(repo: Path, *args: str, **env) -> subprocess.CompletedProcess:
    e = {**os.environ, "DVC_NO_ANALYTICS": "1", **env}
    return subprocess.run(["make", "-C", str(repo), *args], capture_output=True, text=True,
                          env=e, timeout=300)  # fmt: skip


def test_make_audit_without_the_dataset_stops_before_any_download(tmp_path):
    from test_artifacts import FileServer

    server = FileServer()  # where the Drive downloads would go: it must see no request
    try:
        repo = clone(tmp_path)
        r = make(repo, "audit", RVOS_KIT_GDRIVE_ENDPOINT=server.url)
    finally:
        server.close()
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert server.requests == []
    assert "meta_expressions.json not found" in out and "JPEGImages not found" in out
    assert "stopped before downloading anything" in out
    assert "rvos-kit fetch" not in out.replace("`rvos-kit fetch --params", "")
    assert not (repo / "data").exists()


def test_make_help_expands_variables_and_names_what_lint_runs(tmp_path):
    repo = clone(tmp_path)
    r = make(repo, "help", "UPSTREAM_VENV=/opt/up")
    assert r.returncode == 0, r.stderr
    assert "$(" not in r.stdout
    assert "create /opt/up: the published models' test environment" in r.stdout
    lint = next(ln for ln in r.stdout.splitlines() if ln.startswith("lint"))
    assert "ruff" in lint and "hadolint" in lint


def test_dvc_metrics_and_params_diff_are_clean_in_a_clone(tmp_path):
    """`dvc metrics diff` / `dvc params diff` in a clone print numbers, not "DVC failed to
    load some metrics" (no pipeline declares a metric that only a GPU run would write)."""
    repo = tmp_path / "clone"
    metrics = [str(p.relative_to(REPO)) for p in (REPO / "demo/outputs/metrics").iterdir()]
    files = ["dvc.yaml", "params.yaml", "demo/dvc.yaml", "demo/params.yaml", "audit/dvc.yaml",
             "audit/params.yaml", *metrics]  # fmt: skip
    for f in files:
        (repo / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / f, repo / f)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_COMMITTER_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_EMAIL": "t@t"}  # fmt: skip

    def run(*cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, cwd=repo, capture_output=True, text=True, env=env,
                              timeout=300)  # fmt: skip

    run("git", "init", "-q")
    assert run(str(BIN / "dvc"), "init", "-q").returncode == 0
    run("git", "add", "-A")
    run("git", "commit", "-qm", "x")
    summary = repo / "demo/outputs/metrics/final.json"
    summary.write_text(summary.read_text().replace('"J": ', '"J": 1', 1))
    r = run(str(BIN / "dvc"), "metrics", "diff")
    assert r.returncode == 0, r.stderr
    assert "failed to load" not in r.stdout + r.stderr
    assert "demo/outputs/metrics/final.json" in r.stdout
    # dvc params diff names the changed key of the params file it belongs to
    p = repo / "demo/params.yaml"
    p.write_text(p.read_text().replace("pair_threshold: 4", "pair_threshold: 3", 1))
    r = run(str(BIN / "dvc"), "params", "diff")
    assert r.returncode == 0, r.stderr
    assert "demo/params.yaml" in r.stdout and "pair_threshold" in r.stdout
    assert "failed to load" not in r.stdout + r.stderr


MODERN_DEPS = ("requirements-upstream.txt", "constraints-upstream.txt", "requirements-nodeps.txt",
               "docker/rvos-nodeps.lock", "tools/build_detectron2.py", "tools/apply_msda_patch.py",
               "docker/patches/msda-torch2.patch", "docker/build-cuda-op.py")  # fmt: skip


def test_make_modern_venv_builds_the_upstream_stack_and_the_patched_op(tmp_path):
    """issue 22: `make modern-venv` is .venv-upstream's stack (the same requirement and
    constraint files) plus the GPU parts: the op patched in a copy of the verified tree,
    then built for sm_80..sm_120; without UPSTREAM it stops at once, creating nothing."""
    repo = clone(tmp_path)
    for f in MODERN_DEPS:
        (repo / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / f, repo / f)
    r = make(repo, "-n", "--no-print-directory", "modern-venv", "UPSTREAM=/up", "MODERN_VENV=/m")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    want = [
        "python3 -m venv /m",
        "/m/bin/python -m pip install -q -c constraints-upstream.txt -r requirements-upstream.txt",
        "/m/bin/python tools/apply_msda_patch.py /up soc_test/models/ops /m/msda-ops",
        'TORCH_CUDA_ARCH_LIST="8.0;8.6;8.9;9.0;10.0;12.0+PTX" /m/bin/python '
        "docker/build-cuda-op.py /m/msda-ops /m/msda-wheel",
        "/m/bin/python -m pip install -q --no-deps --no-index --force-reinstall "
        "/m/msda-wheel/*.whl",
        "/m/bin/python tools/build_detectron2.py /up",
    ]
    at = [lines.index(w) if w in lines else -1 for w in want]
    assert -1 not in at and at == sorted(at), "\n".join(lines)
    r = make(repo, "modern-venv", "MODERN_VENV=.venv-modern", RVOS_UPSTREAM_DIR="")
    assert r.returncode != 0 and "set UPSTREAM=DIR" in r.stdout + r.stderr
    assert not (repo / ".venv-modern").exists()
