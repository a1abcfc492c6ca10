"""The documentation stands alone and tells the truth: every "contract section N" /
"quirk 9.N" reference (code, --help, docs) lands on a heading of docs/contract.md, no
link leaves the repository for ../shared, relative links resolve, and every number in
README.md's generated blocks (the demo's J&F table among them) matches the files the
build writes."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

from rvos_kit.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
import readme  # noqa: E402  (tools/readme.py)

NUM = r"\d+(?:\.\d+)?"
# "spec 3", "contract section 5.2", "sections 6, 7 and 9", "quirk 9.1", "quirks 9.2/9.3";
# "docs/propagation.md section 2" / "inference.md 8" point into that document instead.
REF = re.compile(
    rf"(?:\b(?P<doc>[\w/.-]+)\.md\s+(?:sections?\s+)?|"
    rf"\b(?:spec|contract|sections?|quirks?)(?:\s+sections?)?\s+)"
    rf"(?P<nums>{NUM}(?:(?:\s*,\s*|\s+and\s+|\s*/\s*){NUM})*)",
    re.I,
)


def headings(doc: str = "contract") -> set[str]:
    p = REPO / "docs" / f"{doc}.md"
    text = p.read_text() if p.is_file() else ""
    return set(re.findall(rf"^#{{2,3}} ({NUM})[.\s]", text, re.M))


def contract_headings() -> set[str]:
    return headings("contract")


def references(text: str) -> list[tuple[str, str]]:
    """(document, number) of every numbered reference; bare ones are the contract's."""
    out = []
    for m in REF.finditer(text):
        doc = Path(m["doc"]).name if m["doc"] else "contract"
        out += [(doc, n) for n in re.findall(NUM, m["nums"])]
    return out


def unresolved(text: str, contract: set[str]) -> list[str]:
    known = {"contract": contract}
    bad = []
    for doc, n in references(text):
        if doc not in known:
            known[doc] = headings(doc)
        if n not in known[doc]:
            bad.append(n if doc == "contract" else f"{doc}.md {n}")
    return bad


def doc_sources() -> dict[str, str]:
    files = [*REPO.glob("src/**/*.py"), *REPO.glob("docs/*.md"), REPO / "README.md",
             *REPO.glob("bench/*.py"), *REPO.glob("tools/*.py"), REPO / "Makefile",
             REPO / "checkpoints.lock", *REPO.glob("**/params.yaml")]  # fmt: skip
    out = {str(f.relative_to(REPO)): f.read_text() for f in files if ".venv" not in f.parts}
    parser = build_parser()
    sub = next(a for a in parser._actions if a.choices and "vote" in a.choices)
    out["rvos-kit --help"] = parser.format_help()
    for verb, p in sub.choices.items():
        out[f"rvos-kit {verb} --help"] = p.format_help()
    return out


def test_contract_has_every_numbered_section():
    h = contract_headings()
    assert {str(i) for i in range(1, 10)} <= h
    assert {f"5.{i}" for i in range(1, 6)} <= h
    assert {f"9.{i}" for i in range(1, 7)} <= h
    assert "../shared" not in (REPO / "docs/contract.md").read_text()


def test_every_reference_resolves_to_a_contract_heading():
    headings = contract_headings()
    sources = doc_sources()
    bad = {where: unresolved(text, headings) for where, text in sources.items()}
    bad = {k: v for k, v in bad.items() if v}
    assert not bad, bad
    # the scan sees the references that are there: it cannot pass by finding nothing
    n = sum(len(references(t)) for t in sources.values())
    assert n >= 40, n
    assert ("contract", "9.1") in references(sources["rvos-kit vote --help"])


def test_the_reference_check_catches_bad_references():
    h = contract_headings()
    assert unresolved("see quirk 9.7 and contract section 11", h) == ["9.7", "11"]
    assert unresolved("spec sections 6, 7 and 12; quirks 9.2/9.8", h) == ["12", "9.8"]
    assert unresolved("contract section 5.2 (quirk 9.1)", h) == []
    assert unresolved("see inference.md 8 and pipeline.md section 3", h) == [
        "inference.md 8",
        "pipeline.md 3",
    ]
    assert unresolved("the contract (docs/contract.md section 9.4)", h) == []


def test_nothing_points_into_shared():
    out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True).stdout
    hits = []
    for name in out.split():
        p = REPO / name
        if name.startswith("tests/") or not p.is_file() or p.suffix in (".png", ".zip"):
            continue
        text = p.read_text(errors="replace")
        for needle in ("../shared", "shared/spec", "pipeline.md"):
            if needle in text:
                hits.append(f"{name}: {needle}")
    assert not hits, hits


def _slug(heading: str) -> str:
    s = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return s.replace(" ", "-")


def test_relative_links_and_anchors_resolve():
    bad = []
    for md in [REPO / "README.md", *REPO.glob("docs/*.md")]:
        for target in re.findall(r"\]\(([^)\s]+)\)", md.read_text()):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (md.parent / path).resolve() if path else md
            if not dest.exists():
                bad.append(f"{md.name}: {target}")
            elif anchor:
                slugs = {_slug(h) for h in re.findall(r"^#+ (.*)$", dest.read_text(), re.M)}
                if anchor not in slugs:
                    bad.append(f"{md.name}: {target} (no such heading)")
    assert not bad, bad


def test_readme_generated_blocks_are_up_to_date():
    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = readme.main(["--check"])
    assert rc == 0, "README.md is stale: run `make readme`"


