"""The DAG's "rvos outputs": each model's folder (``Annotations/``, ``scores.json``),
from one of three sources: ``infer`` runs the published inference code (``infer/``),
``import-pth`` converts its original dumps (``dumps``), ``import-zip`` unpacks a
released tree (``released``)."""
