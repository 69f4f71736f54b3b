"""Load and resolve a scale's configuration: the scale file plus the
defaults of the workflow's JSON schema (``config_schema``), validated,
derived values written out, then checked against the rules the schema
cannot express (``scale_checks``).

:func:`resolve` fills the defaults in place of missing keys, so the resolved
config is exactly "the scale file plus schema defaults"; nothing is
inherited from another scale file. Errors name the offending key and say
what is allowed. The ``cluster`` section as a GPU job receives it is
resolved by ``job_settings.resolve_cluster``, which the workflow and the
CLI import from here.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from multisym import scale_checks
from multisym.config_schema import (describe, load_schema, parse_command_line_scalars, section_defaults,
                                    validator_filling_defaults)
from multisym.errors import ConfigError
from multisym.job_settings import check_signal_delay, resolve_cluster
from multisym.scale_checks import EMBEDDED_DATASETS, POOL_CLASSES, class_sizes

# what the workflow's rules (common.smk), the CLI and the stages import from here
__all__ = ["ConfigError", "check_signal_delay", "is_embedded", "load", "own_channels", "resolve", "resolve_cluster",
           "section_defaults"]


def resolve(config: dict[str, Any]) -> dict[str, Any]:
    """Return a validated copy of ``config`` with every schema default filled in.

    Raises :class:`ConfigError` listing every violation, each naming its key.
    """
    resolved = copy.deepcopy(dict(config))
    _refuse_replaced_keys(resolved)
    _inherit_transfer_format(resolved)
    schema = load_schema()
    parse_command_line_scalars(resolved, schema)
    validator = validator_filling_defaults()(schema)
    errors = sorted(validator.iter_errors(resolved), key=lambda e: list(e.absolute_path))
    if errors:
        lines = "\n".join(f"  - {describe(e)}" for e in errors)
        raise ConfigError(f"invalid configuration:\n{lines}")
    _fill_derived(resolved)
    scale_checks.check(resolved)
    return resolved


def is_embedded(name: str) -> bool:
    """Whether a dataset ships with the package (scikit-learn's digits) rather
    than being read from a root."""
    return name in EMBEDDED_DATASETS


GREY_DATASETS = ("digits", "digits_rotated", "mnist", "fashion_mnist")


def own_channels(dataset: dict) -> int:
    """Channels of a dataset's images before any conversion."""
    return 1 if dataset["name"] in GREY_DATASETS else 3


# keys that a newer one replaced: (section, old key) -> what to write instead
REPLACED_KEYS = {
    ("emergence", "group"): "emergence.groups, a list of groups (for example groups: [rotation]), "
                            "each run as its own experiment",
}


def _refuse_replaced_keys(config: dict) -> None:
    """A key that a newer one replaced is named with its replacement, before
    validation would call it merely unknown."""
    for (section, key), instead in REPLACED_KEYS.items():
        given = config.get(section)
        if isinstance(given, dict) and key in given:
            raise ConfigError(f"config key '{section}.{key}' was replaced: use {instead}")


def _inherit_transfer_format(config: dict) -> None:
    """Transfer and audit OOD datasets take the pretraining dataset's image size
    and channels where they leave them out, so the members' networks fit them
    (docs/method.md#transfer-and-distribution-shift: CIFAR-100 resized to 224).
    Runs before validation, on whatever was given."""
    primary = config.get("dataset")
    if not isinstance(primary, dict):
        return
    entries = []
    for section, key in (("transfer", "datasets"), ("audit", "ood_datasets")):
        if isinstance(config.get(section), dict):
            given = config[section].get(key)
            entries += given if isinstance(given, list) else []  # anything else fails validation next
    for entry in entries:
        dataset = entry.get("dataset") if isinstance(entry, dict) else None
        if not isinstance(dataset, dict):
            continue
        if "image_size" not in dataset and "image_size" in primary:
            dataset["image_size"] = primary["image_size"]
        if "channels" not in dataset and isinstance(primary.get("name"), str):
            dataset["channels"] = primary.get("channels") or own_channels(primary)


def _fill_derived(config: dict) -> None:
    """Sizes that default to a function of another key (written out, so that
    the resolved config shows the value that is used)."""
    views = config["views"]
    if views["size"] is None:
        views["size"] = config["dataset"]["image_size"]
    small = config["small_crop"]
    if small["size"] is None:
        small["size"] = max(2, 2 * round(views["size"] * 3 / 7 / 2))
    if config["dataset"].get("views_from") == "original":  # the paper's resampling (Loh et al. §4)
        views.setdefault("interpolation", "bicubic")
        small.setdefault("interpolation", "bilinear")
    if config["audit"]["groups"] is None:
        config["audit"]["groups"] = list(config["members"]["axes"]) or ["rotation"]
    if config["ensembles"]["axis"] is None and config["members"]["axes"]:
        config["ensembles"]["axis"] = config["members"]["axes"][0]
    base_seeds = config["members"]["seeds"]["base"]
    if config["finetune"]["base_seed"] is None and base_seeds:
        config["finetune"]["base_seed"] = base_seeds[0]
    if config["ensembles"]["pools"] is None:
        sizes = class_sizes(config)
        config["ensembles"]["pools"] = [
            pool for pool, classes in POOL_CLASSES.items() if all(sizes[c] for c in classes)
        ]


def load(path: str | Path) -> dict[str, Any]:
    """Read a YAML scale file and resolve it."""
    with open(path) as handle:
        raw = yaml.safe_load(handle) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config file must hold a mapping, got {type(raw).__name__}")
    return resolve(raw)
