"""Issue 11, "no silent wrong answers": each numbered case of the issue is a test here
(cases 2 and 3 live in test_pipeline.py and test_params_schema.py). Real processes, real
signals, real trees; small samples."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_meta_dict, make_tree, tree_bytes, write_meta
from PIL import Image
from test_importers import make_dump
from test_propagate import MIXED, make_dataset, write_png

from rvos_kit.cli import main
from rvos_kit.stages.fusion import VoteRule, vote
from rvos_kit.stages.propagate import propagate
from rvos_kit.stages.propagate.flow_backend import FlowBackend
from rvos_kit.stages.rvos.dumps import import_pth
from rvos_kit.trees.meta import load_meta
from rvos_kit.trees.staging import mark_path

BIN = Path(sys.executable).parent


def _kit(*args, **kw) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "rvos-kit"), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)  # fmt: skip


@pytest.fixture
def trees(tmp_path):
    """Three source trees + meta (4 videos, odd and even expression counts)."""
    meta_d = make_meta_dict([3, 2, 1, 4], n_frames=4)
    meta = write_meta(tmp_path / "meta.json", meta_d)
    srcs = [make_tree(tmp_path / f"s{i}", meta_d, seed=i, density=0.3) for i in range(3)]
    return tmp_path, meta, srcs


def _vote_args(srcs, out, meta, thr=3):
    return ["vote", *map(str, srcs), "--out", str(out), "--meta", str(meta),
            "--pair-threshold", str(thr), "--odd", "vote", "--odd-threshold", "2"]  # fmt: skip


# ----------------------------------------------------------- case 1: stale resume
def _interrupted_propagate(tmp_path) -> tuple:
    """A dataset, and a propagate into tmp_path/out stopped in its third expression
    (leaving the staging folder and its resume record, as a kill does)."""
    make_dataset(tmp_path, MIXED)
    args = (tmp_path / "JPEGImages", tmp_path / "Annotations", tmp_path / "key_frame.json",
            tmp_path / "meta.json")  # fmt: skip

    class Killed(FlowBackend):
        calls = 0

        def propagate(self, frames, k, ref, emit):
            Killed.calls += 1
            if Killed.calls == 3:
                raise KeyboardInterrupt
            super().propagate(frames, k, ref, emit)

    with pytest.raises(KeyboardInterrupt):
        propagate(*args, tmp_path / "out", Killed(), progress=False)
    assert (tmp_path / ".out.partial" / "v1" / "0").is_dir()  # v1/0 was complete
    return args, tmp_path / "out"


def test_resume_is_keyed_by_content_not_by_path(tmp_path, capsys):
    """Interrupt propagate, regenerate its input tree at the same path with other masks
    (what a threshold change upstream does), run again: the partial work is discarded
    with a notice and the output equals a clean run on the new input."""
    args, out = _interrupted_propagate(tmp_path)
    # the input tree changes content, not path: v1/0's key-frame mask moves
    key = tmp_path / "Annotations" / "v1" / "0" / "00010.png"
    m = np.zeros((48, 64), bool)
    m[5:20, 30:60] = True
    write_png(key, m)
    capsys.readouterr()
    s = propagate(*args, out, FlowBackend(), progress=False)
    err = capsys.readouterr().err
    assert s.resumed == 0
    assert "discarding the partial output" in err and "annotations" in err
    clean = tmp_path / "clean"
    propagate(*args, clean, FlowBackend(), progress=False)
    assert tree_bytes(out) == tree_bytes(clean)


def test_resume_still_resumes_when_nothing_changed(tmp_path, capsys):
    args, out = _interrupted_propagate(tmp_path)
    s = propagate(*args, out, FlowBackend(), progress=False)
    assert s.resumed == 3 and "discarding" not in capsys.readouterr().err


def test_sigint_then_changed_input_discards_the_partial_work(tmp_path):
    """The same with real processes and a real SIGINT: ``rvos-kit propagate`` interrupted
    after some expressions, its input regenerated, the re-run starts afresh."""
    exps = {"0": (6, "true"), "1": (3, "true")}
    # 24 videos: on a loaded 2-core machine 6 could all finish before the poll below saw them
    videos = {f"v{i:02d}": {"size": (120, 160), "frames": 10, "exps": exps} for i in range(24)}
    make_dataset(tmp_path, videos)
    argv = ["propagate", "--images", tmp_path / "JPEGImages", "--annotations",
            tmp_path / "Annotations", "--keyframes", tmp_path / "key_frame.json", "--meta",
            tmp_path / "meta.json", "--backend", "flow", "--workers", "1",
            "--videos", ",".join(videos)]  # fmt: skip
    # --videos: the videos in this process (the whole stage runs as shards on Ray, whose
    # resume is per shard: test_scale)
    p = _kit(*argv, "--out", tmp_path / "out")
    staging = tmp_path / ".out.partial"
    t0 = time.monotonic()
    while not (staging / "v00" / "1").is_dir() or len(list(staging.glob("v*"))) < 2:
        assert p.poll() is None, "propagate finished before it could be interrupted"
        assert time.monotonic() - t0 < 180  # start-up alone can take a minute under load
        time.sleep(0.01)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130 and "interrupted" in err
    assert (tmp_path / ".out.partial.json").is_file() and not (tmp_path / "out").exists()
    m = np.zeros((120, 160), bool)  # v00/0's key-frame mask changes, same path
    m[10:60, 20:90] = True
    write_png(tmp_path / "Annotations" / "v00" / "0" / "00030.png", m)
    p = _kit(*argv, "--out", tmp_path / "out")
    _, err = p.communicate(timeout=120)
    assert p.returncode == 0 and "discarding the partial output" in err, err
    assert main([*map(str, argv), "--out", str(tmp_path / "clean")]) == 0
    assert tree_bytes(tmp_path / "out") == tree_bytes(tmp_path / "clean")


# ------------------------------------------------------ case 4: --out deletes user files
def _user_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "thesis.tex").write_text("\\documentclass{article}")
    return path


def test_out_never_replaces_a_folder_the_kit_did_not_create(trees, capsys):
    tmp, meta, srcs = trees
    cases = {
        "vote": lambda out: _vote_args(srcs, out, meta),
        "make-sample": lambda out: ["make-sample", "--out", str(out), "--videos", "2",
                                    "--frames", "3", "--height", "32", "--width", "48"],
        "propagate": lambda out: ["propagate", "--images", str(tmp / "p/JPEGImages"),
                                  "--annotations", str(tmp / "p/Annotations"),
                                  "--keyframes", str(tmp / "p/key_frame.json"),
                                  "--meta", str(tmp / "p/meta.json"), "--out", str(out),
                                  "--backend", "flow"],
    }  # fmt: skip
    make_dataset(tmp / "p", MIXED)
    for verb, argv in cases.items():
        out = _user_folder(tmp / f"mine-{verb}")
        capsys.readouterr()
        assert main(argv(out)) == 2, verb
        err = capsys.readouterr().err
        assert "was not written by rvos-kit" in err and str(out) in err, err
        assert (out / "thesis.tex").read_text() == "\\documentclass{article}"
        assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]
        # a folder the kit wrote is replaced; an empty folder is fine too
        fresh = tmp / f"kit-{verb}"
        fresh.mkdir()
        assert main(argv(fresh)) == 0, capsys.readouterr().err
        assert mark_path(fresh).is_file()
        assert main(argv(fresh)) == 0, capsys.readouterr().err
    # import-pth: a model folder
    meta_d = make_meta_dict([2, 1], n_frames=2)
    m = write_meta(tmp / "m.json", meta_d)
    torch.save(make_dump(meta_d, "logits"), tmp / "soc.pth")
    out = _user_folder(tmp / "mine-import")
    assert main(["import-pth", str(tmp / "soc.pth"), "--kind", "logits", "--out", str(out),
                 "--meta", str(m)]) == 2  # fmt: skip
    assert "was not written by rvos-kit" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]


def test_out_dot_is_refused_cleanly(trees, capsys, monkeypatch):
    tmp, meta, srcs = trees
    work = tmp / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for out in (".", str(work), ".."):
        assert main(_vote_args(srcs, out, meta)) == 2
        err = capsys.readouterr().err
        assert ("current folder" in err or "overlaps" in err) and "Traceback" not in err
    assert sorted(os.listdir(work)) == [] and not list(tmp.glob(".*partial*"))


def test_stray_file_or_symlink_at_out_or_staging_is_a_clean_error(trees, capsys):
    tmp, meta, srcs = trees
    (tmp / "afile").write_text("x")
    assert main(_vote_args(srcs, tmp / "afile", meta)) == 2
    assert "not a folder" in capsys.readouterr().err
    # a planted staging symlink of a killed run's name is removed, never followed
    victim = _user_folder(tmp / "victim")
    (tmp / ".out.partial-1").symlink_to(victim)
    assert main(_vote_args(srcs, tmp / "out", meta)) == 0, capsys.readouterr().err
    assert (victim / "thesis.tex").is_file() and not (tmp / ".out.partial-1").exists()


# ---------------------------------------------------- case 5: concurrent runs, one out
def test_second_run_on_the_same_out_fails_at_once(trees):
    tmp, meta, srcs = trees
    out = tmp / "out"
    fd = os.open(mark_path(out), os.O_RDWR | os.O_CREAT)  # a live run holds the lock
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        t0 = time.monotonic()
        p = _kit(*_vote_args(srcs, out, meta)[0:])
        _, err = p.communicate(timeout=60)
        assert p.returncode == 2 and time.monotonic() - t0 < 30
        assert "another rvos-kit run is writing this output" in err, err
        assert not out.exists() and not list(tmp.glob(".out.partial*"))
    finally:
        os.close(fd)


def test_two_concurrent_votes_never_mix(trees):
    """Started together with different thresholds: one wins (or both run one after the
    other); the committed tree is always exactly one run's tree."""
    tmp, meta, srcs = trees
    want = {}
    for thr in (2, 5):
        vote(srcs, tmp / f"ref{thr}", load_meta(meta),
             VoteRule(pair_threshold=thr, odd="vote", odd_threshold=2), progress=False)  # fmt: skip
        want[thr] = tree_bytes(tmp / f"ref{thr}")
    assert want[2] != want[5]
    for attempt in range(2):
        out = tmp / f"out{attempt}"
        ps = [_kit(*_vote_args(srcs, out, meta, thr), "--workers", "2") for thr in (2, 5)]
        results = [(p.wait(timeout=120), p.stderr.read()) for p in ps]
        codes = sorted(rc for rc, _ in results)
        assert codes in ([0, 0], [0, 2]), results
        for rc, err in results:
            if rc == 2:
                assert "another rvos-kit run is writing this output" in err
        assert tree_bytes(out) in (want[2], want[5])


