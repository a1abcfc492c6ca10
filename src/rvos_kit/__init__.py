"""rvos-kit: the ICCV 2023 LSVOS track-3 winning pipeline, one verb per stage.

The package is laid out like the DAG it runs, in rooms:

    cli.py      ``rvos-kit <verb>``: every verb, listed in DAG order by ``--help``
    errors.py, argtypes.py, helptext.py, yamlfiles.py, catalog.py, config.py
                the base: the one user-facing error, argument types, help text, the
                params.yaml reader, the model and backend catalogues with every
                default (catalog.py, plain Python) and the typed config every layer
                reads (config.py: load_params, pydantic)
    trees/      what lies on disk between stages: mask trees, the PNG codec, meta, the
                JSON side files, atomic writes and staged output folders, digests
    compute/    how a stage's work runs: worker processes, shards on Ray, Docker
    artifacts/  ``checkpoints.lock``: what is pinned, downloads, fetch and verify
    stages/     one module or package per DAG stage:
                data -> rvos -> keyframes -> propagate -> fusion -> pack ->
                evaluate / audit
    pipeline/   params.yaml -> dvc.yaml: the schema, the DAG builder, preflight and
                ``rvos-kit run`` (a stage in its image)

What a room may import (``tests/test_layout.py`` checks it, lazy imports included):

    base        nothing of the kit (but ``__version__`` and the base itself)
    trees       base
    compute     base, trees
    artifacts   base, trees
    stages      base, trees, compute; never another stage
    pipeline    all of the above
    cli         everything

Documented exceptions, each named in the importing module's docstring: ``rvos-kit
fetch --params`` asks ``pipeline.preflight`` which downloads a params file reads; the
run report (``stages/evaluate/report.py``) compares and draws with the audit's engine
and pictures (``stages/audit/``).
"""

__version__ = "0.1.0"
