"""Small JSON side files (scores, key frames, metrics): read with clear errors, write
atomically with a stable layout."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import KitError
from .files import atomic_write_bytes


def read_json(path: str | os.PathLike, what: str = "JSON file"):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise KitError(f"{path}: {what} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise KitError(f"{path}: {what} is not valid JSON ({e})") from None


def write_json(path: str | os.PathLike, obj, indent: int | None = None) -> None:
    """Write ``obj`` as JSON (keys in insertion order, trailing newline), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(obj, indent=indent, ensure_ascii=False) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))
