"""The one exception type the CLI turns into a clean message (no traceback)."""


class KitError(Exception):
    """A user-facing error: names the file and what is wrong (and the fix when known).

    The CLI prints ``rvos-kit <verb>: error: <message>`` and exits with status 2.
    """
