"""How a stage's work runs: a process pool that fails cleanly when a worker dies
(``pool``), shards of videos on Ray for the GPU stages (``scale``), and the ``docker run``
line of a stage in its image (``docker``).

May import: the base modules and trees/. Stages call in here; no module here imports a
stage: what a shard runs and the mounts of the published code come in as arguments. Verbs
are known only by name (``docker``: which run on the CPU, which get one GPU).
"""
