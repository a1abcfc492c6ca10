"""Resuming an interrupted propagation (the staging folder and its record).

The output is built in ``.<out>.partial`` beside ``<out>`` and moved into place only when
every expression is done. Every PNG is written atomically (temp file + rename), so an
expression whose folder holds all its frames is complete. A run that is killed (or fails
other than on bad input) keeps the staging folder and a record of its settings in
``.<out>.partial.json``: a content digest (:func:`resume_key`) of every input (the frames
and masks meta lists, key frames, meta, the checkpoint's bytes, every setting). The next
run skips the complete expressions only when every digest matches, and redoes the others
(removing stray temp files); otherwise it discards the staging folder with a one-line
notice naming what changed and starts afresh. Bad input (a KitError) discards it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ...errors import KitError
from ...trees.digest import content_digest
from ...trees.jsonfiles import read_json, write_json
from ...trees.masktree import StagedTree, expression_files
from ...trees.meta import Meta, Video, load_meta
from .frames import frame_paths


def shared_key(keyframes, backend) -> dict[str, str]:
    """The part of :func:`resume_key` that does not depend on the videos: the key frames,
    the checkpoint's bytes and every setting. A sharded stage computes it once for all
    its shards (hashing a checkpoint of hundreds of MB once, not once per shard)."""
    checkpoint = getattr(backend, "checkpoint", None)
    return {
        "keyframes": content_digest(Path(keyframes)),
        "checkpoint": content_digest(Path(checkpoint) if checkpoint else None),
        "settings": content_digest(backend.settings()),
    }


def resume_key(images, annotations, keyframes, meta, backend, shared=None) -> dict[str, str]:
    """Content digest of every input of a propagation, per input (see
    :mod:`rvos_kit.trees.digest`): the frames and masks meta lists, the key frames, meta, the
    checkpoint's bytes and every setting. Partial work resumes only when all match.
    ``shared``: :func:`shared_key` of the same ``keyframes`` and ``backend``, if already
    computed."""
    shared = shared or shared_key(keyframes, backend)
    images, annotations = Path(images), Path(annotations)
    meta_obj = meta if isinstance(meta, Meta) else load_meta(meta)
    frames = {f"{v.name}/{f}": p for v in meta_obj for f, p in
              zip(v.frames, frame_paths(images, v), strict=True)}  # fmt: skip
    masks = {f"{v.name}/{e}/{f}": annotations / v.name / e / f"{f}.png"
             for v in meta_obj for e in v.exp_ids for f in v.frames}  # fmt: skip
    return {
        "images": content_digest(frames),
        "annotations": content_digest(masks),
        "keyframes": shared["keyframes"],
        "meta": content_digest(Path(meta) if not isinstance(meta, Meta) else repr(meta.videos)),
        "checkpoint": shared["checkpoint"],
        "settings": shared["settings"],
    }


def start_or_resume(staged: StagedTree, record_path: Path, record: dict) -> None:
    """Keep the staging folder of an interrupted run only if its record equals ``record``
    (else discard it, saying which inputs changed); then write ``record`` and remove the
    temp files of interrupted atomic writes."""
    if any(staged.path.iterdir()):
        try:
            previous = read_json(record_path, "resume record")
        except KitError:
            previous = None
        if previous != record:
            old = previous.get("inputs") if isinstance(previous, dict) else None
            old = old if isinstance(old, dict) else {}
            changed = [k for k, d in record["inputs"].items() if old.get(k) != d]
            print(
                f"note: discarding the partial output {staged.path} (made from other "
                f"{', '.join(changed) or 'inputs'}); starting afresh",
                file=sys.stderr,
            )
            staged.discard()
    write_json(record_path, record, indent=1)
    _remove_temp_files(staged.path)


def _remove_temp_files(staging: Path) -> None:
    """Temp files of atomic writes interrupted by a kill (``.<name>.tmp-<pid>``)."""
    for p in staging.rglob(".*.tmp-*"):
        if p.is_file():
            p.unlink()


def _expression_complete(d: Path, video: Video) -> bool:
    return all((d / f"{f}.png").is_file() for f in video.frames)


def pending(meta: Meta, staging: Path, keys: dict, annotations: Path) -> tuple[list, int]:
    """([(video, [(exp_id, key frame, input PNGs), ...]), ...] of the expressions still to
    do, number of expressions already complete in ``staging``)."""
    jobs, resumed = [], 0
    for v in meta:
        items = []
        for e in v.exp_ids:
            if _expression_complete(staging / v.name / e, v):
                resumed += 1
            else:
                items.append((e, keys[v.name, e], expression_files(annotations, v, e)))
        if items:
            jobs.append((v, items))
    return jobs, resumed