# ------------------------------------- case 10: a model folder is committed as one unit
def test_import_pth_commits_masks_and_scores_together(tmp_path, monkeypatch):
    meta_d = make_meta_dict([2, 1], n_frames=2)
    meta = load_meta(write_meta(tmp_path / "m.json", meta_d))
    for seed in (0, 1):
        torch.save(make_dump(meta_d, "probabilities", seed=seed), tmp_path / f"d{seed}.pth")
    out = tmp_path / "vit_huge"
    import_pth([tmp_path / "d0.pth"], "probabilities", out, meta)
    before = tree_bytes(out)
    real = os.replace

    def killed_at_first_commit(src, dst, *a, **k):  # a kill while the output is swapped in
        if ".partial" in Path(src).name:
            raise KeyboardInterrupt
        return real(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", killed_at_first_commit)
    with pytest.raises(KeyboardInterrupt):
        import_pth([tmp_path / "d1.pth"], "probabilities", out, meta)
    monkeypatch.setattr(os, "replace", real)
    # never new scores beside old masks: the old folder whole (or, while swapping, none)
    assert not out.exists() or tree_bytes(out) == before
    import_pth([tmp_path / "d1.pth"], "probabilities", out, meta)
    assert tree_bytes(out) != before


# -------------------------------------------------------------- helpers used above
def test_mark_is_beside_not_inside(trees):
    tmp, meta, srcs = trees
    assert main(_vote_args(srcs, tmp / "out", meta)) == 0
    assert not [p for p in (tmp / "out").iterdir() if p.name.startswith(".")]
    assert mark_path(tmp / "out") == tmp / ".out.rvos-kit"


# ------------------------------------------------------------ case 6: killed workers
def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return []
    return [int(x) for x in text.split()]


def _busy_vote(tmp_path):
    meta_d = make_meta_dict([2] * 24, n_frames=16)
    meta = write_meta(tmp_path / "meta.json", meta_d)
    srcs = [make_tree(tmp_path / f"s{i}", meta_d, seed=i, size=(96, 128), density=0.3)
            for i in range(3)]  # fmt: skip
    return [*_vote_args(srcs, tmp_path / "out", meta), "--workers", "2"]


def _wait_children(pid, n=1, timeout=60.0) -> list[int]:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        kids = _children(pid)
        if len(kids) >= n:
            return kids
        time.sleep(0.02)
    raise AssertionError("no worker processes appeared")


def test_a_killed_worker_fails_the_stage_naming_the_video(tmp_path):
    p = _kit(*_busy_vote(tmp_path))
    try:
        kids = _wait_children(p.pid)
        # kill once work is flowing (a first video staged), not after a fixed sleep: with
        # the fast decoder the whole vote could end before a sleep does
        t0 = time.monotonic()
        while not list(tmp_path.glob(".out.partial*/vid*")):
            assert p.poll() is None and time.monotonic() - t0 < 120, "no video was staged"
            time.sleep(0.005)
        os.kill(kids[0], signal.SIGKILL)  # what the OOM killer does
        _, err = p.communicate(timeout=60)  # main hangs here forever
    finally:
        p.kill()
    assert p.returncode == 2, err
    assert "killed by SIGKILL" in err and "video vid0" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial*"))


def test_workers_die_with_their_parent(tmp_path):
    p = _kit(*_busy_vote(tmp_path))
    kids = _wait_children(p.pid, 2)
    p.kill()  # SIGKILL: no cleanup code runs in the parent
    p.wait()
    t0 = time.monotonic()
    while any(Path(f"/proc/{k}").exists() and "zombie" not in _state(k) for k in kids):
        assert time.monotonic() - t0 < 5, "workers still running after their parent died"
        time.sleep(0.05)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0].lower()
    except (FileNotFoundError, IndexError):
        return "zombie"


