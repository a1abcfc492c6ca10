"""The DAG's end with ground truth: J, F and J&F per expression (``jf``: ``rvos-kit
evaluate``), the table per node (``summary``) and the run report (``report``)."""
