"""Docker-mode inference sharded on a real local Ray (rvos_kit.stages.rvos.infer.sharded):
``rvos-kit run --stage rvos_soc -- infer ...`` with ``runner.mode: docker`` runs each shard
as ``docker run --gpus device=N ... infer --videos-json [...]`` on the GPU Ray gave it and
merges the shards, byte-identical to one unsharded run.

No Docker engine runs here: a stand-in ``docker`` on PATH plays the engine (as in
test_runner.py) and runs the container's command natively, as the image would: the kit
source from ``--env PYTHONPATH``, RVOS_KIT_IN_CONTAINER=1, in ``--workdir``, exiting 128+N
when a signal N kills the command (what ``docker run --init`` reports). It records every
call. The model is test_infer's synthetic driver standing in for soc (the real infer code
around it: upstream check, dump conversion, model-folder writer, merge). Ray is the
session's (conftest.ray_cluster: 2 CPUs, 2 logical GPUs)."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import stat
import sys
import types
from pathlib import Path

import pytest
from conftest import make_meta_dict, tree_bytes, write_meta
from faults import rvos_faults
from PIL import Image
from test_infer import fake_driver

from rvos_kit.cli import main
from rvos_kit.errors import KitError
from rvos_kit.stages.rvos.infer import core
from rvos_kit.stages.rvos.infer.sharded import infer_settings, shard_mounts

pytestmark = pytest.mark.usefixtures("ray_cluster")
TESTS = Path(__file__).resolve().parent
OUT = "outputs/rvos/soc"

STAND_IN = '''#!{python}
"""docker, played for the tests: answers version / image inspect / rm, and runs the
command of `docker run` natively (see tests/test_infer_docker_shards.py)."""
import json, os, subprocess, sys, time
here = os.path.dirname(os.path.abspath(__file__))
log, cfg = os.path.join(here, "calls.jsonl"), os.path.join(here, "standin.json")
conf = json.load(open(cfg)) if os.path.exists(cfg) else {{}}
args = sys.argv[1:]

def record(entry):
    with open(log, "a") as f:
        f.write(json.dumps(entry) + "\\n")

if args[:1] == ["version"]:
    print("28.2.2"); sys.exit(0)
if args[:2] == ["image", "inspect"]:
    print("sha256:" + "0" * 64); sys.exit(0)
if args[:2] == ["rm", "-f"]:
    record({{"rm": args[2]}}); sys.exit(0)
if args[:1] != ["run"]:
    sys.exit(99)
valued = {{"--name", "--pull", "--gpus", "--user", "--network", "--shm-size", "--env",
          "--volume", "--workdir"}}
i, opts = 1, []
while args[i].startswith("--"):
    if args[i] in valued:
        opts.append((args[i], args[i + 1])); i += 2
    else:
        opts.append((args[i], None)); i += 1
command = args[i + 1 :]
for k, v in opts:
    host, target, mode = v.split(":") if k == "--volume" else ("", "", "")
    if host != target:  # this stand-in cannot move a folder elsewhere
        print("stand-in: cannot mount " + v, file=sys.stderr); sys.exit(125)
env = dict(v.split("=", 1) for k, v in opts if k == "--env")
env.update(PATH=os.environ["PATH"], RVOS_KIT_IN_CONTAINER="1")  # as the images set it
# the tests' hooks, as if the image had them; this process stands for the worker
env.update({{k: v for k, v in os.environ.items() if k.startswith("RVOS_KIT_FAULT_")}})
if env.get("RVOS_KIT_FAULT_PRELOAD"):  # tests/faults/sitecustomize.py arms them there
    env["PYTHONPATH"] = os.pathsep.join([{faults!r}, env.get("PYTHONPATH", "")])
env["RVOS_KIT_SHARD_PARENT"] = str(os.getpid())
if command[:1] == ["python"]:
    command[0] = sys.executable
videos = json.loads(command[command.index("--videos-json") + 1])
if conf.get("drop") in videos:  # an image that leaves a video out, yet exits 0
    videos.remove(conf["drop"])
    command[command.index("--videos-json") + 1] = json.dumps(videos)
if conf.get("barrier"):  # wait for the other shards: they run at once, on other GPUs
    record({{"arrived": os.getpid()}})
    t0 = time.time()
    while time.time() - t0 < 60:
        if sum('"arrived"' in x for x in open(log)) >= conf["barrier"]:
            break
        time.sleep(0.1)
kill = False
if conf.get("kill") in videos:  # every attempt of this shard dies
    kill = True
for token in conf.get("tokens", []):  # or the first shard to take a token
    try:
        os.unlink(token)
        kill = True
        break
    except FileNotFoundError:
        pass
wd = dict(opts)["--workdir"]
p = subprocess.Popen(command, cwd=wd, env=env, stdout=subprocess.PIPE, text=True)
record({{"argv": sys.argv, "pid": p.pid}})
for line in p.stdout:
    sys.stdout.write(line); sys.stdout.flush()
    if kill and line.startswith("rvos-kit:video-done "):  # mid-shard
        p.kill()
        record({{"killed": p.pid}})
        kill = False
rc = p.wait()
sys.exit(128 - rc if rc < 0 else rc)
'''


@pytest.fixture(scope="module")
def clip(tmp_path_factory, upstream):
    """Four videos (1, 3, 2, 1 expressions, 3 frames) and the unsharded model folder."""
    root = tmp_path_factory.mktemp("clip")
    meta = make_meta_dict([1, 3, 2, 1], n_frames=3)
    write_meta(root / "meta.json", meta)
    for i, (vid, entry) in enumerate(meta["videos"].items()):
        (root / "JPEGImages" / vid).mkdir(parents=True)
        for f in entry["frames"]:
            Image.new("RGB", (20 + i, 12)).save(root / "JPEGImages" / vid / f"{f}.jpg")
    (root / "ckpt.pth").write_bytes(b"x")
    (root / "pretrained").mkdir()
    ns = types.SimpleNamespace(root=root, videos=list(meta["videos"]), upstream=upstream)
    saved = dict(core.MODELS)
    sys.modules["rvos_kit.stages.rvos.infer._fake"] = fake_driver("logits")
    core.MODELS["soc"] = dataclasses.replace(core.MODELS["soc"], driver="_fake")
    try:  # one run over every video, in this process
        assert main([*_infer(ns, str(root)), "--shard", "1/1", "--out", str(root / "one")]) == 0
    finally:
        core.MODELS.clear()
        core.MODELS.update(saved)
    ns.ref = tree_bytes(root / "one")
    assert "scores.json" in ns.ref and len(ns.ref) == 1 + 7 * 3
    return ns


def _infer(clip, data: str) -> list[str]:
    return ["infer", "--model", "soc", "--meta", f"{data}/meta.json", "--images",
            f"{data}/JPEGImages", "--split", "valid", "--upstream", str(clip.upstream),
            "--checkpoint", f"{data}/ckpt.pth", "--pretrained", f"{data}/pretrained",
            "--device", "cpu"]  # fmt: skip


@pytest.fixture
def project(clip, tmp_path, monkeypatch):
    """A project in docker mode (2 shards, 1 GPU each, one retry) whose data folder is the
    clip; the stand-in docker first on PATH; every shard's child loads the synthetic
    driver (RVOS_KIT_FAULT_PRELOAD)."""
    root = tmp_path / "proj"
    root.mkdir()
    (root / "data").symlink_to(clip.root)
    (root / "params.yaml").write_text(
        "data: {meta: data/meta.json}\npaths: {outputs: outputs}\nmodels: {}\n"
        "runner: {mode: docker}\n"
        "scale: {shards: 2, max_retries: 1, needs: {infer: {gpus: 1, cpus: 1}}}\n"
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(STAND_IN.format(python=sys.executable, faults=rvos_faults.HERE))
    docker.chmod(docker.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv(rvos_faults.PRELOAD, f"{TESTS}:shard_preload_infer")
    rvos_faults.install(monkeypatch)
    monkeypatch.chdir(root)
    return types.SimpleNamespace(root=root, bin=bin_dir)


def _configure(project, **conf) -> None:
    (project.bin / "standin.json").write_text(json.dumps(conf))


def _calls(project) -> list[dict]:
    log = project.bin / "calls.jsonl"
    return [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []


def _runs(project) -> list[list[str]]:
    return [c["argv"][1:] for c in _calls(project) if "argv" in c]


def _next_run_redoes_only_the_bad_shard(clip, project) -> None:
    """With the stand-in healed, the stage runs again: same bytes as the unsharded run,
    only the failed shard (vid002, vid003) redone, the other one reused."""
    _configure(project)
    before = len(_runs(project))
    assert _stage(clip) == 0
    assert tree_bytes(project.root / OUT) == clip.ref
    (rerun,) = _runs(project)[before:]
    assert json.loads(_value(rerun, "--videos-json")) == ["vid002", "vid003"]


def _stage(clip) -> int:
    return main(["run", "--stage", "rvos_soc", "--", *_infer(clip, "data"), "--out", OUT])


def _value(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def _no_half_tree(project) -> None:
    rvos = project.root / "outputs" / "rvos"
    assert not (rvos / "soc").exists()
    assert not [p.name for p in rvos.iterdir() if "partial" in p.name], list(rvos.iterdir())


def test_shards_run_in_docker_on_their_gpus_and_merge_byte_identical(clip, project, capsys):
    _configure(project, barrier=2)
    assert _stage(clip) == 0
    assert tree_bytes(project.root / OUT) == clip.ref
    runs = _runs(project)
    assert len(runs) == 2, runs
    # each shard on the GPU Ray gave it: one device each, two different ones
    assert sorted(_value(r, "--gpus") for r in runs) == ["device=0", "device=1"]
    shards = project.root / "outputs" / "rvos" / ".soc.shards"
    parts = []
    for r in runs:
        i = r.index("rvos-kit/rvos:0.1.0")
        assert r[i + 1 : i + 5] == ["python", "-m", "rvos_kit", "infer"]
        assert _value(r, "--name").startswith("rvos-kit-") and _value(r, "--name").endswith("-a1")
        assert Path(_value(r, "--out")).parent == shards.resolve()
        parts.append(json.loads(_value(r, "--videos-json")))
    # weights (frames x expressions) 3 9 | 6 3: two videos per shard, every video once
    assert sorted(parts) == [clip.videos[:2], clip.videos[2:]]
    assert not shards.exists()  # merged, then removed
    out, err = capsys.readouterr()
    assert "4 videos in 2 shards on Ray (1 GPU + 1 CPU each;" in err
    assert "(each in rvos-kit/rvos:0.1.0) -> outputs/rvos/soc" in out


def test_a_shard_killed_by_a_signal_is_retried(clip, project, capsys):
    """The command in one container is SIGKILLed mid-shard (its first video done):
    `docker run` exits 137, the shard runs again in a fresh folder, after its lost
    container is removed; the bytes are the same."""
    token = project.root.parent / "kill-token"
    token.touch()
    _configure(project, tokens=[str(token)])
    assert _stage(clip) == 0
    assert tree_bytes(project.root / OUT) == clip.ref
    calls = _calls(project)
    assert sum("killed" in c for c in calls) == 1 and not token.exists()
    runs = _runs(project)
    assert len(runs) == 3
    again = [r for r in runs if _value(r, "--name").endswith("-a2")]
    assert len(again) == 1
    name = _value(again[0], "--name")
    assert {"rm": name[: -len("-a2")] + "-a1"} in calls  # the lost container, removed first
    err = capsys.readouterr().err
    assert "retried after a lost worker, done on attempt 2" in err, err


def test_a_shard_failing_for_good_fails_the_stage_then_resumes(clip, project, capsys):
    """Every attempt of the shard holding vid002 is killed: after max_retries the stage
    fails with one error and writes nothing; the other shard is kept, and the next run
    runs only the failed one."""
    _configure(project, kill="vid002")
    assert _stage(clip) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("rvos-kit run: error: shard 2/2 (2 videos: vid002 .. vid003)")
    assert "killed by signal 9 (docker run exited 137)" in err[-1]
    assert "the 1 other shard(s) are kept" in err[-1]
    assert sum("vid002" in _value(r, "--videos-json") for r in _runs(project)) == 2
    _no_half_tree(project)
    _next_run_redoes_only_the_bad_shard(clip, project)


def test_a_shard_missing_a_video_is_refused_at_the_merge(clip, project, capsys):
    """A container that leaves vid003 out and exits 0: the merge, checked against meta,
    refuses; nothing is written; the bad shard is not reused by the next run."""
    _configure(project, drop="vid003")
    assert _stage(clip) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "rvos-kit run: error: the shards hold no video 'vid003' (1 missing)", err
    _no_half_tree(project)
    _next_run_redoes_only_the_bad_shard(clip, project)


def test_dry_run_prints_the_stage_line_and_says_it_is_sharded(clip, project, capsys):
    rc = main(["run", "--dry-run", "--stage", "rvos_soc", "--", *_infer(clip, "data"),
               "--out", OUT])  # fmt: skip
    assert rc == 0
    out, err = capsys.readouterr()
    argv = shlex.split(out)
    assert argv[:2] == ["docker", "run"] and "--videos-json" not in argv
    assert "a real run shards this stage on Ray" in err
    assert _calls(project) == [] and not (project.root / "outputs").exists()


def test_runner_native_wins_over_the_params_file_in_the_shards(
    clip, project, monkeypatch, ray_cluster
):
    """`run --runner native` as a DVC stage (DVC_STAGE set, params.yaml saying docker):
    the native `infer` below it (a child process, joining the session's Ray), which
    shards the stage and reads runner.mode of the stage's params file, runs its shards
    natively too: no `docker run` at all."""
    params = project.root / "params.yaml"
    text = params.read_text().replace("scale: {", f"scale: {{address: '{ray_cluster}', ")
    params.write_text(text)
    monkeypatch.setenv("DVC_STAGE", "rvos_soc")
    monkeypatch.setenv("PYTHONPATH", rvos_faults.subprocess_env()["PYTHONPATH"])  # its hooks
    argv = ["run", "--runner", "native", "--stage", "rvos_soc", "--", *_infer(clip, "data")]
    assert main([*argv, "--out", OUT]) == 0
    assert tree_bytes(project.root / OUT) == clip.ref
    assert _runs(project) == [], "a shard ran in docker despite --runner native"


@pytest.mark.parametrize("env", [None, "RVOS_KIT_NATIVE", "RVOS_KIT_IN_CONTAINER"])
def test_sharded_verbs_read_docker_mode_unless_run_natively(tmp_path, monkeypatch, env):
    """The one reader both sharded verbs (infer, propagate) use for their shards' runner:
    docker mode from the params file, unless a native `rvos-kit run` or an image runs
    this process."""
    from rvos_kit.compute.docker import docker_settings

    params = tmp_path / "params.yaml"
    params.write_text("data: {meta: m.json}\npaths: {outputs: o}\nmodels: {}\n"
                      "runner: {mode: docker}\n")  # fmt: skip
    for name in ("RVOS_KIT_NATIVE", "RVOS_KIT_IN_CONTAINER"):
        monkeypatch.delenv(name, raising=False)
    if env:
        monkeypatch.setenv(env, "1")
    got = docker_settings(str(params))
    assert (got.mode if got else None) == (None if env else "docker")
    assert docker_settings(None) is None


def test_needs_of_a_model_overlay_needs_infer(tmp_path, monkeypatch):
    """scale.needs.<model> (one of the five names) overrides needs.infer for that model's
    stage only; --gpus-per-shard / --cpus-per-shard still win."""
    (tmp_path / "params.yaml").write_text(
        "data: {meta: meta.json}\npaths: {outputs: outputs}\nmodels: {}\n"
        "scale: {needs: {infer: {gpus: 0.5, cpus: 2}, vit_huge: {gpus: 1}}}\n"
    )
    args = types.SimpleNamespace(dag_params=str(tmp_path / "params.yaml"))
    for model, want in (("vit_huge", (1, 2)), ("soc", (0.5, 2))):
        n = infer_settings(args, model).needs_of("infer")
        assert (n.gpus, n.cpus) == want, model
    args.scale_gpus, args.scale_cpus = 2.0, 8.0
    n = infer_settings(args, "vit_huge").needs_of("infer")
    assert (n.gpus, n.cpus) == (2.0, 8.0)


def test_a_uninext_shard_gets_its_own_work_folders(tmp_path):
    """Docker mode: the folders UNINEXT's published code writes at fixed paths are made
    per shard, as the user, inside the stage's shards folder, before `docker run`."""
    attempt = tmp_path / "outputs/rvos/.vit_huge.shards/.k.attempt-1"
    (tmp_path / "pre" / "bert-base-uncased").mkdir(parents=True)
    args = ["--model", "vit_huge", "--pretrained", str(tmp_path / "pre"), "--videos-json",
            '["a"]', "--out", str(attempt)]  # fmt: skip
    mounts = {target: (host, mode) for host, target, mode in shard_mounts(args)}
    work = attempt.parent / "..k.attempt-1.uninext-work"
    assert mounts["/mnt/data_16TB/lzy23/test/model_pth"] == (str(work / "model_pth"), "rw")
    assert (work / "model_pth").is_dir() and (work / "dataset").is_dir()
    shutil.rmtree(tmp_path / "pre")
    # a read-only folder the published code needs, missing: refused, not made by Docker
    with pytest.raises(KitError, match="bert-base-uncased: not found"):
        shard_mounts(args)


def test_a_missing_uninext_input_is_refused_before_ray(clip, project, capsys):
    args = [a.replace("soc", "vit_huge") for a in _infer(clip, "data")]
    rc = main(["run", "--stage", "rvos_vit_huge", "--", *args, "--out", "outputs/rvos/v"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("rvos-kit run: error: ") and "bert-base-uncased: not found" in err[-1]
    assert _calls(project) == [] and not list((project.root / "outputs").rglob("*.shards"))
