"""The DAG's end with ground truth: J, F and J&F per expression (the metric: ``metric``;
the verb ``rvos-kit evaluate``: ``jf``), the table per node (``summary``) and the run
report (``report``)."""
