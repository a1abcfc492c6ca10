"""What lies on disk between stages, and how it is read and written.

Mask trees ``<root>/<video>/<exp_id>/<frame>.png`` (``masktree``, with the PNG codec
``pngcodec`` and its C row unfilter), ``meta_expressions.json`` (``meta``), the small
JSON side files (``jsonfiles``, ``sidefiles``: key frames), atomic writes (``files``),
output folders built aside and moved into place (``staging``), content digests
(``digest``) and the synthetic masks of the demo, benches and tests.

May import: the base modules (errors, argtypes, helptext) only. Every other room reads
and writes through here.
"""
