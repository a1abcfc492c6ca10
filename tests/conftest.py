"""Shared test helpers: generated meta files and mask trees (real PNGs on disk)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rvos_kit.trees.synthetic import random_mask


def make_meta_dict(exp_counts, n_frames=4, frame_step=5, prefix="vid"):
    """meta_expressions dict: one video per entry of ``exp_counts``."""
    videos = {}
    for i, n in enumerate(exp_counts):
        frames = [f"{j * frame_step:05d}" for j in range(n_frames)]
        exps = {str(e): {"exp": f"object {e // 2} of video {i}"} for e in range(n)}
        videos[f"{prefix}{i:03d}"] = {"expressions": exps, "frames": frames}
    return {"videos": videos}


def write_meta(path: Path, meta_dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(meta_dict))
    return path


def make_tree(root: Path, meta_dict, seed=0, size=(24, 32), sizes=None, density=0.05):
    """Write a mask tree for ``meta_dict`` with PIL (uint8 L, 0/255): random masks
    (:func:`rvos_kit.trees.synthetic.random_mask`), ``density`` of their pixels flipped.
    ``sizes`` maps a video name to its (h, w), default ``size``."""
    rng = np.random.default_rng(seed)
    for vid, entry in meta_dict["videos"].items():
        h, w = (sizes or {}).get(vid, size)
        for e in entry["expressions"]:
            d = root / vid / e
            d.mkdir(parents=True, exist_ok=True)
            for f in entry["frames"]:
                m = random_mask(rng, h, w, density)
                Image.fromarray(m.astype(np.uint8) * 255, "L").save(d / f"{f}.png")
    return root


def tree_bytes(root: Path) -> dict[str, bytes]:
    """{relative path: bytes} of every file under root (hidden files included)."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


# The suite's peak use of the temp folder, measured with `du` every 2 s during
# `.ci/run` on a fresh clone on 2026-11-27: 0.86 GB (the published-code fixtures);
# since 2026-12-04 the UNINEXT tests add vit_huge's random checkpoint (5.24 GB, both ViT-H
# backbones in fp32; deleted after its two runs): 8 GB leaves a margin.
TEMP_NEEDED = int(os.environ.get("RVOS_TEST_TEMP_NEEDED", 8 * 1024**3))


def pytest_sessionstart(session):
    """Refuse to start on a disk too full for the suite: a full disk fails every later
    test at setup with a message that names no cause (CI did, once)."""
    base = session.config._tmp_path_factory.getbasetemp()
    free = shutil.disk_usage(base).free
    if free < TEMP_NEEDED:
        pytest.exit(
            f"only {free / 1024**3:.1f} GB free under {base.parent}; the suite needs "
            f"{TEMP_NEEDED / 1024**3:.1f} GB there: free some space (old "
            "pytest-of-* folders are safe to delete) or pass --basetemp on another disk",
            returncode=1,
        )


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


# ----------------------------------------------------------------- published code
SHARED_UPSTREAM = Path(__file__).resolve().parents[1].parent / "shared" / "upstream"


@pytest.fixture(scope="session")
def upstream(tmp_path_factory) -> Path:
    """The published repository at the pinned commit: the shared archive (``../shared``
    beside the clone), unpacked and checked file by file against its MANIFEST.tsv, which
    must also be the manifest the kit ships."""
    import tarfile

    from rvos_kit.stages.rvos.infer.upstream import git_blob_id, manifest

    pinned = manifest()
    checkout = os.environ.get("RVOS_UPSTREAM_DIR")
    archives = sorted(SHARED_UPSTREAM.glob("iccv2023_RVOS_Challenge-*.tar.gz"))
    if checkout:  # a user's own copy of the published repository at the pinned commit
        top = Path(checkout)
    elif archives:
        assert manifest(SHARED_UPSTREAM / "MANIFEST.tsv") == pinned
        root = tmp_path_factory.mktemp("upstream")
        with tarfile.open(archives[0]) as tf:
            tf.extractall(root, filter="data")
        (top,) = [p for p in root.iterdir() if p.is_dir()]
    else:
        why = (
            f"the published code is not here: no archive in {SHARED_UPSTREAM} and no "
            "RVOS_UPSTREAM_DIR (a checkout of RobertLuo1/iccv2023_RVOS_Challenge at the "
            "commit in src/rvos_kit/stages/rvos/infer/upstream-c538b0d.tsv)"
        )
        if os.environ.get("CI"):
            pytest.fail(why)  # CI always has it: its absence is a broken CI, not a skip
        pytest.skip(why)
    for rel, blob in pinned.items():
        assert git_blob_id(top / rel) == blob, rel
    return top


