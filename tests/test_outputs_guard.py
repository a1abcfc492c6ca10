"""Issue 21, cases 9-11 and 19-21: inputs a typo must never destroy, full or read-only
disks, odd inputs. Each test runs the real ``rvos-kit`` CLI in a subprocess on a generated
sample (``rvos-kit make-sample``) and was written from the issue's reproduction; each
fails on the code before the fix."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rvos_kit.cli import build_parser

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]


def kit(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "rvos-kit"), *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=300)  # fmt: skip


def snapshot(root: Path) -> dict[str, bytes]:
    """{relative path: bytes} of every file under ``root`` (or of the file itself)."""
    if root.is_file():
        return {"": root.read_bytes()}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}  # fmt: skip


def one_error_line(r: subprocess.CompletedProcess, verb: str, *words: str) -> str:
    """The run was refused with exit 2 and one line ``rvos-kit VERB: error: ...`` (no
    traceback) holding every one of ``words``."""
    lines = [x for x in r.stderr.splitlines() if x.strip() and "\r" not in x and "it/s" not in x]
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    errors = [x for x in lines if x.startswith(f"rvos-kit {verb}: error: ")]
    assert len(errors) == 1 and len(errors[0]) < 600, r.stderr
    for w in words:
        assert w in errors[0], (w, errors[0])
    return errors[0]


@pytest.fixture
def sample(tmp_path) -> Path:
    """A generated sample in tmp_path/S (3 videos, 4 frames), cwd-relative names."""
    r = kit("make-sample", "--out", "S", "--videos", "3", "--frames", "4", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    return tmp_path / "S"


# ----------------------------------------------- cases 9-11: an output on an input
def test_dag_out_equal_to_params_keeps_the_params_file(tmp_path):
    """Case 9: `rvos-kit dag --params P --out P` replaced the params file with dvc.yaml;
    `--params dvc.yaml` (the default --out is dvc.yaml beside it) did the same."""
    for name, extra in (("p.yaml", ["--out", "p.yaml"]), ("dvc.yaml", [])):
        params = tmp_path / name
        shutil.copy(REPO / "demo" / "params.yaml", params)
        before = params.read_bytes()
        r = kit("dag", "--params", name, *extra, cwd=tmp_path)
        one_error_line(r, "dag", name, "overlaps the input --params", "the same file")
        assert params.read_bytes() == before


@pytest.mark.parametrize(
    "verb,args,victim",
    [
        ("keyframes", ["--scores", "S/models/soc/scores.json", "--meta", "m.json",
                       "--out", "m.json"], "m.json"),
        ("keyframes", ["--scores", "S/models/soc/scores.json", "--out",
                       "S/models/soc/scores.json"], "S/models/soc/scores.json"),
        ("valid-meta", ["--valid", "m.json", "--test", "t.json", "--out", "m.json"], "m.json"),
        ("evaluate", ["--gt", "S/gt", "--pred", "S/models/soc/Annotations", "--meta",
                      "m.json", "--json", "m.json"], "m.json"),
        ("evaluate", ["--gt", "S/gt", "--pred", "S/models/soc/Annotations", "--meta",
                      "m.json", "--json", "link.json"], "m.json"),  # a symlink to the meta
        ("evaluate", ["--gt", "S/gt", "--pred", "S/models/soc/Annotations", "--meta",
                      "m.json", "--json", "S/gt/metrics.json"], "S/gt"),  # inside an input
        ("summarize", ["S/metrics.json", "--csv", "S/metrics.json"], "S/metrics.json"),
        ("pack", ["S/models/soc/Annotations", "--out", "S/sub.zip", "--sha256", "S/sub.zip"],
         "S/models/soc/Annotations"),  # two outputs on one path
        ("vote", ["S/models/soc/Annotations", "S/models/mutr/Annotations",
                  "S/models/convnext/Annotations", "--out", "S/models"], "S/models"),
        ("vote", ["S/models/soc/Annotations", "S/models/mutr/Annotations",
                  "S/models/convnext/Annotations", "--out", "S/models/soc/Annotations/x"],
         "S/models/soc/Annotations"),
        ("propagate", ["--images", "S/JPEGImages", "--annotations", "S/models/soc/Annotations",
                       "--keyframes", "k.json", "--meta", "m.json", "--backend", "flow",
                       "--videos", "s00v000", "--out", "S/JPEGImages"], "S/JPEGImages"),
    ],
)  # fmt: skip
def test_single_file_and_tree_outputs_equal_to_an_input_are_refused(sample, verb, args,
                                                                    victim):  # fmt: skip
    """Case 10: an output that is an input (after symbolic links), holds one or lies inside
    one is refused before any work, naming both; the input is byte-identical after."""
    cwd = sample.parent
    shutil.copy(sample / "meta_expressions.json", cwd / "m.json")
    meta = json.loads((cwd / "m.json").read_text())
    one = dict(list(meta["videos"].items())[:1])
    (cwd / "t.json").write_text(json.dumps({"videos": one}))
    (cwd / "link.json").symlink_to("m.json")
    (sample / "metrics.json").write_text('{"J": 1, "F": 2, "J&F": 1.5}\n')
    kf = {v: {e: {"index_info": {"class_index": 0}} for e in x["expressions"]}
          for v, x in meta["videos"].items()}  # fmt: skip
    (cwd / "k.json").write_text(json.dumps(kf))
    before = snapshot(cwd / victim)
    r = kit(verb, *args, cwd=cwd)
    one_error_line(r, verb, "choose another output path")
    assert snapshot(cwd / victim) == before


def test_import_zip_into_the_folder_holding_the_zip_keeps_the_zip(sample):
    """Case 11: `import-zip IZ/released.zip --out IZ` deleted the zip it was importing."""
    cwd = sample.parent
    (cwd / "IZ").mkdir()
    r = kit("pack", "S/models/soc/Annotations", "--out", "IZ/released.zip", cwd=cwd)
    assert r.returncode == 0, r.stderr
    before = snapshot(cwd / "IZ")
    r = kit("import-zip", "IZ/released.zip", "--out", "IZ", cwd=cwd)
    one_error_line(
        r, "import-zip", "--out IZ: overlaps the input zip IZ/released.zip", "would delete"
    )
    assert snapshot(cwd / "IZ") == before


def test_every_verb_declares_what_it_reads_and_writes():
    """The guard is declared per verb (argtypes.declare_paths): a verb added without it
    would have no protection, so this fails until it says what it reads and writes."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "verb")
    missing = [v for v, p in sub.choices.items() if p.get_default("path_reads") is None]
    assert not missing
    for verb, p in sub.choices.items():  # every declared dest is an argument of the verb
        dests = {a.dest for a in p._actions}
        for spec in (*p.get_default("path_reads"), *p.get_default("path_writes"),
                     *p.get_default("path_writes_into")):  # fmt: skip
            assert spec.partition(":")[0].rstrip("=") in dests, (verb, spec)


