"""preflight: the list of what a pipeline lacks, in docker mode too (GPU, NVIDIA runtime,
images), as the first stage of every dvc.yaml (a bare `dvc repro` stops there), and
`rvos-kit fetch --params`, the one command that gets a pipeline's downloads.

There is no Docker engine or GPU on the test machines: small executables named
`docker` and `nvidia-smi` on PATH play their part, answering what a machine with or
without each piece answers."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_artifacts import FileServer, sha

from rvos_kit.cli import main
from rvos_kit.pipeline import preflight
from rvos_kit.pipeline.dag import render, spelled

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def tool(bin_dir: Path, name: str, script: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    p = bin_dir / name
    p.write_text("#!/bin/sh\n" + script)
    p.chmod(0o755)


DOCKER_OK = """\
case "$1" in
  info) echo '{"runc":{"path":"runc"},"nvidia":{"path":"nvidia-container-runtime"}}';;
  image) for a in "$@"; do last=$a; done
         while read -r built; do
           [ "$built" = "$last" ] && { echo sha256:abc; exit 0; }
         done < "${0%/*}/images"
         echo "Error: No such image: $last" >&2; exit 1;;
  *) exit 1;;
esac
"""


def docker_problems(monkeypatch, bin_dir: Path) -> list[str]:
    monkeypatch.setenv("PATH", str(bin_dir))
    return list(preflight.check_docker(preflight.load_pipeline(REPO / "params.yaml")))


def test_docker_mode_checks_engine_runtime_gpu_and_images(tmp_path, monkeypatch):
    b = tmp_path / "bin"
    b.mkdir()
    # no docker at all
    [p] = docker_problems(monkeypatch, b)
    assert "`docker` not found" in p
    # docker, but no engine answers
    tool(b, "docker", "echo 'Cannot connect to the Docker daemon' >&2; exit 1\n")
    [p] = docker_problems(monkeypatch, b)
    assert "no engine answers `docker info`" in p
    # an engine without the NVIDIA runtime, no nvidia-smi, one image of two built
    tool(b, "docker", DOCKER_OK.replace(',"nvidia":{"path":"nvidia-container-runtime"}', ""))
    (b / "images").write_text("rvos-kit/rvos:0.1.0\n")
    problems = docker_problems(monkeypatch, b)
    assert len(problems) == 3, problems
    assert "NVIDIA runtime" in problems[0] and "nvidia-ctk" in problems[0]
    assert "nvidia-smi -L" in problems[1]
    assert "image rvos-kit/uninext:0.1.0: not built" in problems[2]
    assert "make images" in problems[2]
    # nvidia-smi that sees no GPU
    tool(b, "nvidia-smi", "echo 'No devices were found'; exit 6\n")
    assert any("nvidia-smi -L" in p for p in docker_problems(monkeypatch, b))
    # everything there
    tool(b, "docker", DOCKER_OK)
    tool(b, "nvidia-smi", "echo 'GPU 0: NVIDIA A100-SXM4-80GB (UUID: GPU-1)'\n")
    (b / "images").write_text("rvos-kit/rvos:0.1.0\nrvos-kit/uninext:0.1.0\n")
    assert docker_problems(monkeypatch, b) == []


def test_native_pipelines_skip_the_docker_checks(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no docker: not asked for
    pl = preflight.load_pipeline(REPO / "demo/params.yaml")
    assert list(preflight.check_docker(pl)) == []
    assert preflight.missing_inputs(REPO / "demo/params.yaml") == []


def test_checks_are_a_list_others_can_extend():
    names = [c.__name__ for c in preflight.CHECKS]
    assert names[:2] == ["check_data", "check_downloads"] and "check_docker" in names
    extra = lambda pl: [f"extra check saw {len(pl.stages)} stages"]  # noqa: E731
    out = preflight.missing_inputs(REPO / "demo/params.yaml", [*preflight.CHECKS, extra])
    n = len(yaml.safe_load((REPO / "demo/dvc.yaml").read_text())["stages"])
    assert out == [f"extra check saw {n} stages"]


def _dvc(repo: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    return subprocess.run([str(BIN / "dvc"), *args], cwd=repo, capture_output=True,
                          text=True, env=env)  # fmt: skip


def test_bare_dvc_repro_stops_at_preflight_with_the_list(tmp_path):
    """The real pipeline with no data: `dvc repro` runs the preflight stage first, which
    fails with the list; no other stage starts, no missing-file error."""
    repo = tmp_path
    shutil.copy(REPO / "params.yaml", repo / "params.yaml")
    shutil.copy(REPO / "checkpoints.lock", repo / "checkpoints.lock")
    p = yaml.safe_load((repo / "params.yaml").read_text())
    p["paths"]["code"] = str(REPO / "src/rvos_kit")
    (repo / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    (repo / "dvc.yaml").write_text(render(repo / "params.yaml"))
    assert next(iter(yaml.safe_load((repo / "dvc.yaml").read_text())["stages"])) == "preflight"
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    assert _dvc(repo, "init", "-q").returncode == 0
    r = _dvc(repo, "repro")
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert out.count("Running stage") == 1 and "Running stage 'preflight'" in out
    assert "cannot run yet" in out and "meta_expressions.json not found" in out
    # the dataset's preflight checks the dataset only: each model's needs are its own
    assert "rvos-kit fetch" not in out and "soc.pth" not in out
    assert "No such file or directory" not in out and "Traceback" not in out
    assert not (repo / "outputs").exists() or not any((repo / "outputs").iterdir())


def test_every_stage_that_reads_from_outside_is_guarded_by_a_preflight_stage():
    for params in ("params.yaml", "demo/params.yaml", "audit/params.yaml"):
        stages = yaml.safe_load(render(REPO / params).split("\n", 2)[2])["stages"]
        cmds = spelled(REPO / params)  # the commands the stages run
        assert next(iter(stages)) == "preflight"
        outs = {n: [next(iter(o)) if isinstance(o, dict) else o
                    for o in s.get("outs", []) + s.get("metrics", [])]
                for n, s in stages.items()}  # fmt: skip
        guards = {o for n in stages if n.startswith("preflight") for o in outs[n]}
        produced = {o for n in stages for o in outs[n]} - guards
        for name, s in stages.items():
            if name.startswith("preflight"):
                continue
            deps = [d for d in s.get("deps", []) if "src/rvos_kit" not in d]
            outside = [d for d in deps if d not in guards
                       and not any(d == o or d.startswith(o + "/") for o in produced)]  # fmt: skip
            if outside or not deps:
                assert guards & set(deps), (params, name)
            # a model's own stage is guarded by that model's preflight only
            if name.startswith("rvos_") and "import-zip" not in cmds[name]["cmd"]:
                assert f"outputs/preflight_{name[5:]}.txt" in deps, (params, name)
    real = yaml.safe_load(render(REPO / "params.yaml").split("\n", 2)[2])["stages"]
    assert [n for n in real if n.startswith("preflight")] == [
        "preflight", "preflight_soc", "preflight_mutr", "preflight_referformer_ft",
        "preflight_vit_huge", "preflight_convnext", "preflight_aot", "preflight_deaot"]  # fmt: skip


def _one_model_repo(tmp_path: Path) -> Path:
    """The real params.yaml with every model imported from a dump, only SOC's dump and
    the dataset's meta present (tiny, generated), run natively on the CPU."""
    import torch
    from conftest import make_meta_dict, write_meta

    repo = tmp_path / "repo"
    repo.mkdir()
    meta = make_meta_dict([2, 1], n_frames=3)
    write_meta(repo / "data/meta.json", meta)
    g = torch.Generator().manual_seed(0)
    dump = {v: {e: {"mask_logits": torch.randn(3, 6, 8, generator=g),
                    "class_info": torch.rand(3, generator=g).tolist()}
                for e in entry["expressions"]}
            for v, entry in meta["videos"].items()}  # fmt: skip
    (repo / "dumps").mkdir()
    torch.save(dump, repo / "dumps/soc.pth")
    p = yaml.safe_load((REPO / "params.yaml").read_text())
    p["data"] = {"split": "test", "meta": "data/meta.json", "images": "data/JPEGImages",
                 "gt": None}  # fmt: skip
    p["paths"].update(code=str(REPO / "src/rvos_kit"), lock=str(REPO / "checkpoints.lock"))
    p["runner"]["mode"] = "native"
    p["device"] = "cpu"
    for m, spec in p["models"].items():
        spec.update(source="imported", dumps=[f"dumps/{m}.pth"])
    (repo / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    (repo / "dvc.yaml").write_text(render(repo / "params.yaml"))
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    assert _dvc(repo, "init", "-q").returncode == 0
    return repo


def test_one_model_runs_alone_with_only_its_inputs(tmp_path, capsys):
    """`dvc repro dvc.yaml:keyframes_soc` checks and runs only SOC's stages: the other
    models' dumps, the propagation checkpoints and the frames are all missing."""
    repo = _one_model_repo(tmp_path)
    params = str(repo / "params.yaml")
    assert main(["preflight", "--params", params, "--model", "soc"]) == 0
    assert "every input of rvos_soc, keyframes_soc is present" in capsys.readouterr().out
    assert main(["preflight", "--params", params, "--model", "mutr"]) == 2
    err = capsys.readouterr().err
    assert "dumps/mutr.pth not found" in err and "soc" not in err.replace("rvos-kit", "")
    assert main(["preflight", "--params", params, "--stage", "propagate_aot_soc"]) == 2
    err = capsys.readouterr().err
    assert "aot_swinl" in err and "JPEG frames" in err and "mutr" not in err

    r = _dvc(repo, "repro", "dvc.yaml:keyframes_soc")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    ran = re.findall(r"Running stage '([^']+)'", out)
    # the dataset's preflight (the meta) and SOC's own; then SOC's two stages
    assert sorted(ran) == ["keyframes_soc", "preflight", "preflight_soc", "rvos_soc"], out
    assert ran.index("preflight_soc") < ran.index("rvos_soc") < ran.index("keyframes_soc")
    assert json.loads((repo / "outputs/key_frames/soc.json").read_text()).keys() == {
        "vid000", "vid001"}  # fmt: skip
    assert (repo / "outputs/rvos/soc/Annotations/vid000/1/00005.png").is_file()

    # another model's stages stop at its own preflight, naming its own dump only
    r = _dvc(repo, "repro", "dvc.yaml:keyframes_mutr")
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert re.findall(r"Running stage '([^']+)'", out) == ["preflight_mutr"], out
    assert "dumps/mutr.pth not found" in out and "soc.pth" not in out


def test_fetch_params_gets_everything_a_pipeline_needs(tmp_path, capsys):
    """One command for a params file: its checkpoints (and released trees), from its own
    lock into its own downloads folder; artifacts it does not read stay untouched."""
    server = FileServer()
    try:
        aot, deaot = b"aot weights" * 100, b"deaot weights" * 100
        server.files = {"/aot.pth": aot, "/deaot.pth": deaot, "/soc.pth": b"x"}
        lock = ["version: 1", "artifacts:"]
        for name, path, data in (("aot_swinl", "aot.pth", aot), ("deaot_swinl", "deaot.pth", deaot),
                                 ("soc", "soc.pth", b"x")):  # fmt: skip
            lock += [f"  - name: {name}", "    source: url", f"    url: {server.url}/{path}",
                     f"    sha256: {sha(data)}", f"    size: {len(data)}",
                     f"    path: ckpt/{path}", "    used_by: []"]  # fmt: skip
        (tmp_path / "pipe").mkdir()
        (tmp_path / "pipe/checkpoints.lock").write_text("\n".join(lock) + "\n")
        p = yaml.safe_load((REPO / "params.yaml").read_text())
        p["paths"].update(lock="checkpoints.lock", downloads="dl")
        for m in p["models"].values():
            m.update(source="imported", dumps=["x.pth"])
        p["propagation"]["aot"]["checkpoint"] = "dl/ckpt/aot.pth"
        p["propagation"]["deaot"]["checkpoint"] = "dl/ckpt/deaot.pth"
        params = tmp_path / "pipe/params.yaml"
        params.write_text(yaml.safe_dump(p, sort_keys=False))
        assert main(["fetch", "--params", str(params)]) == 0
        assert (tmp_path / "pipe/dl/ckpt/aot.pth").read_bytes() == aot
        assert (tmp_path / "pipe/dl/ckpt/deaot.pth").read_bytes() == deaot
        assert not (tmp_path / "pipe/dl/ckpt/soc.pth").exists()
        assert "2 of 2 artifacts present" in capsys.readouterr().out
        assert main(["verify", "--params", str(params), "--strict"]) == 0
        assert "2 ok" in capsys.readouterr().out
        # preflight no longer lists downloads
        assert not any("downloads" in x for x in preflight.missing_inputs(params))
    finally:
        server.close()
    assert main(["fetch", "--params", str(params), "soc"]) == 2
    assert "give it alone" in capsys.readouterr().err
    # a pipeline that downloads nothing fetches nothing
    assert main(["fetch", "--params", str(REPO / "demo/params.yaml")]) == 0
    assert "0 of 0 artifacts present" in capsys.readouterr().out


@pytest.mark.parametrize("params", ["params.yaml", "audit/params.yaml"])
def test_preflight_names_the_one_fetch_command(params):
    problems = preflight.missing_inputs(REPO / params)
    [d] = [x for x in problems if x.startswith("downloads:")]
    assert f"rvos-kit fetch --params {os.path.relpath(REPO / params)}" in d


def test_infer_hint_says_record_while_any_of_the_models_files_is_unpinned(tmp_path):
    """A pinned checkpoint is not enough: its unpinned pretrained parts (roberta-base) make
    fetch refuse without --record, so the hint must say it; all pinned, it must not."""
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    lock = (REPO / "checkpoints.lock").read_text()
    pinned = "    sha256: " + "a" * 64

    def soc_hint(text: str) -> str:
        (tmp_path / "checkpoints.lock").write_text(text)
        [h] = [x for x in preflight.missing_inputs(tmp_path / "params.yaml")
               if x.startswith("models.soc ")]  # fmt: skip
        return h

    soc = lock.index("  - name: soc\n")
    one = lock[:soc] + lock[soc:].replace("    sha256: null", pinned, 1)
    assert "--record`" in soc_hint(one)  # checkpoint pinned, roberta-base parts not
    assert "--record" not in soc_hint(lock.replace("    sha256: null", pinned))
