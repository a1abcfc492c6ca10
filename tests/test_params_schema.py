"""Issue 11 case 3: params.yaml is checked by one strict schema at `dag` and `preflight`
time: unknown keys, wrong types and values outside a fixed set are refused with the key
path and what is allowed; model and backend names are checked against the registries."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from rvos_kit.cli import main
from rvos_kit.compute import docker as runner
from rvos_kit.pipeline import params as params_mod
from rvos_kit.stages import fusion
from rvos_kit.trees import masktree

REPO = Path(__file__).resolve().parents[1]
DEMO = yaml.safe_load((REPO / "demo/params.yaml").read_text())


def _write(tmp_path, p) -> str:
    p = copy.deepcopy(p)
    p["paths"]["lock"] = str(REPO / "checkpoints.lock")
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump(p, sort_keys=False))
    return str(f)


def _set(path: str, value):
    def edit(p):
        *parents, last = path.split(".")
        d = p
        for k in parents:
            d = d[k]
        d[last] = value

    return edit


CASES = [
    # (edit, expected fragments of the one-line error)
    (_set("fusion.en2.pair_treshold", 3),
     ["fusion.en2.pair_treshold: unknown key", "pair_threshold"]),
    (_set("fusion.en2.odd", "banana"), ["fusion.en2.odd", "'vote' or 'first'", "banana"]),
    (_set("encoder", "fats"), ["encoder", "'pil' or 'fast'", "fats"]),
    (_set("fusion.en2.pair_threshold", True), ["fusion.en2.pair_threshold", "integer"]),
    (_set("fusion.en2.pair_threshold", "3"), ["fusion.en2.pair_threshold", "integer"]),
    (_set("fusion.en2.pair_threshold", 0), ["fusion.en2.pair_threshold", "greater than"]),
    (_set("propagation.aot", {"backend": "aot", "model": "swinl_deaot", "tree": "t",
                              "nodes": ["soc"]}),
     ["propagation.aot", "'swinl_deaot'", "swinl_aotl"]),
    (_set("propagation.aot.backend", "aot2"), ["propagation.aot.backend", "'aot'", "'flow'"]),
    (_set("propagation.aot.model", "raft"), ["propagation.aot", "flow takes no model"]),
    (_set("models.soc.kind", "probabilities"), ["models.soc.kind", "logits"]),
    (_set("models.sco", {"kind": "logits", "source": "infer"}),
     ["models.sco", "referformer_ft"]),
    (_set("device", "gpu"), ["device", "'cuda' or 'cpu'"]),
    (_set("sample.videos", -1), ["sample.videos"]),
    (_set("data.metaa", "x.json"), ["data.metaa: unknown key", "meta"]),
    (_set("submission.node", "en3"), ["submission.node", "'en3'", "final"]),
    # issue 22: the stack and the deformable-attention path
    (_set("runner", {"stack": "latest"}), ["runner.stack", "'published' or 'modern'", "latest"]),
    (_set("runner", {"stack": "modern", "images": {"rvos": "rvos-kit/rvos:0.1.0",
                                                   "uninext": "rvos-kit/uninext:0.1.0"}}),
     ["runner.stack: modern", "runner.images.modern", "not defined (rvos, uninext)"]),
    (_set("infer", {"upstream": "up", "msda": "cuda"}),
     ["infer.msda", "'compiled' or 'pytorch'", "cuda"]),
]  # fmt: skip


@pytest.mark.parametrize("edit,want", CASES, ids=[c[1][0] for c in CASES])
@pytest.mark.parametrize("verb", ["dag", "preflight"])
def test_bad_params_are_refused_with_key_path(tmp_path, capsys, edit, want, verb):
    p = copy.deepcopy(DEMO)
    edit(p)
    f = _write(tmp_path, p)
    rc = main([verb, "--params", f, *(["--check"] if verb == "dag" else [])])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    for w in want:
        assert w in err, err


def test_every_committed_params_file_passes(tmp_path):
    for f in ("params.yaml", "demo/params.yaml", "audit/params.yaml"):
        params_mod.load_params(REPO / f)


def test_schema_enums_are_the_code_registries():
    """One home (rvos_kit.catalog): the code's tables are the catalogue's, not copies."""
    assert params_mod.PAIRINGS is fusion.PAIRINGS
    assert params_mod.ODD_RULES is fusion.ODD_RULES
    assert params_mod.ENCODERS is masktree.ENCODERS
    assert params_mod.RUNNER_MODES is runner.MODES
    assert params_mod.STACKS is runner.STACKS
    from rvos_kit.stages.rvos.infer.core import MSDA_PATHS

    assert params_mod.MSDA_PATHS is MSDA_PATHS
    from rvos_kit.stages.data import MODELS

    assert {n: r.kind for n, r in params_mod.MODELS.items()} == MODELS


def test_compiled_msda_needs_a_gpu_device(tmp_path, capsys):
    """issue 22: the compiled op has CUDA kernels only; leaving msda out chooses by device."""
    p = copy.deepcopy(DEMO)
    p["device"], p["infer"] = "cpu", {"upstream": "up", "msda": "compiled"}
    rc = main(["dag", "--params", _write(tmp_path, p), "--check"])
    err = capsys.readouterr().err
    assert rc == 2 and "infer.msda: compiled needs device: cuda" in err, err
    for ok in ({"upstream": "up", "msda": "pytorch"}, {"upstream": "up"}):
        p["infer"] = ok
        params_mod.check_params(p)
    p["device"], p["infer"] = "cuda", {"upstream": "up", "msda": "compiled"}
    params_mod.check_params(p)
