"""``rvos-kit smoke``: every GPU stage on a generated clip, random weights.

Every GPU stage of a params file runs through the same drivers, runner and image or venv
as the real run: minutes to know a machine runs the pipeline, before downloading 20+ GB
of weights.

    rvos-kit smoke [--params params.yaml] [--device cuda|cpu] [--stages soc,aot,...]
                   [--out smoke.json] [--work DIR] [--seed 0] [--frames N] [--size HxW]
                   [--compare-msda] [--fail-fast] [--infer-python PY]

The GPU stages of the params file: each model with ``source: infer`` (soc, mutr,
referformer_ft, vit_huge, convnext: the published code at ``infer.upstream``, run by
``rvos-kit run --stage rvos_<model> -- infer``) and each propagation with a network
backend (aot, deaot: the kit's deaotpy backend, ``rvos-kit run -- propagate`` with the
propagation's model, scales, flip, long side and engine). ``--stages`` picks some.

The clip: 2 videos, 2 expressions each, ``--frames`` frames (default 4 on a GPU, 2 on the
CPU) of a textured object moving over a textured background, at ``--size`` (default
720x1280 on a GPU, 48x48 on the CPU), with a start tree and key frames for propagation.
The weights: a random network from ``--seed`` for each model and tiny random text
encoders (``rvos-kit smoke-weights``, run through the same runner as the model, so in its
image or venv), cached under ``WORK/weights/<model>-seed<S>/`` (vit_huge's is ~5 GB);
propagation builds its network from the seed itself (``--random-weights``).

Per stage it prints and writes to ``--out`` (JSON, written atomically): ok or failed
(with the tail of the stage's log, kept in ``WORK/logs/``), seconds (wall, start-up
included) and seconds per frame (per video frame of the clip), the CPU seconds of its
processes, the peak GPU memory (``torch.cuda.max_memory_allocated``, largest over the
stage's processes) and peak host memory (``ru_maxrss``, largest over the stage's
processes and their children), and once: the device name, driver, CUDA and torch
versions. A stage is ok only when it exited 0 and its output is a complete mask tree for
the clip's meta (every video, expression and frame, each PNG of the clip's size). Every
selected stage is tried (``--fail-fast``: stop at the first failure); the exit status is
0 only if every one is ok.

``--compare-msda`` (the modern stack, on a GPU): each infer stage runs twice, with the
compiled deformable-attention op and with the pure-PyTorch path (``infer --msda``), and
reports the pixel agreement of the two trees. On the CPU it reports "not available: no
compiled op".

Each stage runs in one process over every video of the clip (``--videos``): the command
each shard of the real run runs, so no Ray is needed. ``--infer-python PY`` starts the
infer stages' runner with another interpreter (native mode: where the published code's
environment is a separate venv, as in the tests).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .. import catalog
from ..argtypes import declare_paths
from ..compute import probe
from ..errors import KitError
from ..trees.files import atomic_write_bytes

INFER_MODELS = tuple(catalog.MODELS)  # every model of the catalogue has a driver
NETWORK_BACKENDS = tuple(n for n, r in catalog.BACKENDS.items() if r.gpu)  # aot, deaot
VIDEOS, EXPRESSIONS = 2, 2
GPU_SIZE, CPU_SIZE = (720, 1280), (48, 48)


def _size(text: str) -> tuple[int, int]:
    import argparse

    try:
        h, w = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HxW, e.g. 720x1280") from None
    if h < 16 or w < 16:
        raise argparse.ArgumentTypeError(f"{text!r}: at least 16x16")
    return h, w


# ------------------------------------------------------------------------- the plan


def plan_stages(p, where: str, wanted: list[str] | None) -> list[dict]:
    """``[{"name", "kind": infer|propagate, ...}]``: the GPU stages of the loaded params
    ``p`` (:class:`rvos_kit.config.Params`)."""
    stages = []
    for m, spec in p.models.items():
        if spec.source == "infer" and m in INFER_MODELS:
            stages.append({"name": m, "kind": "infer"})
    for prop, c in p.props.items():
        if c.backend in NETWORK_BACKENDS:
            stages.append({"name": prop, "kind": "propagate", "spec": c})
    if not stages:
        raise KitError(
            f"{where}: no GPU stage (no model with source: infer, no propagation with "
            "backend aot or deaot): nothing to smoke-test"
        )
    if wanted is None:
        return stages
    names = [s["name"] for s in stages]
    unknown = [w for w in wanted if w not in names]
    if unknown:
        raise KitError(
            f"--stages: {unknown[0]!r} is not a GPU stage of {where} (it has: {', '.join(names)})"
        )
    return [s for s in stages if s["name"] in set(wanted)]


def make_clip(root: Path, size: tuple[int, int], frames: int, seed: int) -> Path:
    """The clip folder (``JPEGImages/``, ``meta.json``, ``Annotations/``: a start tree,
    ``key_frame.json``), made once per size, frame count and seed."""
    import numpy as np

    from ..trees.synthetic import moving_object_clip, write_propagation_input

    if (root / "key_frame.json").is_file():
        return root
    h, w = size
    rng = np.random.default_rng(seed)
    clips = {}
    for i in range(VIDEOS):
        imgs, masks = moving_object_clip(rng, h, w, frames, step=(max(1, w // 40), 1))
        exps = {str(e): (min(e, frames - 1), "true") for e in range(EXPRESSIONS)}
        clips[f"{i:02d}5e0c1a2b"] = (imgs, masks, exps)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        write_propagation_input(tmp, clips, noise_seed=seed)
        tmp.rename(root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


# ------------------------------------------------------------------------- running


class Smoke:
    def __init__(self, args):
        self.args = args
        self.params = Path(args.params or "params.yaml")
        if not self.params.is_file():
            raise KitError(f"{self.params}: params file not found (give --params PATH)")
        from ..config import load_params  # the one reader (checked); smoke runs natively

        p = load_params(self.params)
        self.p, self.base = p, self.params.resolve().parent
        self.device = args.device or p.device
        cpu = self.device == "cpu"
        self.size = args.size or (CPU_SIZE if cpu else GPU_SIZE)
        self.frames = args.frames or (2 if cpu else 4)
        if self.frames < 1:
            raise KitError("--frames must be >= 1")
        outputs = p.paths.outputs
        self.work = Path(args.work or self.base / outputs / "smoke").resolve()
        self.stages = plan_stages(p, str(self.params), args.stages)
        h, w = self.size
        self.clip = self.work / f"clip-{h}x{w}-f{self.frames}-seed{args.seed}"
        self.python = sys.executable

    def videos(self) -> str:
        """Every video of the clip, named: the stage runs in one process, as each of its
        shards does in the real run (and no Ray is needed)."""
        from ..trees.meta import load_meta

        return ",".join(v.name for v in load_meta(self.clip / "meta.json"))

    def path(self, value: str) -> str:
        return value if os.path.isabs(value) else str(self.base / value)

    def runner(self, stage: str, verb: list[str], python: str | None = None) -> list[str]:
        return [python or self.python, "-m", "rvos_kit", "run", "--params", str(self.params),
                "--stage", stage, "--", *verb]  # fmt: skip

    def execute(self, name: str, argv: list[str], probe_dir: Path) -> tuple[int, float, str]:
        """Run ``argv`` with its output in ``WORK/logs/<name>.log``; exit status, wall
        seconds and the log's tail."""
        log = self.work / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(probe_dir, ignore_errors=True)
        env = dict(os.environ, **{probe.ENV: str(probe_dir)})
        t0 = time.monotonic()
        with open(log, "wb") as f:
            f.write((" ".join(argv) + "\n").encode())
            f.flush()
            rc = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
        secs = time.monotonic() - t0
        tail = log.read_text(errors="replace").splitlines()[-25:]
        return rc, secs, "\n".join(tail)

    # -- the infer stages
    def upstream(self) -> str:
        up = self.p.infer.upstream if self.p.infer is not None else None
        if not up:
            raise KitError(f"{self.params}: infer.upstream is not set (the published code)")
        return self.path(str(up))

    def weights(self, model: str, rec: dict) -> Path:
        w = self.work / "weights" / f"{model}-seed{self.args.seed}"
        if (w / "checkpoint.pth").is_file():
            rec["weights"] = "cached"
            return w
        verb = ["smoke-weights", "--model", model, "--upstream", self.upstream(),
                "--out", str(w), "--seed", str(self.args.seed)]  # fmt: skip
        argv = self.runner(f"rvos_{model}", verb, self.args.infer_python)
        rc, secs, tail = self.execute(f"{model}-weights", argv, self.work / "probe" / "w")
        rec["weights"], rec["weights_seconds"] = "made", round(secs, 1)
        if rc != 0:
            raise StageFailed(f"smoke-weights exited {rc}:\n{tail}")
        return w

    def png_run(self, model: str) -> str | None:
        """The PNG-run tree the real run also writes (mutr under challenge2023), or None."""
        if self.p.compat != "challenge2023":
            return None
        return catalog.MODELS[model].png_run

    def infer_argv(self, model: str, w: Path, out: Path, msda: str | None) -> list[str]:
        inf = self.p.infer
        verb = ["infer", "--model", model, "--meta", str(self.clip / "meta.json"),
                "--images", str(self.clip / "JPEGImages"), "--split", "valid",
                "--upstream", self.upstream(), "--checkpoint", str(w / "checkpoint.pth"),
                "--pretrained", str(w / "pretrained"), "--out", str(out),
                "--device", self.device]  # fmt: skip
        verb += ["--videos", self.videos()]
        if inf is not None and inf.chunk_videos:
            verb += ["--chunk-videos", str(inf.chunk_videos)]
        if self.png_run(model):
            verb += ["--png-run"]
        if msda is not None:
            verb += ["--msda", msda]
        return self.runner(f"rvos_{model}", verb, self.args.infer_python)

    def trees_of(self, stage: dict, out: Path) -> list[Path]:
        if stage["kind"] == "propagate":
            return [out]
        png = self.png_run(stage["name"])
        return [out / "Annotations", *([out / png] if png else [])]

    def propagate_argv(self, stage: dict, out: Path) -> list[str]:
        from .dag.propagate import network_args

        c, clip = stage["spec"], self.clip
        verb = ["propagate", "--images", str(clip / "JPEGImages"),
                "--annotations", str(clip / "Annotations"),
                "--keyframes", str(clip / "key_frame.json"), "--meta", str(clip / "meta.json"),
                "--out", str(out), "--backend", c.backend, "--model", c.network,
                "--device", self.device, "--random-weights", str(self.args.seed),
                *network_args(c), "--videos", self.videos()]  # fmt: skip
        return self.runner(f"propagate_{stage['name']}_smoke", verb)

    def run_stage(self, stage: dict, env: dict) -> dict:
        name = stage["name"]
        rec = {"stage": name, "kind": stage["kind"], "ok": False, "error": None}
        out = self.work / "runs" / name
        shutil.rmtree(out, ignore_errors=True)
        try:
            if stage["kind"] == "infer":
                w = self.weights(name, rec)
                # --compare-msda: the compiled op first; else as the params say
                inf = self.p.infer
                msda = "compiled" if self.compare_msda() is None else inf and inf.msda
                argv = self.infer_argv(name, w, out, msda)
            else:
                argv = self.propagate_argv(stage, out)
            probe_dir = self.work / "probe" / name
            rc, secs, tail = self.execute(name, argv, probe_dir)
            n = VIDEOS * self.frames
            rec.update(seconds=round(secs, 2), frames=n, seconds_per_frame=round(secs / n, 3))
            rec.update(peaks(probe.read_records(probe_dir), env))
            if rc != 0:
                raise StageFailed(f"exited {rc}:\n{tail}")
            for tree in self.trees_of(stage, out):
                check_complete(tree, self.clip / "meta.json", self.size)
            rec["ok"] = True
            if stage["kind"] == "infer":
                rec["msda_agreement"] = self.msda_agreement(stage, w, out)
        except (StageFailed, KitError) as e:
            rec["error"] = str(e)
        return rec

    def compare_msda(self) -> str | None:
        """None when --compare-msda can run; else why not."""
        if not self.args.compare_msda:
            return "not asked (--compare-msda)"
        if self.device != "cuda":
            return "not available: no compiled op (--device cpu)"
        if not infer_has_msda():
            return "not available: this kit's infer has no --msda (the modern stack's option)"
        return None

    def msda_agreement(self, stage: dict, w: Path, out: Path):
        why = self.compare_msda()
        if why is not None:
            return why
        name = stage["name"]
        other = self.work / "runs" / f"{name}-pytorch"
        shutil.rmtree(other, ignore_errors=True)
        argv = self.infer_argv(name, w, other, "pytorch")
        rc, secs, tail = self.execute(f"{name}-pytorch", argv, self.work / "probe" / "pt")
        if rc != 0:
            raise StageFailed(f"the pure-PyTorch run (--msda pytorch) exited {rc}:\n{tail}")
        return agreement(out / "Annotations", other / "Annotations", self.clip / "meta.json")