# ------------------------------------------------------------------ case 7: downloads
@pytest.fixture
def http(tmp_path):
    from test_artifacts import FileServer

    s = FileServer()
    yield s
    s.close()


def _fetch(lock, *args):
    return main(["fetch", "--lock", str(lock), "--dest", str(lock.parent / "dest"), *args])


def test_no_validator_no_resume_so_no_splice_and_record_pins_the_real_file(tmp_path, http,
                                                                          capsys):  # fmt: skip
    from test_artifacts import entry, payload, sha, write_lock

    v1, v2 = payload(300_000, 1), payload(300_000, 2)
    http.files["/w.pth"], http.truncate["/w.pth"] = v1, 100_000
    http.no_validator.add("/w.pth")
    lock = write_lock(tmp_path, entry("w", "url", "w.dat", url=f"{http.url}/w.pth"))
    assert _fetch(lock, "--record") == 1  # the transfer breaks
    http.files["/w.pth"] = v2  # the file changes on the server between the tries
    del http.truncate["/w.pth"]
    assert _fetch(lock, "--record") == 0
    assert "Range" not in http.requests[-1][1]  # started over
    assert (tmp_path / "dest/w.dat").read_bytes() == v2
    import yaml

    assert yaml.safe_load(lock.read_text())["artifacts"][0]["sha256"] == sha(v2)
    # the same without --record: still no splice
    (tmp_path / "dest/w.dat").unlink()
    http.files["/w.pth"], http.truncate["/w.pth"] = v1, 100_000
    assert _fetch(lock) == 1
    http.files["/w.pth"] = v2
    del http.truncate["/w.pth"]
    assert _fetch(lock) == 0 and "Range" not in http.requests[-1][1]
    assert "no validator" in capsys.readouterr().err


