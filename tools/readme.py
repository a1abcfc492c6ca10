"""Write (or --check) the generated blocks of README.md from files the build writes.

Every number in README.md sits inside a block

    <!-- BEGIN generated:NAME (tools/readme.py) -->
    ...
    <!-- END generated:NAME -->

whose text is computed here from committed files, so it cannot go stale unnoticed:

demo-jf     the J&F table of `make demo`: demo/outputs/metrics/<node>.json in the order of
            summary.csv (written by the demo's stages, checked byte for byte by
            `make demo-check`)
stages      the number of DVC stages of each pipeline: dvc.yaml, demo/dvc.yaml,
            audit/dvc.yaml (written by `rvos-kit dag`)
fresh-clone the fresh-clone timings: bench/results/fresh-clone.json (bench/fresh_clone.py)
lock        how many checkpoints.lock entries have a sha256 recorded
cost        the arithmetic estimate of the real run's work and disk: the stage counts of
            dvc.yaml times the stated assumptions (COST_ASSUMPTIONS), not a measurement
package-map the package tree, two levels deep, each module's or folder's summary (the
            first sentence of its docstring), and the verbs grouped in DAG order as
            `rvos-kit --help` lists them (rvos_kit.cli.VERB_GROUPS)

    python tools/readme.py           # rewrite the blocks in place
    python tools/readme.py --check   # exit 1 if README.md differs (the tests run this)
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
BLOCK = re.compile(
    r"^(?P<indent> *)(?P<begin><!-- BEGIN generated:(?P<name>[a-z-]+) \(tools/readme\.py\) -->\n)"
    r"(?P<body>.*?)"
    r"(?P<end> *<!-- END generated:(?P=name) -->)",
    re.S | re.M,
)


def jf_rows(repo: Path = REPO) -> list[tuple[str, float, float, float]]:
    """(node, J, F, J&F) in the order of summary.csv, values from each node's evaluate
    output (full precision: the CSV's 4 decimals can round differently)."""
    metrics = repo / "demo/outputs/metrics"
    with open(metrics / "summary.csv", newline="") as f:
        nodes = [r["node"] for r in csv.DictReader(f)]
    rows = []
    for n in nodes:
        m = json.loads((metrics / f"{n}.json").read_text())
        rows.append((n, float(m["J"]), float(m["F"]), float(m["J&F"])))
    return rows


def _params(repo: Path) -> dict:
    return yaml.safe_load((repo / "demo/params.yaml").read_text())


def node_kind(node: str, p: dict) -> str:
    base, _, prop = node.partition(".")
    fusion = p.get("fusion") or {}
    if base in fusion:
        nested = any(m.partition("/")[0] in fusion or "/" in m for m in fusion[base]["members"])
        what = "stage 2" if nested else "stage 1"
        if p.get("submission", {}).get("node") == base and not prop:
            what += ", the submission"
    else:
        what = "model"
    if prop:
        backend = p["propagation"][prop]["backend"]
        what += f", after {prop} ({backend} backend)"
    return what


def demo_jf(repo: Path) -> str:
    rows, p = jf_rows(repo), _params(repo)
    lines = ["| node | what | J | F | J&F |", "|---|---|---:|---:|---:|"]
    lines += [f"| {n} | {node_kind(n, p)} | {j:.2f} | {f:.2f} | {jf:.2f} |" for n, j, f, jf in rows]
    by = {n: jf for n, _, _, jf in rows}
    sub = p["submission"]["node"]
    models = [n for n in by if n in p["models"]]
    best_model = max(models, key=by.get)
    top = max(by, key=by.get)
    text = (
        f"The submission node `{sub}` scores {by[sub]:.2f}; the best single model, "
        f"`{best_model}`, {by[best_model]:.2f}."
    )
    if top != sub:
        text += (
            f" The fusion does not beat every node: on this sample `{top}` scores highest "
            f"({by[top]:.2f})."
        )
    return "\n".join(lines) + "\n\n" + text + "\n"


def stage_counts(repo: Path) -> dict[str, int]:
    out = {}
    for f in ("demo/dvc.yaml", "dvc.yaml", "audit/dvc.yaml"):
        out[f] = len(yaml.safe_load((repo / f).read_text())["stages"])
    return out


def stages(repo: Path) -> str:
    c = stage_counts(repo)
    return (
        f"Stages per pipeline (from the generated files): `demo/dvc.yaml` {c['demo/dvc.yaml']}, "
        f"`dvc.yaml` {c['dvc.yaml']}, `audit/dvc.yaml` {c['audit/dvc.yaml']}.\n"
    )


def fresh_clone(repo: Path) -> str:
    f = repo / "bench/results/fresh-clone.json"
    if not f.exists():
        return "Fresh-clone timings: not yet measured (`python bench/fresh_clone.py`).\n"
    r = json.loads(f.read_text())
    m, s = r["machine"], r["seconds"]
    parts = [f"`make venv` {s['make venv'] / 60:.1f} min ({r['venv_mib'] / 1024:.1f} GB)"]
    ran, total = r["demo_stages_run"], r.get("demo_stages_total")
    of = f" of {total}" if total else ""
    parts.append(f"`make demo` {s['make demo'] / 60:.1f} min ({ran}{of} stages ran)")
    if "make test" in s:
        parts.append(f"`make test` {s['make test'] / 60:.1f} min ({r['tests_passed']} tests)")
    skipped = r.get("demo_stages_skipped")
    note = ""
    if skipped:
        note = (
            f" DVC skipped {len(skipped)} stages ({_names(skipped)}): their inputs came out "
            "byte-identical to the committed `demo/dvc.lock` and their outputs are committed."
        )
    now = stage_counts(repo)["demo/dvc.yaml"]
    if total != now:
        note += (
            f" That was commit {r['commit'][:10]}'s demo; the demo has {now} stages today, "
            "and DVC runs those whose inputs or code differ from the committed "
            "`demo/dvc.lock`."
        )
    return (
        f"Measured on a fresh clone on {r['date']} (commit {r['commit'][:10]}; {m['cores']} "
        f"cores, {m['memory']}, Python {m['python']}, 1-minute load {m['load_1min_at_start']} "
        f"at the start; {r['pip']}): " + ", ".join(parts) + "." + note + "\n"
    )


def _names(stages: list[str]) -> str:
    """``evaluate_soc, evaluate_mutr, summary`` -> ``evaluate_* (2), summary``."""
    groups: dict[str, int] = {}
    for s in stages:
        key = s.split("_")[0] + "_*" if "_" in s else s
        groups[key] = groups.get(key, 0) + 1
    return ", ".join(
        k if n == 1 and not k.endswith("*") else f"{k} ({n})" for k, n in groups.items()
    )


def lock(repo: Path) -> str:
    arts = yaml.safe_load((repo / "checkpoints.lock").read_text())["artifacts"]
    pinned = sum(1 for a in arts if a.get("sha256"))
    manual = sum(1 for a in arts if a.get("source") == "manual")
    if pinned == 0:
        state = f"none of its {len(arts)} entries has a sha256 yet (all `null`)"
    else:
        state = f"{pinned} of its {len(arts)} entries have a sha256"
    return f"`checkpoints.lock` today: {state}; {manual} are manual downloads.\n"


# The assumptions of the cost estimate: only the video count is the dataset's (the test
# split); the rest are round guesses, printed with the estimate.
COST_ASSUMPTIONS = {
    "videos": 305,  # the test split (contract section 1)
    "frames": 30,  # sampled frames per video: a guess
    "expressions": 4,  # expressions per video: a guess
    "png_kb": 4,  # one mask PNG on disk: a guess
    "rate": 10,  # propagation frame-steps per second per GPU: a guess, not measured
}


def _stage_names(repo: Path, f: str = "dvc.yaml") -> list[str]:
    return list(yaml.safe_load((repo / f).read_text())["stages"])


def cost(repo: Path) -> str:
    a = COST_ASSUMPTIONS
    names = _stage_names(repo)
    prop = next(iter(yaml.safe_load((repo / "params.yaml").read_text())["propagation"].values()))
    scales = len(prop.get("scales", [1.0]))
    views = scales * (2 if prop.get("flip") else 1)
    props = [n for n in names if n.startswith("propagate_")]
    models = [n for n in names if n.startswith("rvos_")]
    trees = len(props) + len(models) + len([n for n in names if n.startswith("vote_")])
    trees += len([n for n in names if n.startswith("audit_") and n.endswith("_trees")])
    masks = a["videos"] * a["frames"] * a["expressions"]
    steps = masks * views
    hours = len(props) * steps / a["rate"] / 3600
    gb = trees * masks * a["png_kb"] / 1e6
    return (
        f"**Estimate, not measured** (assumed: {a['videos']} test videos x {a['frames']} "
        f"frames x {a['expressions']} expressions = {masks:,} masks per tree; "
        f"{a['png_kb']} kB per mask PNG; {a['rate']} frame-steps per second per GPU).\n"
        f"- Propagation: {views} views per mask ({scales} scales x "
        f"{'plain and flipped' if views > scales else 'plain'}, params.yaml) = "
        f"{steps:,} frame-steps per `propagate_*` stage; {len(props)} stages = "
        f"{len(props) * steps:,} frame-steps, about {hours:.0f} GPU-hours at the assumed rate "
        "(scale it by your measured rate).\n"
        f"- RVOS inference: {len(models)} `rvos_*` stages, each one pass over the "
        f"{masks:,} frame-expressions (mutr twice under `compat: challenge2023`, quirk 9.6).\n"
        f"- Disk: {trees} mask trees in `dvc.yaml` x {masks:,} PNGs x {a['png_kb']} kB = "
        f"about {gb:.1f} GB under `outputs/`, plus the DVC cache's copy (the same again "
        "unless the cache links files) and the submission zip (one tree, stored).\n"
    )


PKG_ORDER = ("cli.py", "errors.py", "argtypes.py", "helptext.py", "trees", "compute",
             "artifacts", "stages", "pipeline")  # fmt: skip
STAGE_ORDER = ("data.py", "rvos", "keyframes.py", "propagate", "fusion.py", "pack.py",
               "evaluate", "audit")  # fmt: skip


def _summary(path: Path, width: int) -> str:
    """The first sentence of a module's (or a package's __init__) docstring, markup
    stripped, cut to ``width`` characters at a word."""
    import ast

    f = path / "__init__.py" if path.is_dir() else path
    doc = ast.get_docstring(ast.parse(f.read_text())) or ""
    first = " ".join(doc.split("\n\n")[0].split())
    first = re.sub(r":\w+:`~?([^`]+)`", lambda m: m[1].rsplit(".", 1)[-1], first)
    first = first.replace("``", "`")
    m = re.search(r"(?<=[a-z0-9)`'\"])[.;](\s|$)", first)
    s = (first[: m.start()] if m else first).rstrip(":")
    for sep in (": ", " ("):  # the map is one screen wide: cut at a natural break
        if len(s) > width and len(s.split(sep, 1)[0]) >= 12:
            s = s.split(sep, 1)[0]
    if len(s) > width:
        s = s[: width - 3].rsplit(" ", 1)[0] + "..."
    return s


def _children(folder: Path, order=()) -> list[Path]:
    kids = [k for k in folder.iterdir()
            if (k.suffix == ".py" and k.name != "__init__.py")
            or (k.is_dir() and (k / "__init__.py").is_file())]  # fmt: skip
    rank = {n: i for i, n in enumerate(order)}
    return sorted(kids, key=lambda k: (rank.get(k.name, len(rank)), k.name))


def package_map(repo: Path) -> str:
    pkg = repo / "src" / "rvos_kit"
    lines = ["```", "src/rvos_kit/"]
    for top in _children(pkg, PKG_ORDER):
        if top.name == "__main__.py":
            continue
        name = top.name + ("/" if top.is_dir() else "")
        lines.append(f"  {name:<16}{_summary(top, 78)}")
        if top.is_dir():
            order = STAGE_ORDER if top.name == "stages" else ()
            for sub in _children(top, order):
                sname = sub.name + ("/" if sub.is_dir() else "")
                lines.append(f"    {sname:<16}{_summary(sub, 76)}")
    lines.append("```")
    import argparse
    import importlib

    from rvos_kit.cli import register_verbs

    lines += ["", "| DAG step | verbs | where |", "|---|---|---|"]
    for title, modules, verbs in register_verbs(argparse.ArgumentParser().add_subparsers()):
        where = []
        for mod in modules:
            path = mod.replace(".", "/")
            m = importlib.import_module(f"rvos_kit.{mod}")
            where.append(f"`{path}/`" if Path(m.__file__).name == "__init__.py" else f"`{path}.py`")
        lines.append(f"| {title} | {', '.join(f'`{v}`' for v in verbs)} | {', '.join(where)} |")
    return "\n".join(lines) + "\n"


GENERATORS = {"demo-jf": demo_jf, "stages": stages, "fresh-clone": fresh_clone, "lock": lock,
              "package-map": package_map, "cost": cost}  # fmt: skip


def render(text: str, repo: Path = REPO) -> str:
    seen = set()

    def sub(m: re.Match) -> str:
        name = m["name"]
        if name not in GENERATORS:
            raise SystemExit(f"README.md: unknown generated block {name!r}")
        seen.add(name)
        pad = m["indent"]
        body = "".join(pad + line if line.strip() else line
                       for line in GENERATORS[name](repo).splitlines(keepends=True))  # fmt: skip
        return pad + m["begin"] + body + pad + m["end"].lstrip(" ")

    out = BLOCK.sub(sub, text)
    missing = set(GENERATORS) - seen
    if missing:
        raise SystemExit(f"README.md: generated block(s) missing: {', '.join(sorted(missing))}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="fail if README.md is out of date")
    ap.add_argument("--readme", default=str(REPO / "README.md"), help="default: %(default)s")
    args = ap.parse_args(argv)
    path = Path(args.readme)
    old = path.read_text()
    new = render(old)
    if args.check:
        if new != old:
            print(f"{path}: generated blocks are out of date: run `make readme`", file=sys.stderr)
            return 1
        print(f"{path}: generated blocks are up to date")
        return 0
    if new != old:
        path.write_text(new)
    print(f"{path}: generated blocks written")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
