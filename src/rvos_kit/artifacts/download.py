"""Downloads into a temp file beside the destination: plain HTTP with resume only under a
validator (``If-Range``), Google Drive through gdown. The callers check size and sha256
before anything is renamed into place (:mod:`rvos_kit.artifacts.fetch`)."""

from __future__ import annotations

import http.client
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from ..trees.digest import progress_bar
from ..trees.files import atomic_write_bytes
from .lock import USER_AGENT

CHUNK = 1 << 20
TIMEOUT_S = 60.0


# ----------------------------------------------------------------------------- downloads
class DownloadFailed(Exception):
    """A download did not complete; ``keep`` = the partial temp file is worth resuming.
    ``cause``: ``network`` (no answer: DNS, refused, timeout, cut transfer), ``http`` (the
    server answered with an error status or no file) or ``size`` (it serves another size
    than the lock records)."""

    def __init__(self, msg: str, keep: bool = False, cause: str = "network"):
        super().__init__(msg)
        self.keep = keep
        self.cause = cause


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
            raise DownloadFailed(
                f"HTTP {e.code} {e.reason} from {url}", keep=True, cause="http"
            ) from None
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
                raise DownloadFailed(
                    f"unexpected HTTP {resp.status} from {url}", keep=True, cause="http"
                )
            if expected_size is not None and total is not None and total != expected_size:
                _discard(part)
                raise DownloadFailed(
                    f"{url} serves {total} bytes but the lock says {expected_size}: refused",
                    cause="size",
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
            with open(part, mode) as f, progress_bar(total, desc, initial=offset) as bar:
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
                            "records: refused",
                            cause="size",
                        )
            if remaining is not None and got < remaining:
                raise DownloadFailed(
                    f"{url}: the server closed the connection after {offset + got} of "
                    f"{offset + remaining} bytes; the partial file {part} is kept: run fetch "
                    "again to resume",
                    keep=True,
                )
            return info
    raise DownloadFailed(
        f"{url}: the server does not answer range requests consistently", cause="http"
    )


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
        raise DownloadFailed(str(e), cause="size") from None
    except (
        gdown.exceptions.FileURLRetrievalError,
        gdown.exceptions.DownloadError,
        requests.exceptions.RequestException,  # an OSError
        OSError,
    ) as e:
        # no answer at all (DNS, refused, timeout) is the network; the rest the server's
        offline = (requests.exceptions.ConnectionError, requests.exceptions.Timeout)
        http = isinstance(e, requests.exceptions.RequestException) and not isinstance(e, offline)
        cause = "http" if http or not isinstance(e, OSError) else "network"
        raise DownloadFailed(
            f"gdown could not download {url}: {e}", keep=True, cause=cause
        ) from None


def glob_escape(s: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", s)