def test_dvc_stages_of_the_demo_pass_the_guard():
    """No stage the kit generates trips the guard (each command of demo/dvc.yaml)."""
    import shlex

    from rvos_kit.cli import check_paths

    parser = build_parser()
    from rvos_kit.pipeline.dag import spelled

    stages = spelled(REPO / "demo" / "params.yaml")  # the command each stage runs
    for st in stages.values():
        argv = shlex.split(st["cmd"])[1:]
        if "--" in argv:  # rvos-kit run ... -- VERB ARGS
            argv = argv[argv.index("--") + 1 :]
        check_paths(parser, parser.parse_args(argv))  # raises on an overlap


# ------------------------------------------------- case 19: full or read-only disk
@pytest.fixture
def tmpfs(tmp_path):
    """A real 2 MB tmpfs at tmp_path/disk (root only), unmounted after."""
    disk = tmp_path / "disk"
    disk.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)],
                       capture_output=True, text=True)  # fmt: skip
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def _free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_bsize


def _fill(disk: Path, leave: int) -> None:
    """Fill the tmpfs so that exactly ``leave`` bytes (whole pages) stay free."""
    with open(disk / "filler", "wb") as f:
        f.write(b"\0" * (_free(disk) - leave))
    assert _free(disk) == leave


def _big_sample(tmp_path) -> Path:
    r = kit("make-sample", "--out", "B", "--videos", "4", "--frames", "30", "--height", "240",
            "--width", "320", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return tmp_path / "B"


def test_pack_on_a_full_disk_keeps_zip_and_sha256_together(tmp_path, tmpfs):
    """Case 19: with room for the new zip but not for its .sha256, pack replaced the zip
    and left the old .sha256 beside it (exit 1, a traceback). Now: both or neither, one
    line naming the folder and its free space."""
    b = _big_sample(tmp_path)
    args = ["--meta", b / "meta_expressions.json"]
    r = kit("pack", b / "models/soc/Annotations", "--out", tmpfs / "sub.zip", "--sha256",
            tmpfs / "sub.sha256", *args)  # fmt: skip
    assert r.returncode == 0, r.stderr
    os.link(tmpfs / "sub.zip", tmpfs / "kept.zip")  # a copy kept: its pages stay in use
    old = snapshot(tmpfs)
    r = kit("pack", b / "models/mutr/Annotations", "--out", tmp_path / "new.zip", *args)
    assert r.returncode == 0, r.stderr
    _fill(tmpfs, -(-(tmp_path / "new.zip").stat().st_size // 4096) * 4096)  # the zip fits
    old["filler"] = (tmpfs / "filler").read_bytes()
    r = kit("pack", b / "models/mutr/Annotations", "--out", tmpfs / "sub.zip", "--sha256",
            tmpfs / "sub.sha256", *args)  # fmt: skip
    one_error_line(r, "pack", "no space left", str(tmpfs), "free")
    assert snapshot(tmpfs) == old  # both old files, no temp file left
    assert hashlib.sha256(old["sub.zip"]).hexdigest() in old["sub.sha256"].decode()


def test_vote_on_a_full_disk_is_one_line_and_keeps_the_old_tree(tmp_path, tmpfs):
    """Case 19: a tree that does not fit: the previous output stays, one clean line."""
    b = _big_sample(tmp_path)
    srcs = [b / f"models/{m}/Annotations" for m in ("soc", "mutr", "convnext")]
    r = kit("vote", *srcs[:1], *srcs[:1], *srcs[:1], "--out", tmpfs / "v")
    assert r.returncode == 0, r.stderr
    old = snapshot(tmpfs)
    _fill(tmpfs, 64 * 1024)
    old["filler"] = (tmpfs / "filler").read_bytes()
    r = kit("vote", *srcs, "--out", tmpfs / "v", "--pair-threshold", "1")
    one_error_line(r, "vote", "no space left", f"{tmpfs}/v", "KiB free")
    assert snapshot(tmpfs) == old


def test_read_only_output_folder_is_one_line(tmp_path, tmpfs):
    """Case 19: a read-only output folder (a tmpfs remounted read-only: root ignores
    permission bits) gives one line naming the output, no traceback, for trees and files."""
    b = _big_sample(tmp_path)
    r = kit("evaluate", "--gt", b / "gt", "--pred", b / "models/soc/Annotations", "--json",
            tmpfs / "m.json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    old = snapshot(tmpfs)
    ro = subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], capture_output=True, text=True)
    if ro.returncode != 0:
        pytest.skip(f"cannot remount the tmpfs read-only: {ro.stderr.strip()}")
    srcs = [b / f"models/{m}/Annotations" for m in ("soc", "mutr", "convnext")]
    r = kit("vote", *srcs, "--out", tmpfs / "v")
    one_error_line(r, "vote", "read-only file system", f"{tmpfs}/v")
    r = kit("evaluate", "--gt", b / "gt", "--pred", b / "models/mutr/Annotations", "--json",
            tmpfs / "m.json")  # fmt: skip
    one_error_line(r, "evaluate", "read-only file system", f"{tmpfs}/m.json")
    r = kit("pack", srcs[0], "--out", tmpfs / "s.zip", "--sha256", tmpfs / "s.sha256")
    one_error_line(r, "pack", "read-only file system", f"{tmpfs}/s.zip")
    assert snapshot(tmpfs) == old


# ------------------------------------------------- case 20: a JPEG claiming 20000x20000
def _claim_size(jpeg: Path, w: int, h: int) -> None:
    """Rewrite the frame header (SOF0) of a JPEG so that it claims w x h pixels."""
    data = bytearray(jpeg.read_bytes())
    i = data.index(b"\xff\xc0")
    data[i + 5 : i + 9] = h.to_bytes(2, "big") + w.to_bytes(2, "big")
    jpeg.write_bytes(bytes(data))


def test_audit_report_survives_a_decompression_bomb_jpeg(sample):
    """Case 20: a frame whose header claims 20000x20000 made `audit --report` die with
    DecompressionBombError; now the sheet says "(frame unreadable)" and the report is
    written."""
    from rvos_kit.stages.audit.html import _jpeg

    cwd = sample.parent
    jpegs = sorted((sample / "JPEGImages").rglob("*.jpg"))
    for j in jpegs:
        _claim_size(j, 20000, 20000)
    r = kit("audit", "--ours", "S/models/soc/Annotations", "--theirs",
            "S/models/mutr/Annotations", "--images", "S/JPEGImages", "--report", "R",
            "--informational", cwd=cwd)  # fmt: skip
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert (cwd / "R" / "index.html").is_file() and (cwd / "R" / "report.md").is_file()
    assert list((cwd / "R" / "img").glob("sheet-*.png"))  # the sheets were drawn
    video, frame = jpegs[0].parent.name, jpegs[0].stem
    assert _jpeg(sample / "JPEGImages", video, frame, (96, 160)) == (None, " (frame unreadable)")
    assert _jpeg(sample / "JPEGImages", "nope", frame, (96, 160)) == (None, " (no JPEG)")


# ------------------------------------------------ case 21: CSV and Markdown escaping
def test_summary_csv_quotes_a_node_named_with_a_comma(tmp_path):
    """Case 21: a metrics file named `x,y|z.json` gave a CSV row of 5 columns and a
    Markdown row of 6 cells."""
    import csv

    markdown_it = pytest.importorskip("markdown_it")
    (tmp_path / "x,y|z.json").write_text('{"J": 50, "F": 60, "J&F": 55}\n')
    (tmp_path / "soc.json").write_text('{"J": 1, "F": 2, "J&F": 1.5}\n')
    r = kit("summarize", "x,y|z.json", "soc.json", "--csv", "s.csv", "--markdown", "s.md",
            cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    rows = list(csv.reader((tmp_path / "s.csv").open(newline="")))
    assert rows == [["node", "J", "F", "J&F"], ["x,y|z", "50.0000", "60.0000", "55.0000"],
                    ["soc", "1.0000", "2.0000", "1.5000"]]  # fmt: skip
    html = (
        markdown_it.MarkdownIt("commonmark").enable("table").render((tmp_path / "s.md").read_text())
    )
    assert "<td>x,y|z</td>" in html and html.count("<tr>") == 3


def test_report_md_escapes_a_video_id_holding_html(tmp_path):
    """Case 21: a video id `<img src=x onerror=...>` went into report.md raw (index.html
    was escaped): rendered, it was an <img> tag with an onerror handler."""
    from conftest import make_meta_dict, make_tree, write_meta

    markdown_it = pytest.importorskip("markdown_it")
    evil = "<img src=x onerror=alert(1)>"
    meta_d = make_meta_dict([2, 1], n_frames=3)
    meta_d["videos"] = {evil if i == 0 else k: v
                        for i, (k, v) in enumerate(meta_d["videos"].items())}  # fmt: skip
    write_meta(tmp_path / "meta.json", meta_d)
    make_tree(tmp_path / "ours", meta_d, seed=1, density=0.3)
    make_tree(tmp_path / "theirs", meta_d, seed=2, density=0.3)
    r = kit("audit", "--ours", "ours", "--theirs", "theirs", "--meta", "meta.json",
            "--name", "st<b>1</b>", "--report", "R", "--informational", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    md = (tmp_path / "R" / "report.md").read_text()
    assert evil.replace("<", "\\<").replace(">", "\\>") in md  # shown, escaped
    for tables in (False, True):  # CommonMark, and with GitHub's tables
        parser = markdown_it.MarkdownIt("commonmark")
        html = (parser.enable("table") if tables else parser).render(md)
        assert "<img src=x" not in html and "<b>1</b>" not in html, tables
        assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<img src=x" not in (tmp_path / "R" / "index.html").read_text()
