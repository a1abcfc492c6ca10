"""``rvos-kit preflight``: before a long ``dvc repro``, list everything a pipeline needs
that is not here (dataset, dumps, downloads, checkpoints, GPU, Docker), each with how to
get it. Exit 0 when nothing is missing, 2 otherwise (no traceback).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from .errors import KitError
from .params import load_params


def _produced_by_sample(p: dict, path: str) -> bool:
    s = p.get("sample")
    if not s:
        return False
    out = os.path.normpath(s["out"])
    return os.path.normpath(path) == out or os.path.normpath(path).startswith(out + os.sep)


def missing_inputs(params_path) -> list[str]:
    params_path = Path(params_path)
    p = load_params(params_path)
    base = params_path.parent
    problems: list[str] = []

    def need(path: str | None, what: str, how: str) -> None:
        if path and not _produced_by_sample(p, path) and not (base / path).exists():
            problems.append(f"{what}: {os.path.normpath(base / path)} not found. {how}")

    data = p["data"]
    get_data = (
        "Download Ref-YouTube-VOS (https://youtube-vos.org/dataset/rvos/) and set data.* in "
        f"{params_path.name}"
    )
    need(data["meta"], "meta_expressions", get_data)
    need(data.get("images"), "JPEG frames", get_data)
    need(data.get("gt"), "ground truth", f"set data.gt: null in {params_path.name} if none")

    from .dag import _Builder

    builder = _Builder(p, base)
    stages = builder.build()["stages"]  # only what the pipeline's targets consume
    lock_path = p["paths"].get("lock", "checkpoints.lock")
    downloads = p["paths"].get("downloads", ".")
    # commands to type from the current folder, not from the params file's
    lock_cmd = os.path.relpath(base / lock_path)
    dest_cmd = os.path.relpath(base / downloads)
    for stage in stages:
        if stage.startswith("fetch_"):
            name = stage[len("fetch_") :]
            need(
                os.path.join(downloads, builder.lock().get(name).path),
                f"released artifact {name}",
                f"run `rvos-kit fetch {name} --lock {lock_cmd} --dest {dest_cmd}` on a "
                "machine that reaches Google Drive (or place the file there; `rvos-kit verify` "
                "checks it)",
            )
    for name, m in p["models"].items():
        if m["source"] == "tree":
            need(m["tree"], f"models.{name} tree", f"point models.{name}.tree at a model dir")
        elif m["source"] == "imported" and f"rvos_{name}" in stages:
            for d in m["dumps"]:
                need(d, f"models.{name} dump", "the original inference .pth (spec 3)")
    infer = [n for n, m in p["models"].items() if m["source"] == "infer" and f"rvos_{n}" in stages]
    if infer:
        problems.append(
            f"models {', '.join(infer)}: source: infer -- RVOS inference inside the Docker "
            "images is not available yet (the model code lands with a later issue). Use "
            "source: imported with dumps: [<model>.pth] (the original inference dumps), or "
            "run `make audit` to recompute stage 2 from the authors' released intermediates"
        )
    gpu = False
    for prop, c in (p.get("propagation") or {}).items():
        computed = [
            n for n in c["nodes"]
            if "import-zip" not in stages.get(f"propagate_{prop}_{n}", {}).get("cmd", "import-zip")
        ]  # fmt: skip
        if c["backend"] != "flow" and computed:
            gpu = gpu or p.get("device", "cuda") == "cuda"
            name = "aot_swinl" if c["backend"] == "aot" else "deaot_swinl"
            need(
                c.get("checkpoint"),
                f"propagation.{prop} checkpoint",
                f"run `rvos-kit fetch {name} --lock {lock_cmd} --dest {dest_cmd}`",
            )
    mode = (p.get("runner") or {}).get("mode", "native")
    if gpu and mode == "native":
        try:
            import torch

            ok = torch.cuda.is_available()
        except ImportError:  # pragma: no cover
            ok = False
        if not ok:
            problems.append(
                "GPU: device: cuda but torch sees no CUDA device here. Run on a GPU machine "
                "(runner.mode: docker for the pinned images) or set device: cpu (very slow)"
            )
    if mode == "docker":
        docker = shutil.which("docker")
        if docker is None:
            problems.append("Docker: `docker` not found; install Docker + NVIDIA toolkit")
        else:
            r = subprocess.run([docker, "info"], capture_output=True, timeout=30)
            if r.returncode != 0:
                problems.append("Docker: no engine answers `docker info`; start the daemon")
    return problems


def run(args) -> int:
    problems = missing_inputs(args.params)
    if problems:
        lines = "\n".join(f"  - {x}" for x in problems)
        raise KitError(f"{args.params}: cannot run yet, {len(problems)} missing:\n{lines}")
    print(f"{args.params}: every input is present")
    return 0


def register(sub) -> None:
    p = sub.add_parser("preflight", help="list what a pipeline needs that is missing",
                       description=__doc__)  # fmt: skip
    p.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    p.set_defaults(func=run)
