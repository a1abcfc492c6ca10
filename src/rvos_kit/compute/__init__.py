"""How a stage's work runs: a process pool that fails cleanly when a worker dies
(``pool``), shards of videos on Ray for the GPU stages (``scale``), and the ``docker run``
line of a stage in its image (``docker``).

May import: the base modules and trees/. Stages call in here; nothing here knows a
stage (what a shard runs comes in as arguments).
"""
