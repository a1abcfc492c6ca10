"""``checkpoints.lock``: the pinned list of every file a pipeline downloads, and where each
comes from.

Per entry: ``name``, ``source`` (``gdrive`` file id | ``url`` | ``hf`` repo + revision +
file | ``manual`` instructions), ``sha256`` and ``size`` (null = not recorded yet),
``path`` (relative to the download folder) and ``used_by`` (pipeline stages).
:func:`load_lock` parses and checks it, :func:`update_lock` records hashes into it
(keeping its comments), :func:`source_url` gives an entry's download URL. The verbs that
use it are in :mod:`rvos_kit.artifacts.fetch`.
"""

from __future__ import annotations

import io
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..errors import KitError
from ..trees.files import atomic_write_bytes

SOURCES = ("gdrive", "url", "hf", "manual")
DEFAULT_LOCK = "checkpoints.lock"
GDRIVE_ENDPOINT_ENV = "RVOS_KIT_GDRIVE_ENDPOINT"
HF_ENDPOINT_ENV = "RVOS_KIT_HF_ENDPOINT"
DEFAULT_GDRIVE_ENDPOINT = "https://drive.google.com"
DEFAULT_HF_ENDPOINT = "https://huggingface.co"
USER_AGENT = "rvos-kit (checkpoints.lock fetch)"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_KNOWN_KEYS = {
    "name",
    "source",
    "id",
    "url",
    "repo",
    "revision",
    "file",
    "sha256",
    "size",
    "path",
    "used_by",
    "description",
    "instructions",
}


# ----------------------------------------------------------------------------- the lock
@dataclass
class Artifact:
    name: str
    source: str
    path: str
    sha256: str | None = None
    size: int | None = None
    used_by: list[str] = field(default_factory=list)
    id: str | None = None
    url: str | None = None
    repo: str | None = None
    revision: str | None = None
    file: str | None = None
    instructions: str | None = None
    description: str | None = None


@dataclass
class Lock:
    path: Path
    artifacts: list[Artifact]

    def get(self, name: str) -> Artifact:
        for a in self.artifacts:
            if a.name == name:
                return a
        raise KeyError(name)

    def select(self, names=(), used_by=()) -> list[Artifact]:
        """Artifacts named in ``names`` or used by a stage in ``used_by`` (all when both
        are empty), in lock order."""
        known = {a.name for a in self.artifacts}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise KitError(
                f"{self.path}: no artifact named {unknown[0]!r}; known names: "
                + ", ".join(sorted(known))
            )
        stages = {s for a in self.artifacts for s in a.used_by}
        bad = [s for s in used_by if s not in stages]
        if bad:
            raise KitError(
                f"{self.path}: no artifact is used by stage {bad[0]!r}; stages in the lock: "
                + ", ".join(sorted(stages))
            )
        if not names and not used_by:
            return list(self.artifacts)
        want, stages_wanted = set(names), set(used_by)
        return [a for a in self.artifacts if a.name in want or stages_wanted & set(a.used_by)]


def _entry_error(lock_path, i, name, msg) -> KitError:
    who = f"artifact {name!r}" if name else f"artifact #{i + 1}"
    return KitError(f"{lock_path}: {who}: {msg}")


def _opt_str(entry, key, lock_path, i, name) -> str | None:
    v = entry.get(key)
    if v is not None and (not isinstance(v, str) or not v.strip()):
        raise _entry_error(lock_path, i, name, f"{key} must be a non-empty string or null")
    return v


def check_rel_path(p: str, where: str) -> str:
    """A lock path must stay under --dest: relative, no '..', no backslashes."""
    pp = PurePosixPath(p)
    if (
        not p
        or "\\" in p
        or "\0" in p
        or pp.is_absolute()
        or re.match(r"^[A-Za-z]:", p)
        or any(part in ("..", ".") for part in p.split("/"))
        or p.endswith("/")
    ):
        raise KitError(f"{where}: path {p!r} must be a relative file path without '..'")
    return p


