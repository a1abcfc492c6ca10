"""params.yaml: the one home of every path and parameter of a pipeline.

Paths in it are relative to the folder that holds it (where DVC runs the stages). Only
the shape is checked here; :mod:`rvos_kit.dag` turns it into ``dvc.yaml``. A member of
a fusion node is ``NODE`` (the node's own masks: a model's output or a fused tree) or
``NODE/PROP`` (those masks after the propagation config PROP, e.g. ``soc/aot``).
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from .errors import KitError

COMPAT_MODES = ("challenge2023", "corrected")
MODEL_KINDS = ("logits", "probabilities")
MODEL_SOURCES = ("tree", "imported", "released", "infer")
FUSION_SOURCES = ("compute", "released")
BACKENDS = ("aot", "deaot", "flow")
SPLITS = ("valid", "test")


def load_params(path: str | os.PathLike) -> dict:
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            p = yaml.safe_load(f)
    except FileNotFoundError:
        raise KitError(f"{path}: params file not found") from None
    except yaml.YAMLError as e:
        raise KitError(f"{path}: not valid YAML ({e})") from None
    check_params(p, str(path))
    return p


def _need(p: dict, key: str, where: str, kind=None):
    if not isinstance(p, dict) or key not in p:
        raise KitError(f"{where}: missing key {key!r}")
    v = p[key]
    if kind is not None and not isinstance(v, kind):
        raise KitError(f"{where}: {key!r} must be a {getattr(kind, '__name__', kind)}")
    return v


def _choice(value, choices, where: str):
    if value not in choices:
        raise KitError(f"{where}: {value!r} is not one of {', '.join(choices)}")
    return value


def check_params(p, where: str = "params.yaml") -> None:
    if not isinstance(p, dict):
        raise KitError(f"{where}: expected a mapping at the top level")
    _choice(p.get("compat", "challenge2023"), COMPAT_MODES, f"{where}: compat")
    data = _need(p, "data", where, dict)
    _need(data, "meta", f"{where}: data", str)
    split = _choice(data.get("split", "test"), SPLITS, f"{where}: data.split")
    paths = _need(p, "paths", where, dict)
    _need(paths, "outputs", f"{where}: paths", str)
    models = _need(p, "models", where, dict)
    for name, m in models.items():
        w = f"{where}: models.{name}"
        _choice(_need(m, "kind", w), MODEL_KINDS, f"{w}.kind")
        src = _choice(_need(m, "source", w), MODEL_SOURCES, f"{w}.source")
        if src == "tree":
            _need(m, "tree", w, str)
        if src == "imported":
            dumps = _need(m, "dumps", w, list)
            if not dumps or not all(isinstance(d, str) for d in dumps):
                raise KitError(f"{w}.dumps: list the .pth dump file(s)")
    if any(m.get("source") == "infer" for m in models.values()):
        _check_infer(p, data, split, where)
    props = p.get("propagation") or {}
    for name, c in props.items():
        w = f"{where}: propagation.{name}"
        _choice(_need(c, "backend", w), BACKENDS, f"{w}.backend")
        _need(c, "tree", w, str)
        nodes = _need(c, "nodes", w, list)
        for n in nodes:
            if n not in models and n not in (p.get("fusion") or {}):
                raise KitError(f"{w}.nodes: {n!r} is neither a model nor a fusion node")
    fusion = p.get("fusion") or {}
    for name, f in fusion.items():
        w = f"{where}: fusion.{name}"
        if name in models:
            raise KitError(f"{w}: a fusion node cannot share its name with a model")
        _choice(f.get("source", "compute"), FUSION_SOURCES, f"{w}.source")
        members = _need(f, "members", w, list)
        if not members:
            raise KitError(f"{w}.members: list at least one member")
        for m in members:
            node, _, prop = str(m).partition("/")
            if node not in models and node not in fusion:
                raise KitError(f"{w}.members: {m!r}: {node!r} is neither a model nor a node")
            if prop and (prop not in props or node not in props[prop]["nodes"]):
                raise KitError(
                    f"{w}.members: {m!r}: propagation {prop!r} does not list node {node!r}"
                )
        for key in ("pair_threshold", "odd_threshold"):
            if key in f and (not isinstance(f[key], int) or f[key] < 1):
                raise KitError(f"{w}.{key}: must be a positive integer")
    sub = p.get("submission")
    if sub is not None and _need(sub, "node", f"{where}: submission") not in fusion:
        raise KitError(f"{where}: submission.node {sub['node']!r} is not a fusion node")


def _check_infer(p: dict, data: dict, split: str, where: str) -> None:
    """``source: infer`` needs the frames, the upstream code and, for the valid split,
    the test meta (valid-only = valid minus test)."""
    _need(data, "images", f"{where}: data", str)
    inf = _need(p, "infer", where, dict)
    _need(inf, "upstream", f"{where}: infer", str)
    if "pretrained" in inf and not isinstance(inf["pretrained"], str):
        raise KitError(f"{where}: infer.pretrained must be a folder")
    c = inf.get("chunk_videos")
    if c is not None and (not isinstance(c, int) or isinstance(c, bool) or c < 1):
        raise KitError(f"{where}: infer.chunk_videos must be a positive integer")
    if split == "valid":
        _need(data, "test_meta", f"{where}: data (split valid: valid minus test videos)", str)