def test_record_never_pins_a_resumed_download(tmp_path, http):
    from test_artifacts import entry, payload, sha, write_lock

    data = payload(300_000, 3)
    http.files["/w.pth"], http.truncate["/w.pth"] = data, 100_000  # a strong ETag
    lock = write_lock(tmp_path, entry("w", "url", "w.dat", url=f"{http.url}/w.pth"))
    assert _fetch(lock) == 1
    del http.truncate["/w.pth"]
    assert _fetch(lock, "--record") == 0
    assert "Range" not in http.requests[-1][1]  # --record: one uninterrupted transfer
    import yaml

    assert yaml.safe_load(lock.read_text())["artifacts"][0]["sha256"] == sha(data)


def test_unpinned_entries_make_fetch_and_verify_exit_nonzero(tmp_path, http, capsys):
    from test_artifacts import entry, write_lock

    http.files["/w.pth"] = b"weights"
    lock = write_lock(tmp_path, entry("w", "url", "w.dat", url=f"{http.url}/w.pth"))
    assert _fetch(lock) == 1
    assert "UNVERIFIED" in capsys.readouterr().out
    assert _fetch(lock) == 1  # present, still unpinned
    assert main(["verify", "--lock", str(lock), "--dest", str(tmp_path / "dest")]) == 1
    assert _fetch(lock, "--record") == 0
    assert main(["verify", "--lock", str(lock), "--dest", str(tmp_path / "dest")]) == 0


