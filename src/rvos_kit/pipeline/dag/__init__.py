"""``rvos-kit dag``: write ``dvc.yaml`` from ``params.yaml`` (contract section 8).

DVC's templating cannot turn a list of fusion members into ``deps`` nor switch a stage
between "import a dump", "unpack a released zip" and "run inference", so the pipeline
file is generated: one stage per DAG node, declaring its ``deps``, the ``params`` keys
its verb reads, and its ``outs``. Its command is only ``rvos-kit --params params.yaml
--node <stage>``: at run time the stage generates itself again from params.yaml and runs
its verb with every path and value spelled out (``rvos-kit dag --explain STAGE`` prints
that command). So a value (a threshold, TTA scales, the encoder) lives in params.yaml
only: edit it, or try one with ``dvc exp run -S params.yaml:fusion.final.pair_threshold=3``,
and DVC re-runs the stages that declare it; ``dvc exp show`` lists the runs. A change of
the DAG's shape (a node's members, a model's source, a backend, a path) changes dvc.yaml:
run ``rvos-kit dag`` (``make`` does it before every ``dvc repro``). Until then every
stage, the preflight stages first, refuses to run, naming the params file and the command
that regenerates dvc.yaml, before any output is touched. ``rvos-kit dag --check`` fails
when dvc.yaml is out of date.

Output layout under ``paths.outputs`` (one folder per stage kind, so DVC outputs never
overlap)::

    meta/valid_only.json                                   (data.split: valid, see below)
    rvos/<model>/Annotations, scores.json[, Annotations_sigmoid_odd]   (imported/released/infer)
    rvos/mutr/Annotations_pngrun                            (infer, challenge2023: quirk 9.6)
    key_frames/<model>.json
    fused/<node>/<video>/<exp>/<frame>.png                             (stage 1 and 2)
    propagated/<prop>/<node>/...                                       (AOT / DeAOT / flow)
    submission.zip, submission.sha256
    metrics/<node>.json, metrics/summary.csv                           (with ground truth)
    metrics/mutr_trees.json                                (infer, challenge2023: quirk 9.6)
    report/index.html, report/jf.svg                                   (with ground truth)
    preflight.txt, preflight_<model>.txt, preflight_<propagation>.txt   (see below)

Every stage that reads something from outside the DAG depends on a preflight stage
that runs ``rvos-kit preflight --for <it>`` whenever the params file changes (or has
never passed) and checks only what the stages it guards read: ``preflight_<model>`` for
a model's inference or import (checkpoint, dumps, image, GPU), ``preflight_<propagation>``
for AOT / DeAOT (checkpoint, GPU), ``preflight`` for the rest (the dataset). So a bare
``dvc repro`` stops there with the list of what is missing instead of failing later on a
missing file, and ``dvc repro dvc.yaml:keyframes_soc`` needs SOC's inputs only. Their
outputs (``preflight*.txt``) hold the same text on every successful run, so they re-run
nothing else.

``source: infer`` runs ``rvos-kit infer`` per model through ``rvos-kit run`` (its image,
one GPU), with the checkpoint at its ``checkpoints.lock`` path and the pretrained parts
under ``infer.pretrained``. ``data.split: valid`` runs the 202 valid-only videos: the
valid meta lists the 305 test videos too, so a first stage writes the valid meta minus
``data.test_meta`` and every stage reads that.
"""
# The package (the docstring above is `rvos-kit dag --help`): generate.build() calls one
# small module per stage kind in DAG order -- data (sample, valid meta), rvos (model trees,
# inference), keyframes, fusion (stage-1 votes), propagate, fusion (stage-2 votes), pack,
# evaluate (+ summary, report), audit -- then passes (prune, preflight first, code deps).
# context: the state and naming rules they share; verb: `rvos-kit dag` itself; runtime:
# what a stage's `rvos-kit --params P --node S` checks and runs.

from __future__ import annotations

from ...argtypes import declare_paths
from .context import Builder
from .generate import HEADER, build, render, spelled, stages
from .verb import compare_outs, lock_outs, run

__all__ = ["HEADER", "Builder", "build", "compare_outs", "lock_outs", "register", "render",
           "run", "spelled", "stages"]  # fmt: skip


def register(sub) -> None:
    p = sub.add_parser(
        "dag",
        help="generate dvc.yaml from params.yaml (one stage per DAG node)",
        description=__doc__,
    )
    p.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    p.add_argument("--out", help="dvc.yaml to write (default: beside the params file)")
    p.add_argument("--check", action="store_true", help="fail if dvc.yaml is out of date")
    p.add_argument(
        "--explain",
        metavar="STAGE",
        help="print the command STAGE runs, every value spelled out from the params file "
        "(as run in the folder of dvc.yaml), and its params keys; write nothing",
    )
    p.add_argument(
        "--compare-outs",
        metavar="DVC_LOCK",
        help="compare the output hashes of the dvc.lock beside --params with DVC_LOCK "
        "(e.g. the committed one); fail on any difference",
    )
    declare_paths(p, reads=("params", "compare_outs"), writes=("out",))
    p.set_defaults(func=run)
