"""checkpoints.lock, `rvos-kit fetch` and `rvos-kit verify` against a real HTTP server on
127.0.0.1 (Range, If-Range, truncated bodies, redirects), through urllib and gdown."""

from __future__ import annotations

import hashlib
import http.server
import io
import re
import threading
from pathlib import Path

import pytest
import yaml

from rvos_kit.artifacts import download as dl
from rvos_kit.artifacts import lock as lockfile
from rvos_kit.cli import main
from rvos_kit.errors import KitError

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- server
class FileServer:
    """Serves ``files`` ({url path: bytes}); records every request's path and headers.

    ``truncate[path] = n``: announce the full Content-Length, send n bytes, close.
    ``no_range``: paths answered with 200 + the whole body even to a Range request.
    ``redirects[path] = (location, headers)``: 302 with extra headers (Hugging Face).
    ``no_validator``: paths served without ETag / Last-Modified, Range honoured blindly."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.truncate: dict[str, int] = {}
        self.no_range: set[str] = set()
        self.no_validator: set[str] = set()
        self.redirects: dict[str, tuple[str, dict]] = {}
        self.requests: list[tuple[str, dict]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append((self.path, dict(self.headers)))
                if self.path in server.redirects:
                    loc, extra = server.redirects[self.path]
                    self.send_response(302)
                    self.send_header("Location", loc)
                    for k, v in extra.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
                if self.path in server.no_validator:
                    etag = None
                start = 0
                rng = self.headers.get("Range")
                if_range = self.headers.get("If-Range")
                if (
                    rng
                    and self.path not in server.no_range
                    and (if_range in (None, etag) or etag is None)
                ):
                    start = int(re.fullmatch(r"bytes=(\d+)-", rng)[1])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Content-Type", "application/octet-stream")
                if etag is not None:
                    self.send_header("ETag", etag)
                self.end_headers()
                n = server.truncate.get(self.path)
                self.wfile.write(body if n is None else body[: max(0, n - start)])
                self.wfile.flush()
                self.close_connection = True

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def paths(self) -> list[str]:
        return [p for p, _ in self.requests]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = FileServer()
    yield s
    s.close()


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def payload(n: int, seed: int = 0) -> bytes:
    import numpy as np

    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def torch_ckpt(n: int, seed: int = 0, legacy: bool = False) -> bytes:
    """A real PyTorch checkpoint (``torch.save``) of about ``n`` bytes."""
    import numpy as np
    import torch

    w = torch.from_numpy(np.random.default_rng(seed).standard_normal(n // 4, dtype=np.float32))
    buf = io.BytesIO()
    torch.save({"model": {"w": w}}, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


LOCK_HEAD = "# test lock: comments must survive --record\nversion: 1\nartifacts:\n"


def entry(name, source, path, sha256=None, size=None, **kw) -> str:
    lines = [f"  - name: {name}  # keep me", f"    source: {source}"]
    for k, v in kw.items():
        lines.append(f"    {k}: {v}")
    lines += [
        f"    sha256: {sha256 or 'null'}",
        f"    size: {'null' if size is None else size}",
        f"    path: {path}",
        "    used_by: [stage_a]",
    ]
    return "\n".join(lines) + "\n"


def write_lock(tmp_path: Path, *entries: str) -> Path:
    p = tmp_path / "checkpoints.lock"
    p.write_text(LOCK_HEAD + "".join(entries))
    return p


def fetch(lock: Path, *args: str) -> int:
    return main(["fetch", "--lock", str(lock), "--dest", str(lock.parent / "dest"), *args])


def verify(lock: Path, *args: str) -> int:
    return main(["verify", "--lock", str(lock), "--dest", str(lock.parent / "dest"), *args])


def leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.rglob(".*")) if d.exists() else []


# ----------------------------------------------------------------------------- the lock
def test_committed_lock_lists_every_artifact_and_round_trips():
    lock = lockfile.load_lock(REPO / "checkpoints.lock")
    by_source: dict[str, list] = {}
    for a in lock.artifacts:
        by_source.setdefault(a.source, []).append(a)
    names = {a.name for a in lock.artifacts}
    rvos = {"soc", "mutr", "referformer_ft", "vit_huge", "convnext"}
    released = {
        f"released_{m}_{k}"
        for m, ks in {
            "soc": ("origin", "aot"),
            "mutr": ("origin", "aot"),
            "referformer_ft": ("origin", "aot", "deaot"),
            "vit_huge": ("origin", "deaot"),
            "convnext": ("origin", "deaot"),
            "soc_mutr_referft": ("origin", "aot"),
            "vit_convnext_soc": ("origin", "deaot"),
        }.items()
        for k in ks
    } | {"released_en2", "released_final"}
    assert rvos | released | {"aot_swinl", "deaot_swinl", "video_swin_base"} <= names
    assert {a.name for a in by_source["manual"]} == {"vit_huge", "convnext"}
    assert len(by_source["gdrive"]) == 5 - 2 + 2 + len(released) == 22
    assert len({a.id for a in by_source["gdrive"]}) == 22  # no id used twice
    hf_files = {(a.repo, a.file) for a in by_source["hf"]}
    for f in ("config.json", "pytorch_model.bin", "tokenizer.json", "vocab.json"):
        assert ("FacebookAI/roberta-base", f) in hf_files
    for f in ("config.json", "pytorch_model.bin", "vocab.txt"):
        assert ("google-bert/bert-base-uncased", f) in hf_files
    assert by_source["url"][0].url.startswith("https://github.com/SwinTransformer/storage/")
    assert all(a.used_by for a in lock.artifacts)
    # --record rewrites through ruamel: an unchanged lock must come back byte for byte
    text = (REPO / "checkpoints.lock").read_text()
    buf = io.StringIO()
    rt = lockfile._round_trip_yaml()
    rt.dump(rt.load(text), buf)
    assert buf.getvalue() == text


def test_lock_used_by_names_stages_the_pipelines_have():
    """`fetch --used-by STAGE` takes DVC stage names: every used_by of the committed lock
    is a stage of dvc.yaml or audit/dvc.yaml."""
    stages = set()
    for f in ("dvc.yaml", "audit/dvc.yaml"):
        stages |= set(yaml.safe_load((REPO / f).read_text())["stages"])
    lock = lockfile.load_lock(REPO / "checkpoints.lock")
    assert {u for a in lock.artifacts for u in a.used_by} <= stages


@pytest.mark.parametrize(
    "bad, msg",
    [
        (entry("a", "url", "../x.bin", url="http://h/x"), "without '..'"),
        (entry("a", "url", "/abs/x.bin", url="http://h/x"), "relative"),
        (entry("a", "url", "x.bin", url="http://h/x", sha256="abc"), "64 lowercase hex"),
        (entry("a", "ftp", "x.bin"), "source"),
        (entry("a", "gdrive", "x.bin"), "needs `id`"),
        (entry("a", "manual", "x.bin"), "instructions"),
        (
            entry("a", "url", "x", url="http://h/x") + entry("a", "url", "y", url="http://h/y"),
            "dup",
        ),
        (
            entry("a", "url", "x", url="http://h/x") + entry("b", "url", "x", url="http://h/y"),
            "same",
        ),
    ],
)
def test_bad_lock_is_one_clear_error(tmp_path, capsys, bad, msg):
    lock = write_lock(tmp_path, bad)
    assert verify(lock) == 2
    err = capsys.readouterr().err
    assert str(lock) in err and msg in err and "Traceback" not in err


def test_unknown_name_and_stage_selection(tmp_path, capsys, server):
    server.files["/a"] = b"A"
    server.files["/b"] = b"B"
    lock = write_lock(
        tmp_path,
        entry("a", "url", "a.dat", sha(b"A"), 1, url=f"{server.url}/a"),
        entry("b", "url", "b.dat", sha(b"B"), 1, url=f"{server.url}/b").replace(
            "stage_a", "stage_b"
        ),
    )
    assert fetch(lock, "nope") == 2
    assert "no artifact named 'nope'" in capsys.readouterr().err
    assert fetch(lock, "--used-by", "stage_b") == 0
    assert server.paths() == ["/b"]
    assert not (tmp_path / "dest" / "a.dat").exists()


# ----------------------------------------------------------------------------- url source
def test_fetch_good_download_then_skip(tmp_path, server):
    data = payload(300_000)
    server.files["/w.pth"] = data
    lock = write_lock(
        tmp_path, entry("w", "url", "ck/w.dat", sha(data), len(data), url=f"{server.url}/w.pth")
    )
    assert fetch(lock) == 0
    target = tmp_path / "dest" / "ck" / "w.dat"
    assert target.read_bytes() == data
    assert leftovers(tmp_path / "dest") == []
    assert fetch(lock) == 0  # present and verified: no request
    assert server.paths() == ["/w.pth"]
    assert verify(lock) == 0


def test_wrong_hash_refused_nothing_placed(tmp_path, server, capsys):
    data = payload(50_000)
    server.files["/w.pth"] = data
    lock = write_lock(
        tmp_path, entry("w", "url", "w.dat", sha(b"other"), len(data), url=f"{server.url}/w.pth")
    )
    assert fetch(lock) == 1
    out = capsys.readouterr().out
    assert "MISMATCH" in out and "nothing placed" in out
    assert not (tmp_path / "dest" / "w.dat").exists()
    assert leftovers(tmp_path / "dest") == []


def test_existing_good_file_untouched_when_lock_moves_on(tmp_path, server, capsys):
    """The lock now pins other bytes: the present file is refused, not replaced."""
    old, new = payload(10_000, 1), payload(10_000, 2)
    server.files["/w.pth"] = new
    target = tmp_path / "dest" / "w.dat"
    target.parent.mkdir(parents=True)
    target.write_bytes(old)
    lock = write_lock(
        tmp_path, entry("w", "url", "w.dat", sha(new), len(new), url=f"{server.url}/w.pth")
    )
    assert fetch(lock) == 1
    assert "left untouched" in capsys.readouterr().out
    assert target.read_bytes() == old
    assert server.paths() == []
    assert verify(lock) == 1


def test_size_announced_differs_refused_before_download(tmp_path, server):
    data = payload(20_000)
    server.files["/w.pth"] = data
    lock = write_lock(
        tmp_path, entry("w", "url", "w.dat", sha(data), len(data) + 1, url=f"{server.url}/w.pth")
    )
    assert fetch(lock) == 1
    assert not (tmp_path / "dest" / "w.dat").exists()
    assert leftovers(tmp_path / "dest") == []


def test_truncated_transfer_then_resume_with_range(tmp_path, server, capsys):
    data = payload(3 * dl.CHUNK + 12345)
    cut = dl.CHUNK + 777
    server.files["/w.pth"] = data
    server.truncate["/w.pth"] = cut
    lock = write_lock(
        tmp_path, entry("w", "url", "w.dat", sha(data), len(data), url=f"{server.url}/w.pth")
    )
    assert fetch(lock) == 1
    assert "closed the connection" in capsys.readouterr().out
    target = tmp_path / "dest" / "w.dat"
    part = tmp_path / "dest" / ".w.dat.part"
    assert not target.exists()
    assert part.read_bytes() == data[:cut]  # the received prefix, kept for resume

    del server.truncate["/w.pth"]
    assert fetch(lock) == 0
    assert target.read_bytes() == data
    (_, h1), (_, h2) = server.requests
    assert "Range" not in h1
    assert h2["Range"] == f"bytes={cut}-"  # only the missing bytes were asked for
    assert h2["If-Range"].startswith('"')  # ... and only if the file is unchanged
    assert leftovers(tmp_path / "dest") == []


def test_resume_restarts_when_server_ignores_range_or_file_changed(tmp_path, server):
    data = payload(200_000, 3)
    server.files["/w.pth"] = data
    lock = write_lock(
        tmp_path, entry("w", "url", "w.dat", sha(data), len(data), url=f"{server.url}/w.pth")
    )
    server.truncate["/w.pth"] = 5000
    assert fetch(lock) == 1
    del server.truncate["/w.pth"]
    server.no_range.add("/w.pth")  # 200 + whole body: the partial file must not be kept
    assert fetch(lock) == 0
    assert (tmp_path / "dest" / "w.dat").read_bytes() == data

    # a partial of an older version: If-Range fails, the server sends the new file whole
    (tmp_path / "dest" / "w.dat").unlink()
    server.no_range.clear()
    server.files["/w.pth"] = payload(200_000, 4)[:5000] + data[5000:]
    server.truncate["/w.pth"] = 5000
    assert fetch(lock) == 1  # truncated; part holds 5000 bytes of the "old" version
    server.files["/w.pth"] = data
    del server.truncate["/w.pth"]
    assert fetch(lock) == 0
    assert (tmp_path / "dest" / "w.dat").read_bytes() == data
    assert server.requests[-1][1].get("Range") == "bytes=5000-"


def test_http_error_reported(tmp_path, server, capsys):
    lock = write_lock(tmp_path, entry("w", "url", "w.dat", url=f"{server.url}/missing"))
    assert fetch(lock) == 1
    assert "HTTP 404" in capsys.readouterr().out


# ----------------------------------------------------------------------------- --record
def test_record_fills_lock_keeps_comments_and_then_guards(tmp_path, server, capsys):
    data = payload(40_000, 5)
    server.files["/w.pth"] = data
    lock = write_lock(tmp_path, entry("w", "url", "w.dat", url=f"{server.url}/w.pth"))
    before = lock.read_text()

    # plain fetch: placed, loudly unverified (exit 1: exit 0 means verified), lock untouched
    assert fetch(lock) == 1
    assert "UNVERIFIED" in capsys.readouterr().out
    assert lock.read_text() == before

    # --record on the present file: hash recorded, nothing downloaded again
    assert fetch(lock, "--record") == 0
    err = capsys.readouterr().err
    assert "TRUST ON FIRST USE" in err and sha(data) in err
    text = lock.read_text()
    assert "# test lock: comments must survive --record" in text and "# keep me" in text
    e = yaml.safe_load(text)["artifacts"][0]
    assert (e["sha256"], e["size"]) == (sha(data), len(data))
    changed = [
        ln for ln in zip(before.splitlines(), text.splitlines(), strict=True) if ln[0] != ln[1]
    ]
    assert [b.split(":")[0].strip() for b, _ in changed] == ["sha256", "size"]
    assert server.paths() == ["/w.pth"]

    # now pinned: a tampered file fails verify, a new download of other bytes is refused
    target = tmp_path / "dest" / "w.dat"
    target.write_bytes(data[:-1] + b"\0")
    assert verify(lock) == 1
    target.unlink()
    server.files["/w.pth"] = payload(40_000, 6)
    assert fetch(lock, "--record") == 1  # --record never overrides a recorded hash
    assert not target.exists()
    assert yaml.safe_load(lock.read_text())["artifacts"][0]["sha256"] == sha(data)


def test_hf_resolve_redirect_and_record_pins_commit(tmp_path, server, monkeypatch, capsys):
    data = torch_ckpt(30_000, 7, legacy=True)  # what roberta-base's 2019 file is
    commit = "0123456789abcdef0123456789abcdef01234567"
    server.files["/cdn/blob"] = data
    server.redirects["/org/model/resolve/main/pytorch_model.bin"] = (
        "/cdn/blob",
        {"X-Repo-Commit": commit},
    )
    monkeypatch.setenv(lockfile.HF_ENDPOINT_ENV, server.url)
    lock = write_lock(
        tmp_path,
        entry(
            "m",
            "hf",
            "enc/pytorch_model.bin",
            repo="org/model",
            revision="null",
            file="pytorch_model.bin",
        ),
    )
    assert fetch(lock, "--record") == 0
    assert server.paths() == ["/org/model/resolve/main/pytorch_model.bin", "/cdn/blob"]
    e = yaml.safe_load(lock.read_text())["artifacts"][0]
    assert (e["revision"], e["sha256"], e["size"]) == (commit, sha(data), len(data))
    assert "revision " + commit in capsys.readouterr().err

    # pinned: the next download asks for that commit, not main
    server.files[f"/org/model/resolve/{commit}/pytorch_model.bin"] = data
    (tmp_path / "dest" / "enc" / "pytorch_model.bin").unlink()
    assert fetch(lock) == 0
    assert server.paths()[-1] == f"/org/model/resolve/{commit}/pytorch_model.bin"


def test_hf_url_building():
    assert (
        lockfile.hf_url("FacebookAI/roberta-base", "vocab.json", None, "https://hf.example/")
        == "https://hf.example/FacebookAI/roberta-base/resolve/main/vocab.json"
    )
    assert lockfile.hf_url("a/b", "c.bin", "abc123", "http://x").endswith(
        "/a/b/resolve/abc123/c.bin"
    )


# ----------------------------------------------------------------------------- gdrive (gdown)
def test_gdrive_url_is_a_drive_download_for_gdown(monkeypatch):
    from gdown.parse_url import parse_url

    monkeypatch.delenv(lockfile.GDRIVE_ENDPOINT_ENV, raising=False)
    url = lockfile.gdrive_url("1EVmywK8cjH5kpgpyV8NKfx1tiuPeUQA9")
    assert url == "https://drive.google.com/uc?id=1EVmywK8cjH5kpgpyV8NKfx1tiuPeUQA9&export=download"
    # gdown recognises it as a Drive download link (confirmation page, cookies)
    assert parse_url(url) == ("1EVmywK8cjH5kpgpyV8NKfx1tiuPeUQA9", True)
    assert lockfile.gdrive_url("X1234567890", "http://127.0.0.1:9/").startswith(
        "http://127.0.0.1:9/uc?id=X1234567890"
    )


def test_gdrive_through_gdown_against_local_server(tmp_path, server, monkeypatch, capsys):
    fid = "1abcDEF_ghi-JKL0123456789"
    data = torch_ckpt(70_000, 8)
    server.files[f"/uc?id={fid}&export=download"] = data
    monkeypatch.setenv(lockfile.GDRIVE_ENDPOINT_ENV, server.url)
    good = entry("g", "gdrive", "g/ck.pth", sha(data), len(data), id=fid)
    lock = write_lock(tmp_path, good)
    assert fetch(lock) == 0
    assert (tmp_path / "dest" / "g" / "ck.pth").read_bytes() == data
    assert leftovers(tmp_path / "dest") == []
    assert server.paths() == [f"/uc?id={fid}&export=download"]

    # wrong hash through gdown: refused, nothing placed, no temp file left
    (tmp_path / "dest" / "g" / "ck.pth").unlink()
    lock = write_lock(tmp_path, good.replace(sha(data), sha(b"x")))
    assert fetch(lock) == 1
    assert "MISMATCH" in capsys.readouterr().out
    assert not (tmp_path / "dest" / "g" / "ck.pth").exists()
    assert leftovers(tmp_path / "dest") == []

    # announced size differs from the lock: aborted by gdown's progress hook
    lock = write_lock(tmp_path, good.replace(f"size: {len(data)}", f"size: {len(data) - 1}"))
    assert fetch(lock) == 1
    assert leftovers(tmp_path / "dest") == []


# ----------------------------------------------------------------------------- manual, verify
def test_manual_entry_prints_instructions_counts_missing(tmp_path, capsys):
    data = b"weights"
    lock = write_lock(
        tmp_path,
        entry(
            "u",
            "manual",
            "m/u.pth",
            sha(data),
            len(data),
            url="https://example.invalid/f",
            instructions="Open the folder and save the file.",
        ),
    )
    assert fetch(lock) == 1
    assert "Open the folder and save the file." in capsys.readouterr().out
    (tmp_path / "dest" / "m").mkdir(parents=True)
    (tmp_path / "dest" / "m" / "u.pth").write_bytes(data)
    assert fetch(lock) == 0
    (tmp_path / "dest" / "m" / "u.pth").write_bytes(b"other")
    assert fetch(lock) == 1


def test_verify_exit_codes(tmp_path, capsys):
    a, b = b"aaaa", b"bbbb"
    lock = write_lock(
        tmp_path,
        entry("a", "url", "a.dat", sha(a), 4, url="http://h/a"),
        entry("b", "url", "b.dat", url="http://h/b"),
    )
    d = tmp_path / "dest"
    d.mkdir()
    assert verify(lock) == 0  # all missing: reported, not a mismatch
    assert verify(lock, "--strict") == 1
    (d / "a.dat").write_bytes(a)
    (d / "b.dat").write_bytes(b)
    assert verify(lock) == 1  # b is present but nothing verifies it
    out = capsys.readouterr().out
    assert "unrecorded b: sha256 " + sha(b) in out
    assert verify(lock, "--strict") == 1  # b has no recorded hash
    assert verify(lock, "a", "--strict") == 0
    (d / "a.dat").write_bytes(b"aaab")
    assert verify(lock) == 1
    assert "MISMATCH" in capsys.readouterr().out


def test_update_lock_conflict_writes_nothing(tmp_path):
    lock = write_lock(tmp_path, entry("a", "url", "a.dat", sha(b"a"), 1, url="http://h/a"))
    before = lock.read_text()
    with pytest.raises(KitError, match="changed while fetching"):
        lockfile.update_lock(lock, {"a": {"sha256": sha(b"b")}})
    assert lock.read_text() == before
