"""The deformable-attention compat patch (issue 22): docker/patches/msda-torch2.patch is
exactly the two API renames torch >= 2.6 needs, nothing else; it applies cleanly, strictly,
to each of the four vendored copies of the op in the verified published archive (and
``patch``/``git apply`` agree byte for byte); tools/apply_msda_patch.py never touches the
original and writes nothing when a hunk does not match. Where nvcc and a CUDA build of
torch are at hand, the CUDA source is compiled (front end: the unpatched file must fail
with the known error, the patched one must pass; RVOS_KIT_MSDA_BUILD=1: the whole wheel)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PATCH = REPO / "docker/patches/msda-torch2.patch"


def _tool():
    spec = importlib.util.spec_from_file_location(
        "apply_msda_patch", REPO / "tools/apply_msda_patch.py"
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules["apply_msda_patch"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


T = _tool()


def test_patch_is_exactly_the_api_renames():
    files = T.parse_patch(PATCH.read_text())
    assert [f.path for f in files] == ["src/cuda/ms_deform_attn_cuda.cu", "src/ms_deform_attn.h"]
    assert T.renames_only(files) == []
    pairs = [
        (o, n) for f in files for h in f.hunks for o, n in zip(h.removed, h.added, strict=True)
    ]
    assert len(pairs) == 15  # 2 dispatches + 13 is_cuda checks: every call site
    assert sum("AT_DISPATCH_FLOATING_TYPES(value.scalar_type()" in n for _, n in pairs) == 2
    assert sum(".is_cuda()" in n for _, n in pairs) == 13
    for old, new in pairs:
        assert ".type()" in old and ".type()" not in new
        # the only difference: a deleted `.type()` or `type` -> `scalar_type`
        assert new in (old.replace(".type().is_cuda()", ".is_cuda()"),
                       old.replace("value.type()", "value.scalar_type()"))  # fmt: skip


def test_renames_checker_refuses_anything_else():
    good = PATCH.read_text()
    line = '-    AT_ASSERTM(value.type().is_cuda(), "value must be a CUDA tensor");'
    assert line in good
    bad = {
        "another edit on a renamed line": good.replace(
            '+    AT_ASSERTM(value.is_cuda(), "value must be a CUDA tensor");',
            '+    TORCH_CHECK(value.is_cuda(), "value must be a CUDA tensor");'),
        "an added line": good.replace(
            '+    AT_ASSERTM(value.is_cuda(), "value must be a CUDA tensor");',
            '+    AT_ASSERTM(value.is_cuda(), "value must be a CUDA tensor");\n+    // x',
            1,
        ).replace("@@ -31,11 +31,11 @@", "@@ -31,11 +31,12 @@"),
        "a line without a rename": good.replace(
            " \n     const int batch = value.size(0);\n"
            "     const int spatial_size = value.size(1);\n@@ -61,7",
            ' \n-    const int batch = value.size(0);\n+    const int batch = value.size(0) + 0;\n'
            '     const int spatial_size = value.size(1);\n@@ -61,7', 1),
    }  # fmt: skip
    for what, text in bad.items():
        assert text != good, what
        assert T.renames_only(T.parse_patch(text)), what
    with pytest.raises(T.PatchError, match="only edits of existing files"):
        T.parse_patch(good.replace("+++ b/src/ms_deform_attn.h", "+++ b/src/other.h"))


def _blobs(tree: Path) -> dict[str, bytes]:
    return {p.relative_to(tree).as_posix(): p.read_bytes() for p in sorted(tree.rglob("*"))
            if p.is_file()}  # fmt: skip


def test_patch_applies_to_each_verified_copy(upstream, tmp_path):
    """Every copy is verified first, then patched in a copy; `patch` and `git apply`
    (where installed) give the same bytes from the original; the original is unchanged."""
    from rvos_kit.stages.rvos.infer.upstream import verify_upstream

    results = []
    for i, ops in enumerate(T.OPS_FOLDERS):
        before = _blobs(upstream / ops)
        dest = tmp_path / f"ops{i}"
        line = T.patched_copy(upstream, ops, dest)
        assert "15 lines renamed" in line and "blob for blob" in line, line
        assert _blobs(upstream / ops) == before  # the original is not touched
        got = _blobs(dest)
        assert not any(n.startswith(("build/", "dist/")) or n.endswith(".so") for n in got)
        assert T.leftover_type_calls(dest) == []
        changed = {n for n in got if got[n] != before[n]}
        assert changed == {"src/cuda/ms_deform_attn_cuda.cu", "src/ms_deform_attn.h"}
        for tool, argv in (("patch", ["patch", "-p1", "--quiet", "-i", str(PATCH)]),
                           ("git", ["git", "apply", "-p1", str(PATCH)])):  # fmt: skip
            if shutil.which(tool) is None:
                continue
            other = tmp_path / f"{tool}{i}"
            shutil.copytree(upstream / ops, other)
            r = subprocess.run(argv, cwd=other, capture_output=True, text=True)
            assert r.returncode == 0, r.stdout + r.stderr
            assert {n: _blobs(other)[n] for n in changed} == {n: got[n] for n in changed}
        results.append({n: got[n] for n in changed})
    assert all(r == results[0] for r in results)  # four identical copies, one result
    verify_upstream(upstream, ("soc_test", "MUTR", "ReferFormer", "UNINEXT"))


def test_a_hunk_that_does_not_match_writes_nothing(upstream, tmp_path):
    tree = tmp_path / "ops"
    shutil.copytree(upstream / T.OPS_FOLDERS[0], tree)
    h = tree / "src/ms_deform_attn.h"  # the second file: the first would apply
    h.write_text(
        h.read_text().replace("if (value.type().is_cuda())", "if (value.type().is_cuda() )", 1)
    )
    before = _blobs(tree)
    with pytest.raises(T.PatchError, match=r"ms_deform_attn.h: hunk at line 26 does not match"):
        T.apply_to(tree, T.parse_patch(PATCH.read_text()))
    assert _blobs(tree) == before  # all or nothing


def test_the_tool_refuses_unverified_or_unknown_input(upstream, tmp_path, capsys):
    assert T.main([str(upstream), "soc_test/models", str(tmp_path / "a")]) == 1
    assert "not one of the op's folders" in capsys.readouterr().err
    (tmp_path / "b").mkdir()
    assert T.main([str(upstream), T.OPS_FOLDERS[1], str(tmp_path / "b")]) == 1
    assert "already exists" in capsys.readouterr().err
    fake = tmp_path / "fake"  # a tree that is not the published code
    shutil.copytree(upstream / T.OPS_FOLDERS[0], fake / T.OPS_FOLDERS[0])
    assert T.main([str(fake), T.OPS_FOLDERS[0], str(tmp_path / "c")]) == 1
    assert "is missing; --upstream is not" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".c.")]  # no leftovers


# ------------------------------------------------------------------ compiling it (nvcc)
def _cuda_build_env() -> dict:
    """nvcc and the include folders of a CUDA build of torch, or pytest.skip saying why."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("no nvcc on PATH: the patch is checked to apply, not compiled")
    py = os.environ.get("RVOS_UPSTREAM_PYTHON") or sys.executable
    probe = (
        "import json, os, sysconfig, torch\n"
        "from torch.utils import cpp_extension as c\n"
        "inc = c.include_paths('cuda') if 'device_type' in c.include_paths.__code__.co_varnames "
        "else c.include_paths(cuda=True)\n"
        "try:\n    import nvidia\n"
        "    inc += [os.path.join(p, 'cu13', 'include') for p in nvidia.__path__]\n"
        "except ImportError: pass\n"
        "aten = open(os.path.join(inc[0], 'ATen', 'ATen.h')).read()\n"
        "std = 'c++20' if 'C++20 or later' in aten else 'c++17'\n"
        "print(json.dumps({'cuda': torch.version.cuda, 'torch': torch.__version__, 'inc': inc,"
        " 'std': std,"
        " 'py': sysconfig.get_paths()['include'], 'home': c.CUDA_HOME}))\n"
    )  # fmt: skip
    r = subprocess.run([py, "-c", probe], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        pytest.skip(f"{py}: cannot import torch ({r.stderr.strip()[-200:]})")
    info = json.loads(r.stdout)
    if info["cuda"] is None:
        pytest.skip(f"{py}: torch {info['torch']} is a CPU-only build (no CUDA headers)")
    return {"nvcc": nvcc, "python": py, **info}


def _front_end(env: dict, ops: Path) -> subprocess.CompletedProcess:
    """nvcc's front end over the op's CUDA file (host and device syntax, the overloads
    the error comes from), without generating device code: seconds, not minutes."""
    inc = [ops / "src", *env["inc"], env["py"]]
    if env["home"]:
        inc.append(Path(env["home"]) / "include")
    argv = [env["nvcc"], "--cuda", "-fdevice-syntax-only", f"-std={env['std']}", "-DWITH_CUDA",
            "--expt-relaxed-constexpr", "-DTORCH_API_INCLUDE_EXTENSION_H",
            "-DTORCH_EXTENSION_NAME=MultiScaleDeformableAttention",
            "-gencode=arch=compute_80,code=sm_80", *(f"-I{p}" for p in inc if Path(p).is_dir()),
            str(ops / "src/cuda/ms_deform_attn_cuda.cu"), "-o", str(ops / "front.ii")]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=900)


def test_patched_op_compiles_where_nvcc_is(upstream, tmp_path):
    env = _cuda_build_env()
    original = tmp_path / "original"
    shutil.copytree(upstream / T.OPS_FOLDERS[0], original)
    r = _front_end(env, original)
    assert r.returncode != 0 and "DeprecatedTypeProperties" in r.stdout + r.stderr, (
        f"the unpatched op compiled with torch {env['torch']}: is the patch still needed?"
    )
    patched = tmp_path / "patched"
    T.patched_copy(upstream, T.OPS_FOLDERS[0], patched)
    r = _front_end(env, patched)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    if os.environ.get("RVOS_KIT_MSDA_BUILD") != "1":
        return  # the whole wheel takes minutes per architecture
    build = {**os.environ, "TORCH_CUDA_ARCH_LIST": os.environ.get("TORCH_CUDA_ARCH_LIST", "8.0"),
             "CPATH": os.pathsep.join(env["inc"])}  # fmt: skip
    argv = [env["python"], str(REPO / "docker/build-cuda-op.py"), str(patched), str(tmp_path / "w")]
    r = subprocess.run(argv, capture_output=True, text=True, env=build)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert list((tmp_path / "w").glob("multiscaledeformableattention-1.0-*.whl"))
