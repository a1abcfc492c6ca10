"""``rvos-kit run``: the docker command line for a GPU stage (exact argv), image choice,
params handling, a real native run with exit codes, and the docker-mode failures.

No Docker engine runs here. Where the runner must *execute* docker, a stand-in ``docker``
script on PATH plays the engine's part (answers ``version`` / ``image inspect``, records
the ``run`` argv); with the real client, an unreachable DOCKER_HOST gives the real error.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from rvos_kit import __version__
from rvos_kit.cli import main
from rvos_kit.compute.docker import (
    DEFAULT_IMAGES,
    Mount,
    Settings,
    docker_argv,
    image_key,
    kit_source_dir,
    load_settings,
    plan_docker,
)
from rvos_kit.errors import KitError
from rvos_kit.pipeline.run import execute

# the keys a params file must have (rvos_kit.config: the runner reads the whole file)
MINIMAL = "data: {meta: meta.json}\npaths: {outputs: outputs}\nmodels: {}\n"
PARAMS = """\
# data.images: the dataset's root here, so that one mount holds every split's frames
data: {meta: data/refer_youtube_vos/meta_expressions.json, images: data/refer_youtube_vos,
       split: valid}
paths: {outputs: outputs, checkpoints: checkpoints}
models: {}
runner:
  mode: docker
  gpus: all
  images: {rvos: "rvos-kit/rvos:0.1.0", uninext: "rvos-kit/uninext:0.1.0"}
  stages: {propagate: rvos, infer_soc: rvos, infer_mutr: rvos, infer_referformer_ft: rvos,
           infer_vit_huge: uninext, infer_convnext: uninext}
