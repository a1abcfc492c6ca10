"""Pinned artifacts: ``checkpoints.lock``, ``rvos-kit fetch`` and ``rvos-kit verify``.

The lock (YAML, committed) lists every file the pipeline downloads: checkpoints, text
encoders, the Video-Swin backbone and the authors' released Annotations zips. Per entry:
``name``, ``source`` (``gdrive`` file id | ``url`` | ``hf`` repo + revision + file |
``manual`` instructions), ``sha256`` and ``size`` (null = not recorded yet), ``path``
(relative to ``--dest``, default: the lock's folder) and ``used_by`` (pipeline stages).

fetch
    Download artifacts of checkpoints.lock: the NAMEs given, those a stage uses
    (``--used-by``), everything one pipeline reads (``--params params.yaml``: its
    released trees and checkpoints, with its own lock and download folder), or the
    whole lock. Each artifact not already present goes to a temp file beside its
    destination (``.<name>.part``); its size and sha256 are checked against the lock and
    only then is it renamed into place. A mismatch deletes the temp file and leaves any
    existing file untouched. An interrupted plain-HTTP download keeps its temp file and
    the next fetch continues it with a ``Range`` request, only when the server gave a
    strong validator (``If-Range`` then guards against a file that changed meanwhile);
    without one it starts over. Google-Drive ids go through gdown; Hugging Face files
    through their ``resolve`` URL. A null sha256 in the lock means the bytes are not
    pinned yet: ``--record`` writes the hashes (and the Hugging Face commit) of first
    downloads into the lock, trust on first use, said loudly, and never of a resumed
    download. Without ``--record``, an artifact the lock has no sha256 for is UNVERIFIED
    and fetch exits 1.

    Endpoints can be redirected (tests, mirrors): ``--gdrive-endpoint`` /
    ``RVOS_KIT_GDRIVE_ENDPOINT`` (default ``https://drive.google.com``) and
    ``--hf-endpoint`` / ``RVOS_KIT_HF_ENDPOINT`` / ``HF_ENDPOINT`` (default
    ``https://huggingface.co``).
verify
    Hash every present artifact and compare with checkpoints.lock: ok / MISMATCH /
    missing / unrecorded per artifact; exit 1 on any mismatch and on any present
    unrecorded (unpinned) artifact (with ``--strict`` also on missing ones). Selection as
    for fetch.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from .errors import KitError
from .helptext import verb_section
from .masktree import atomic_write_bytes

SOURCES = ("gdrive", "url", "hf", "manual")
DEFAULT_LOCK = "checkpoints.lock"
GDRIVE_ENDPOINT_ENV = "RVOS_KIT_GDRIVE_ENDPOINT"
HF_ENDPOINT_ENV = "RVOS_KIT_HF_ENDPOINT"
DEFAULT_GDRIVE_ENDPOINT = "https://drive.google.com"
DEFAULT_HF_ENDPOINT = "https://huggingface.co"
USER_AGENT = "rvos-kit (checkpoints.lock fetch)"
CHUNK = 1 << 20
TIMEOUT_S = 60.0

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


# ----------------------------------------------------------------------------- hashing
def _bar(total, desc, initial=0):
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        leave=False,
        file=sys.stderr,
        disable=None if (total or 0) > 64 * CHUNK else True,
    )


def sha256_file(path: str | os.PathLike, desc: str = "") -> tuple[str, int]:
    """(hex sha256, size) of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as f, _bar(os.fstat(f.fileno()).st_size, f"hash {desc}") as bar:
        while block := f.read(CHUNK):
            h.update(block)
            n += len(block)
            bar.update(len(block))
    return h.hexdigest(), n


# ----------------------------------------------------------------------------- downloads
class DownloadFailed(Exception):
    """A download did not complete; ``keep`` = the partial temp file is worth resuming."""

    def __init__(self, msg: str, keep: bool = False):
        super().__init__(msg)
        self.keep = keep