class StageFailed(Exception):
    pass


def infer_has_msda() -> bool:
    import argparse

    from ..stages.rvos import infer

    sub = argparse.ArgumentParser().add_subparsers()
    infer.register(sub)
    return any("--msda" in a.option_strings for a in sub.choices["infer"]._actions)


def peaks(records: list[dict], env: dict) -> dict:
    """The stage's peaks over its processes' probe records; fills ``env`` (torch, CUDA,
    device) from the first record that has them."""
    gpu = [r["gpu_peak_bytes"] for r in records if r.get("gpu_peak_bytes") is not None]
    host = [r["host_peak_kb"] for r in records if r.get("host_peak_kb") is not None]
    for r in records:
        for k in ("torch", "cuda", "device"):
            if r.get(k) and not env.get(k):
                env[k] = r[k]
    # CPU: every kit process's own, plus what the published scripts infer starts used
    # (its children: UNINEXT's train_net.py); the runner's children are kit processes
    cpu = sum(r.get("cpu_self_s", 0) for r in records)
    cpu += sum(r.get("cpu_children_s", 0) for r in records if r.get("argv", [""])[0] == "infer")
    return {
        "cpu_seconds": round(cpu, 1),
        "gpu_peak_bytes": max(gpu) if gpu else None,
        "host_peak_bytes": max(host) * 1024 if host else None,
        "processes": len(records),
    }


