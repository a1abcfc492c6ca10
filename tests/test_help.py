"""--help: every verb has its own plain-text description, every option with a default
shows it, and no reStructuredText markup or internal Python names reach the terminal."""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rvos_kit.cli import build_parser
from rvos_kit.helptext import HelpFormatter, plain, verb_section

REPO = Path(__file__).resolve().parents[1]
# names that are both a Python identifier in the code and a word of the data format
DATA_WORDS = {"key_frames", "class_info", "exp_id", "used_by", "index_info", "class_index"}


def verbs() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def code_names() -> set[str]:
    names = set()
    for f in (REPO / "src/rvos_kit").rglob("*.py"):
        for n in ast.walk(ast.parse(f.read_text())):
            if isinstance(n, (ast.FunctionDef, ast.ClassDef)):
                if "_" in n.name.strip("_") or n.name[0].isupper():
                    names.add(n.name)
    return names - DATA_WORDS


def test_descriptions_are_distinct_plain_and_name_no_code():
    v = verbs()
    assert len(v) >= 15
    descriptions = {}
    internal = code_names()
    for verb, p in v.items():
        d = (p.description or "").strip()
        assert len(d) > 40, f"{verb}: no description"
        assert d not in descriptions.values(), f"{verb} shares its description"
        descriptions[verb] = d
        text = p.format_help()
        for markup in ("``", ":func:", ":class:", ":mod:", ":meth:", "rvos_kit."):
            assert markup not in text, f"{verb} --help shows {markup!r}"
        assert not re.search(r"\S::$", text, re.M), f"{verb} --help shows a '::' block marker"
        words = re.sub(r"\S*\w[/.]\w\S*", " ", text)  # paths and file names are data
        leaked = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", words)) & internal
        assert not leaked, f"{verb} --help names code: {sorted(leaked)}"


def test_verbs_sharing_a_module_describe_themselves():
    v = verbs()
    z, p = v["import-zip"].description, v["import-pth"].description
    assert "zip" in z and ".pth" not in z and "dump" not in z
    assert "dump" in p and "zip" not in p
    f, ver = v["fetch"].description, v["verify"].description
    assert f.startswith("Download") and "Hash every present" not in f
    assert ver.startswith("Hash every present") and "Range" not in ver
    assert "--params" in f


def test_every_option_with_a_default_shows_it():
    missing = []
    for verb, p in verbs().items():
        fmt = HelpFormatter(f"rvos-kit {verb}")
        for a in p._actions:
            if not a.option_strings or a.nargs == 0 or a.help == argparse.SUPPRESS:
                continue
            if a.default is None or a.default is argparse.SUPPRESS:
                continue
            if "default" not in (fmt._get_help_string(a) or ""):
                missing.append(f"{verb} {a.option_strings[0]}")
    assert not missing, missing
    text = verbs()["make-sample"].format_help()
    assert re.search(r"--videos VIDEOS\s+number of videos \(default: 6\)", text), text


def test_plain_and_sections():
    doc = (
        "Intro ``x`` and :func:`~rvos_kit.a.b_c` (:func:`hidden_name`).\n\n"
        "Layout::\n\n    a\n\none\n    first verb\n\n    more of it\ntwo\n    second\n"
    )
    out = plain(doc)
    assert out.startswith("Intro `x` and `b_c`.") and "hidden_name" not in out
    assert "Layout:\n" in out and "::" not in out
    assert verb_section(doc, "one") == "first verb\n\nmore of it\n"
    assert verb_section(doc, "two") == "second\n"
    with pytest.raises(ValueError):
        verb_section(doc, "three")


def test_top_level_help_points_at_the_contract():
    r = subprocess.run([sys.executable, "-m", "rvos_kit", "--help"], capture_output=True,
                       text=True, check=True)  # fmt: skip
    assert "docs/contract.md" in r.stdout and "vote" in r.stdout
    # the usage line leads with the verb; the stages' --params/--node prefix comes last
    first = r.stdout.splitlines()[0]
    assert first.startswith("usage: rvos-kit <verb> [options]") and "--node" not in first
    r = subprocess.run([sys.executable, "-m", "rvos_kit", "fetch", "--help"],
                       capture_output=True, text=True, check=True)  # fmt: skip
    assert r.stdout.startswith("usage: rvos-kit fetch [-h]")  # a verb's own usage is its own


def test_top_level_help_lists_every_verb_once_grouped_in_dag_order():
    r = subprocess.run([sys.executable, "-m", "rvos_kit", "--help"], capture_output=True,
                       text=True, check=True)  # fmt: skip
    text = r.stdout.split("verbs, in DAG order:\n", 1)[1]
    groups, listed = [], []
    for line in text.splitlines():
        if line and not line.startswith(" "):
            groups.append(line.rstrip(":"))
        elif line.strip():
            listed.append(line.split()[0])
    order = ["data", "rvos outputs", "key frames", "propagate", "fuse", "package",
             "evaluate / audit", "pipeline"]  # fmt: skip
    assert [g for g in groups] == [g for g in groups if any(g.startswith(o) for o in order)]
    firsts = [next(i for i, o in enumerate(order) if g.startswith(o)) for g in groups]
    assert firsts == sorted(firsts) == list(range(len(order))), groups
    assert sorted(listed) == sorted(verbs()), "every verb listed exactly once"
    assert listed.index("infer") < listed.index("keyframes") < listed.index("propagate")
    assert listed.index("propagate") < listed.index("vote") < listed.index("pack")
    assert listed.index("pack") < listed.index("evaluate") < listed.index("dag")