"""


@pytest.fixture
def project(tmp_path):
    """A project folder whose dataset and checkpoints are symlinks to folders elsewhere
    (the usual layout on a machine with a big data disk)."""
    root = tmp_path / "proj"
    root.mkdir()
    (root / "params.yaml").write_text(PARAMS)
    big = tmp_path / "bigdisk"
    (big / "rvosdata" / "refer_youtube_vos" / "valid" / "JPEGImages").mkdir(parents=True)
    (big / "pretrained" / "vos").mkdir(parents=True)
    (big / "pretrained" / "vos" / "SwinL_AOTL.pth").write_bytes(b"weights")
    (root / "data").symlink_to(big / "rvosdata")
    (root / "checkpoints").symlink_to(big / "pretrained")
    (root / "outputs").mkdir()
    return root


def test_docker_argv_for_a_gpu_stage_is_exact(project, monkeypatch):
    monkeypatch.chdir(project)
    settings = load_settings("params.yaml")
    assert settings.mode == "docker"
    args = [
        "--images",
        "data/refer_youtube_vos/valid/JPEGImages",
        "--annotations",
        "outputs/rvos/soc/Annotations",
        "--checkpoint",
        "checkpoints/vos/SwinL_AOTL.pth",
        "--out",
        "outputs/propagated/aot/soc",
        "--backend",
        "aot",
    ]
    assert image_key(settings, "propagate", args, "propagate") == "rvos"
    kit_src = project / "kitsrc"
    kit_src.mkdir()
    argv = plan_docker(
        settings,
        settings.images["rvos"],
        "propagate",
        args,
        cwd=project,
        uid=1234,
        gid=5678,
        kit_src=kit_src,
    )
    p = str(project.resolve())
    big = str((project.parent / "bigdisk").resolve())
    assert argv == [
        "docker", "run", "--rm", "--init", "--pull", "never",
        "--gpus", "all",
        "--user", "1234:5678",
        "--network", "none",
        "--shm-size", "8g",
        "--env", "HOME=/tmp",
        "--env", "PYTHONDONTWRITEBYTECODE=1",
        "--env", f"PYTHONPATH={p}/kitsrc",
        # the project read-only (kitsrc is inside it), the symlinked checkpoints and
        # dataset read-only at their real paths, outputs read-write
        "--volume", f"{p}:{p}:ro",
        "--volume", f"{big}/pretrained:{big}/pretrained:ro",
        "--volume", f"{big}/rvosdata/refer_youtube_vos:{big}/rvosdata/refer_youtube_vos:ro",
        "--volume", f"{p}/outputs:{p}/outputs:rw",
        "--workdir", p,
        "rvos-kit/rvos:0.1.0",
        "python", "-m", "rvos_kit", "propagate", *args,
    ]  # fmt: skip


def test_dry_run_prints_the_same_command(project, monkeypatch, capsys):
    monkeypatch.chdir(project)
    rc = main(["run", "--dry-run", "--stage", "infer_convnext", "--", "infer", "--model", "x"])
    assert rc == 0
    printed = shlex.split(capsys.readouterr().out)
    settings = load_settings("params.yaml")
    expect = plan_docker(
        settings,
        "rvos-kit/uninext:0.1.0",
        "infer",
        ["--model", "x"],
        cwd=project,
        uid=os.getuid(),
        gid=os.getgid(),
        kit_src=kit_source_dir(),
    )
    assert printed == expect
    assert "rvos-kit/uninext:0.1.0" in printed
    assert f"{os.getuid()}:{os.getgid()}" in printed


def test_mounts_outside_paths_named_in_arguments(tmp_path, monkeypatch):
    root = tmp_path / "p"
    root.mkdir()
    elsewhere = tmp_path / "scratch" / "tree"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(root)
    settings = Settings(base=root, outputs="out")
    argv = plan_docker(
        settings,
        "img",
        "propagate",
        [f"--annotations={elsewhere}", "--flag", "0.5", "cuda"],
        cwd=root,
        uid=1,
        gid=2,
    )
    vols = [argv[i + 1] for i, a in enumerate(argv) if a == "--volume"]
    e = str(elsewhere.resolve())
    assert f"{e}:{e}:ro" in vols
    assert f"{root.resolve()}/out:{root.resolve()}/out:rw" in vols
    assert len(vols) == 3  # nothing for "0.5" or "cuda"


def test_paths_docker_cannot_mount_are_refused(tmp_path):
    odd = tmp_path / "a:b"
    odd.mkdir()
    with pytest.raises(KitError, match="cannot mount"):
        plan_docker(Settings(base=odd), "img", "propagate", [], cwd=odd, uid=1, gid=1)


@pytest.mark.parametrize(
    ("gpus", "expect"),
    [("all", ["--gpus", "all"]), ("2", ["--gpus", "2"]), ("0,1", ["--gpus", '"device=0,1"'])],
)
def test_gpu_selection(gpus, expect):
    argv = docker_argv("img", ["true"], mounts=[], workdir="/w", user="1:1", gpus=gpus)
    i = argv.index("--gpus")
    assert argv[i : i + 2] == expect


def test_gpu_values_from_params(tmp_path):
    for value, want in [("none", None), (0, None), (2, "2"), ([0, 3], "0,3"), ("all", "all")]:
        (tmp_path / "params.yaml").write_text(
            MINIMAL + json.dumps({"runner": {"gpus": value}})[1:-1]
        )
        assert load_settings(tmp_path / "params.yaml").gpus == want
    argv = docker_argv(
        "img", ["true"], mounts=[Mount("/d", "ro")], workdir="/", user="1:1", gpus=None
    )
    assert "--gpus" not in argv and argv[-2:] == ["img", "true"]


def test_image_choice(tmp_path):
    s = Settings(base=tmp_path)
    assert s.images == DEFAULT_IMAGES and DEFAULT_IMAGES["rvos"] == f"rvos-kit/rvos:{__version__}"
    assert image_key(s, "propagate", ["--backend", "deaot"], None) == "rvos"
    assert image_key(s, "infer", [], "infer_vit_huge") == "uninext"
    assert image_key(s, "infer", [], "infer_unknown") is None  # unlisted -> native
    assert image_key(s, "propagate", ["--backend", "flow"], "propagate") is None  # CPU
    assert image_key(s, "propagate", ["--backend=flow"], None) is None
    for verb in ("vote", "keyframes", "pack", "evaluate", "audit", "import-zip", "fetch"):
        custom = Settings(base=tmp_path, stages={verb: "rvos"})
        assert image_key(custom, verb, [], verb) is None  # CPU-only verbs never go in


def test_params_errors_name_the_file(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text(MINIMAL + "runner: {mode: kubernetes}\n")
    with pytest.raises(
        KitError, match=r"params.yaml: runner.mode: .*'docker' \(got 'kubernetes'\)"
    ):
        load_settings(p)
    p.write_text(MINIMAL + "runner: {images: {rvos: a}, stages: {propagate: nope}}\n")
    with pytest.raises(KitError, match=r"runner.stages.propagate: image 'nope' is not in runner"):
        load_settings(p)
    p.write_text(MINIMAL + "runner: [1, 2]\n")
    with pytest.raises(KitError, match="runner: Input should be a valid dictionary"):
        load_settings(p)
    with pytest.raises(KitError, match="params file not found"):
        load_settings(tmp_path / "missing.yaml")


def test_reads_the_repository_params(monkeypatch):
    """The runner keys of the repository's own params.yaml parse, with every default
    stage routed to an image it defines."""
    repo = Path(__file__).resolve().parents[1]
    if not (repo / "params.yaml").exists():
        pytest.skip("no params.yaml in this checkout")
    s = load_settings(repo / "params.yaml")
    assert s.base == repo
    assert s.stages.get("propagate") == "rvos"
    assert set(s.stages.values()) <= set(s.images)


# ------------------------------------------------------------------ native execution
def _kit(*args, cwd, env=None):
    return subprocess.run(
        [sys.executable, "-m", "rvos_kit", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_native_run_really_runs_a_stage(tmp_path):
    scores = {"vidA": {"0": [0.1, 0.8, 0.8], "1": [0.9, 0.0, 0.1]}}
    (tmp_path / "scores.json").write_text(json.dumps(scores))
    r = _kit("run", "--", "keyframes", "--scores", "scores.json", "--out", "kf.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "kf.json").read_text()) == {
        "vidA": {"0": {"index_info": {"class_index": 1}}, "1": {"index_info": {"class_index": 0}}}
    }
    assert "rvos-kit run (native)" in r.stderr
    # a failing stage: its exit status and its own message come through
    (tmp_path / "bad.json").write_text('{"vidA": {"0": []}}')
    r = _kit("run", "--", "keyframes", "--scores", "bad.json", "--out", "x.json", cwd=tmp_path)
    assert r.returncode == 2
    assert "rvos-kit keyframes: error:" in r.stderr and "bad.json" in r.stderr
    assert not (tmp_path / "x.json").exists()


def test_cpu_only_verbs_run_natively_even_in_docker_mode(tmp_path):
    """mode: docker and the verb mapped to an image, yet no docker is needed: keyframes
    is CPU-only. PATH holds no docker at all."""
    (tmp_path / "params.yaml").write_text(
        MINIMAL + "runner: {mode: docker, images: {rvos: x}, stages: {keyframes: rvos}}\n"
    )
    (tmp_path / "scores.json").write_text('{"v": {"0": [0, 1]}}')
    env = dict(os.environ, PATH=str(tmp_path / "empty-bin"))
    r = _kit(
        "run",
        "--",
        "keyframes",
        "--scores",
        "scores.json",
        "--out",
        "k.json",
        cwd=tmp_path,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "k.json").exists()


def test_exit_status_propagates():
    assert execute([sys.executable, "-c", "raise SystemExit(5)"]) == 5
    assert execute([sys.executable, "-c", "pass"]) == 0
    kill = "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"
    assert execute([sys.executable, "-c", kill]) == 128 + signal.SIGTERM


def test_run_needs_a_verb_and_refuses_itself(capsys):
    assert main(["run", "--"]) == 2
    assert main(["run", "--", "run", "--", "vote"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("rvos-kit run: error:") for line in err)


# ------------------------------------------------------------------ docker mode failures
def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("rvos-kit run: error:")
    return err[0]


def test_docker_mode_without_docker_binary(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    rc = main(["run", "--runner", "docker", "--", "propagate", "--backend", "aot"])
    assert rc == 2
    line = _one_error_line(capsys)
    assert "`docker` command, which is not on PATH" in line and "--runner native" in line
    assert not (tmp_path / "outputs").exists()  # nothing created on failure


def _stand_in_docker(bin_dir: Path, log: Path, *, engine=True, image=True, run_rc=0) -> None:
    """An executable named docker that plays the engine's part for the runner."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "docker"
    script.write_text(
        f"""#!{sys.executable}
import json, sys
args = sys.argv[1:]
if args[:1] == ["version"]:
    if not {engine}:
        print("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
              "Is the docker daemon running?", file=sys.stderr)
        sys.exit(1)
    print("28.2.2"); sys.exit(0)
if args[:2] == ["image", "inspect"]:
    if not {image}:
        print("Error: No such image: " + args[-1], file=sys.stderr); sys.exit(1)
    print("sha256:" + "0" * 64); sys.exit(0)
if args[:1] == ["run"]:
    open({str(log)!r}, "w").write(json.dumps(sys.argv))
    sys.exit({run_rc})
sys.exit(99)
"""
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


def test_docker_mode_without_engine(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    if shutil.which("docker"):  # the real client, pointed at an engine that is not there
        monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    else:
        _stand_in_docker(tmp_path / "bin", tmp_path / "log", engine=False)
        monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    rc = main(["run", "--runner", "docker", "--", "propagate", "--backend", "deaot"])
    assert rc == 2
    line = _one_error_line(capsys)
    assert "cannot reach the Docker engine" in line and "runner.mode: native" in line


def test_docker_mode_without_the_image(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _stand_in_docker(tmp_path / "bin", tmp_path / "log", image=False)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert main(["run", "--runner", "docker", "--", "propagate", "--backend", "aot"]) == 2
    line = _one_error_line(capsys)
    assert f"image rvos-kit/rvos:{__version__} is not built" in line and "make images" in line


def test_docker_mode_executes_the_planned_command(project, monkeypatch):
    """With an engine answering, the runner creates the outputs folder, runs exactly the
    planned argv and returns the container's exit status."""
    monkeypatch.chdir(project)
    shutil.rmtree(project / "outputs")
    log = project.parent / "docker-run.json"
    _stand_in_docker(project.parent / "bin", log, run_rc=7)
    monkeypatch.setenv("PATH", str(project.parent / "bin"))
    args = ["--images", "data/refer_youtube_vos/valid/JPEGImages", "--backend", "aot"]
    rc = main(["run", "--stage", "propagate", "--", "propagate", *args])
    assert rc == 7
    assert (project / "outputs").is_dir()
    ran = json.loads(log.read_text())
    expect = plan_docker(
        load_settings("params.yaml"),
        "rvos-kit/rvos:0.1.0",
        "propagate",
        args,
        cwd=project,
        uid=os.getuid(),
        gid=os.getgid(),
        kit_src=kit_source_dir(),
    )
    assert ran[1:] == expect[1:] and Path(ran[0]).name == "docker"


def test_inside_a_container_runs_natively(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RVOS_KIT_IN_CONTAINER", "1")
    rc = main(["run", "--runner", "docker", "--dry-run", "--", "propagate", "--backend", "aot"])
    assert rc == 0
    out = shlex.split(capsys.readouterr().out)
    assert out[:4] == [sys.executable, "-m", "rvos_kit", "propagate"]


INFER_ARGS = [
    "--model", "vit_huge",
    "--meta", "data/refer_youtube_vos/meta_expressions/test/meta_expressions.json",
    "--images", "data/refer_youtube_vos/test/JPEGImages",
    "--split", "test",
    "--upstream", "/opt/rvos-kit/upstream/iccv2023_RVOS_Challenge",
    "--checkpoint", "checkpoints/rvos/vit_huge.pth",
    "--pretrained", "checkpoints/pretrained",
    "--out", "outputs/rvos/vit_huge",
    "--device", "cuda",
]  # fmt: skip


def test_dry_run_of_an_infer_stage_prints_the_complete_command(project, monkeypatch, capsys):
    """Nothing of the data is here: the inputs are still mounted (read-only, at their own
    paths), the upstream hard-coded paths are satisfied by mounts from the driver's table,
    the stage gets one GPU, and nothing is created on disk."""
    monkeypatch.chdir(project)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    rc = main(["run", "--dry-run", "--stage", "infer_vit_huge", "--", "infer", *INFER_ARGS])
    assert rc == 0
    argv = shlex.split(capsys.readouterr().out)
    p = str(project.resolve())
    big = str((project.parent / "bigdisk").resolve())
    src = kit_source_dir()
    work = f"{p}/outputs/rvos/.vit_huge.uninext-work"
    # project, kit source, checkpoints and dataset (where the symlinks lead), read-only
    ro_dirs = [p, str(src), f"{big}/pretrained", f"{big}/rvosdata/refer_youtube_vos"]
    ro_dirs.sort(key=lambda x: (len(Path(x).parts), x))
    ro = [x for d in ro_dirs for x in ("--volume", f"{d}:{d}:ro")]
    assert argv == [
        "docker", "run", "--rm", "--init", "--pull", "never",
        "--gpus", "device=0",
        "--user", f"{os.getuid()}:{os.getgid()}",
        "--network", "none",
        "--shm-size", "8g",
        "--env", "HOME=/tmp",
        "--env", "PYTHONDONTWRITEBYTECODE=1",
        "--env", f"PYTHONPATH={src}",
        *ro,
        "--volume", f"{p}/outputs:{p}/outputs:rw",
        "--volume", f"{big}/pretrained/pretrained/bert-base-uncased:"
                    "/mnt/data_16TB/lzy23/pretrained/bert-base-uncased:ro",
        "--volume", f"{work}/dataset:/mnt/data_16TB/lzy23/rvosdata/refer_youtube_vos:ro",
        "--volume", f"{work}/model_pth:/mnt/data_16TB/lzy23/test/model_pth:rw",
        "--workdir", p,
        "rvos-kit/uninext:0.1.0",
        "python", "-m", "rvos_kit", "infer", *INFER_ARGS,
    ]  # fmt: skip
    assert not (project / "outputs" / "rvos").exists()  # a dry run creates nothing
    # convnext: the other image's stage, its own dump folder; Ray's one visible GPU wins
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    args = [a.replace("vit_huge", "convnext") for a in INFER_ARGS]
    main(["run", "--dry-run", "--stage", "infer_convnext", "--", "infer", *args])
    argv = shlex.split(capsys.readouterr().out)
    assert argv[argv.index("--gpus") + 1] == "device=3"
    assert (f"{p}/outputs/rvos/.convnext.uninext-work/model_pth:"
            "/mnt/data_16TB/lzy23/test/model_pth:rw") in argv  # fmt: skip


def test_infer_refuses_missing_inputs_before_docker(project, monkeypatch, capsys):
    monkeypatch.chdir(project)
    bin_dir = project.parent / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "docker"
    fake.write_text("#!/bin/sh\necho 27.0\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    # the whole stage (shards on Ray, each in the image): refused before Ray or Docker
    rc = main(["run", "--stage", "infer_vit_huge", "--", "infer", *INFER_ARGS])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("meta_expressions.json: meta_expressions file not found"), err
    assert [p for p in (project / "outputs").rglob("*") if not p.is_dir()] == []
    assert not (project / "outputs/rvos/.vit_huge.uninext-work").exists()
    # one container for some videos: the same refusal, before `docker run`
    rc = main(["run", "--stage", "infer_vit_huge", "--", "infer", *INFER_ARGS, "--videos", "a"])
    assert rc == 2
    assert "meta_expressions.json not found" in capsys.readouterr().err
    # the work folders the mounts need were made by the user, not by Docker as root
    assert (project / "outputs/rvos/.vit_huge.uninext-work/model_pth").is_dir()


# ------------------------------------------------------------------ runner.stack (issue 22)
MODERN_PARAMS = PARAMS.replace(
    'uninext: "rvos-kit/uninext:0.1.0"}',
    'uninext: "rvos-kit/uninext:0.1.0",\n'
    '           modern: "rvos-kit/modern:0.1.0"}\n  stack: modern',
)


def test_modern_stack_runs_every_gpu_stage_in_the_modern_image(project, monkeypatch, capsys):
    """The same dry-run command as on the published stack, but for the image: exact."""
    monkeypatch.chdir(project)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    runs = {
        "infer_vit_huge": ["infer", *INFER_ARGS],
        "infer_soc": ["infer", *[a.replace("vit_huge", "soc") for a in INFER_ARGS]],
        "propagate": ["propagate", "--images", "data/refer_youtube_vos/valid/JPEGImages",
                      "--backend", "deaot", "--device", "cuda"],
    }  # fmt: skip
    published = {}
    for stage, cmd in runs.items():
        assert main(["run", "--dry-run", "--stage", stage, "--", *cmd]) == 0
        published[stage] = shlex.split(capsys.readouterr().out)
    (project / "params.yaml").write_text(MODERN_PARAMS)
    s = load_settings("params.yaml")
    assert s.stack == "modern" and s.images["modern"] == "rvos-kit/modern:0.1.0"
    for stage in s.stages:
        assert image_key(s, "infer", [], stage) == "modern", stage
    assert image_key(s, "propagate", ["--backend", "flow"], "propagate") is None  # CPU
    assert image_key(s, "vote", [], "vote") is None
    for stage, cmd in runs.items():
        assert main(["run", "--dry-run", "--stage", stage, "--", *cmd]) == 0
        argv = shlex.split(capsys.readouterr().out)
        i = argv.index("rvos-kit/modern:0.1.0")
        old = published[stage]
        assert old[i] in ("rvos-kit/rvos:0.1.0", "rvos-kit/uninext:0.1.0"), old[i]
        assert argv == [*old[:i], "rvos-kit/modern:0.1.0", *old[i + 1 :]], stage
    # the infer stage in full: one GPU, the published paths mounted, the modern image
    assert (
        main(["run", "--dry-run", "--stage", "infer_vit_huge", "--", *runs["infer_vit_huge"]]) == 0
    )
    argv = shlex.split(capsys.readouterr().out)
    p, src = str(project.resolve()), kit_source_dir()
    assert argv[:8] == ["docker", "run", "--rm", "--init", "--pull", "never", "--gpus", "device=0"]
    assert argv[argv.index("--workdir") :] == [
        "--workdir", p, "rvos-kit/modern:0.1.0", "python", "-m", "rvos_kit", *runs["infer_vit_huge"]
    ]  # fmt: skip
    assert f"PYTHONPATH={src}" in argv


def test_stack_errors_name_the_key(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text(MINIMAL + "runner: {stack: newest}\n")
    with pytest.raises(KitError, match=r"runner.stack: Input should be 'published' or 'modern'"):
        load_settings(p)
    p.write_text(
        MINIMAL + 'runner: {stack: modern, images: {rvos: "rvos-kit/rvos:0.1.0"}, stages: {}}\n'
    )
    with pytest.raises(KitError, match=r"runner.images.modern, which is not defined \(rvos\)"):
        load_settings(p)
    p.write_text(MINIMAL + "runner: {stack: modern}\n")  # the default images include modern
    s = load_settings(p)
    assert s.images["modern"] == f"rvos-kit/modern:{__version__}"
    assert image_key(s, "infer", [], "rvos_convnext") == "modern"
    assert image_key(Settings(base=tmp_path), "infer", [], "rvos_convnext") == "uninext"