def check_complete(tree: Path, meta_path: Path, size: tuple[int, int]) -> None:
    """``tree`` holds exactly one PNG per video, expression and frame of meta, each of
    the clip's size, and nothing else."""
    from ..trees.masktree import check_tree, read_mask, tree_files
    from ..trees.meta import load_meta

    meta = load_meta(meta_path)
    check_tree(tree, meta)
    want = {f"{v.name}/{e}/{f}.png" for v in meta for e in v.exp_ids for f in v.frames}
    got = tree_files(tree)
    if got != want:
        extra = sorted(got - want) or sorted(want - got)
        raise StageFailed(f"{tree}: not the clip's tree ({extra[0]!r} differs)")
    for rel in sorted(want):
        shape = read_mask(tree / rel).shape
        if tuple(shape) != tuple(size):
            raise StageFailed(f"{tree / rel}: {shape[1]}x{shape[0]} PNG, the clip is "
                              f"{size[1]}x{size[0]}")  # fmt: skip


def agreement(a: Path, b: Path, meta_path: Path) -> dict:
    """Pixel agreement of two trees of the same meta."""
    import numpy as np

    from ..trees.masktree import read_mask
    from ..trees.meta import load_meta

    same = total = identical = n = 0
    for v in load_meta(meta_path):
        for e in v.exp_ids:
            for f in v.frames:
                x, y = (read_mask(t / v.name / e / f"{f}.png") for t in (a, b))
                eq = int(np.count_nonzero(x == y))
                same, total, n = same + eq, total + x.size, n + 1
                identical += eq == x.size
    return {"pixel_agreement": same / total, "identical_masks": identical, "masks": n}


