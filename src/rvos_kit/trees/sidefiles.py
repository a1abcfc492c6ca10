"""JSON side files that stages hand each other beside mask trees: the key frames
(``key_frames/<model>.json``, written by ``rvos-kit keyframes``, read by ``rvos-kit
propagate``), in the published ``{video: {exp: {"index_info": {"class_index": k}}}}``
layout (contract section 4). Reading checks every entry against meta."""

from __future__ import annotations

from ..errors import KitError
from .jsonfiles import read_json
from .meta import Meta


def read_key_frames(path, meta: Meta | None = None) -> dict[tuple[str, str], int]:
    """Parse a key_frame.json into ``{(video, exp_id): k}``, checked against meta."""
    obj = read_json(path, "key-frame file")
    out = {}
    try:
        for vid, exps in obj.items():
            for e, entry in exps.items():
                k = entry["index_info"]["class_index"]
                if isinstance(k, bool) or not isinstance(k, int):
                    raise TypeError
                out[vid, e] = k
    except (AttributeError, KeyError, TypeError):
        raise KitError(
            f'{path}: not a key-frame file ({{video: {{exp: {{"index_info": '
            f'{{"class_index": k}}}}}}}})'
        ) from None
    if meta is not None:
        for v in meta:
            for e in v.exp_ids:
                k = out.get((v.name, e))
                if k is None:
                    raise KitError(f"{path}: no key frame for {v.name}/{e}, which meta lists")
                if not 0 <= k < len(v.frames):
                    raise KitError(
                        f"{path}: key frame {k} of {v.name}/{e} is outside its "
                        f"{len(v.frames)} frames"
                    )
    return out
