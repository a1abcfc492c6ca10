"""What a downloaded file holds, checked before ``fetch`` pins it or moves it into place.

A Drive, SharePoint or Hugging Face link that needs a sign-in, hits a quota or has moved
answers with a web page, not the file; a size or hash in the lock catches that only once
the lock has one. So every download and every ``--record`` first checks that the bytes
are what the entry's path says (:func:`expected`):

``torch`` (``.pth``, ``.pt``, ``.bin``, ``.ckpt``)
    a PyTorch checkpoint: a zip whose entries sit in one top folder and hold
    ``<top>/data.pkl`` (``torch.save`` since 1.6), or a legacy pickle that starts with
    torch's magic number.
``zip`` (``.zip``: the released Annotations)
    a complete zip archive (its central directory readable, every entry inside the file)
    holding PNG masks at ``[<top folder>/...]<video>/<exp_id>/<frame>.png``.
``json`` / ``text`` (``.json`` / ``.txt``: tokenizer and config files)
    UTF-8 JSON / UTF-8 text without NUL bytes.
anything else
    any bytes but an empty file or an HTML page.

Never HTML, never empty. :func:`problem` says what is wrong in words a user can act on,
with :func:`describe` telling what the file looks like instead ("an HTML page titled
'Sign in to your account'").
"""

from __future__ import annotations

import html
import json
import re
import zipfile
from pathlib import Path, PurePosixPath

# torch's legacy (non-zip) format starts with the pickled magic number 0x1950a86a20f9469cfc6c
# (protocol 2: PROTO 2, LONG1 of 10 bytes, little endian).
TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
KINDS = {
    ".pth": "torch",
    ".pt": "torch",
    ".bin": "torch",
    ".ckpt": "torch",
    ".zip": "zip",
    ".json": "json",
    ".txt": "text",
}
WANT = {
    "torch": "a PyTorch checkpoint (a zip with <folder>/data.pkl, or torch's legacy pickle)",
    "zip": "a zip archive of PNG masks (<video>/<exp_id>/<frame>.png)",
    "json": "a JSON file",
    "text": "a text file",
    "any": "the file itself",
}
HEAD = 64 << 10  # what is read to recognise a format
MAX_JSON = 256 << 20  # bigger .json files are taken as text (never loaded whole)
_HTML_RE = re.compile(
    rb"^\s*(<!--.*?-->\s*)*(<!doctype\s+html|<html|<head|<body|<meta|<title)", re.I | re.S
)
_TITLE_RE = re.compile(rb"<title[^>]*>(.*?)</title", re.I | re.S)


def expected(path: str) -> str:
    """The kind of content a lock path must hold (from its suffix)."""
    return KINDS.get(PurePosixPath(path).suffix.lower(), "any")


