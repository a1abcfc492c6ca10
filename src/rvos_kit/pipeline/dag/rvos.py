"""DAG kind ``rvos_<model>``: a model's masks, by ``models.<m>.source``:

- ``imported``: ``import-pth`` turns the authors' .pth dumps into a tree;
- ``released``: the authors' released tree (fetch + ``import-zip``, see :mod:`.context`);
- ``infer``: ``rvos-kit run ... infer`` in the model's image, with the checkpoint at its
  checkpoints.lock path; for MUTR under ``compat: challenge2023`` also the PNG-run tree
  (quirk 9.6) and ``audit_<model>_trees``, an informational audit of it against the dump;
- ``tree``: a tree already on disk, no stage.
"""

from __future__ import annotations

import os

from ... import catalog
from ...errors import KitError
from .context import Builder, q


def add(b: Builder, m: str) -> None:
    spec = b.models[m]
    src, mdir = spec.source, b.model_dir(m)
    if src == "imported":
        b.stages[f"rvos_{m}"] = {
            "cmd": q(
                [
                    "rvos-kit",
                    "import-pth",
                    *spec.dumps,
                    "--kind",
                    spec.kind,
                    "--out",
                    mdir,
                    "--meta",
                    b.meta,
                ]
            ),  # fmt: skip
            "deps": [*spec.dumps, b.meta],
            "params": [f"models.{m}"],
            "outs": [mdir],
        }
    elif src == "released":
        b.released(f"released_{m}_origin", f"{mdir}/Annotations", f"rvos_{m}")
    elif src == "infer":
        _infer(b, m, mdir)


def _infer(b: Builder, m: str, mdir: str) -> None:
    inf, data, row = b.p.infer, b.p.data, catalog.MODELS[m]
    try:
        ckpt = os.path.normpath(os.path.join(b.p.paths.downloads, b.lock().get(m).path))
    except KeyError:
        raise KitError(f"{b.p.paths.lock}: no checkpoint {m!r}") from None
    pretrained = inf.pretrained
    args = ["rvos-kit", "run", "--stage", row.stage, "--", "infer", "--model", m,
            "--meta", b.meta, "--images", data.images,
            "--split", data.split, "--upstream", inf.upstream,
            "--checkpoint", ckpt, "--pretrained", pretrained, "--out", mdir,
            "--device", b.p.device]  # fmt: skip
    if inf.chunk_videos:
        args += ["--chunk-videos", inf.chunk_videos]
    if inf.msda:  # absent: by device, as before (issue 22)
        args += ["--msda", inf.msda]
    if b.png_run_tree(m):
        args += ["--png-run"]
    b.stages[f"rvos_{m}"] = {
        "cmd": q(args),
        "deps": [b.meta, data.images, ckpt, *(f"{pretrained}/{x}" for x in row.pretrained)],
        # compat only where it changes what is written (mutr's PNG-run tree)
        "params": [f"models.{m}", "infer", "device", "data.split",
                   *(["compat"] if row.png_run else []), *b.stack_params()],
        "outs": [mdir],
    }  # fmt: skip
    _audit_png_run(b, m, mdir)


def _audit_png_run(b: Builder, m: str, mdir: str) -> None:
    """``audit_<m>_trees``: how the PNG-run tree differs from the dump (informational)."""
    png = b.png_run_tree(m)
    if not png:
        return
    report = f"{b.out}/metrics/{m}_trees.json"
    b.stages[f"audit_{m}_trees"] = {
        "cmd": q(["rvos-kit", "audit", "--stage", f"{m}_png_run_vs_dump", png,
                  f"{mdir}/Annotations", "--meta", b.meta, "--json", report,
                  "--informational"]),
        "deps": [png, f"{mdir}/Annotations", b.meta],
        # an output, not a DVC metric: the real pipeline has no ground truth, so a
        # metric here would be the one file `dvc metrics diff` fails to load in a clone
        "outs": [{report: {"cache": False}}],
    }  # fmt: skip
