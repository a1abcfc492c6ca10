"""DVC-idiomatic parameters: a generated stage's command names only its node and params
file (``rvos-kit --params P --node S``), its values come from the params file when it
runs, and dvc.yaml declares under ``params:`` every key a stage's spelled-out command
depends on. Checked generatively: every leaf of the committed params files is changed to
another valid value, and any stage whose spelled-out command then changes while dvc.yaml
does not must declare a key covering that leaf (else ``dvc exp run -S`` of it would re-run
nothing, or DVC would serve outputs made with the old value)."""

from __future__ import annotations

import copy
import functools
import shutil
from pathlib import Path

import pytest
import yaml

from rvos_kit.cli import main
from rvos_kit.errors import KitError
from rvos_kit.pipeline.dag import fusion, spelled

REPO = Path(__file__).resolve().parents[1]
FILES = ("params.yaml", "demo/params.yaml", "audit/params.yaml")
# the schema's value sets: a string leaf in one is tried with the others of its set, any
# other string (a path, a name) with a changed one
SETS = (("challenge2023", "corrected"), ("logits", "probabilities"),
        ("tree", "imported", "released", "infer"), ("compute", "released"),
        ("aot", "deaot", "flow"), ("valid", "test"), ("cuda", "cpu"), ("consecutive", "none"),
        ("vote", "first"), ("pil", "fast"), ("native", "docker"),
        ("published_aot_fork", "aot_benchmark"), ("swinl_aotl", "swinl_deaotl"))  # fmt: skip
# optional keys the committed files leave at their defaults: set too (parent, key, value)
ADDED = ((("propagation", "*"), "share_encoder", False), ((), "device", "cpu"),
         ((), "encoder", "fast"), (("fusion", "*"), "odd_threshold", 2),
         (("infer",), "chunk_videos", 3))  # fmt: skip


def _leaves(doc, path=()):
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _leaves(v, (*path, k))
    else:
        yield path, doc


def _candidates(v):
    if isinstance(v, bool):
        return [not v]
    if isinstance(v, int):
        return [v + 1, v - 1, 2]
    if isinstance(v, float):
        return [round(v + 0.1, 3)]
    if v is None:
        return ["x"]
    if isinstance(v, list):
        return [v[:-1]] if len(v) > 1 else [v + v]
    return [w for words in SETS if v in words for w in words if w != v] + [f"{v}x"]


def _set(doc, path, value):
    d = doc
    for k in path[:-1]:
        d = d[k]
    d[path[-1]] = value


def _perturbations(raw: dict):
    """(dotted leaf, candidate values) for every leaf and every optional key of ADDED."""
    for path, v in _leaves(raw):
        yield path, _candidates(v)
    for parent, key, value in ADDED:
        scopes = [()]
        for k in parent:
            scopes = [(*s, c) for s in scopes for c in (_get(raw, s) or {} if k == "*" else [k])]
        for s in scopes:
            at = _get(raw, s)
            if isinstance(at, dict) and key not in at:
                yield (*s, key), [value]


def _get(doc, path):
    for k in path:
        if not isinstance(doc, dict) or k not in doc:
            return None
        doc = doc[k]
    return doc


@pytest.fixture(autouse=True)
def _lock_read_once(monkeypatch):
    """checkpoints.lock parsed once per test, not once per generated DAG (speed)."""
    from rvos_kit.artifacts import lock

    monkeypatch.setattr(lock, "load_lock", functools.cache(lock.load_lock))


def _generate(tmp: Path, rel: str, doc: dict):
    """(dvc.yaml's stages but their commands, the spelled-out commands) of ``doc`` written
    at ``tmp/rel``, or None when the schema or the builder refuses it. (dvc.yaml's
    commands, ``rvos-kit --params P --node S``, depend on the stage names only.)"""
    p = tmp / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    try:
        doc = spelled(p)
    except (KitError, ValueError, KeyError, TypeError):
        return None
    shape = {n: {k: v for k, v in s.items() if k != "cmd"} for n, s in doc.items()}
    return shape, {n: s["cmd"] for n, s in doc.items()}


