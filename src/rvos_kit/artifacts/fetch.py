"""``rvos-kit fetch`` and ``rvos-kit verify``: the files of ``checkpoints.lock`` on disk,
downloaded and checked.

The lock (YAML, committed, :mod:`rvos_kit.artifacts.lock`) lists every file the pipeline
downloads: checkpoints, text encoders, the Video-Swin backbone and the authors' released
Annotations zips (``path`` relative to ``--dest``, default: the lock's folder). Downloads
go through :mod:`rvos_kit.artifacts.download`. With ``--params`` the verbs ask the
pipeline which downloads a params file reads (``pipeline_downloads`` of
:mod:`rvos_kit.pipeline.preflight`): the one import from this room upward, made inside
the function that needs it.

fetch
    Download artifacts of checkpoints.lock: the NAMEs given, those a stage uses
    (``--used-by``), everything one pipeline reads (``--params params.yaml``: its
    released trees and checkpoints, with its own lock and download folder), or the
    whole lock. Each artifact not already present goes to a temp file beside its
    destination (``.<name>.part``); its size and sha256 are checked against the lock, and
    its content against what the path says (a checkpoint is a PyTorch checkpoint, a zip
    a complete Annotations zip, never an HTML sign-in page; checked whenever the lock
    has no sha256 to vouch for the bytes), and only then is it renamed into place. A
    mismatch deletes the temp file and leaves any existing file untouched; ``--record``
    never pins a file that fails the content check. Whatever failed is listed at the end
    by cause (no network, HTTP status, not the file, hash mismatch, manual, unverified)
    with the next step: where to get the file by hand, where to save it, and the
    ``rvos-kit verify`` that checks it. An interrupted plain-HTTP download keeps its temp
    file and the next fetch continues it with a ``Range`` request, only when the server
    gave a strong validator (``If-Range`` then guards against a file that changed
    meanwhile);
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

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..argtypes import declare_paths
from ..errors import KitError
from ..helptext import verb_section
from ..trees.digest import sha256_file
from . import content
from .download import (
    DownloadFailed,
    _discard,
    _state_path,
    gdown_download,
    glob_escape,
    http_download,
)
from .lock import (
    _COMMIT_RE,
    DEFAULT_GDRIVE_ENDPOINT,
    DEFAULT_HF_ENDPOINT,
    DEFAULT_LOCK,
    GDRIVE_ENDPOINT_ENV,
    HF_ENDPOINT_ENV,
    Artifact,
    Lock,
    browser_url,
    load_lock,
    source_url,
    update_lock,
)


# ----------------------------------------------------------------------------- fetch
@dataclass
class Outcome:
    status: str  # ok | unrecorded | fetched | missing | mismatch | failed | refused | unpinned
    message: str = ""
    record: dict = field(default_factory=dict)
    cause: str = ""  # of a bad outcome: network | http | size | refused | mismatch | ...

    @property
    def bad(self) -> bool:
        return self.status in ("missing", "mismatch", "failed", "unpinned", "refused")


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


def _looks(path: Path) -> str:
    return f" (the file is {content.describe(path)})"


def fetch_one(a: Artifact, dest: Path, record: bool, gdrive_ep=None, hf_ep=None) -> Outcome:
    target = dest / a.path
    kind = content.expected(a.path)
    if target.is_file():
        status, sha, size = check_file(a, target)
        if status == "ok":
            rec = {"size": size} if record and a.size is None else {}
            return Outcome("ok", "present, verified", rec)
        if status == "mismatch":
            return Outcome(
                "mismatch",
                _mismatch_msg(a, target, sha, size) + _looks(target) + ": left untouched; "
                "delete or move it to download again",
                cause="mismatch",
            )
        why = content.problem(target, kind)
        if why:
            return Outcome(
                "refused",
                f"{target} {why}: not pinned; replace it with the real file",
                cause="refused",
            )
        if record:
            return Outcome("unrecorded", "present", {"sha256": sha, "size": size})
        return Outcome(
            "unpinned",
            f"present but UNVERIFIED: the lock has no sha256 (this file's is {sha}); pin it "
            f"with `rvos-kit fetch {a.name} --record` (trust on first use)",
            cause="unpinned",
        )
    if target.exists():
        return Outcome("failed", f"{target} exists and is not a file", cause="local")

    if a.source == "manual":
        return Outcome(
            "missing", "manual download:\n" + _indent(a.instructions or ""), cause="manual"
        )

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
        return Outcome("failed", str(e), cause=e.cause)

    sha, size = sha256_file(tmp, a.name)
    if (a.sha256 is not None and sha != a.sha256) or (a.size is not None and size != a.size):
        msg = _mismatch_msg(a, Path(f"{url} (downloaded)"), sha, size) + _looks(tmp)
        _discard(tmp)
        return Outcome("mismatch", msg + ": temp file deleted, nothing placed", cause="mismatch")
    # a matching pinned sha256 vouches for the bytes; without one, the content must
    why = content.problem(tmp, kind) if a.sha256 is None else None
    if why:
        _discard(tmp)
        return Outcome(
            "refused",
            f"{url} handed out a file that {why}: deleted, nothing placed or pinned",
            cause="refused",
        )
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
            cause="unpinned",
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
    from ..pipeline.preflight import load_pipeline, pipeline_downloads

    pl = load_pipeline(args.params)
    lock = load_lock(pl.base / pl.p.paths.lock)
    names = pipeline_downloads(pl)
    return lock, pl.base / pl.p.paths.downloads, lock.select(names) if names else []


def run_fetch(args) -> int:
    lock, dest, arts = _selection(args)
    updates: dict[str, dict] = {}
    bad: list[tuple[Artifact, Outcome]] = []
    for a in arts:
        out = fetch_one(a, dest, args.record, args.gdrive_endpoint, args.hf_endpoint)
        if out.bad:
            bad.append((a, out))
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
    n_bad = len(bad)
    print(
        f"{len(arts) - n_bad} of {len(arts)} artifacts present" + (f", {n_bad} not" if bad else "")
    )
    if bad:
        print(next_steps(args, dest, bad))
    return 1 if bad else 0


# what went wrong, by cause, in the order the next steps are printed
_CAUSES = {
    "network": "NO NETWORK? these downloads got no answer from their server (DNS, refused, "
    "timeout or a cut transfer; the reason is above)",
    "http": "THE SERVER REFUSED these downloads (an HTTP error status, a sign-in, a Drive "
    "quota or a moved file; the status is above)",
    "size": "THE SERVER OFFERS ANOTHER SIZE than the lock records for these (refused before "
    "anything was kept)",
    "refused": "NOT THE FILE: these bytes are not what the entry's path says (a web page, "
    "random or truncated bytes; what they look like is above); nothing was placed or pinned",
    "mismatch": "HASH MISMATCH: these bytes differ from the sha256 the lock pins (the source "
    "changed, or the copy is damaged)",
    "manual": "MANUAL DOWNLOADS (no download link; the instructions are above)",
    "unpinned": "UNVERIFIED: these files are here but the lock has no sha256 for them",
    "local": "IN THE WAY: something that is not a file sits at these paths",
}


def _cmd(args, verb: str, names: list[str], *extra: str) -> str:
    """The command that repeats this selection with another verb."""
    if args.params:
        return " ".join(["rvos-kit", verb, "--params", args.params, *extra])
    sel = [*names]
    if args.lock != DEFAULT_LOCK:
        sel += ["--lock", args.lock]
    if args.dest:
        sel += ["--dest", args.dest]
    return " ".join(["rvos-kit", verb, *sel, *extra])


def next_steps(args, dest: Path, bad: list[tuple[Artifact, Outcome]]) -> str:
    """What failed, grouped by cause, each group with its next step: how to place the
    files by hand and check them (`rvos-kit verify`), or pin them (`--record`)."""
    lines = ["", "next steps:"]
    by_cause: dict[str, list[Artifact]] = {}
    for a, out in bad:
        by_cause.setdefault(out.cause if out.cause in _CAUSES else "http", []).append(a)
    for cause, what in _CAUSES.items():
        arts = by_cause.get(cause)
        if not arts:
            continue
        names = [a.name for a in arts]
        lines.append(f"  {what}: {', '.join(names)}.")
        if cause == "unpinned":
            lines.append(
                f"    Pin them (trust on first use, then commit the lock): "
                f"`{_cmd(args, 'fetch', names, '--record')}`"
            )
            continue
        if cause == "mismatch":
            lines.append(
                "    Do not re-pin blindly: compare with a trusted copy. A damaged file: "
                "delete it and fetch again."
            )
        if cause == "local":
            lines.append("    Move it away, then fetch again.")
            continue
        if cause in ("network", "http"):
            lines.append(
                "    Retry later or on a machine that reaches the servers (the same command), "
                "or get each file by hand:"
            )
        else:
            lines.append("    Get each file by hand (a browser that is signed in where needed):")
        for a in arts:
            where = browser_url(a)
            lines.append(
                f"      {a.name}: {where or '(see above)'}\n        -> save as {dest / a.path}"
            )
        unpinned = [a.name for a in arts if a.sha256 is None]
        lines.append(f"    then check them: `{_cmd(args, 'verify', names)}`")
        if unpinned:
            lines.append(
                "    and pin those the lock has no sha256 for (trust on first use): "
                f"`{_cmd(args, 'fetch', unpinned, '--record')}`"
            )
    return "\n".join(lines)


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
            print(f"MISMATCH   {a.name}: {_mismatch_msg(a, target, sha, size)}{_looks(target)}")
        elif why := content.problem(target, content.expected(a.path)):
            print(f"unrecorded {a.name}: {target} {why}: replace it with the real file")
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
    declare_paths(p, reads=("lock", "params"), writes_into=("dest",))
    p.set_defaults(func=run_fetch)

    v = sub.add_parser(
        "verify",
        help="hash every present artifact of checkpoints.lock; non-zero exit on a mismatch",
        description=verb_section(__doc__, "verify"),
    )
    _common_args(v)
    v.add_argument("--strict", action="store_true", help="also fail when an artifact is missing")
    declare_paths(v, reads=("lock", "params", "dest"))
    v.set_defaults(func=run_verify)