def parse_lock(obj, lock_path: str | os.PathLike) -> Lock:
    lock_path = Path(lock_path)
    if not isinstance(obj, dict) or obj.get("version") != 1:
        raise KitError(f"{lock_path}: not a version-1 checkpoints lock (expected `version: 1`)")
    items = obj.get("artifacts")
    if not isinstance(items, list):
        raise KitError(f"{lock_path}: `artifacts` must be a list of entries")
    arts, names, paths = [], set(), {}
    for i, e in enumerate(items):
        if not isinstance(e, dict):
            raise _entry_error(lock_path, i, None, "must be a mapping")
        name = e.get("name")
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise _entry_error(lock_path, i, None, f"invalid name {name!r} (letters, digits, _.-)")
        if name in names:
            raise _entry_error(lock_path, i, name, "duplicate name")
        names.add(name)
        unknown = sorted(set(e) - _KNOWN_KEYS)
        if unknown:
            raise _entry_error(lock_path, i, name, f"unknown key {unknown[0]!r}")
        source = e.get("source")
        if source not in SOURCES:
            raise _entry_error(lock_path, i, name, f"source {source!r} is not one of {SOURCES}")
        s = {k: _opt_str(e, k, lock_path, i, name) for k in ("id", "url", "repo", "revision")}
        s.update({k: _opt_str(e, k, lock_path, i, name) for k in ("file", "instructions")})
        desc = _opt_str(e, "description", lock_path, i, name)
        if source == "gdrive" and not (s["id"] and re.match(r"^[-\w]{10,}$", s["id"])):
            raise _entry_error(lock_path, i, name, "source gdrive needs `id` (a Drive file id)")
        if source == "url" and not (s["url"] and re.match(r"^https?://", s["url"])):
            raise _entry_error(lock_path, i, name, "source url needs an http(s) `url`")
        if source == "hf":
            if not s["repo"] or not s["file"]:
                raise _entry_error(lock_path, i, name, "source hf needs `repo` and `file`")
            if s["revision"] is not None and not re.match(r"^[\w.-]+$", s["revision"]):
                raise _entry_error(lock_path, i, name, f"bad revision {s['revision']!r}")
        if source == "manual" and not s["instructions"]:
            raise _entry_error(lock_path, i, name, "source manual needs `instructions`")
        sha = e.get("sha256")
        if sha is not None and (not isinstance(sha, str) or not _SHA_RE.match(sha)):
            raise _entry_error(lock_path, i, name, "sha256 must be 64 lowercase hex digits or null")
        size = e.get("size")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
            raise _entry_error(lock_path, i, name, "size must be a byte count or null")
        path = e.get("path")
        if not isinstance(path, str):
            raise _entry_error(lock_path, i, name, "needs a `path` (relative to --dest)")
        check_rel_path(path, f"{lock_path}: artifact {name!r}")
        if path in paths:
            raise _entry_error(lock_path, i, name, f"same path as artifact {paths[path]!r}")
        paths[path] = name
        used_by = e.get("used_by") or []
        if not isinstance(used_by, list) or not all(isinstance(u, str) for u in used_by):
            raise _entry_error(lock_path, i, name, "used_by must be a list of stage names")
        arts.append(
            Artifact(
                name=name,
                source=source,
                path=path,
                sha256=sha,
                size=size,
                used_by=list(used_by),
                description=desc,
                **s,
            )
        )
    return Lock(lock_path, arts)


def load_lock(path: str | os.PathLike) -> Lock:
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KitError(f"{path}: lock file not found (pass --lock)") from None
    try:
        obj = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise KitError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    return parse_lock(obj, path)


def _round_trip_yaml():
    try:
        from ruamel.yaml import YAML
    except ImportError:  # pragma: no cover - ruamel.yaml comes with dvc
        raise KitError("--record needs ruamel.yaml (pip install ruamel.yaml)") from None
    y = YAML()  # round-trip mode: comments, order and quoting are kept
    y.preserve_quotes = True
    y.indent(mapping=2, sequence=4, offset=2)
    y.width = 4096  # never fold long URLs

    def null(rep, _data):
        return rep.represent_scalar("tag:yaml.org,2002:null", "null")

    y.representer.add_representer(type(None), null)
    return y