def environment(device: str) -> dict:
    """The driver (nvidia-smi) and Python; torch, CUDA and the device name come from the
    stages' own processes (their probe records)."""
    import platform

    env = {"python": platform.python_version(), "driver": None, "torch": None, "cuda": None,
           "device": None}  # fmt: skip
    if device == "cpu":
        env["device"] = f"CPU ({platform.processor() or platform.machine()}, "
        env["device"] += f"{os.cpu_count()} cores)"
    smi = shutil.which("nvidia-smi")
    if smi and device != "cpu":
        try:
            q = subprocess.run([smi, "--query-gpu=name,driver_version", "--format=csv,noheader"],
                               capture_output=True, text=True, timeout=30)  # fmt: skip
            first = q.stdout.strip().splitlines()[0].rsplit(",", 1)
            env["gpu_name"], env["driver"] = first[0].strip(), first[1].strip()
        except (OSError, IndexError, subprocess.SubprocessError):
            pass
    return env


def _mb(b) -> str:
    return "-" if b is None else f"{b / 1024**2:,.0f} MB"


def line(rec: dict) -> str:
    if "seconds" not in rec:
        return f"  {rec['stage']:<15} FAILED"
    ok = "ok    " if rec["ok"] else "FAILED"
    s = (f"  {rec['stage']:<15} {ok} {rec['seconds_per_frame']:8.2f} s/frame "
         f"({rec['seconds']:.1f} s, CPU {rec['cpu_seconds']:.0f} s)  "
         f"GPU peak {_mb(rec['gpu_peak_bytes'])}  "
         f"host peak {_mb(rec['host_peak_bytes'])}")  # fmt: skip
    agree = rec.get("msda_agreement")
    if isinstance(agree, dict):
        s += f"  msda agreement {agree['pixel_agreement']:.6f}"
    return s


