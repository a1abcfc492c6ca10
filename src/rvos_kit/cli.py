"""``rvos-kit <verb>``: one thin verb per pipeline stage.

Every verb lives in its own module, which defines ``register(subparsers)``: it adds its
sub-parser and sets ``func`` (called with the parsed args, returns the exit status).
A verb gives its ``description`` only: :func:`build_parser` lays out every verb's --help
the same way (:class:`~rvos_kit.helptext.HelpFormatter`, markup made plain).
Errors meant for the user are :class:`~rvos_kit.errors.KitError`: printed on one line,
exit status 2, no traceback; so is an output that cannot be written (disk full, read-only:
:func:`~rvos_kit.errors.write_error_message`). Every message is capped in length.

Every verb declares which arguments it reads and which it writes
(:func:`~rvos_kit.argtypes.declare_paths`); before it runs, :func:`check_paths` refuses an
output that is, holds or lies inside one of its inputs (a typo must never destroy one).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from . import __version__
from .argtypes import declared_paths
from .errors import KitError, cap_message, write_error_message
from .helptext import HelpFormatter, plain

# The verbs, grouped as the DAG runs: data -> rvos outputs -> key frames -> propagate ->
# fuse -> package -> evaluate / audit, then the pipeline tools. Each entry: the module under
# rvos_kit whose ``register(sub)`` adds the verb(s).
VERB_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("data and downloads", ("stages.data", "artifacts.fetch")),
    ("rvos outputs (the five models' masks)", ("stages.rvos.infer", "stages.rvos.released",
                                               "stages.rvos.dumps",
                                               "stages.rvos.infer.smoke_weights")),
    ("key frames", ("stages.keyframes",)),
    ("propagate (AOT / DeAOT / flow)", ("stages.propagate",)),
    ("fuse (vote)", ("stages.fusion",)),
    ("package", ("stages.pack",)),
    ("evaluate / audit", ("stages.evaluate.jf", "stages.evaluate.summary",
                          "stages.evaluate.report", "stages.audit", "pipeline.engine_audit")),
    ("pipeline (dvc.yaml, checks, images)", ("pipeline.dag", "pipeline.preflight",
                                             "pipeline.run", "pipeline.smoke")),
)  # fmt: skip

DESCRIPTION = """\
Reproducibility kit for the 1st-place ICCV 2023 LSVOS track-3 solution.
A mask tree is <root>/<video>/<exp_id>/<frame>.png (8-bit grayscale, 255 = object).
Run `rvos-kit <verb> --help` for each stage. "Contract section N" and "quirk 9.N"
refer to the headings of docs/contract.md."""


def register_verbs(sub) -> list[tuple[str, tuple[str, ...], list[str]]]:
    """Add every verb to the sub-parsers ``sub``; return (group title, its modules, the
    verbs they added) per group, in DAG order."""
    groups = []
    for title, modules in VERB_GROUPS:
        before = set(sub.choices)
        for module in modules:
            importlib.import_module(f"rvos_kit.{module}").register(sub)
        groups.append((title, modules, [v for v in sub.choices if v not in before]))
    return groups


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors capped in length too (a huge value quoted back);
    the verbs' sub-parsers are of this class as well."""

    def error(self, message: str):
        super().error(cap_message(message))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="rvos-kit",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"rvos-kit {__version__}")
    g = parser.add_argument_group("generated DVC stages (written by `rvos-kit dag`)")
    g.add_argument(
        "--params",
        dest="dag_params",
        help="the params file of the stage a verb runs as (its scale and runner keys)",
    )
    g.add_argument(
        "--node",
        dest="dag_node",
        metavar="STAGE",
        help="with --params and no verb: run STAGE as PARAMS generates it now, after "
        "checking that ./dvc.yaml is still what PARAMS generates (`rvos-kit dag --explain "
        "STAGE` prints its command)",
    )
    # a verb is required unless --node names a generated stage (checked in main)
    sub = parser.add_subparsers(dest="verb", metavar="<verb>", help=argparse.SUPPRESS)
    # set after add_subparsers, which builds each verb's usage prefix from this one
    parser.usage = (
        "%(prog)s <verb> [options]    (%(prog)s <verb> --help: one verb's options)\n"
        "       %(prog)s --version\n"
        "       %(prog)s --params PARAMS --node STAGE    (the commands of generated dvc.yaml)"
    )
    groups = register_verbs(sub)
    helps = {a.dest: a.help for a in sub._choices_actions}
    listing = []
    for title, _, verbs in groups:
        listing.append(f"{title}:")
        listing += [f"  {v:<13} {helps.get(v) or ''}".rstrip() for v in verbs]
    parser.epilog = "verbs, in DAG order:\n" + "\n".join(listing)
    for verb in sub.choices.values():  # plain text, defaults shown (helptext.py)
        verb.description = plain(verb.description)
        verb.formatter_class = HelpFormatter
    return parser


def _labels(parser: argparse.ArgumentParser, verb: str) -> dict[str, str]:
    """dest -> how the user wrote it (``--out``, ``SOURCE_ROOT``) for the verb's args."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    labels = {"dag_params": "--params"}
    for a in sub.choices[verb]._actions:
        metavar = a.metavar if isinstance(a.metavar, str) else None
        labels[a.dest] = a.option_strings[0] if a.option_strings else metavar or a.dest
    return labels


def check_paths(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse outputs that overlap inputs (:func:`~rvos_kit.trees.staging.check_outputs`)
    as the verb declared them."""
    from .trees.staging import check_outputs

    labels = _labels(parser, args.verb)

    def named(specs):
        return [(labels.get(d, d), p) for d, p in declared_paths(args, specs)]

    reads = named(("dag_params", *getattr(args, "path_reads", ())))
    check_outputs(reads, named(getattr(args, "path_writes", ())),
                  named(getattr(args, "path_writes_into", ())))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    from .compute.probe import install

    install()  # RVOS_KIT_PROBE_DIR (rvos-kit smoke): peak memory written at exit
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if args.verb is None and not args.dag_node:
        parser.error("the following arguments are required: <verb>")
    label = args.verb or f"stage {args.dag_node}"
    try:
        if args.dag_node:
            args = _stage_args(parser, args)
            label = args.verb
        return _run(parser, args)
    except KitError as e:
        print(cap_message(f"rvos-kit {label}: error: {e}"), file=sys.stderr)
        return 2
    except OSError as e:
        line = write_error_message(e)
        if line is None:
            raise
        print(cap_message(f"rvos-kit {label}: error: {line}"), file=sys.stderr)
        return 2


def _stage_args(parser: argparse.ArgumentParser, args: argparse.Namespace):
    """``--params P --node S`` (a generated stage): the arguments of the command P
    generates for S now, once ./dvc.yaml is checked to be what P generates."""
    if not args.dag_params:
        raise KitError("--node needs --params (the params file the stage came from)")
    from .pipeline.dag.runtime import check_shape, stage_argv

    if args.verb is not None:  # the spelled-out form of an older dvc.yaml, or by hand
        check_shape(args.dag_params)
        raise KitError("--node runs the stage its params file generates: give no verb")
    return parser.parse_args(stage_argv(args.dag_params, args.dag_node))


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    try:
        check_paths(parser, args)
        rc = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in an exit-time traceback
        return rc
    except BrokenPipeError:  # `rvos-kit verify | head`: the reader left, not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print(f"rvos-kit {args.verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
