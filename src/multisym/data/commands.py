"""The data stage's subcommand: ``prepare-data`` (docs/datasets.md)."""

from __future__ import annotations

import sys

from multisym import layout
from multisym.command import Command, load_config, settings_from


def _prepare_data_arguments(p) -> None:
    p.add_argument("--dataset-json", help="the resolved `dataset` config section as JSON")
    p.add_argument("--out-data")
    p.add_argument("--out-manifest")
    p.add_argument("--key", default="dataset",
                   help="where the section sits in the config, for errors to name (transfer.datasets[0].dataset)")


def prepare_data(args) -> None:
    from multisym.data import splits

    dataset = settings_from(args, "dataset_json")
    if dataset is None:
        cfg = load_config(args)
        dataset = cfg["dataset"]
        paths = layout.Layout(cfg["name"], args.results)
        args.out_data = args.out_data or paths.dataset
        args.out_manifest = args.out_manifest or paths.manifest
    manifest = splits.prepare(dataset, args.out_data, args.out_manifest, args.key)
    print(f"prepared {manifest['dataset']}: {manifest['counts']}", file=sys.stderr)


COMMANDS = (
    Command("prepare-data", "build the dataset file, its splits and manifest", _prepare_data_arguments, prepare_data),
)
