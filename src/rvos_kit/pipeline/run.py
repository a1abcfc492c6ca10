"""``rvos-kit run``: a verb, natively or in the Docker image its stage needs.

    rvos-kit run [--params params.yaml] [--stage NAME] [--runner native|docker] [--dry-run]
                 -- <verb> <args...>

Every DVC stage that may need a GPU stack goes through this entry point. The image is
chosen from ``runner.stages`` in params.yaml (a stage name, or else the verb name, mapped
to a key of ``runner.images``); an unlisted stage runs natively. CPU-only verbs (vote,
keyframes, pack, evaluate, audit, import-zip, import-pth, fetch, verify, ...) and
``propagate --backend flow`` always run natively, whatever the mode. Natively means
``python -m rvos_kit <verb> <args>`` in a child process of the current interpreter.

In docker mode the command line is::

    docker run --rm --init --pull never --gpus all --user UID:GID --network none
        --shm-size 8g --env HOME=/tmp --env PYTHONDONTWRITEBYTECODE=1
        [--env PYTHONPATH=<kit source>]
        --volume <project>:<project>:ro            (cwd and the params.yaml folder)
        --volume <outputs>:<outputs>:rw            (paths.outputs, created first)
        --volume <path>:<path>:ro ...              (data, checkpoints, every existing path
                                                    named in the arguments that lies
                                                    outside the folders above)
        --workdir <cwd> IMAGE python -m rvos_kit <verb> <args...>

``infer`` stages differ in three ways: exactly one GPU (``--gpus device=N``: the single
id in CUDA_VISIBLE_DEVICES when a scheduler set one, else the first of ``runner.gpus``);
``--meta``/``--images``/``--checkpoint``/``--pretrained`` are mounted read-only even
before they exist (``--dry-run`` prints the complete command; a real run refuses a missing
one first); and the paths the published code hard-codes are mounted where it looks
(``--volume <host>:/mnt/data_16TB/...``), from the table beside the model's driver
(``CONTAINER_PATHS`` in ``rvos_kit/stages/rvos/infer/uninext.py``;
:mod:`rvos_kit.stages.rvos.infer.mounts`).

An ``infer`` over every video of meta (no ``--videos``, ``--videos-json`` or ``--shard``:
what the ``rvos_<model>`` stages run) is not one container: this process drives it as
shards on Ray (``scale.*`` of the same params file, docs/scale.md), each shard the command
above for its own videos (``--videos-json``, ``--out`` its attempt folder) on the one GPU
Ray assigned it (``--gpus device=N``), and merges them, checked against meta
(:mod:`rvos_kit.stages.rvos.infer.sharded`). ``--dry-run`` prints the one-container line.

Every folder is mounted at its own (resolved) path, so the verb's arguments mean the same
inside and outside the container and symlinked data or checkpoint folders keep working.
The user's uid:gid is kept, so outputs belong to the user. ``--pull never``: the image is
built locally (``make images``), never fetched by name from a registry. ``--network none``:
a stage reads only what the checkpoint lock pinned. When the kit runs from a source
checkout, that checkout's ``src`` is mounted and put first on PYTHONPATH, so the container
runs exactly the code DVC tracks; the image supplies the environment.

params.yaml keys read (defaults when absent)::

    runner.mode        native            native | docker (--runner overrides)
    runner.gpus        all               all | N | "0,1" | none
    runner.stack       published         published | modern: every stage that has an
                                         image runs in runner.images.modern
    runner.images      {rvos: rvos-kit/rvos:<version>, uninext: rvos-kit/uninext:<version>,
                        modern: rvos-kit/modern:<version>}
    runner.stages      propagate, rvos_soc, rvos_mutr, rvos_referformer_ft -> rvos;
                       rvos_vit_huge, rvos_convnext -> uninext (keys are DVC stage names;
                       the older infer_<model> still works)
    runner.shm_size    8g                PyTorch DataLoader workers need shared memory
    runner.network     none              none | bridge | host
    runner.allow_mounts_outside_project
                       false             true: / , home or a folder above the project may
                                         be mounted (read-write stays outputs-only)
    paths.outputs      outputs           mounted read-write
    paths.checkpoints  checkpoints       mounted read-only when it exists
    data.root / data.* (meta, images, gt): mounted read-only when they exist

Paths in params.yaml are relative to its folder. A missing params.yaml (default path)
means all defaults; a missing ``--params FILE`` given explicitly is an error.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path

from ..argtypes import declare_paths
from ..compute.docker import (
    IN_CONTAINER_ENV,
    MODES,
    NATIVE_ENV,
    check_docker,
    image_key,
    infer_inputs,
    kit_source_dir,
    load_settings,
    native_argv,
    option_value,
    plan_docker,
)
from ..errors import KitError
from ..stages.rvos.infer.mounts import mounts_for_args, prepare_container


def prepare_infer(args: list[str], cwd: Path) -> None:
    """Before ``docker run`` of ``infer``: every input path must exist (Docker would mount
    a missing one as a new empty root-owned folder), and the host side of each writable
    upstream mount is created here, as the user."""
    model, out = option_value(args, "--model"), option_value(args, "--out")
    if model and out:
        prepare_container(model, cwd / out)
    hosts = [Path(h) for h, _, _ in mounts_for_args(args)]
    missing = [str(p) for p in [*infer_inputs(args, cwd), *hosts] if not p.exists()]
    if missing:
        raise KitError(f"infer: {missing[0]} not found (`rvos-kit preflight` lists all)")


SHARDS_NOTE = (
    "(a real run shards this stage on Ray: each shard runs this command with "
    "--videos-json [its videos] --out <its attempt folder> and --gpus device=<the GPU "
    "Ray assigned it>; docs/scale.md)"
)


class _Unparsed(Exception):
    pass


class _QuietParser(argparse.ArgumentParser):
    def error(self, message):
        raise _Unparsed(message)


def infer_stage(verb: str, vargs: list[str]):
    """``infer`` over every video of meta, parsed, when this process can shard it on Ray
    (:func:`rvos_kit.stages.rvos.infer.sharded.whole_stage_args`); else None."""
    if verb != "infer" or "-h" in vargs or "--help" in vargs:
        return None
    from ..stages.rvos.infer import register
    from ..stages.rvos.infer.sharded import whole_stage_args

    parser = _QuietParser(prog="rvos-kit")
    register(parser.add_subparsers())
    try:
        return whole_stage_args(parser, ["infer", *vargs])
    except _Unparsed:  # the verb reports its usage error itself, in the image
        return None


def run_infer_shards(whole, settings, image: str, args) -> int:
    """Docker mode, ``infer`` over every video: this process drives the shards on Ray
    (``scale:`` of the same params file), each a ``docker run`` of the image on the GPU
    Ray gave it, and merges them (:mod:`rvos_kit.stages.rvos.infer.sharded`)."""
    from ..stages.rvos.infer.sharded import run_sharded_infer

    params = args.params or ("params.yaml" if Path("params.yaml").is_file() else None)
    whole.dag_params = params
    print(
        f"rvos-kit run: infer --model {whole.model} as shards on Ray, each in image {image}",
        file=sys.stderr,
        flush=True,
    )
    return run_sharded_infer(whole, runner=settings, stage=args.stage)


def execute(argv: list[str], env: dict | None = None) -> int:
    """Run ``argv`` and return its exit status (128 + N when killed by signal N)."""
    proc = subprocess.Popen(argv, env=env)
    while True:
        try:
            rc = proc.wait()
            break
        except KeyboardInterrupt:  # the child got the same SIGINT: let it finish
            continue
    return 128 - rc if rc < 0 else rc


def run(args) -> int:
    cmd = list(args.command)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise KitError("give the verb to run after --, e.g. rvos-kit run -- vote --help")
    verb, vargs = cmd[0], cmd[1:]
    if verb == "run":
        raise KitError("the verb to run cannot be `run` itself")
    settings = load_settings(args.params)
    mode = args.runner or settings.mode
    key = image_key(settings, verb, vargs, args.stage)
    inside = os.environ.get(IN_CONTAINER_ENV) == "1"
    whole = None  # docker mode: infer over every video, sharded on Ray
    env = None
    if mode == "native" or key is None or inside:
        argv = native_argv(verb, vargs)
        where = "native"
        # and its shards (a sharded infer/propagate reads runner.mode of its params file)
        env = {**os.environ, NATIVE_ENV: "1"}
    else:
        image = settings.images[key]
        whole = infer_stage(verb, vargs)
        if whole is not None and not args.dry_run:  # each shard in the image (docs/scale.md)
            return run_infer_shards(whole, settings, image, args)
        if not args.dry_run:
            docker = check_docker(image)
        else:
            docker = "docker"
        kit_src = kit_source_dir()
        cwd = Path.cwd()
        if not args.dry_run:
            (settings.base / settings.outputs).mkdir(parents=True, exist_ok=True)
            if verb == "infer":
                prepare_infer(vargs, cwd)
        argv = plan_docker(
            settings,
            image,
            verb,
            vargs,
            cwd=cwd,
            uid=os.getuid(),
            gid=os.getgid(),
            kit_src=kit_src,
            docker=docker,
            visible=os.environ.get("CUDA_VISIBLE_DEVICES"),
            extra_mounts=mounts_for_args(vargs) if verb == "infer" else (),
        )
        where = f"image {image}"
    line = shlex.join(argv)
    if args.dry_run:
        print(line)
        if whole is not None:
            print(SHARDS_NOTE, file=sys.stderr)
        return 0
    print(f"rvos-kit run ({where}): {line}", file=sys.stderr, flush=True)
    try:
        return execute(argv, env)
    except OSError as e:
        raise KitError(f"cannot start {argv[0]}: {e}") from None


def register(sub) -> None:
    p = sub.add_parser(
        "run",
        help="run a verb natively or in the Docker image its stage needs (GPU stages)",
        description=__doc__,
    )
    p.add_argument("--params", help="params.yaml with the runner keys (default: ./params.yaml)")
    p.add_argument("--stage", help="stage name looked up in runner.stages (default: the verb)")
    p.add_argument("--runner", choices=MODES, help="override runner.mode")
    p.add_argument("--dry-run", action="store_true", help="print the command, run nothing")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- VERB ARGS...")
    declare_paths(p, reads=("params",))  # the verb it runs checks its own paths
    p.set_defaults(func=run)