def run(args) -> int:
    s = Smoke(args)
    env = environment(s.device)
    h, w = s.size
    print(f"smoke: {len(s.stages)} stages on {VIDEOS} videos x {EXPRESSIONS} expressions x "
          f"{s.frames} frames at {h}x{w}, device {s.device}, seed {args.seed} "
          f"({s.work})")  # fmt: skip
    make_clip(s.clip, s.size, s.frames, args.seed)
    results = []
    for stage in s.stages:
        rec = s.run_stage(stage, env)
        results.append(rec)
        print(line(rec), flush=True)
        if rec["error"]:
            print("    " + rec["error"].replace("\n", "\n    "), flush=True)
        if rec["error"] and args.fail_fast:
            break
    ok = len(results) == len(s.stages) and all(r["ok"] for r in results)
    print(f"smoke: device {env.get('device')}, driver {env.get('driver')}, CUDA "
          f"{env.get('cuda')}, torch {env.get('torch')}, Python {env['python']}")  # fmt: skip
    if args.compare_msda and s.compare_msda():
        print(f"smoke: --compare-msda {s.compare_msda()}")
    report = {
        "ok": ok, "device": s.device, "size": [h, w], "videos": VIDEOS,
        "expressions": EXPRESSIONS, "frames": s.frames, "seed": args.seed,
        "params": str(s.params), "environment": env, "stages": results,
        "skipped": [st["name"] for st in s.stages[len(results):]],
    }  # fmt: skip
    if args.out:
        atomic_write_bytes(args.out, (json.dumps(report, indent=2) + "\n").encode())
    print(f"smoke: {sum(r['ok'] for r in results)} of {len(s.stages)} stages ok"
          + (f" -> {args.out}" if args.out else ""))  # fmt: skip
    return 0 if ok else 1


def register(sub) -> None:
    p = sub.add_parser(
        "smoke",
        help="run every GPU stage of a params file on a generated clip with random weights",
        description=__doc__,
    )
    p.add_argument("--params", help="params.yaml whose GPU stages to run (default ./params.yaml)")
    p.add_argument("--device", choices=("cuda", "cpu"), help="default: device of the params")
    p.add_argument("--stages", type=lambda t: [x for x in t.split(",") if x],
                   metavar="A,B", help="only these (model or propagation names)")  # fmt: skip
    p.add_argument("--out", help="write the results here as JSON")
    p.add_argument("--work", help="clip, weights, logs, outputs (default: OUTPUTS/smoke)")
    p.add_argument("--seed", type=int, default=0, help="clip and weights")
    p.add_argument("--frames", type=int, metavar="N", help="frames per video")
    p.add_argument("--size", type=_size, metavar="HxW", help="frame size")
    p.add_argument(
        "--compare-msda",
        action="store_true",
        help="also run each infer stage with the pure-PyTorch op; pixel agreement",
    )
    p.add_argument("--fail-fast", action="store_true", help="stop at the first failed stage")
    p.add_argument(
        "--infer-python",
        metavar="PY",
        help="interpreter that starts the infer stages' runner (default: this one)",
    )
    declare_paths(p, reads=("params",), writes=("out",), writes_into=("work",))
    p.set_defaults(func=run)
