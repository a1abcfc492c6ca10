"""DAG kind ``vote_<node>``: a fusion node (``fusion.<node>``), voted from its members'
trees (stage 1: models; stage 2: propagated trees), or the authors' released tree of it
(``source: released``)."""

from __future__ import annotations

from ...errors import KitError
from .context import Builder, q


def is_stage1(b: Builder, node: str) -> bool:
    """A stage-1 node votes model trees only (no ``<node>/<propagation>`` member)."""
    return all("/" not in m for m in b.fusion[node].members)


def add(b: Builder, node: str) -> None:
    f = b.fusion[node]
    out = b.tree(node)
    if f.source == "released":
        name = f"released_{node}" if b.has(f"released_{node}") else None
        b.released(name or f"released_{node}_origin", out, f"vote_{node}")
        return
    members = [b.tree(m) for m in f.members]
    odd = f.odd
    args = ["rvos-kit", "vote", *members, "--out", out, "--meta", b.meta,
            "--pairing", f.pairing, "--pair-threshold", f.pair_threshold, "--odd", odd]  # fmt: skip
    params = [f"fusion.{node}", "encoder"]
    deps = [*members, b.meta]
    if odd == "vote":
        args += ["--odd-threshold", f.odd_threshold]
    key = f.members[0]
    if odd == "first" and "/" not in key and key in b.models:
        params.append("compat")
        quirk = _sigmoid_odd_tree(b, node, key)
        if quirk:
            args += ["--odd-from", quirk]
            deps.append(quirk)
    args += ["--encoder", b.p.encoder]
    b.stages[f"vote_{node}"] = {"cmd": q(args), "deps": deps, "params": params,
                                "outs": [out]}  # fmt: skip


def _sigmoid_odd_tree(b: Builder, node: str, key: str) -> str | None:
    """Quirk 9.1 (compat challenge2023): with ``odd: first`` and a key model that outputs
    probabilities, the published odd-expression branch binarised them with sigmoid(p) >
    0.5; ``import-pth`` writes those masks to ``Annotations_sigmoid_odd`` beside the
    model's tree. None where the quirk does not apply."""
    spec = b.models[key]
    if b.p.compat != "challenge2023" or spec.kind != "probabilities":
        return None
    if spec.source == "released":
        raise KitError(
            f"fusion.{node}: compat challenge2023 reproduces quirk 9.1 from "
            f"{key}'s raw probabilities, which a released tree lacks: import its "
            f"dump (models.{key}.source: imported) or set compat: corrected"
        )
    return f"{b.model_dir(key)}/Annotations_sigmoid_odd"