def test_readme_table_matches_the_metrics_files():
    """Independent of tools/readme.py: parse README's demo table, compare every row with
    the evaluate output of that node, and require every node."""
    text = (REPO / "README.md").read_text()
    block = text.split("<!-- BEGIN generated:demo-jf")[1].split("<!-- END generated:demo-jf")[0]
    rows = {}
    for line in block.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and re.fullmatch(NUM, cells[-1]):
            rows[cells[0]] = tuple(float(c) for c in cells[2:])
    metrics = sorted((REPO / "demo/outputs/metrics").glob("*.json"))
    assert len(metrics) >= 17
    assert set(rows) == {m.stem for m in metrics}
    for m in metrics:
        d = json.loads(m.read_text())
        assert rows[m.stem] == tuple(round(d[k], 2) for k in ("J", "F", "J&F")), m.stem


def test_readme_generator_follows_its_inputs(tmp_path):
    """Change a metrics value and a stage count in a copy: the rendered README changes."""
    files = [*(REPO / "demo/outputs/metrics").iterdir(), *(REPO / "bench/results").glob("*")]
    files += [REPO / f for f in ("demo/params.yaml", "params.yaml", "demo/dvc.yaml", "dvc.yaml",
                                 "audit/dvc.yaml", "checkpoints.lock")]  # fmt: skip
    for f in (str(x.relative_to(REPO)) for x in files):
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_bytes((REPO / f).read_bytes())
    shutil.copytree(REPO / "src/rvos_kit", tmp_path / "src/rvos_kit",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so"))  # fmt: skip
    text = (REPO / "README.md").read_text()
    assert readme.render(text, tmp_path) == text
    (tmp_path / "src/rvos_kit/stages/extra.py").write_text('"""A planted stage. More."""\n')
    (tmp_path / "demo/outputs/metrics/final.json").write_text('{"J": 1.0, "F": 2.0, "J&F": 1.5}')
    dvc = tmp_path / "dvc.yaml"
    dvc.write_text(dvc.read_text() + "  extra:\n    cmd: 'true'\n")
    out = readme.render(text, tmp_path)
    assert "| final | stage 2, the submission | 1.00 | 2.00 | 1.50 |" in out
    n = len(__import__("yaml").safe_load((REPO / "dvc.yaml").read_text())["stages"])
    assert f"`dvc.yaml` {n + 1}," in out
    assert "    extra.py        A planted stage\n" in out  # the package map follows the tree


# ----------------------------------------------------------------------------- doc claims
WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
         "eight": 8, "nine": 9, "ten": 10}  # fmt: skip


def _stages_of(f: str) -> list[str]:
    import yaml

    return list(yaml.safe_load((REPO / f).read_text())["stages"])


def test_scale_doc_counts_the_propagations_dvc_yaml_has():
    text = (REPO / "docs/scale.md").read_text()
    m = re.search(r"The (\w+) AOT/DeAOT propagations of `dvc.yaml` \((\w+) AOT, (\w+) DeAOT", text)
    assert m, "docs/scale.md: the propagation count sentence moved"
    names = _stages_of("dvc.yaml")
    aot = [n for n in names if n.startswith("propagate_aot_")]
    deaot = [n for n in names if n.startswith("propagate_deaot_")]
    assert [WORDS[w] for w in m.groups()] == [len(aot) + len(deaot), len(aot), len(deaot)]


def test_inference_doc_states_the_chunk_sizes_in_use():
    import yaml

    text = (REPO / "docs/inference.md").read_text()
    chunk = yaml.safe_load((REPO / "params.yaml").read_text())["infer"]["chunk_videos"]
    assert f"`infer.chunk_videos: {chunk}`" in text and f"`--chunk-videos {chunk}`" in text
    infer = build_parser()._subparsers._group_actions[0].choices["infer"]
    default = next(a.default for a in infer._actions if "--chunk-videos" in a.option_strings)
    assert f"`--chunk-videos {default}` (default)" in text and f"(default {default})" in text


def test_artifacts_doc_and_lock_agree_on_what_is_pinned():
    import yaml

    arts = yaml.safe_load((REPO / "checkpoints.lock").read_text())["artifacts"]
    revisions = {a["revision"] for a in arts if a["source"] == "hf"}
    text = " ".join((REPO / "docs/artifacts.md").read_text().split())
    assert None not in revisions and len(revisions) == 2
    assert "The two Hugging Face revisions are pinned to commit ids" in text
    if not any(a.get("sha256") for a in arts):
        assert "The sha256 and size of every entry are null today" in text


def test_no_doc_says_infer_is_not_available():
    for f in ("demo/params.yaml", "params.yaml", "README.md"):
        assert "not available yet" not in (REPO / f).read_text(), f


def test_readme_counts_the_zips_make_audit_downloads():
    n = len([s for s in _stages_of("audit/dvc.yaml") if s.startswith("fetch_")])
    text = " ".join((REPO / "README.md").read_text().split())
    assert f"it downloads the {n} released zips it compares" in text


def test_stage_names_in_docs_are_the_dvc_stage_names():
    """`--stage X` of `rvos-kit run`, `dvc repro dvc.yaml:X` and `preflight --stage X` in the
    README and docs name stages of a generated dvc.yaml (one name per stage)."""
    known = set(_stages_of("dvc.yaml")) | set(_stages_of("audit/dvc.yaml"))
    known |= set(_stages_of("demo/dvc.yaml"))
    for f in (REPO / "README.md", *(REPO / "docs").glob("*.md")):
        text = f.read_text()
        for m in re.finditer(r"(?:run [^\n`]*--stage|dvc\.yaml:)\s*([a-z][a-z0-9_]+)", text):
            assert m[1] in known, (f.name, m[0])
    assert "infer_vit_huge" not in (REPO / "README.md").read_text()