def undeclared(tmp: Path, rel: str, only: tuple | None = None) -> tuple[list[str], int]:
    """The (stage, leaf) pairs where a value change alters the stage's spelled-out command
    but neither dvc.yaml's shape nor a params key the stage declares covers it; and how
    many value changes left dvc.yaml alone (the ones ``dvc exp run -S`` can make)."""
    shutil.copy(REPO / "checkpoints.lock", tmp / "checkpoints.lock")
    raw = yaml.safe_load((REPO / rel).read_text())
    base = _generate(tmp, rel, raw)
    assert base is not None, rel
    problems, values = [], 0
    for path, candidates in _perturbations(raw):
        if only and path != only:
            continue
        for c in candidates:
            doc = copy.deepcopy(raw)
            if _get(doc, path[:-1]) is None:
                continue
            _set(doc, path, c)
            got = _generate(tmp, rel, doc)
            if got is None:
                continue
            if got[0] != base[0]:  # the shape changed: every stage refuses until `dag`
                break
            values += 1
            leaf = ".".join(map(str, path))
            for name, s in got[1].items():
                if s == base[1][name]:
                    continue
                keys = got[0][name].get("params", [])
                if not any(leaf == k or leaf.startswith(f"{k}.") for k in keys):
                    problems.append(f"{rel}: {name} reads {leaf} but declares {keys}")
            break
    return problems, values


@pytest.mark.parametrize("rel", FILES)
def test_every_value_a_stage_reads_is_one_of_its_params_keys(rel, tmp_path):
    problems, values = undeclared(tmp_path, rel)
    assert problems == []
    assert values >= 10, values  # not vacuous: many leaves are values, not shape


def test_a_stage_that_forgets_a_key_is_caught(tmp_path, monkeypatch):
    """The check above can fail: a vote stage that stops declaring ``encoder``."""
    add = fusion.add

    def forgetful(b, node):
        add(b, node)
        s = b.stages[f"vote_{node}"]
        s["params"] = [k for k in s.get("params", []) if k != "encoder"]

    monkeypatch.setattr(fusion, "add", forgetful)
    problems, values = undeclared(tmp_path, "demo/params.yaml", only=("encoder",))
    assert values == 1
    assert sorted(p.split()[1] for p in problems) == [
        "vote_en2", "vote_final", "vote_soc_mutr_referft", "vote_vit_convnext_soc"]  # fmt: skip


def test_value_params_leave_dvc_yaml_alone_and_shape_params_do_not(tmp_path):
    """What ``dvc exp run -S`` may change without `rvos-kit dag`: thresholds, pairing and
    odd rules, TTA, the encoder; a node's members, a model's source or a backend change
    dvc.yaml (they are the DAG's shape)."""
    shutil.copy(REPO / "checkpoints.lock", tmp_path / "checkpoints.lock")
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    base = _generate(tmp_path, "params.yaml", raw)[0]
    same = [(("fusion", "final", "pair_threshold"), 3), (("fusion", "en2", "odd_threshold"), 2),
            (("propagation", "aot", "scales"), [1.0]), (("propagation", "deaot", "flip"), False),
            (("propagation", "aot", "max_long_side"), 800), (("encoder",), "fast"),
            (("infer", "chunk_videos"), 4), (("device",), "cpu")]  # fmt: skip
    shape = [(("fusion", "en2", "members"), ["soc/aot", "mutr/aot", "referformer_ft/aot"]),
             (("models", "soc", "source"), "released"), (("paths", "outputs"), "out2"),
             (("propagation", "aot", "checkpoint"), "checkpoints/vos/other.pth")]  # fmt: skip
    for path, value in same + shape:
        doc = yaml.safe_load((REPO / "params.yaml").read_text())
        _set(doc, path, value)
        got = _generate(tmp_path, "params.yaml", doc)
        assert got is not None, path
        assert (got[0] == base) == ((path, value) in same), path


def test_explain_prints_the_spelled_out_command(capsys):
    assert main(["dag", "--params", str(REPO / "demo/params.yaml"), "--explain", "vote_final"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("# stage vote_final of ") and "fusion.final, encoder" in out[0]
    assert out[1].startswith("rvos-kit --params params.yaml vote outputs/propagated/deaot/")
    assert "--pair-threshold 4 --odd vote --odd-threshold 3 --encoder pil" in out[1]
    assert main(["dag", "--params", str(REPO / "demo/params.yaml"), "--explain", "nope"]) == 2
    assert "generates no stage 'nope'" in capsys.readouterr().err
