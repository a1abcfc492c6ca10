"""Issue 23: every fact in one home (rvos_kit.catalog, rvos_kit.config), and a sixth model
is one catalogue row plus its params: a toy model registered from this test alone runs
through the generated DAG to a fused tree with real `dvc repro`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rvos_kit import catalog, config
from rvos_kit.errors import KitError
from rvos_kit.pipeline.dag import render
from rvos_kit.stages.data import make_sample

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]


def test_schema_defaults_are_the_catalogue_defaults():
    """No restated default: each value default of the schema is catalog.DEFAULTS'."""
    sections = {"": config.Params, "data": config.DataSection, "paths": config.PathsSection,
                "runner": config.RunnerSection, "infer": config.InferSection,
                "sample": config.SampleSection, "propagation": config.PropagationSection,
                "fusion": config.FusionSection, "submission": config.SubmissionSection,
                "scale": config.ScaleSection}  # fmt: skip
    for section, values in catalog.DEFAULTS.items():
        fields = sections[section].model_fields
        for key, want in values.items():
            f = fields[key]
            got = f.default_factory() if f.default_factory else f.default
            if key == "engine" or key == "chunk_videos":  # None: the verb's default
                assert got is None
                continue
            assert got == (list(want) if isinstance(want, tuple) else want), (section, key)


def test_every_backend_asks_ray_for_what_it_runs_on():
    from rvos_kit.compute.scale.settings import ScaleSettings

    for name, row in catalog.BACKENDS.items():
        needs = ScaleSettings().needs_of(name)
        assert (needs.gpus >= 1) == row.gpu, name
    with pytest.raises(ValueError, match="GPU"):
        catalog.register_backend(catalog.BackendRow("gpuless", True, "rvos", None, "x", ("x",),
                                                    (("cpus", 1), ("gpus", 0))))  # fmt: skip


@pytest.fixture
def toy():
    row = catalog.register_model(catalog.ModelRow("toy", "logits", "toy_driver", "rvos"))
    yield row
    catalog.unregister_model("toy")


def _params(root: Path) -> dict:
    return {
        "compat": "challenge2023",  # DVC reads the params keys a stage declares: spell them
        "encoder": "pil",
        "data": {"meta": "sample/meta_expressions.json", "images": "sample/JPEGImages"},
        "paths": {"outputs": "outputs", "lock": str(REPO / "checkpoints.lock")},
        "models": {"soc": {"kind": "logits", "source": "tree", "tree": "sample/models/soc"},
                   "toy": {"kind": "logits", "source": "tree", "tree": "toy"}},
        "propagation": {"flow": {"backend": "flow", "tree": "T", "nodes": ["toy"]}},
        "fusion": {"two": {"members": ["soc", "toy/flow"], "pair_threshold": 2,
                           "odd": "first"}},
    }  # fmt: skip


def test_a_sixth_model_is_one_catalogue_row(toy, tmp_path):
    repo = tmp_path / "repo"
    make_sample(repo / "sample", seed=1, videos=2, frames=4, progress=False)
    shutil.copytree(repo / "sample/models/mutr", repo / "toy")  # its ready tree
    p = _params(repo)
    p["models"]["toy"]["kind"] = "probabilities"  # the catalogue row says logits
    with pytest.raises(KitError, match="models.toy.kind: toy outputs logits"):
        config.check_params(p)
    p = _params(repo)
    (repo / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    (repo / "dvc.yaml").write_text(render(repo / "params.yaml"))
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    assert {"keyframes_toy", "propagate_flow_toy", "vote_two"} <= set(stages)
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    for cmd in (["git", "init", "-q"], [str(BIN / "dvc"), "init", "-q"],
                [str(BIN / "dvc"), "repro", "vote_two"]):  # fmt: skip
        r = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
    fused = sorted((repo / "outputs/fused/two").rglob("*.png"))
    assert len(fused) == len(sorted((repo / "toy/Annotations").rglob("*.png")))