# ------------------------------------------------------------------- case 8: zip bomb
def _bomb(path: Path, meta_d, inflate_to: int) -> Path:
    """A real zip whose PNG entries (a valid 32x24 header, then zeros) inflate to
    ``inflate_to`` bytes each; written streaming, so the test never holds it in memory."""
    import io
    import zipfile

    buf = io.BytesIO()
    Image.new("L", (32, 24)).save(buf, "PNG")
    head = buf.getvalue()[:33]
    zero = bytes(1 << 20)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for vid, entry in meta_d["videos"].items():
            for e in entry["expressions"]:
                for f in entry["frames"]:
                    with zf.open(f"Annotations/{vid}/{e}/{f}.png", "w", force_zip64=True) as w:
                        w.write(head)
                        left = inflate_to - len(head)
                        while left > 0:
                            w.write(zero[: min(left, len(zero))])
                            left -= len(zero)
    return path


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    d = tmp_path_factory.mktemp("bomb")
    meta_d = make_meta_dict([2, 2], n_frames=2)  # 8 PNG entries
    meta = write_meta(d / "meta.json", meta_d)
    return _bomb(d / "bomb.zip", meta_d, 12 << 20), meta  # 8 x 12 MB = 96 MB inflated


@pytest.mark.parametrize("with_meta", [False, True])
def test_zip_bomb_is_refused_reading_little(tmp_path, capsys, with_meta, bomb):
    z, meta = bomb
    assert z.stat().st_size < 1 << 20
    argv = ["import-zip", str(z), "--out", str(tmp_path / "out")]
    assert main(argv + (["--meta", str(meta)] if with_meta else [])) == 2
    err = capsys.readouterr().err
    assert "zip bomb guard" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial*"))


# ------------------------------------------- case 9: masks that are not 8-bit grey
def _non_grey_tree(root: Path, meta_d, kind: str) -> Path:
    """The tree make_tree writes, re-saved as white RGB / RGBA or a DAVIS-style palette
    (index 1 = object)."""
    make_tree(root, meta_d, seed=5, density=0.3)
    for p in root.rglob("*.png"):
        m = np.asarray(Image.open(p)) == 255
        if kind == "P":
            im = Image.fromarray(m.astype(np.uint8), "P")
            im.putpalette([0, 0, 0, 255, 0, 0])
        else:
            im = Image.fromarray(m.astype(np.uint8) * 255, "L").convert(kind)
        im.save(p)
    return root


