"""`fetch` checks what the bytes are before it pins them or moves them into place (a
sign-in page saved as a checkpoint, random bytes, a truncated zip are refused, real
PyTorch checkpoints and Annotations zips pass), and says by cause what failed and what to
do next. Downloads go through a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import io
import socket
import zipfile
from pathlib import Path

import pytest
import yaml
from test_artifacts import entry, fetch, leftovers, payload, server, sha, torch_ckpt, verify
from test_artifacts import write_lock as _write_lock

from rvos_kit.artifacts import content
from rvos_kit.artifacts import lock as lockfile

assert server  # a fixture

# what SharePoint / Drive hand out instead of the file (102 bytes, as in the report)
SIGN_IN = (
    b"<!DOCTYPE html><html><head><title>Sign in to your account</title></head>"
    b"<body></body></html>\n"
)


def annotations_zip(top: str = "Annotations") -> bytes:
    """A small released-style Annotations zip: <top>/<video>/<exp>/<frame>.png."""
    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for v in ("v0", "v1"):
            for f in range(3):
                png = io.BytesIO()
                Image.fromarray(np.eye(16, dtype=np.uint8) * 255).save(png, format="PNG")
                zf.writestr(f"{top}/{v}/0/{f:05d}.png", png.getvalue())
    return buf.getvalue()


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


# ----------------------------------------------------------------------------- sniffing
@pytest.mark.parametrize(
    "name, data, looks",
    [
        ("vit_huge.pth", SIGN_IN, "an HTML page titled 'Sign in to your account'"),
        ("w.pth", payload(1 << 20, 3), "binary data (no known format)"),
        ("w.pth", torch_ckpt(50_000, 1)[:30_000], "a truncated or damaged zip archive"),
        ("w.pth", b"", "an empty file"),
        ("w.pth", annotations_zip(), "a zip archive of 6 entries (6 PNG), top folder"),
        ("a.zip", torch_ckpt(5_000, 1), "a PyTorch checkpoint (zip"),
        ("a.zip", annotations_zip()[:-200], "a truncated or damaged zip archive"),
        ("a.zip", SIGN_IN, "an HTML page titled 'Sign in to your account'"),
        ("config.json", b"<html><title>404 &amp; gone</title>", "titled '404 & gone'"),
        ("config.json", b'{"a": 1', "JSON text"),
    ],
)
def test_wrong_content_is_refused_and_described(tmp_path, name, data, looks):
    p = write(tmp_path, name, data)
    why = content.problem(p, content.expected(name))
    assert why is not None and looks in why, why
    assert why.startswith("is ") and ", not " in why


@pytest.mark.parametrize(
    "name, data",
    [
        ("w.pth", lambda: torch_ckpt(50_000, 1)),
        ("pytorch_model.bin", lambda: torch_ckpt(20_000, 2, legacy=True)),
        ("soc_origin.zip", annotations_zip),
        ("en2.zip", lambda: annotations_zip("test/en2/Annotations")),
        ("config.json", lambda: b'{"model_type": "roberta"}'),
        ("merges.txt", lambda: "#version: 0.2\n\u0120 t\n".encode()),
        ("weights.dat", lambda: payload(10_000)),  # no known kind: any bytes but HTML
    ],
)
def test_real_files_pass(tmp_path, name, data):
    assert content.problem(write(tmp_path, name, data()), content.expected(name)) is None


def test_zip_without_masks_and_pickle_without_torch_magic_refused(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("readme.txt", "no masks here")
    assert "not a zip archive of PNG masks" in content.problem(
        write(tmp_path, "a.zip", buf.getvalue()), "zip"
    )
    import pickle

    p = write(tmp_path, "w.pth", pickle.dumps({"w": [1.0] * 100}, protocol=2))
    assert "a Python pickle (not a PyTorch checkpoint" in content.problem(p, "torch")


# ----------------------------------------------------------------------------- fetch
def test_record_refuses_a_sign_in_page_downloaded(tmp_path, server, capsys):
    server.files["/vit.pth"] = SIGN_IN
    lock = _write_lock(
        tmp_path, entry("vit_huge", "url", "rvos/vit_huge.pth", url=f"{server.url}/vit.pth")
    )
    before = lock.read_text()
    assert fetch(lock, "--record") == 1
    out = capsys.readouterr().out
    assert "REFUSED" in out and "an HTML page titled 'Sign in to your account'" in out
    assert "not a PyTorch checkpoint" in out and "nothing placed or pinned" in out
    assert "NOT THE FILE" in out and "rvos-kit verify vit_huge" in out
    assert lock.read_text() == before  # nothing pinned
    assert not (tmp_path / "dest" / "rvos" / "vit_huge.pth").exists()
    assert leftovers(tmp_path / "dest") == []


@pytest.mark.parametrize(
    "data, looks",
    [(SIGN_IN, "an HTML page titled 'Sign in to your account'"), (payload(1 << 20), "binary")],
)
def test_record_refuses_a_present_file_that_is_not_a_checkpoint(tmp_path, capsys, data, looks):
    """The report's case: the manual UNINEXT entry, a page saved by hand as the .pth."""
    lock = _write_lock(
        tmp_path,
        entry(
            "vit_huge",
            "manual",
            "checkpoints/rvos/vit_huge.pth",
            url="https://example.invalid/folder",
            instructions="Open the folder and save the .pth.",
        ),
    )
    target = tmp_path / "dest" / "checkpoints" / "rvos" / "vit_huge.pth"
    target.parent.mkdir(parents=True)
    target.write_bytes(data)
    before = lock.read_text()
    assert fetch(lock, "--record") == 1
    out = capsys.readouterr().out
    assert "REFUSED" in out and looks in out and "not pinned" in out
    assert lock.read_text() == before
    assert target.read_bytes() == data  # a file the kit did not write is left alone
    assert verify(lock) == 1
    assert looks in capsys.readouterr().out

    # the real checkpoint in its place: pinned
    good = torch_ckpt(40_000, 4)
    target.write_bytes(good)
    assert fetch(lock, "--record") == 0
    assert yaml.safe_load(lock.read_text())["artifacts"][0]["sha256"] == sha(good)