def update_lock(lock_path: str | os.PathLike, updates: dict[str, dict]) -> None:
    """Set fields of named entries (``{name: {"sha256": ..., "size": ...}}``) in the lock
    file, keeping its comments and layout, atomically. A field already holding another
    value is a conflict (the lock changed meanwhile): nothing is written."""
    import yaml

    lock_path = Path(lock_path)
    text = lock_path.read_text(encoding="utf-8")
    rt = _round_trip_yaml()
    doc = rt.load(text)
    expected = yaml.safe_load(text)
    for doc_list in (doc["artifacts"], expected["artifacts"]):
        seen = set()
        for entry in doc_list:
            u = updates.get(entry.get("name"))
            if not u:
                continue
            seen.add(entry["name"])
            for k, v in u.items():
                old = entry.get(k)
                if old is not None and old != v:
                    raise KitError(
                        f"{lock_path}: {entry['name']}.{k} is now {old!r}, not null: the lock "
                        f"changed while fetching; nothing recorded (would have set {v!r})"
                    )
                entry[k] = v
        missing = set(updates) - seen
        if missing:
            raise KitError(f"{lock_path}: entry {sorted(missing)[0]!r} vanished while fetching")
    buf = io.StringIO()
    rt.dump(doc, buf)
    new = buf.getvalue()
    if yaml.safe_load(new) != expected:  # pragma: no cover - guards the YAML rewrite
        raise KitError(f"{lock_path}: rewriting the lock would change more than asked; unchanged")
    atomic_write_bytes(lock_path, new.encode("utf-8"))


# ----------------------------------------------------------------------------- sources
def _endpoint(explicit: str | None, *env_names_and_default: str) -> str:
    *envs, default = env_names_and_default
    for v in (explicit, *(os.environ.get(e) for e in envs)):
        if v:
            return v.rstrip("/")
    return default


def gdrive_url(file_id: str, endpoint: str | None = None) -> str:
    """The download URL gdown is given for a Drive file id. At the default endpoint gdown
    recognises it as a Drive download (virus-scan confirmation page, cookies); at another
    endpoint (a mirror, the tests' local server) gdown fetches it as a plain URL."""
    base = _endpoint(endpoint, GDRIVE_ENDPOINT_ENV, DEFAULT_GDRIVE_ENDPOINT)
    return f"{base}/uc?id={urllib.parse.quote(file_id)}&export=download"


def hf_url(repo: str, file: str, revision: str | None, endpoint: str | None = None) -> str:
    base = _endpoint(endpoint, HF_ENDPOINT_ENV, "HF_ENDPOINT", DEFAULT_HF_ENDPOINT)
    rev = urllib.parse.quote(revision or "main", safe="")
    return f"{base}/{repo}/resolve/{rev}/{urllib.parse.quote(file)}"


def source_url(a: Artifact, gdrive_endpoint=None, hf_endpoint=None) -> str | None:
    if a.source == "gdrive":
        return gdrive_url(a.id, gdrive_endpoint)
    if a.source == "hf":
        return hf_url(a.repo, a.file, a.revision, hf_endpoint)
    if a.source == "url":
        return a.url
    return None


def browser_url(a: Artifact) -> str | None:
    """Where a person downloads the entry by hand (always the public site, never a test
    or mirror endpoint): the Drive file page, the Hugging Face file page, the URL itself,
    or a manual entry's folder."""
    if a.source == "gdrive":
        return f"{DEFAULT_GDRIVE_ENDPOINT}/file/d/{urllib.parse.quote(a.id)}/view"
    if a.source == "hf":
        rev = urllib.parse.quote(a.revision or "main", safe="")
        return f"{DEFAULT_HF_ENDPOINT}/{a.repo}/blob/{rev}/{urllib.parse.quote(a.file)}"
    return a.url
