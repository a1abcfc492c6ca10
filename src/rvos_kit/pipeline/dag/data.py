"""DAG kinds before the models: ``sample`` (``make-sample``: the synthetic demo data,
when params has a ``sample`` section) and ``meta_valid_only`` (``valid-meta``: the valid
meta minus ``data.test_meta``, which every stage reads under ``data.split: valid``)."""

from __future__ import annotations

from .context import Builder, q


def add_sample(b: Builder) -> None:
    s = b.p.sample
    if not s:
        return
    args = ["rvos-kit", "make-sample", "--out", s.out]
    for key in ("seed", "videos", "frames", "height", "width"):
        if key in s.model_fields_set:  # given in params.yaml (else the verb's default)
            args += [f"--{key}", getattr(s, key)]
    b.stages["sample"] = {"cmd": q(args), "params": ["sample"], "outs": [s.out]}


def add_valid_meta(b: Builder) -> None:
    data = b.p.data
    if b.meta == data.meta:
        return
    b.stages["meta_valid_only"] = {
        "cmd": q(["rvos-kit", "valid-meta", "--valid", data.meta, "--test",
                  data.test_meta, "--out", b.meta]),
        "deps": [data.meta, data.test_meta],
        "outs": [b.meta],
    }  # fmt: skip
