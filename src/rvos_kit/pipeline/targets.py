"""Which stages a preflight looks at: what ``dvc repro dvc.yaml:<stage>`` runs
(:func:`upstream`), one model's stages, or the stages a generated preflight stage guards
(:func:`guarded_by`); :func:`target_stages` picks by the options of ``rvos-kit
preflight``. ``pl`` is a :class:`rvos_kit.pipeline.preflight.Pipeline`."""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import KitError


def _outs(stage: dict) -> list[str]:
    return [next(iter(o)) if isinstance(o, dict) else o
            for o in stage.get("outs", []) + stage.get("metrics", [])]  # fmt: skip


def closure(stages: dict, targets: Iterable[str]) -> set[str]:
    """``targets`` and every stage of ``stages`` (name -> dvc.yaml stage) they need: the
    producers of their deps, down (a dep may sit inside another stage's output)."""
    producer = {o: n for n, s in stages.items() for o in _outs(s)}
    keep, todo = set(), list(targets)
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        keep.add(name)
        for d in stages[name].get("deps", []):
            todo += [n for o, n in producer.items() if d == o or d.startswith(o + "/")]
    return keep


def upstream(pl, targets: Iterable[str]) -> list[str]:
    """``targets`` and every stage they need (what ``dvc repro dvc.yaml:<target>`` runs),
    in DAG order, without the preflight stages themselves."""
    keep = closure(pl.stages, targets)
    return [n for n in pl.stages if n in keep and not _is_preflight(n)]


def _is_preflight(name: str) -> bool:
    return name == "preflight" or name.startswith("preflight_")


def guarded_by(pl, preflight_stage: str) -> list[str]:
    """The stages the generated preflight stage ``preflight_stage`` guards."""
    if not _is_preflight(preflight_stage) or preflight_stage not in pl.stages:
        known = ", ".join(n for n in pl.stages if _is_preflight(n))
        raise KitError(
            f"{pl.params_path}: no preflight stage {preflight_stage!r} (the DAG has: {known})"
        )
    outs = set(_outs(pl.stages[preflight_stage]))
    return [n for n, s in pl.stages.items() if outs & set(s.get("deps", []))]


def target_stages(pl, stage=None, model=None, guard=None) -> list[str] | None:
    """The stages a preflight looks at: a generated preflight stage's (``guard``), what
    ``dvc repro`` of ``stage`` runs, one model's stages (``model``: its inference or
    import, key frames and tree audit, with what they need), or all (None)."""
    if guard:
        return guarded_by(pl, guard)
    targets = list(stage or [])
    for m in model or []:
        if m not in pl.p.models:
            raise KitError(f"{pl.params_path}: no model {m!r} (models: {', '.join(pl.p.models)})")
        own = [f"rvos_{m}", f"keyframes_{m}", f"audit_{m}_trees"]
        found = [n for n in own if n in pl.stages]
        if not found:
            raise KitError(
                f"{pl.params_path}: model {m!r} has no stage in this pipeline (source: "
                f"{pl.p.models[m].source}, or nothing downstream reads it)"
            )
        targets += found
    if not targets:
        return None
    for t in targets:
        if t not in pl.stages:
            raise KitError(
                f"{pl.params_path}: no stage {t!r}; stages: "
                + ", ".join(n for n in pl.stages if not _is_preflight(n))
            )
    guards = [t for t in targets if _is_preflight(t)]  # a preflight stage: what it guards
    names = upstream(pl, [t for t in targets if not _is_preflight(t)])
    for g in guards:
        names += [n for n in guarded_by(pl, g) if n not in names]
    return names
