"""``checkpoints.lock`` and the files it pins: the lock format (``lock``), downloads
with resume under validators (``download``) and the ``fetch`` / ``verify`` verbs
(``fetch``).

May import: the base modules and trees/. One documented exception: ``fetch --params``
asks ``pipeline.preflight`` which downloads a params file reads.
"""
