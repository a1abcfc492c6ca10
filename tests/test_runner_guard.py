"""What params.yaml may make ``rvos-kit run`` do to the host (issue 21, cases 7 and 8):
no mount of ``/``, the home folder or a folder above the project unless
``runner.allow_mounts_outside_project`` says so; read-write only inside the outputs; and
image references that are references, never options. Through the real CLI (``--dry-run``
prints the exact docker command a real run would start)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from rvos_kit.cli import main
from rvos_kit.compute.docker import Settings, load_settings, plan_docker
from rvos_kit.errors import KitError
from rvos_kit.pipeline.params import check_params

REPO = Path(__file__).resolve().parents[1]


def repo_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


PROPAGATE = ["propagate", "--images", "data/JPEGImages", "--backend", "aot",
             "--out", "outputs/propagated/aot/soc"]  # fmt: skip


def project(tmp_path: Path, runner: str = "", outputs: str = "outputs") -> Path:
    root = tmp_path / "home" / "me" / "proj"
    (root / "data" / "JPEGImages").mkdir(parents=True)
    (root / "params.yaml").write_text(
        f"data: {{meta: meta.json}}\nmodels: {{}}\n"
        f"paths: {{outputs: {outputs!r}}}\nrunner:\n  mode: docker\n{runner}"
    )
    return root


def dry_run(root: Path, capsys, *verb: str) -> tuple[int, list[str], str]:
    rc = main(["run", "--dry-run", "--params", str(root / "params.yaml"), "--", *verb])
    out, err = capsys.readouterr()
    return rc, shlex.split(out), err


def volumes(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == "--volume"]


@pytest.fixture
def home(tmp_path, monkeypatch):
    h = tmp_path / "home" / "me"
    h.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(h))
    return h


@pytest.mark.parametrize("outputs", ["/", "../../..", "..", "~"])
def test_outputs_at_root_home_or_above_the_project_are_refused(tmp_path, home, capsys,
                                                                monkeypatch, outputs):  # fmt: skip
    root = project(tmp_path, outputs=str(home) if outputs == "~" else outputs)
    monkeypatch.chdir(root)
    rc, argv, err = dry_run(root, capsys, *PROPAGATE)
    assert rc == 2 and argv == [], argv
    assert "paths.outputs" in err and "runner.allow_mounts_outside_project: true" in err
    assert ":rw" not in err.replace("read-write", "")


def test_the_key_allows_them_explicitly(tmp_path, home, capsys, monkeypatch):
    root = project(tmp_path, "  allow_mounts_outside_project: true\n", outputs="..")
    monkeypatch.chdir(root)
    rc, argv, _ = dry_run(root, capsys, *PROPAGATE)
    assert rc == 0
    assert f"{home}:{home}:rw" in volumes(argv)


def test_inputs_at_root_or_home_are_refused_too(tmp_path, home, capsys, monkeypatch):
    root = project(tmp_path)
    monkeypatch.chdir(root)
    for where in ("/", str(home), str(root.parent)):
        rc, argv, err = dry_run(root, capsys, "propagate", "--images", where, "--backend", "aot")
        assert rc == 2 and argv == []
        assert f"argument {where!r}" in err and "read-only" in err
    # run from the home folder with the project's params: the working folder is mounted
    monkeypatch.chdir(home)
    rc, argv, err = dry_run(root, capsys, *PROPAGATE)
    assert rc == 2 and "the working folder" in err and "your home folder" in err
    # inside the project, and data elsewhere that is not above it: fine
    elsewhere = tmp_path / "bigdisk" / "JPEGImages"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(root)
    rc, argv, _ = dry_run(root, capsys, "propagate", "--images", str(elsewhere), "--out", "o")
    assert rc == 0 and f"{elsewhere}:{elsewhere}:ro" in volumes(argv)


def test_nothing_outside_the_outputs_is_mounted_read_write(tmp_path, home):
    """The UNINEXT work folder beside an --out outside paths.outputs would be a writable
    mount that is no output: refused even with the key (the container could not write
    --out there anyway)."""
    root = project(tmp_path, "  allow_mounts_outside_project: true\n")
    s = load_settings(root / "params.yaml")
    extra = [(str(tmp_path / "scratch" / ".x.uninext-work" / "model_pth"), "/mnt/dump", "rw")]
    with pytest.raises(KitError, match="not inside the outputs folder"):
        plan_docker(s, "img", "infer", [], cwd=root, uid=1, gid=1, extra_mounts=extra)
    inside = [(str(root / "outputs" / "rvos" / ".x.uninext-work" / "model_pth"), "/mnt/d", "rw")]
    plan_docker(s, "img", "infer", [], cwd=root, uid=1, gid=1, extra_mounts=inside)


@pytest.mark.parametrize(
    "ref",
    [
        "--volume=/:/host:rw",
        "-v",
        "--privileged",
        "rvos kit",
        "Upper/Case",
        "a:b:c",
        "x@sha256:abc",
        "x@md5:" + "0" * 32,
        "name:" + "t" * 129,
        "a//b",
        "a/-b",
    ],
)
def test_image_references_that_are_not_references_are_refused(tmp_path, capsys, monkeypatch,
                                                              ref):  # fmt: skip
    root = tmp_path / "p"
    root.mkdir()
    (root / "params.yaml").write_text(
        "data: {meta: meta.json}\nmodels: {}\n"
        f"paths: {{outputs: outputs}}\nrunner:\n  mode: docker\n  images: {{rvos: {ref!r}}}\n"
    )
    monkeypatch.chdir(root)
    rc, argv, err = dry_run(root, capsys, *PROPAGATE)
    assert rc == 2 and argv == []
    assert "runner.images.rvos" in err and "not a Docker image reference" in err
    if ref:
        assert ref.split(":")[0] not in capsys.readouterr().out
    with pytest.raises(KitError, match="not a Docker image reference"):
        plan_docker(Settings(base=root), ref, "propagate", [], cwd=root, uid=1, gid=1)
    with pytest.raises(KitError, match="runner.images.rvos"):
        check_params({**repo_params(), "runner": {"images": {"rvos": ref}}})


@pytest.mark.parametrize(
    "ref",
    [
        "rvos-kit/rvos:0.1.0",
        "ubuntu",
        "localhost:5000/team/rvos_kit:v1.2-rc.3",
        "registry.example.com/a__b/c.d-e:latest",
        "[::1]:5000/x",
        "x@sha256:" + "a" * 64,
        "x:t@sha256:" + "0" * 64,
    ],
)
def test_real_references_pass(ref):
    from rvos_kit.compute.runguard import image_ref_error

    assert image_ref_error(ref) is None


def test_the_key_is_in_the_params_schema():
    check_params({**repo_params(), "runner": {"allow_mounts_outside_project": True}})
    with pytest.raises(KitError, match="allow_mounts_outside_project"):
        check_params({**repo_params(), "runner": {"allow_mounts_outside_project": "yes"}})