def test_truncated_zip_download_refused_real_one_recorded(tmp_path, server, capsys):
    z = annotations_zip()
    server.files["/soc.zip"] = z[: len(z) // 2]
    lock = _write_lock(
        tmp_path, entry("released_soc_origin", "url", "r/soc.zip", url=f"{server.url}/soc.zip")
    )
    assert fetch(lock, "--record") == 1
    assert "a truncated or damaged zip archive" in capsys.readouterr().out
    assert leftovers(tmp_path / "dest") == [] and not (tmp_path / "dest/r/soc.zip").exists()
    server.files["/soc.zip"] = z
    assert fetch(lock, "--record") == 0
    assert (tmp_path / "dest/r/soc.zip").read_bytes() == z


def test_gdrive_download_of_a_page_refused(tmp_path, server, monkeypatch, capsys):
    fid = "1abcDEF_ghi-JKL0123456789"
    server.files[f"/uc?id={fid}&export=download"] = SIGN_IN
    monkeypatch.setenv(lockfile.GDRIVE_ENDPOINT_ENV, server.url)
    lock = _write_lock(tmp_path, entry("g", "gdrive", "g/ck.pth", id=fid))
    assert fetch(lock, "--record") == 1
    out = capsys.readouterr().out
    assert "Sign in to your account" in out
    assert f"https://drive.google.com/file/d/{fid}/view" in out  # where to get it by hand
    assert leftovers(tmp_path / "dest") == [] and not (tmp_path / "dest/g/ck.pth").exists()


# ----------------------------------------------------------------------------- by cause
def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_failures_are_named_by_cause_with_the_next_step(tmp_path, server, capsys):
    good = torch_ckpt(20_000, 5)
    server.files["/m.pth"] = good
    lock = _write_lock(
        tmp_path,
        entry("offline", "url", "a.pth", url=f"http://127.0.0.1:{closed_port()}/a.pth"),
        entry("gone", "url", "b.pth", url=f"{server.url}/missing.pth"),
        entry("changed", "url", "c.pth", sha(b"x"), url=f"{server.url}/m.pth"),
        entry("fresh", "url", "d.pth", url=f"{server.url}/m.pth"),
    )
    assert fetch(lock) == 1
    out = capsys.readouterr().out
    steps = out[out.index("next steps:") :]
    # each cause once, with its artifacts
    assert "NO NETWORK?" in steps and "these downloads got no answer" in steps
    assert "offline." in steps.split("NO NETWORK?")[1].splitlines()[0]
    assert "THE SERVER REFUSED" in steps and "HTTP 404" in out
    assert "HASH MISMATCH" in steps and "changed." in steps
    assert "UNVERIFIED" in steps and "`rvos-kit fetch fresh --lock" in steps
    # by hand: where to get it, where to save it, how to check it
    dest = tmp_path / "dest"
    assert f"-> save as {dest / 'a.pth'}" in steps
    assert f"`rvos-kit verify offline --lock {lock} --dest {dest}`" in steps
    # never a recommendation to --record what failed to download
    no_net = steps.split("NO NETWORK?")[1].split("THE SERVER REFUSED")[0]
    assert "rvos-kit fetch offline" in no_net and "--record" in no_net  # pin after placing
    assert no_net.index("verify") < no_net.index("--record")
