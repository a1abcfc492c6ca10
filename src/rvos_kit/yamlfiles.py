"""The one YAML reader of files a user writes (params.yaml): safe, small and unambiguous.

:func:`read_yaml` refuses, with the file and line, what ``yaml.safe_load`` lets through:

- **aliases** (``*name``, and so ``<<: *name`` merges): nested aliases expand a few KB
  into gigabytes ("billion laughs"); a params file never needs them. They are refused
  while the file is parsed, before anything is built from it;
- **duplicate keys** in a mapping: the later one would silently win;
- files larger than :data:`MAX_BYTES`.

The one reader of params.yaml (:func:`rvos_kit.config.load_params`) goes through it.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from .errors import KitError

MAX_BYTES = 1 << 20  # a params file is a few KB


class _Loader(yaml.SafeLoader):
    """SafeLoader without aliases and without duplicate keys (errors name the line)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise KitError(
                f"{self.name}, line {event.start_mark.line + 1}: alias *{event.anchor}: YAML "
                "aliases (and `<<: *name` merges) are not allowed in a params file; write "
                "the value out"
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: SafeLoader's own error follows
                    continue
                line = key_node.start_mark.line + 1
                if first is not None:
                    raise KitError(
                        f"{self.name}, line {line}: duplicate key {key!r} (first on line "
                        f"{first}); the later one would silently win: give each key once"
                    )
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _describe(e: yaml.YAMLError) -> str:
    if isinstance(e, yaml.MarkedYAMLError) and e.problem_mark is not None:
        what = " ".join(x for x in (e.context, e.problem) if x)
        return f"line {e.problem_mark.line + 1}: not valid YAML ({what})"
    return f"not valid YAML ({e})"


def read_yaml(path: str | os.PathLike, what: str = "params file"):
    """The parsed YAML of ``path`` (:class:`KitError` naming the file, and the line for a
    syntax error, an alias or a duplicate key)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise KitError(f"{path}: {what} not found") from None
    except OSError as e:
        raise KitError(f"{path}: cannot read the {what} ({e.strerror})") from None
    if len(data) > MAX_BYTES:
        raise KitError(f"{path}: {what} is larger than {MAX_BYTES >> 20} MiB; not a params file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise KitError(f"{path}: {what} is not UTF-8 text ({e})") from None
    loader = _Loader(text)
    loader.name = str(path)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as e:
        raise KitError(f"{path}, {_describe(e)}") from None
    finally:
        loader.dispose()
