"""One subcommand of ``multisym`` as data, and what the stages' command tables share.

Every stage subpackage lists its subcommands in ``<stage>/commands.py`` as
``COMMANDS``, a tuple of :class:`Command`; ``multisym.cli`` adds the options of
a run by hand (``--config``, ``--results``) to each and dispatches to its
``run``. A ``run`` imports the stage's heavy modules (torch, the training code)
itself, so building the parser and running a light step never loads them.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass

from multisym import config as config_module
from multisym.members import member_table


@dataclass(frozen=True)
class Command:
    """A subcommand: its name, its one-line help, what adds its own options
    to its parser, and what runs it with the parsed arguments."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], None]


def no_arguments(parser: argparse.ArgumentParser) -> None:
    """A command with only the options every command has."""


def runtime_options(parser: argparse.ArgumentParser) -> None:
    """Where a step that runs a network computes."""
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda[:i]")
    parser.add_argument("--threads", type=int, help="CPU threads (default: $SLURM_CPUS_PER_TASK, else torch's)")


def settings_from(args: argparse.Namespace, key: str):
    """The settings JSON given by the workflow, or None where ``--config``
    is to give them (a run by hand)."""
    raw = getattr(args, key)
    if raw is not None:
        return json.loads(raw)
    if args.config is None:
        raise SystemExit(f"error: give --{key.replace('_', '-')} (as the workflow does) or --config")
    return None


def load_config(args: argparse.Namespace) -> dict:
    """The scale file named by ``--config``, resolved; an invalid one ends the
    command with the key at fault."""
    try:
        return config_module.load(args.config)
    except config_module.ConfigError as error:  # a user error: cli.main reports it and exits 2
        raise config_module.ConfigError(f"{args.config}: {error}") from None


def find_member(cfg: dict, name: str):
    """The member of the config with this id or run folder name."""
    table = member_table(cfg)
    for member in table:
        if name in (member.id, member.folder):
            return member
    raise SystemExit(f"error: no member {name!r} in this config; members: {[m.id for m in table]}")


def write_json(payload: dict, path: str) -> None:
    from multisym.files import atomic_write_text

    atomic_write_text(json.dumps(payload, indent=2) + "\n", path)
