"""`rvos-kit report`: the run report the demo ends with. J&F per node as an SVG drawn by
the kit and overlays against the ground truth, all inside one HTML file that needs no
network: checked by parsing, and by rendering in headless Chromium with every network
request sent to a closed port."""

from __future__ import annotations

import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from conftest import make_meta_dict, make_tree, write_meta
from PIL import Image

from rvos_kit.cli import main
from rvos_kit.stages.audit.html import (
    AGREE,
    ALPHA_AGREE,
    ALPHA_DIFF,
    OURS_ONLY,
    overlay_colour,
)

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
BLUE, GREEN = (70, 130, 180), (46, 125, 50)  # report.BAR, report.BAR_FUSED


def near(img: np.ndarray, rgb, tol=3) -> int:
    return int(np.all(np.abs(img[..., :3].astype(int) - np.array(rgb)) <= tol, axis=-1).sum())


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """Ground truth, a model 'soc' (its own random masks) and a fused node 'final' (the
    ground truth with a block added: 'prediction only' pixels), evaluated, reported."""
    tmp = tmp_path_factory.mktemp("report")
    meta_dict = make_meta_dict([2, 3], n_frames=4)
    meta = write_meta(tmp / "meta.json", meta_dict)
    make_tree(tmp / "gt", meta_dict, seed=1, size=(60, 80), density=0.1)
    make_tree(tmp / "soc", meta_dict, seed=2, size=(60, 80), density=0.1)
    make_tree(tmp / "final", meta_dict, seed=1, size=(60, 80), density=0.1)
    for png in (tmp / "final/vid001/2").glob("*.png"):
        m = np.array(Image.open(png)) == 255
        m[5:50, 10:70] = True
        Image.fromarray(m.astype(np.uint8) * 255, "L").save(png)
    files = []
    for node in ("soc", "final"):
        files.append(str(tmp / f"{node}.json"))
        assert main(["evaluate", "--gt", str(tmp / "gt"), "--pred", str(tmp / node),
                     "--meta", str(meta), "--json", files[-1], "--workers", "1"]) == 0  # fmt: skip
    out = tmp / "out"
    assert main(["report", *files, "--out", str(out), "--gt", str(tmp / "gt"),
                 "--meta", str(meta), "--overlay", "final", str(tmp / "final"),
                 "--title", "test run", "--workers", "1"]) == 0  # fmt: skip
    return out


def test_report_files_and_chart_values(report):
    assert sorted(p.name for p in report.iterdir()) == [".rvos-kit-report", "img", "index.html",
                                                        "jf.svg"]  # fmt: skip
    svg = ET.parse(report / "jf.svg").getroot()
    ns = {"s": "http://www.w3.org/2000/svg"}
    bars = svg.findall("s:rect[s:title]", ns)
    titles = [b.find("s:title", ns).text for b in bars]
    assert [t.split(":")[0] for t in titles] == ["soc", "final"]
    import json

    jf = json.loads((report.parent / "final.json").read_text())["J&F"]
    assert f"final: J&F {jf:.2f}" in titles
    assert bars[1].get("fill") == "#2e7d32" and bars[0].get("fill") == "#4682b4"
    html = (report / "index.html").read_text()
    assert "Overlays: final against the ground truth" in html and "vid001/2" in html
    assert len(list((report / "img").glob("*.png"))) >= 1


def test_report_needs_nothing_from_outside(report):
    for name in ("index.html", "jf.svg"):
        text = (report / name).read_text()
        for pat in (r"<script", r"<link", r"@import", r"url\(", r"<iframe"):
            assert not re.search(pat, text, re.I), (name, pat)
        for ref in re.findall(r"(?:src|href)\s*=\s*[\"']([^\"']*)", text, re.I):
            assert ref.startswith("data:image/png;base64,"), (name, ref[:60])
        # the only URL is the SVG namespace name (an identifier, never fetched)
        urls = set(re.findall(r"https?://[^\s\"'<>]+", text))
        assert urls <= {"http://www.w3.org/2000/svg"}, urls


def test_report_refuses_bad_input(tmp_path, capsys):
    (tmp_path / "m.json").write_text('{"J": 1}')
    (tmp_path / "ok.json").write_text('{"J": 1, "F": 2, "J&F": 1.5}')
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep/mine.txt").write_text("not a report")
    for argv, needle in [  # fmt: skip
        (["report", str(tmp_path / "m.json"), "--out", str(tmp_path / "r")], "not an `rvos-kit"),
        (["report", str(tmp_path / "x.json"), "--out", str(tmp_path / "r")], "x.json"),
        (["report", str(tmp_path / "ok.json"), "--out", str(tmp_path / "keep")], "not an rvos-kit"),
        (
            [
                "report",
                str(tmp_path / "ok.json"),
                "--out",
                str(tmp_path / "r"),
                "--overlay",
                "n",
                str(tmp_path / "none"),
            ],
            "give --gt",
        ),
        (
            [
                "report",
                str(tmp_path / "ok.json"),
                "--out",
                str(tmp_path / "r"),
                "--gt",
                str(tmp_path / "keep"),
                "--overlay",
                "n",
                str(tmp_path / "none"),
            ],
            "none: mask tree",
        ),
    ]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err, err
    assert (tmp_path / "keep/mine.txt").read_text() == "not a report"
    assert not (tmp_path / "r").exists()