@pytest.mark.parametrize("kind", ["RGB", "RGBA", "P"])
def test_non_grey_masks_are_refused_naming_file_mode_and_flag(tmp_path, capsys, kind):
    meta_d = make_meta_dict([2, 1], n_frames=2)
    meta = write_meta(tmp_path / "meta.json", meta_d)
    grey = make_tree(tmp_path / "grey", meta_d, seed=5, density=0.3)
    odd = _non_grey_tree(tmp_path / "odd", meta_d, kind)
    runs = {
        "vote": ["vote", str(odd), "--out", str(tmp_path / "v"), "--meta", str(meta),
                 "--pairing", "none", "--pair-threshold", "1", "--odd", "vote",
                 "--odd-threshold", "1"],
        "evaluate": ["evaluate", "--gt", str(grey), "--pred", str(odd), "--meta", str(meta),
                     "--workers", "1"],
        "audit": ["audit", "--ours", str(grey), "--theirs", str(odd), "--name", "x",
                  "--meta", str(meta), "--workers", "1"],
    }  # fmt: skip
    for verb, argv in runs.items():
        capsys.readouterr()
        assert main(argv) != 0, verb
        text = "".join(capsys.readouterr())
        assert f"mode {kind}" in text and "--foreground nonzero" in text, (verb, text)
        assert ".png" in text and "Traceback" not in text
        # accepted with the flag (audit: pixel-identical, bytes differ, so exit 1)
        rc = main([*argv, "--foreground", "nonzero"])
        text = "".join(capsys.readouterr())
        assert rc == (1 if verb == "audit" else 0) and "not 8-bit grey" not in text, text
    # read as nonzero, the masks are exactly the grey tree's: vote of one source = copy
    assert tree_bytes(tmp_path / "v") == tree_bytes(grey)


# ------------------------------------------------------------ case 10: smaller items
def test_audit_of_two_empty_trees_is_not_identical(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert main(["audit", "--ours", str(tmp_path / "a"), "--theirs", str(tmp_path / "b"),
                 "--name", "x", "--workers", "1"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "no frame was compared" in err and "IDENTICAL" not in err


def test_vote_on_an_empty_folder_names_the_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["vote", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "empty: mask tree holds no video folders" in err and "threshold" not in err


def test_empty_meta_is_refused(trees, capsys):
    tmp, _, srcs = trees
    empty = write_meta(tmp / "empty.json", {"videos": {}})
    assert main(_vote_args(srcs, tmp / "o", empty)) == 2
    assert "lists no video" in capsys.readouterr().err
    assert main(["pack", str(srcs[0]), "--out", str(tmp / "s.zip"), "--meta", str(empty)]) == 2
    assert not (tmp / "o").exists() and not (tmp / "s.zip").exists()


def test_vote_without_meta_refuses_trees_that_disagree(trees, capsys):
    tmp, meta, srcs = trees
    import shutil

    shutil.rmtree(srcs[0] / "vid002")  # the first source lacks a video the others hold
    argv = ["vote", *map(str, srcs), "--out", str(tmp / "o"), "--pair-threshold", "3"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "vid002" in err and "--meta" in err and not (tmp / "o").exists()


def test_pack_removes_temp_zips_of_killed_runs(trees):
    tmp, meta, srcs = trees
    stale = tmp / ".s.zip.tmp-99999"  # what a SIGKILLed pack leaves
    stale.write_bytes(b"\0" * 1000)
    assert main(["pack", str(srcs[0]), "--out", str(tmp / "s.zip"), "--meta", str(meta)]) == 0
    assert not stale.exists() and sorted(p.name for p in tmp.glob(".s.zip*")) == []


def test_a_folder_named_like_a_png_is_a_clean_error(trees, capsys):
    tmp, meta, srcs = trees
    p = srcs[1] / "vid000" / "0" / "00005.png"
    p.unlink()
    p.mkdir()
    pack = ["pack", str(srcs[1]), "--out", str(tmp / "s.zip"), "--meta", str(meta)]
    for argv in (_vote_args(srcs, tmp / "o", meta), pack):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "00005.png: a folder where a mask PNG should be" in err and "Traceback" not in err


def test_verify_into_a_closed_pipe_is_quiet(tmp_path):
    lock = Path(__file__).resolve().parents[1] / "checkpoints.lock"
    argv = [str(BIN / "rvos-kit"), "verify", "--lock", str(lock), "--dest", str(tmp_path)]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # `| head -0`: the reader is gone before the first line
    err = p.stderr.read().decode()
    p.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


def test_a_kill_between_the_commit_renames_puts_the_previous_output_back(tmp_path, capsys):
    from rvos_kit.errors import KitError
    from rvos_kit.trees.staging import StagedTree

    out = tmp_path / "out"
    with StagedTree(out) as st:
        (st.path / "a.png").write_bytes(b"previous")
    os.replace(out, tmp_path / ".out.old-4242")  # killed after moving it aside
    with pytest.raises(KitError):
        with StagedTree(out):
            raise KitError("bad input")
    assert (out / "a.png").read_bytes() == b"previous" and "put back" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.rvos-kit", "out"]
