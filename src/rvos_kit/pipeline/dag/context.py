"""What the DAG builder's stage kinds share: the parsed params, the stages written so
far (in DAG order), and the naming rules by which one kind finds another kind's output
(one folder per stage kind under ``paths.outputs``, see :mod:`rvos_kit.pipeline.dag`).

Also the released-artifact helper every kind may need (a model's, fusion node's or
propagated tree as the authors released it): a ``fetch_<name>`` stage that keeps the
download, and an ``import-zip`` stage that unpacks it.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from ... import catalog
from ...errors import KitError

if TYPE_CHECKING:  # pydantic: not in the images, where verbs register too
    from ...config import Params


def q(parts) -> str:
    """A command line from its words, each quoted for the shell."""
    return " ".join(shlex.quote(str(x)) for x in parts)


class Builder:
    """The params of one pipeline and the stages generated from them so far
    (``stages``: name -> dvc.yaml stage). :func:`rvos_kit.pipeline.dag.build` fills it."""

    def __init__(self, p: Params, base: Path, params_name: str = "params.yaml"):
        self.p, self.base, self.params_name = p, base, params_name
        self.out = p.paths.outputs
        self.meta = p.data.meta
        if p.data.split == "valid" and p.data.test_meta:
            self.meta = f"{self.out}/meta/valid_only.json"
        self.models = p.models
        self.props = p.props
        self.fusion = p.nodes
        self.stages: dict[str, dict] = {}
        self.fetched: set[str] = set()
        self._lock = None

    # ----------------------------------------------------------------- naming
    def model_dir(self, m: str) -> str:
        spec = self.models[m]
        return spec.tree if spec.source == "tree" else f"{self.out}/rvos/{m}"

    def tree(self, ref: str) -> str:
        """The mask tree of a node: a model, a fusion node, or ``<node>/<propagation>``."""
        node, _, prop = ref.partition("/")
        if prop:
            return f"{self.out}/propagated/{prop}/{node}"
        if node in self.models:
            return f"{self.model_dir(node)}/Annotations"
        return f"{self.out}/fused/{node}"

    def key_model(self, node: str) -> str:
        """The model whose key frames a node uses: a fusion node's first member's, down."""
        while node in self.fusion:
            node = self.fusion[node].members[0].partition("/")[0]
        return node

    def key_frames(self, node: str) -> str:
        return f"{self.out}/key_frames/{self.key_model(node)}.json"

    def label(self, ref: str) -> str:
        return ref.replace("/", ".")

    def png_run_tree(self, m: str) -> str | None:
        """The separate PNG-run tree propagation starts from (quirk 9.6), when the
        published run had one that differs from the dump and this pipeline infers it."""
        spec, row = self.models.get(m), catalog.MODELS.get(m)
        if (spec is not None and spec.source == "infer" and row is not None and row.png_run
                and self.p.compat == "challenge2023"):  # fmt: skip
            return f"{self.model_dir(m)}/{row.png_run}"
        return None

    def stack_params(self) -> list[str]:
        """``runner.stack`` as a params key of every GPU stage when params.yaml sets it
        (issue 22), so that DVC never takes a tree made on one stack for the other's.
        Absent = published; listing an absent key would make DVC refuse the stage, and
        adding the key changes the stage, which then runs again."""
        return ["runner.stack"] if "stack" in self.p.runner.model_fields_set else []

    # --------------------------------------------------------------- released
    def lock(self):
        """The parsed ``paths.lock`` (checkpoints.lock), read once."""
        if self._lock is None:
            from ...artifacts.lock import load_lock

            self._lock = load_lock(self.base / self.p.paths.lock)
        return self._lock

    def has(self, name: str) -> bool:
        """Whether the lock lists an artifact ``name``."""
        try:
            self.lock().get(name)
            return True
        except KeyError:
            return False

    def released(self, name: str, out: str, stage: str) -> None:
        """fetch_<name> (keeps the download) + <stage> (unpacks it into ``out``)."""
        lock_path, dest = self.p.paths.lock, self.p.paths.downloads
        try:
            art = self.lock().get(name)
        except KeyError:
            raise KitError(
                f"{lock_path}: no artifact {name!r}; the authors released no such tree"
            ) from None
        zip_path = os.path.normpath(os.path.join(dest, art.path))
        if name not in self.fetched:
            self.fetched.add(name)
            self.stages[f"fetch_{name}"] = {
                "cmd": q(["rvos-kit", "fetch", name, "--lock", lock_path, "--dest", dest]),
                "deps": [lock_path],
                "outs": [{zip_path: {"cache": False, "persist": True}}],
            }
        self.stages[stage] = {
            "cmd": q(["rvos-kit", "import-zip", zip_path, "--out", out, "--meta", self.meta]),
            "deps": [zip_path, self.meta],
            "outs": [out],
        }
