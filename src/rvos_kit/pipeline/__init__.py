"""params.yaml -> dvc.yaml, and what a pipeline needs before it runs: the one params
schema (``params``), the DAG builder (``dag``), each stage's code dependencies from the
import graph (``codedeps``), the list of what is missing (``preflight``) and ``rvos-kit
run``, a stage in its Docker image (``run``).

May import: every other room (it is the one place that knows every stage).
"""