def _head(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(HEAD)


def _html_title(head: bytes) -> str | None:
    """The page's title ('' when it has none) when ``head`` is an HTML page, else None."""
    text = head.lstrip(b"\xef\xbb\xbf")
    if not (_HTML_RE.match(text) or b"<html" in text[:2048].lower()):
        return None
    m = _TITLE_RE.search(text)
    if not m:
        return ""
    title = html.unescape(m[1].decode("utf-8", "replace"))
    return " ".join(title.split())[:100]


def _zip_listing(path: Path) -> tuple[list[zipfile.ZipInfo] | None, str]:
    """(entries, '') of a complete zip archive, or (None, why it is not one)."""
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except zipfile.BadZipFile as e:
        return None, str(e)
    except (OSError, ValueError, EOFError) as e:  # a damaged directory
        return None, str(e)
    for i in infos:
        if i.header_offset + i.compress_size > size:
            return None, f"entry {i.filename!r} ends past the end of the file"
    return infos, ""


def _top(names: list[str]) -> str | None:
    tops = {n.split("/", 1)[0] for n in names if "/" in n}
    return tops.pop() if len(tops) == 1 and all("/" in n for n in names) else None


def describe(path: Path) -> str:
    """What ``path`` looks like, in a few words ("an HTML page titled '...'", "a zip
    archive of 12 entries, top folder 'archive/'", "binary data (no known format)")."""
    size = path.stat().st_size
    if size == 0:
        return "an empty file"
    head = _head(path)
    title = _html_title(head)
    if title is not None:
        return f"an HTML page titled {title!r}" if title else "an HTML page (no title)"
    if head.startswith(TORCH_LEGACY_MAGIC):
        return "a legacy PyTorch checkpoint (pickle with torch's magic number)"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        infos, why = _zip_listing(path)
        if infos is None:
            return f"a truncated or damaged zip archive ({why}), {size} bytes"
        names = [i.filename for i in infos]
        top = _top(names)
        if top is not None and f"{top}/data.pkl" in names:
            return f"a PyTorch checkpoint (zip, {top}/data.pkl)"
        where = f", top folder {top + '/'!r}" if top else ""
        pngs = sum(n.lower().endswith(".png") for n in names)
        return f"a zip archive of {len(names)} entries ({pngs} PNG){where}"
    if head.startswith(b"\x1f\x8b"):
        return "a gzip file"
    if head.startswith(b"\x80") and len(head) > 1 and head[1] <= 5:
        return "a Python pickle (not a PyTorch checkpoint: no torch magic number)"
    if _text(head) is not None:
        first = _text(head).strip().splitlines()
        line = first[0][:60] if first else ""
        what = "JSON text" if line[:1] in "{[" else "text"
        return f"{what} ({size} bytes, starting {line!r})"
    return f"binary data (no known format), {size} bytes"


def _text(head: bytes) -> str | None:
    if b"\0" in head:
        return None
    cut = head if len(head) < HEAD else head[: HEAD - 4]  # never split a UTF-8 sequence
    try:
        return cut.decode("utf-8")
    except UnicodeDecodeError as e:
        if len(head) == HEAD and e.start >= len(cut) - 4:
            return cut[: e.start].decode("utf-8", "replace")
        return None


def _torch_ok(path: Path, head: bytes) -> bool:
    if head.startswith(TORCH_LEGACY_MAGIC):
        return True
    if not head.startswith(b"PK\x03\x04"):
        return False
    infos, _ = _zip_listing(path)
    if infos is None:
        return False
    names = [i.filename for i in infos]
    top = _top(names)
    if top is None or f"{top}/data.pkl" not in names:
        return False
    with zipfile.ZipFile(path) as zf:  # the pickle itself must be intact (CRC checked)
        try:
            with zf.open(f"{top}/data.pkl") as f:
                while f.read(1 << 20):
                    pass
        except (zipfile.BadZipFile, OSError, EOFError):
            return False
    return True


def _zip_ok(path: Path, head: bytes) -> bool:
    if not head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return False
    infos, _ = _zip_listing(path)
    if infos is None:
        return False
    # masks somewhere at <video>/<exp_id>/<frame>.png; import-zip sorts out the nesting
    pngs = [i.filename for i in infos if i.filename.lower().endswith(".png")]
    return any(len(n.replace("\\", "/").strip("/").split("/")) >= 3 for n in pngs)


def _json_ok(path: Path, head: bytes) -> bool:
    if path.stat().st_size > MAX_JSON:
        return _text(head) is not None
    try:
        json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return False
    return True


def problem(path: Path, kind: str) -> str | None:
    """None when ``path`` holds what ``kind`` (:func:`expected`) says; else why not:
    "is an HTML page titled '...', not a PyTorch checkpoint (...)"."""
    head = _head(path)
    bad = not head or _html_title(head) is not None
    if not bad:
        if kind == "torch":
            bad = not _torch_ok(path, head)
        elif kind == "zip":
            bad = not _zip_ok(path, head)
        elif kind == "json":
            bad = not _json_ok(path, head)
        elif kind == "text":
            bad = _text(head) is None
    if not bad:
        return None
    return f"is {describe(path)}, not {WANT[kind]}"