class _RecordRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects (keeping the Range header) and remembers each hop's headers:
    Hugging Face reports the resolved commit (X-Repo-Commit) on the first hop."""

    def __init__(self):
        self.hops: list = []

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        self.hops.append(headers)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _content_range(value: str | None):
    m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", (value or "").strip())
    if not m:
        return None
    return int(m[1]), int(m[2]), None if m[3] == "*" else int(m[3])


def _unsatisfied_total(value: str | None) -> int | None:
    m = re.fullmatch(r"bytes \*/(\d+)", (value or "").strip())
    return int(m[1]) if m else None


def _state_path(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def _discard(part: Path) -> None:
    part.unlink(missing_ok=True)
    _state_path(part).unlink(missing_ok=True)


def http_download(
    url: str, part: Path, expected_size: int | None = None, desc: str = "", resume: bool = True
) -> dict[str, str]:
    """Download ``url`` into ``part``, continuing an earlier partial ``part`` of the same
    URL with a Range request guarded by ``If-Range`` -- only when the server gave a strong
    validator (a strong ETag or Last-Modified) for it; otherwise, or with
    ``resume=False``, the partial file is discarded and the download starts over. Returns
    the response headers (lower-cased names, every redirect hop merged, first value wins).

    Raises :class:`DownloadFailed`; ``keep=True`` when ``part`` holds a resumable prefix."""
    state_path = _state_path(part)
    offset, validator = 0, None
    if part.exists():
        try:
            state = json.loads(state_path.read_text())
        except (OSError, ValueError):
            state = None
        if isinstance(state, dict) and state.get("url") == url:
            offset, validator = part.stat().st_size, state.get("validator")
        else:  # a partial file of unknown origin: never splice onto it
            _discard(part)
        if offset and not (resume and validator):
            why = "--record pins one uninterrupted transfer" if not resume else (
                "the server gave no validator (ETag / Last-Modified), so a changed file "
                "would be spliced from two versions"
            )  # fmt: skip
            print(f"{desc}: not resuming the partial download ({why}); starting over",
                  file=sys.stderr)  # fmt: skip
            _discard(part)
            offset, validator = 0, None
    if expected_size is not None and offset > expected_size:
        _discard(part)
        offset, validator = 0, None

    for _attempt in range(2):
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            if validator:
                headers["If-Range"] = validator
        redirects = _RecordRedirects()
        opener = urllib.request.build_opener(redirects)
        try:
            resp = opener.open(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S)
        except urllib.error.HTTPError as e:
            if e.code == 416 and offset:
                total = _unsatisfied_total(e.headers.get("Content-Range"))
                e.close()
                if total == offset:  # the partial file is already complete
                    return {}
                _discard(part)
                offset, validator = 0, None
                continue
            raise DownloadFailed(f"HTTP {e.code} {e.reason} from {url}", keep=True) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            reason = getattr(e, "reason", None) or e
            raise DownloadFailed(f"cannot download {url}: {reason}", keep=True) from None

        with resp:
            info: dict[str, str] = {}
            for hop in (*redirects.hops, resp.headers):
                for k, v in hop.items():
                    info.setdefault(k.lower(), v)
            final = {k.lower(): v for k, v in resp.headers.items()}
            if resp.status == 206 and offset:
                cr = _content_range(final.get("content-range"))
                if cr is None or cr[0] != offset:
                    print(f"{desc}: server answered another range; starting over", file=sys.stderr)
                    _discard(part)
                    offset, validator = 0, None
                    continue
                total, mode = cr[2], "ab"
                print(f"{desc}: resuming at byte {offset}", file=sys.stderr)
            elif resp.status == 200:
                if offset:
                    print(
                        f"{desc}: the server sent the whole file (no resume, or it changed); "
                        "starting over",
                        file=sys.stderr,
                    )
                offset, mode = 0, "wb"
                total = _int_or_none(final.get("content-length"))
            else:
                raise DownloadFailed(f"unexpected HTTP {resp.status} from {url}", keep=True)
            if expected_size is not None and total is not None and total != expected_size:
                _discard(part)
                raise DownloadFailed(
                    f"{url} serves {total} bytes but the lock says {expected_size}: refused"
                )
            remaining = _int_or_none(final.get("content-length"))
            etag = final.get("etag")
            new_validator = etag if etag and not etag.startswith("W/") else None
            new_validator = new_validator or final.get("last-modified")
            part.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(
                state_path, json.dumps({"url": url, "validator": new_validator}).encode()
            )
            got = 0
            with open(part, mode) as f, _bar(total, desc, initial=offset) as bar:
                while True:
                    try:
                        chunk = resp.read(CHUNK)
                    except (OSError, http.client.HTTPException) as e:
                        f.flush()
                        raise DownloadFailed(
                            f"transfer of {url} interrupted after {offset + got} bytes ({e}); "
                            f"the partial file {part} is kept: run fetch again to resume",
                            keep=True,
                        ) from None
                    if not chunk:
                        break
                    f.write(chunk)
                    got += len(chunk)
                    bar.update(len(chunk))
                    if expected_size is not None and offset + got > expected_size:
                        f.close()
                        _discard(part)
                        raise DownloadFailed(
                            f"{url} sent more than the {expected_size} bytes the lock "
                            "records: refused"
                        )
            if remaining is not None and got < remaining:
                raise DownloadFailed(
                    f"{url}: the server closed the connection after {offset + got} of "
                    f"{offset + remaining} bytes; the partial file {part} is kept: run fetch "
                    "again to resume",
                    keep=True,
                )
            return info
    raise DownloadFailed(f"{url}: the server does not answer range requests consistently")


def _int_or_none(v) -> int | None:
    try:
        return int(v) if v is not None else None
    except ValueError:
        return None


class _SizeMismatch(Exception):
    pass


def gdown_download(url: str, out: Path, expected_size: int | None = None) -> None:
    """Download through gdown (Drive virus-scan page, cookies, retries, resume of gdown's
    own ``<out>XXXXXXXX.part`` files). gdown moves the result to ``out`` on success."""
    import gdown
    import requests

    def progress(done, total):
        if expected_size is None:
            return
        if (total is not None and total != expected_size) or done > expected_size:
            raise _SizeMismatch(
                f"{url} serves {total if total is not None else 'more than'} bytes but "
                f"the lock says {expected_size}: refused"
            )

    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        gdown.download(url=url, output=str(out), quiet=False, resume=True, progress=progress)
    except _SizeMismatch as e:
        for p in out.parent.glob(f"{glob_escape(out.name)}*.part"):
            p.unlink(missing_ok=True)
        raise DownloadFailed(str(e)) from None
    except (
        gdown.exceptions.FileURLRetrievalError,
        gdown.exceptions.DownloadError,
        requests.exceptions.RequestException,
        OSError,
    ) as e:
        raise DownloadFailed(f"gdown could not download {url}: {e}", keep=True) from None


def glob_escape(s: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", s)


# ----------------------------------------------------------------------------- fetch
@dataclass
class Outcome:
    status: str  # ok | unrecorded | fetched | missing | mismatch | failed
    message: str = ""
    record: dict = field(default_factory=dict)

    @property
    def bad(self) -> bool:
        return self.status in ("missing", "mismatch", "failed", "unpinned")


def part_path(dest_file: Path, kind: str = "part") -> Path:
    return dest_file.with_name(f".{dest_file.name}.{kind}")


def check_file(a: Artifact, path: Path) -> tuple[str, str, int]:
    """('ok' | 'unrecorded' | 'mismatch', sha256, size) of a present file."""
    if a.size is not None and a.sha256 is not None:
        size = path.stat().st_size
        if size != a.size:
            return "mismatch", "", size
    sha, size = sha256_file(path, a.name)
    if a.sha256 is None:
        if a.size is not None and size != a.size:
            return "mismatch", sha, size
        return "unrecorded", sha, size
    if sha != a.sha256 or (a.size is not None and size != a.size):
        return "mismatch", sha, size
    return "ok", sha, size


def _mismatch_msg(a: Artifact, path: Path, sha: str, size: int) -> str:
    want = f"sha256 {a.sha256}" if a.sha256 else "(no sha256)"
    if a.size is not None:
        want += f", {a.size} bytes"
    got = f"sha256 {sha}, {size} bytes" if sha else f"{size} bytes"
    return f"{path}: {got}, but the lock records {want}"


def fetch_one(a: Artifact, dest: Path, record: bool, gdrive_ep=None, hf_ep=None) -> Outcome:
    target = dest / a.path
    if target.is_file():
        status, sha, size = check_file(a, target)
        if status == "ok":
            rec = {"size": size} if record and a.size is None else {}
            return Outcome("ok", "present, verified", rec)
        if status == "mismatch":
            return Outcome(
                "mismatch",
                _mismatch_msg(a, target, sha, size) + ": left untouched; delete or move it "
                "to download again",
            )
        if record:
            return Outcome("unrecorded", "present", {"sha256": sha, "size": size})
        return Outcome(
            "unpinned",
            f"present but UNVERIFIED: the lock has no sha256 (this file's is {sha}); pin it "
            f"with `rvos-kit fetch {a.name} --record` (trust on first use)",
        )
    if target.exists():
        return Outcome("failed", f"{target} exists and is not a file")

    if a.source == "manual":
        return Outcome("missing", "manual download:\n" + _indent(a.instructions or ""))

    url = source_url(a, gdrive_ep, hf_ep)
    if a.source == "hf" and a.revision is None:
        print(
            f"{a.name}: hf revision not pinned: downloading from 'main'"
            + ("" if record else " (fetch --record pins the commit)"),
            file=sys.stderr,
        )
    tmp = part_path(target, "download" if a.source == "gdrive" else "part")
    print(f"{a.name}: {url} -> {target}", file=sys.stderr)
    info: dict[str, str] = {}
    # Without a sha256 in the lock nothing would catch a download spliced from two
    # versions: --record pins only one uninterrupted transfer, and gdown (which resumes
    # without a validator) starts over.
    resume = a.sha256 is not None or not record
    try:
        if a.source == "gdrive":
            if a.sha256 is None:
                for p in tmp.parent.glob(f"{glob_escape(tmp.name)}*.part"):
                    p.unlink()
            gdown_download(url, tmp, a.size)
        else:
            info = http_download(url, tmp, a.size, a.name, resume=resume)
    except DownloadFailed as e:
        if not e.keep:
            _discard(tmp)
        return Outcome("failed", str(e))

    sha, size = sha256_file(tmp, a.name)
    if (a.sha256 is not None and sha != a.sha256) or (a.size is not None and size != a.size):
        msg = _mismatch_msg(a, Path(f"{url} (downloaded)"), sha, size)
        _discard(tmp)
        return Outcome("mismatch", msg + ": temp file deleted, nothing placed")
    os.replace(tmp, target)
    _state_path(tmp).unlink(missing_ok=True)
    rec = {}
    if record:
        if a.sha256 is None:
            rec["sha256"] = sha
        if a.size is None:
            rec["size"] = size
        commit = info.get("x-repo-commit", "")
        if a.source == "hf" and a.revision is None and _COMMIT_RE.match(commit):
            rec["revision"] = commit
    if a.sha256 is None and not record:
        return Outcome(
            "unpinned",
            f"downloaded but UNVERIFIED (no sha256 in the lock): sha256 {sha}; pin it with "
            f"`rvos-kit fetch {a.name} --record` (trust on first use)",
        )
    return Outcome("fetched", "verified" if a.sha256 else "downloaded", rec)


def _indent(text: str, pad: str = "    ") -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, 88, initial_indent=pad, subsequent_indent=pad))


def _default_dest(lock_path: Path, dest) -> Path:
    return Path(dest) if dest else lock_path.resolve().parent


def _selection(args) -> tuple[Lock, Path, list[Artifact]]:
    """The lock, the destination root and the selected artifacts of fetch / verify.
    With --params: what that pipeline reads, with its paths.lock and paths.downloads."""
    if not args.params:
        lock = load_lock(args.lock)
        return (
            lock,
            _default_dest(lock.path, args.dest),
            lock.select(args.names, args.used_by or ()),
        )
    if args.names or args.used_by or args.lock != DEFAULT_LOCK or args.dest:
        raise KitError("--params chooses the artifacts, the lock and --dest itself: give it alone")
    from .preflight import load_pipeline, pipeline_downloads

    pl = load_pipeline(args.params)
    paths = pl.p["paths"]
    lock = load_lock(pl.base / paths.get("lock", DEFAULT_LOCK))
    names = pipeline_downloads(pl)
    return lock, pl.base / paths.get("downloads", "."), lock.select(names) if names else []


def run_fetch(args) -> int:
    lock, dest, arts = _selection(args)
    updates: dict[str, dict] = {}
    bad = 0
    for a in arts:
        out = fetch_one(a, dest, args.record, args.gdrive_endpoint, args.hf_endpoint)
        bad += out.bad
        print(f"{out.status.upper() if out.bad else out.status:<10} {a.name}: {out.message}")
        if out.record:
            updates[a.name] = out.record
    if updates:
        update_lock(lock.path, updates)
        for name, rec in updates.items():
            if "sha256" in rec or "revision" in rec:
                print(
                    f"!!! TRUST ON FIRST USE: recorded {_fmt_record(rec)} for {name!r} in "
                    f"{lock.path}.\n!!! Nothing vouched for these bytes: compare with a "
                    "trusted copy if you can, then commit the lock.",
                    file=sys.stderr,
                )
        print(f"recorded {len(updates)} entr{'y' if len(updates) == 1 else 'ies'} in {lock.path}")
    print(f"{len(arts) - bad} of {len(arts)} artifacts present" + (f", {bad} not" if bad else ""))
    return 1 if bad else 0


def _fmt_record(rec: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in rec.items())


def run_verify(args) -> int:
    lock, dest, arts = _selection(args)
    counts = {"ok": 0, "mismatch": 0, "missing": 0, "unrecorded": 0}
    for a in arts:
        target = dest / a.path
        if not target.is_file():
            counts["missing"] += 1
            print(f"missing    {a.name}: {target}")
            continue
        status, sha, size = check_file(a, target)
        counts[status] += 1
        if status == "ok":
            print(f"ok         {a.name}")
        elif status == "mismatch":
            print(f"MISMATCH   {a.name}: {_mismatch_msg(a, target, sha, size)}")
        else:
            print(f"unrecorded {a.name}: sha256 {sha}, {size} bytes (fetch --record pins it)")
    print(", ".join(f"{v} {k}" for k, v in counts.items()))
    if counts["mismatch"] or counts["unrecorded"]:
        if counts["unrecorded"]:
            print(
                f"{counts['unrecorded']} present artifact(s) have no sha256 in {lock.path}: "
                "nothing verifies them; pin with `rvos-kit fetch NAME --record`",
                file=sys.stderr,
            )
        return 1
    if args.strict and counts["missing"]:
        return 1
    return 0


def _common_args(p) -> None:
    p.add_argument("names", nargs="*", metavar="NAME", help="artifact names (default: all)")
    p.add_argument("--lock", default=DEFAULT_LOCK, help="the lock file (default: %(default)s)")
    p.add_argument(
        "--dest", help="root the lock's paths are relative to (default: the lock's folder)"
    )
    p.add_argument(
        "--used-by",
        action="append",
        metavar="STAGE",
        help="select the artifacts a pipeline stage uses (repeatable)",
    )
    p.add_argument(
        "--params",
        metavar="PARAMS_YAML",
        help="select every artifact that pipeline reads (released trees, checkpoints), "
        "with its paths.lock and paths.downloads; give no NAME, --lock or --dest with it",
    )


def register(sub) -> None:
    p = sub.add_parser(
        "fetch",
        help="download the artifacts of checkpoints.lock, checking size and sha256",
        description=verb_section(__doc__, "fetch"),
    )
    _common_args(p)
    p.add_argument(
        "--record",
        action="store_true",
        help="write the sha256/size (and hf commit) of first downloads into the lock where "
        "it has null (trust on first use)",
    )
    p.add_argument(
        "--gdrive-endpoint",
        help=f"Drive base URL (default: ${GDRIVE_ENDPOINT_ENV} or {DEFAULT_GDRIVE_ENDPOINT})",
    )
    p.add_argument(
        "--hf-endpoint",
        help=f"Hugging Face base URL (default: ${HF_ENDPOINT_ENV}, $HF_ENDPOINT or "
        f"{DEFAULT_HF_ENDPOINT})",
    )
    p.set_defaults(func=run_fetch)

    v = sub.add_parser(
        "verify",
        help="hash every present artifact of checkpoints.lock; non-zero exit on a mismatch",
        description=verb_section(__doc__, "verify"),
    )
    _common_args(v)
    v.add_argument("--strict", action="store_true", help="also fail when an artifact is missing")
    v.set_defaults(func=run_verify)
