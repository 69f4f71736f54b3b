"""``multisym``: one subcommand per workflow step, so any step can be run by hand.

Each rule of the Snakemake workflow calls exactly one subcommand with the
resolved settings it needs (as JSON, from the rule's ``params``). By hand, give
``--config`` (a scale file) and the step's name for the thing to build instead,
and the paths default to the workflow's layout, for example::

    multisym prepare-data --config config.yaml
    multisym pretrain --config config.yaml --member eq-rotation-s1
    multisym members --config config.yaml
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import config as config_module
from . import layout
from .members import member_table


def _settings_from(args, key: str):
    """The settings JSON given by the workflow, or those derived from ``--config``."""
    raw = getattr(args, key)
    if raw is not None:
        return json.loads(raw)
    if args.config is None:
        raise SystemExit(f"error: give --{key.replace('_', '-')} (as the workflow does) or --config")
    return None


def _load_config(args) -> dict:
    try:
        return config_module.load(args.config)
    except config_module.ConfigError as error:
        raise SystemExit(f"error: {args.config}: {error}") from None


def _find_member(cfg: dict, name: str):
    table = member_table(cfg)
    for member in table:
        if name in (member.id, member.folder):
            return member
    raise SystemExit(f"error: no member {name!r} in this config; members: {[m.id for m in table]}")


# ----------------------------------------------------------------- commands
def cmd_validate(args) -> None:
    if args.config_json is not None:
        try:
            cfg = config_module.resolve(json.loads(args.config_json))
        except config_module.ConfigError as error:
            raise SystemExit(f"error: {error}") from None
    else:
        cfg = _load_config(args)
    text = json.dumps(cfg, indent=2, sort_keys=True) + "\n"
    if args.out:
        from .checkpoint import atomic_write_text

        atomic_write_text(text, args.out)
    else:
        sys.stdout.write(text)


def cmd_members(args) -> None:
    cfg = _load_config(args)
    for member in member_table(cfg):
        print(f"{member.id}\t{member.mode}\t{member.axis or '-'}\t{member.seed}\t{member.folder}")


def cmd_prepare_data(args) -> None:
    from . import data

    dataset = _settings_from(args, "dataset_json")
    if dataset is None:
        cfg = _load_config(args)
        dataset = cfg["dataset"]
        paths = layout.Layout(cfg["name"], args.results)
        args.out_data = args.out_data or paths.dataset
        args.out_manifest = args.out_manifest or paths.manifest
    manifest = data.prepare(dataset, args.out_data, args.out_manifest)
    print(f"prepared {manifest['dataset']}: {manifest['counts']}", file=sys.stderr)


def cmd_pretrain(args) -> None:
    from .pretrain import train_member

    settings = _settings_from(args, "settings_json")
    if settings is None:
        cfg = _load_config(args)
        member = _find_member(cfg, args.member)
        settings = member.settings
        paths = layout.Layout(cfg["name"], args.results)
        args.data = args.data or paths.dataset
        args.manifest = args.manifest or paths.manifest
        args.run_dir = args.run_dir or paths.member_dir(member.folder)
        args.out_model = args.out_model or paths.member_model(member.folder)
        args.out_log = args.out_log or paths.member_epochs(member.folder)
    missing = [k for k in ("data", "manifest", "run_dir", "out_model", "out_log") if getattr(args, k) is None]
    if missing:
        raise SystemExit(f"error: missing {', '.join('--' + k.replace('_', '-') for k in missing)}")
    finished = train_member(
        settings, args.data, args.manifest, args.run_dir, args.out_model, args.out_log,
        device=args.device, precision=args.precision, threads=args.threads,
        stop_after_epochs=args.stop_after_epochs,
    )
    if not finished:
        print("stopped early; rerun the same command to resume", file=sys.stderr)


# ------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="multisym", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, func, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--config", help="a scale file (config.yaml or config/X.yaml), for runs by hand")
        p.add_argument("--results", default="results", help="results root for runs by hand (default: results)")
        p.set_defaults(func=func)
        return p

    p = command("validate", cmd_validate, "validate a config and write it with every default filled in")
    p.add_argument("--config-json", help="a config as JSON (as the workflow passes it)")
    p.add_argument("--out", help="write the resolved config here (default: standard output)")
    command("members", cmd_members, "list the member table: id, mode, axis, seed, run folder")

    p = command("prepare-data", cmd_prepare_data, "build the dataset file, its splits and manifest")
    p.add_argument("--dataset-json", help="the resolved `dataset` config section as JSON")
    p.add_argument("--out-data")
    p.add_argument("--out-manifest")

    p = command("pretrain", cmd_pretrain, "train (or resume) one member")
    p.add_argument("--member", help="member id or run folder name (with --config)")
    p.add_argument("--settings-json", help="the member's resolved settings as JSON")
    p.add_argument("--data")
    p.add_argument("--manifest")
    p.add_argument("--run-dir")
    p.add_argument("--out-model")
    p.add_argument("--out-log")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda[:i]")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="auto: bf16 autocast on CUDA, fp32 on the CPU")
    p.add_argument("--threads", type=int, help="CPU threads (default: $SLURM_CPUS_PER_TASK, else torch's)")
    p.add_argument("--stop-after-epochs", type=int,
                   help="train at most this many epochs in this invocation, then save and exit")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
