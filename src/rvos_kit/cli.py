"""``rvos-kit <verb>``: one thin verb per pipeline stage.

Every verb lives in its own module, which defines ``register(subparsers)``: it adds its
sub-parser and sets ``func`` (called with the parsed args, returns the exit status).
Errors meant for the user are :class:`~rvos_kit.errors.KitError`: printed on one line,
exit status 2, no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from . import __version__
from .errors import KitError
from .helptext import HelpFormatter, plain

# In DAG order: data -> rvos outputs -> key frames -> propagate -> fuse -> package ->
# evaluate / audit. (module, in rvos_kit)
VERB_MODULES = (
    "sample",
    "meta",
    "artifacts",
    "infer",
    "importers",
    "keyframes",
    "propagate",
    "fusion",
    "pack",
    "evaluate",
    "audit",
    "summary",
    "report",
    "dag",
    "preflight",
    "runner",
)

DESCRIPTION = """\
Reproducibility kit for the 1st-place ICCV 2023 LSVOS track-3 solution.
A mask tree is <root>/<video>/<exp_id>/<frame>.png (8-bit grayscale, 255 = object).
Run `rvos-kit <verb> --help` for each stage. "Contract section N" and "quirk 9.N"
refer to the headings of docs/contract.md."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rvos-kit",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"rvos-kit {__version__}")
    g = parser.add_argument_group("generated DVC stages (written by `rvos-kit dag`)")
    g.add_argument("--params", dest="dag_params", help="the params file a stage came from")
    g.add_argument(
        "--node",
        dest="dag_node",
        metavar="STAGE",
        help="with --params: refuse to run unless this command is still what PARAMS "
        "generates for STAGE (a stale dvc.yaml)",
    )
    sub = parser.add_subparsers(dest="verb", metavar="<verb>")
    sub.required = True
    for name in VERB_MODULES:
        importlib.import_module(f"rvos_kit.{name}").register(sub)
    for verb in sub.choices.values():  # plain text, defaults shown (helptext.py)
        verb.description = plain(verb.description)
        verb.formatter_class = HelpFormatter
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    try:
        if args.dag_node or args.dag_params:
            if not (args.dag_node and args.dag_params):
                raise KitError("--params and --node (before the verb) go together")
            from .dag import check_stage

            check_stage(args.dag_params, args.dag_node, argv)
        rc = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in an exit-time traceback
        return rc
    except KitError as e:
        print(f"rvos-kit {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `rvos-kit verify | head`: the reader left, not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print(f"rvos-kit {args.verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
