"""``multisym``: one subcommand per workflow step, so any step can be run by hand.

Each rule of the Snakemake workflow calls exactly one subcommand with the
resolved settings it needs (as JSON, from the rule's ``params``). By hand, give
``--config`` (a scale file) and the step's name for the thing to build instead,
and the paths default to the workflow's layout, for example::

    multisym prepare-data --config config.yaml
    multisym pretrain --config config.yaml --member eq-rotation-s1
    multisym members --config config.yaml

Each stage lists its own subcommands (``multisym.<stage>.commands``); this
module holds the options every subcommand has, the two about the config
itself, and the dispatch.
"""

from __future__ import annotations

import argparse
import json
import sys

from multisym import config as config_module
from multisym.command import Command, load_config, no_arguments
from multisym.data.commands import COMMANDS as DATA
from multisym.ensembles.commands import COMMANDS as ENSEMBLES
from multisym.evaluate.commands import COMMANDS as EVALUATE
from multisym.members import member_table
from multisym.report.commands import COMMANDS as REPORT
from multisym.train.commands import COMMANDS as TRAIN


def _validate_arguments(p) -> None:
    p.add_argument("--config-json", help="a config as JSON (as the workflow passes it)")
    p.add_argument("--out", help="write the resolved config here (default: standard output)")


def validate(args) -> None:
    if args.config_json is not None:
        cfg = config_module.resolve(json.loads(args.config_json))
    else:
        cfg = load_config(args)
    text = json.dumps(cfg, indent=2, sort_keys=True) + "\n"
    if args.out:
        from multisym.files import atomic_write_text

        atomic_write_text(text, args.out)
    else:
        sys.stdout.write(text)


def members(args) -> None:
    for member in member_table(load_config(args)):
        print(f"{member.id}\t{member.mode}\t{member.axis or '-'}\t{member.seed}\t{member.folder}")


CONFIG = (
    Command("validate", "validate a config and write it with every default filled in", _validate_arguments, validate),
    Command("members", "list the member table: id, mode, axis, seed, run folder", no_arguments, members),
)

# In the order a run meets them; every name is unique across the tables.
COMMANDS = (*CONFIG, *DATA, *TRAIN, *EVALUATE, *ENSEMBLES, *REPORT)


def _common_options(p: argparse.ArgumentParser) -> None:
    """The options of every subcommand: the scale of a run by hand, and the
    streaming limit of the splits it reads."""
    p.add_argument("--config", help="a scale file (config.yaml or config/X.yaml), for runs by hand")
    p.add_argument("--results", default="results", help="results root for runs by hand (default: results)")
    p.add_argument("--in-memory-gib", type=float,
                   help="stream a split whose float32 images take more GiB than this (streaming.in_memory_gib)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="multisym", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.help, description=command.help)
        _common_options(p)
        command.add_arguments(p)
        p.set_defaults(func=command.run)
    return parser


def main(argv: list[str] | None = None) -> None:
    from multisym.errors import UserError

    args = build_parser().parse_args(argv)
    try:
        if args.in_memory_gib is not None:
            from multisym.data.streaming import set_in_memory_limit

            set_in_memory_limit(args.in_memory_gib)
        args.func(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def release() -> None:
    """What a command leaves to the interpreter's exit, done now (for a warm
    worker, which ends with ``os._exit`` as a forked child must): the
    decoding workers of splits still open, logging's handlers, the standard
    streams' buffers."""
    import logging

    streaming = sys.modules.get("multisym.data.streaming")
    if streaming is not None:
        streaming.close_all()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing left to deliver
            pass


if __name__ == "__main__":
    main()