UPSTREAM_PYTHON = Path(
    os.environ.get(
        "RVOS_UPSTREAM_PYTHON",
        Path(__file__).resolve().parents[1] / ".venv-upstream" / "bin" / "python",
    )
)


@pytest.fixture(scope="session")
def random_weights(upstream, tmp_path_factory):
    """``get(model) -> folder`` with ``checkpoint.pth`` and ``pretrained/``: random weights
    and tiny text encoders from seed 0 (``rvos-kit smoke-weights``, run once per model per
    session in the published models' environment). They live in ``get.work/weights/``,
    where ``rvos-kit smoke --work get.work --seed 0`` finds them made: the smoke test and the
    published-code tests pay for each model's weights once. ``get.drop(model)`` frees the
    disk (vit_huge's file is 5.24 GB)."""
    import subprocess

    work = tmp_path_factory.getbasetemp() / "smoke-work"

    def get(model: str) -> Path:
        if not UPSTREAM_PYTHON.exists():
            pytest.fail(f"{UPSTREAM_PYTHON} missing: run `make upstream-venv` (make test does)")
        w = work / "weights" / f"{model}-seed0"
        if not (w / "checkpoint.pth").is_file():
            cmd = [str(UPSTREAM_PYTHON), "-m", "rvos_kit", "smoke-weights", "--model", model,
                   "--upstream", str(upstream), "--out", str(w), "--seed", "0"]  # fmt: skip
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                pytest.fail(f"smoke-weights {model} failed:\n{r.stdout[-2000:]}{r.stderr[-6000:]}")
        return w

    def drop(model: str) -> None:
        shutil.rmtree(work / "weights" / f"{model}-seed0", ignore_errors=True)

    get.work, get.drop = work, drop
    return get


@pytest.fixture(scope="session")
def aot_benchmark(tmp_path_factory) -> Path:
    """aot-benchmark at 75e46fe (the commit ``soc_test/DEAOT`` records): the shared archive,
    unpacked and checked file by file against its manifest (git blob ids)."""
    import tarfile

    from rvos_kit.stages.rvos.infer.upstream import git_blob_id, manifest

    archive = SHARED_UPSTREAM / "aot-benchmark-75e46fe.tar.gz"
    if not archive.exists():
        why = f"aot-benchmark at 75e46fe is not here: no {archive}"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    root = tmp_path_factory.mktemp("aot-benchmark")
    with tarfile.open(archive) as tf:
        tf.extractall(root, filter="data")
    (top,) = [p for p in root.iterdir() if p.is_dir()]
    pinned = manifest(SHARED_UPSTREAM / "MANIFEST-aot-benchmark-75e46fe.tsv")
    assert pinned
    for rel, blob in pinned.items():
        assert git_blob_id(top / rel) == blob, rel
    return top


@pytest.fixture(scope="session")
def ray_cluster():
    """One real local Ray for the whole session (its start-up costs seconds): 2 CPUs and
    2 logical GPUs, so that GPU shards are scheduled (and given CUDA_VISIBLE_DEVICES) on
    this CPU machine. Sharded verbs called in this process use it as it is; a child
    process joins it with scale.address = the returned address."""
    import logging

    import ray

    ray.init(
        address="local",
        num_cpus=2,
        num_gpus=2,
        include_dashboard=False,
        object_store_memory=128 * 1024 * 1024,
        namespace="rvos-kit-tests",
        logging_level=logging.WARNING,
    )
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