def test_demo_pipeline_ends_with_the_report():
    from rvos_kit.pipeline.dag import spelled

    stages = spelled(REPO / "demo/params.yaml")  # the command each stage runs
    cmd = stages["report"]["cmd"]
    assert stages["report"]["outs"] == [{"outputs/report": {"cache": False}}]
    for node in ("soc_mutr_referft", "vit_convnext_soc", "en2", "final"):
        assert f"--overlay {node} outputs/fused/{node}" in cmd
    assert "--images sample/JPEGImages" in cmd and "outputs/metrics/final.json" in cmd
    assert "demo/outputs/report/index.html" in (REPO / "Makefile").read_text()


def screenshot(path: Path, tmp: Path, size=(1300, 1400)) -> np.ndarray:
    """Render ``path`` offline: every request goes to a proxy on a closed port."""
    shot = tmp / f"{path.name}.png"
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={tmp / 'profile'}",
           "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
           "--hide-scrollbars", "--force-device-scale-factor=1",
           f"--window-size={size[0]},{size[1]}", f"--screenshot={shot}",
           path.as_uri()]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.exists(), r.stderr[-2000:]
    return np.array(Image.open(shot).convert("RGB"))


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent: "
                    "`apt-get install -y chromium` to check that the report renders")  # fmt: skip
def test_report_and_plot_render_offline_in_headless_chromium(report, tmp_path):
    page = screenshot(report / "index.html", tmp_path)
    assert near(page, BLUE, tol=2) > 1500 and near(page, GREEN, tol=2) > 1500  # both bars
    assert near(page, overlay_colour(OURS_ONLY, ALPHA_DIFF), tol=3) > 500  # prediction only
    assert near(page, overlay_colour(AGREE, ALPHA_AGREE), tol=3) > 200  # agreement
    plot = screenshot(report / "jf.svg", tmp_path, size=(900, 200))
    assert near(plot, BLUE, tol=2) > 1500 and near(plot, GREEN, tol=2) > 1500
    dark = np.all(plot < 90, axis=-1)  # the labels and the axis are drawn
    assert dark[:, :200].sum() > 100


def test_overlays_name_the_expression_its_pair_and_the_params_file(tmp_path, capsys):
    """Sheets say what was referred to (the meta's text), a pair-voted node says why a
    pair's panels look alike, outlines are drawn over the fills, and the heading names
    the params file by its path in the repository, not just `params.yaml`."""
    from rvos_kit.stages.audit.html import OURS_LINE, THEIRS_LINE

    (tmp_path / ".dvc").mkdir()  # the repository root the heading counts from
    meta_dict = make_meta_dict([2, 3], n_frames=4)
    meta = write_meta(tmp_path / "meta.json", meta_dict)
    make_tree(tmp_path / "gt", meta_dict, seed=1, size=(60, 80), density=0.1)
    make_tree(tmp_path / "final", meta_dict, seed=1, size=(60, 80), density=0.1)
    for exp in ("0", "1"):  # the pair (0, 1) of vid001 gets one mask: a wrong block
        for png in (tmp_path / "final/vid001" / exp).glob("*.png"):
            m = np.array(Image.open(png)) == 255
            m[5:50, 10:70] = True
            Image.fromarray(m.astype(np.uint8) * 255, "L").save(png)
    js = str(tmp_path / "final.json")
    assert main(["evaluate", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "final"),
                 "--meta", str(meta), "--json", js, "--workers", "1"]) == 0  # fmt: skip
    out = tmp_path / "out"
    base = ["report", js, "--out", str(out), "--gt", str(tmp_path / "gt"), "--meta", str(meta),
            "--overlay", "final", str(tmp_path / "final"), "--workers", "1"]  # fmt: skip
    assert main([*base, "--paired", "soc"]) == 2
    assert "--paired soc: not a node given with --overlay" in capsys.readouterr().err
    (tmp_path / "demo").mkdir()
    assert main([*base, "--paired", "final", "--title", "J&F per node",
                 "--pipeline", str(tmp_path / "demo/params.yaml")]) == 0  # fmt: skip
    page = (out / "index.html").read_text()
    assert "<p>demo/params.yaml: J&amp;F per node</p>" in page
    assert "final fuses expressions in pairs (contract section 6)" in page
    text0 = meta_dict["videos"]["vid001"]["expressions"]["0"]["exp"]
    text1 = meta_dict["videos"]["vid001"]["expressions"]["1"]["exp"]
    assert f"final: vid001/0 &quot;{text0}&quot;" in page
    assert (
        f"paired with expression 1 &quot;{text1}&quot;: the pair vote gives both one mask" in page
    )
    sheets = [np.array(Image.open(p).convert("RGB")) for p in (out / "img").glob("*.png")]
    assert sheets
    assert sum(near(s, OURS_LINE, tol=0) for s in sheets) > 100  # outlines, not fills only
    assert sum(near(s, THEIRS_LINE, tol=0) for s in sheets) > 100
