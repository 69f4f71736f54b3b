"""Load and validate a scale's configuration against the workflow's JSON schema.

The schema (``workflow/schemas/config.schema.yaml``) gives every key a type, a
description, its allowed values and a default. :func:`resolve` fills the
defaults in place of missing keys, so the resolved config is exactly "the scale
file plus schema defaults"; nothing is inherited from another scale file.
Errors name the offending key and say what is allowed.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from multisym.errors import UserError

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")

# Each ensemble pool and the hypothesis classes it draws from (in the order of
# the paper's alternating random compositions: Eq first).
POOL_CLASSES = {
    "eq": ("eq",),
    "inv": ("inv",),
    "eq_inv": ("eq", "inv"),
    "base": ("base",),
    "sup": ("sup",),
    "ssl_ft": ("ssl_ft",),
}


class ConfigError(UserError, ValueError):
    """A configuration that does not satisfy the schema or the workflow's rules."""


def load_schema() -> dict:
    with open(SCHEMA_PATH) as handle:
        return yaml.safe_load(handle)


def _validator_filling_defaults():
    """A Draft 2020-12 validator that inserts each property's default before
    validating it (defaults of nested objects are filled in turn)."""
    base = jsonschema.Draft202012Validator
    validate_properties = base.VALIDATORS["properties"]

    def properties_with_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, subschema in properties.items():
                if key not in instance and "default" in subschema:
                    instance[key] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(base, {"properties": properties_with_defaults})


def _key_of(error: jsonschema.ValidationError) -> str:
    path = ".".join(str(part) for part in error.absolute_path)
    return path or "<top level>"


def _describe(error: jsonschema.ValidationError) -> str:
    key = _key_of(error)
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        return (
            f"config key '{key}': unknown key(s) {unknown}; allowed keys are {allowed}"
        )
    if error.validator == "required":
        return f"config key '{key}': {error.message}; a scale file must set it"
    hint = ""
    if "enum" in schema:
        hint = f"; allowed values: {schema['enum']}"
    description = schema.get("description")
    if description:
        hint += f" ({' '.join(str(description).split())})"
    return f"config key '{key}': {error.message}{hint}"


def resolve(config: dict[str, Any]) -> dict[str, Any]:
    """Return a validated copy of ``config`` with every schema default filled in.

    Raises :class:`ConfigError` listing every violation, each naming its key.
    """
    resolved = copy.deepcopy(dict(config))
    _inherit_transfer_format(resolved)
    schema = load_schema()
    _parse_command_line_scalars(resolved, schema)
    validator = _validator_filling_defaults()(schema)
    errors = sorted(validator.iter_errors(resolved), key=lambda e: list(e.absolute_path))
    if errors:
        lines = "\n".join(f"  - {_describe(e)}" for e in errors)
        raise ConfigError(f"invalid configuration:\n{lines}")
    _fill_derived(resolved)
    _check_consistency(resolved)
    _check_ensembles(resolved)
    _check_transfer(resolved)
    _check_evaluation_sets(resolved)
    return resolved


EMBEDDED_DATASETS = ("digits", "digits_rotated")


def is_embedded(name: str) -> bool:
    """Whether a dataset ships with the package (scikit-learn's digits) rather
    than being read from a root."""
    return name in EMBEDDED_DATASETS


GREY_DATASETS = ("digits", "digits_rotated", "mnist", "fashion_mnist")


def own_channels(dataset: dict) -> int:
    """Channels of a dataset's images before any conversion."""
    return 1 if dataset["name"] in GREY_DATASETS else 3


JSON_TYPES = {"integer": int, "number": (int, float), "boolean": bool, "null": type(None),
              "array": list, "object": dict, "string": str}


def _subschema(schema: dict, root: dict) -> dict:
    """``schema`` with a local ``$ref`` followed."""
    while isinstance(schema, dict) and "$ref" in schema:
        schema = root["$defs"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema if isinstance(schema, dict) else {}


def _types(schema: dict, root: dict) -> set[str]:
    schema = _subschema(schema, root)
    declared = schema.get("type", [])
    types = {declared} if isinstance(declared, str) else set(declared)
    for branch in schema.get("oneOf", []) + schema.get("anyOf", []):
        types |= _types(branch, root)
    if not types and "enum" in schema:
        types = {name for value in schema["enum"] for name in JSON_TYPES if _is_type(value, name)}
    return types


def _is_type(value, name: str) -> bool:
    if name in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, JSON_TYPES[name])


def _part(schema: dict, root: dict, key: str):
    """``schema[key]`` (``properties`` or ``items``), or that of the first
    ``oneOf`` branch that has one."""
    branches = [schema, *(_subschema(branch, root) for branch in schema.get("oneOf", []))]
    return next((branch[key] for branch in branches if key in branch), {})


def _coerce(value, schema: dict, root: dict):
    """``value`` with every string that stands where the schema admits no
    string read as YAML, when that gives a value of an admitted type.

    Snakemake reads nested ``--config`` values (``--config 'pretrain={epochs:
    5}'``) and a profile's ``config:`` entries with YAML's base loader, so
    every scalar inside arrives as a string ("5", "null", "true"); this puts
    them back to what the schema asks for. A string where a string is allowed
    stays a string (an account named ``123456`` included)."""
    schema = _subschema(schema, root)
    if isinstance(value, str):
        allowed = _types(schema, root)
        if "null" in allowed and value.strip() in ("null", "Null", "NULL", "~"):
            return None
        if not allowed or "string" in allowed:
            return value
        try:
            parsed = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            return value
        if any(_is_type(parsed, name) for name in allowed):
            return _coerce(parsed, schema, root) if isinstance(parsed, (dict, list)) else parsed
        return value
    if isinstance(value, dict):
        properties, extra = _part(schema, root, "properties"), schema.get("additionalProperties")
        return {key: _coerce(item, properties.get(key, extra if isinstance(extra, dict) else {}), root)
                for key, item in value.items()}
    if isinstance(value, list):
        return [_coerce(item, _part(schema, root, "items"), root) for item in value]
    return value


def _parse_command_line_scalars(config: dict, schema: dict) -> None:
    """Every section through the schema's types (see ``_coerce``)."""
    for key, value in list(config.items()):
        if key in schema["properties"]:
            config[key] = _coerce(value, schema["properties"][key], schema)


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
            entries += config[section].get(key) or []
    for entry in entries:
        dataset = entry.get("dataset") if isinstance(entry, dict) else None
        if not isinstance(dataset, dict):
            continue
        if "image_size" not in dataset and "image_size" in primary:
            dataset["image_size"] = primary["image_size"]
        if "channels" not in dataset and isinstance(primary.get("name"), str):
            dataset["channels"] = primary.get("channels") or own_channels(primary)


EVALUATION_SETS = ("imagenet_v2", "imagenet_r")


def _check_dataset_list(entries: list[dict], key: str) -> None:
    """Unique keys and valid splits in a list of keyed datasets."""
    keys = [entry["key"] for entry in entries]
    for index, entry in enumerate(entries):
        prefix = f"{key}.{index}"
        if entry["key"] in keys[:index]:
            raise ConfigError(f"config key '{prefix}.key': {entry['key']!r} is used by two datasets of {key}")
        if entry["dataset"]["name"] in EVALUATION_SETS and entry.get("mode") != "evaluate":
            raise ConfigError(f"config key '{prefix}.dataset.name': {entry['dataset']['name']} is an evaluation-only "
                              "set; it is a transfer dataset with mode evaluate")
        if entry.get("mode") != "evaluate":
            _check_splits(entry["dataset"], f"{prefix}.dataset")


def _check_evaluation_sets(config: dict) -> None:
    """Evaluation-only sets share ImageNet's 1000-way class index, so they
    evaluate members of an ImageNet scale; ImageNet-V2 names its variant."""
    primary = config["dataset"]
    if primary["name"] in EVALUATION_SETS:
        raise ConfigError(f"config key 'dataset.name': {primary['name']} is an evaluation-only set; add it to "
                          "transfer.datasets with mode evaluate under an imagenet scale")
    for index, entry in enumerate(config["transfer"]["datasets"]):
        prefix, dataset = f"transfer.datasets.{index}", entry["dataset"]
        if entry["mode"] != "evaluate":
            continue
        if dataset["name"] not in EVALUATION_SETS:
            raise ConfigError(f"config key '{prefix}.mode': evaluate takes {' or '.join(EVALUATION_SETS)}, "
                              f"not {dataset['name']}")
        if primary["name"] != "imagenet":
            raise ConfigError(f"config key '{prefix}.mode': {dataset['name']} shares ImageNet-1k's classes; "
                              f"it evaluates members of an imagenet scale, not {primary['name']}")
        if dataset["name"] == "imagenet_v2" and not dataset.get("variant"):
            raise ConfigError(f"config key '{prefix}.dataset.variant': name the ImageNet-V2 variant folder "
                              "(e.g. imagenetv2-matched-frequency-format-val)")
        if dataset["name"] == "imagenet_r" and not dataset.get("imagenet_root"):
            dataset["imagenet_root"] = primary["root"]


def _check_transfer(config: dict) -> None:
    """Unique keys, valid splits, and Eq or Inv members to transfer."""
    keys = [entry["key"] for entry in config["transfer"]["datasets"]]
    _check_dataset_list(config["transfer"]["datasets"], "transfer.datasets")
    _check_dataset_list(config["audit"]["ood_datasets"], "audit.ood_datasets")
    sizes = class_sizes(config)
    if keys and not (sizes["eq"] or sizes["inv"]):
        raise ConfigError(
            "config key 'transfer.datasets': transfer adapts the Eq and Inv members of ensembles.axis, "
            "but there are none; add members.seeds.eq or .inv, or remove the transfer datasets"
        )


def section_defaults(section: str) -> dict:
    """A top-level section as the schema's defaults alone make it."""
    schema = load_schema()
    instance: dict = {}
    _validator_filling_defaults()({"$defs": schema["$defs"], **schema["properties"][section]}).validate(instance)
    return instance


WARNING_SHARE = 0.4  # of a job's time limit, at most, for SLURM's warning before it


def check_signal_delay(signal_delay_s: int, jobs: dict[str, dict]) -> None:
    """SLURM's warning (``cluster.signal_delay_s`` before the time limit) must
    leave a job most of its time: at 40 % or more of the limit a job would
    save and requeue itself soon after every start, or at once."""
    for step, job in jobs.items():
        limit_s = job["time_limit_min"] * 60
        if signal_delay_s >= WARNING_SHARE * limit_s:
            shortest = signal_delay_s // int(WARNING_SHARE * 60) + 1
            raise ConfigError(
                f"config key 'cluster.signal_delay_s': SLURM's warning {signal_delay_s} s before the time limit "
                f"is {signal_delay_s / limit_s:.0%} of gpu_jobs.{step}.time_limit_min ({job['time_limit_min']} min), "
                f"so the job would requeue itself soon after every start. Keep it under {WARNING_SHARE:.0%}: "
                f"lower cluster.signal_delay_s below {int(WARNING_SHARE * limit_s)} s, or raise "
                f"gpu_jobs.{step}.time_limit_min to {shortest} or more"
            )


def resolve_cluster(given: dict, snakemake_executor: str = "local") -> dict:
    """The ``cluster`` section as a GPU waiter receives it (the workflow's
    resources ``cluster_<key>``, strings; empty for null), checked against the
    schema with its defaults, and ``executor: auto`` resolved: slurm when
    Snakemake runs with the SLURM executor, else local. Refuses local training
    under the SLURM executor, which would train on the submitting host."""
    schema = load_schema()
    section = schema["properties"]["cluster"]
    given = {key: (None if value == "" else value) for key, value in given.items()}
    cluster = _coerce(given, section, schema)
    validator = _validator_filling_defaults()({"$defs": schema["$defs"], **section})
    errors = sorted(validator.iter_errors(cluster), key=lambda e: list(e.absolute_path))
    if errors:
        lines = "\n".join(f"  - {_describe(e)}".replace("config key '", "config key 'cluster.", 1) for e in errors)
        raise ConfigError(f"invalid cluster settings (the slurm profile's set-resources cluster_<key>, or the "
                          f"config's cluster section):\n{lines}")
    if cluster["executor"] == "auto":
        cluster["executor"] = "slurm" if snakemake_executor == "slurm" else "local"
    elif cluster["executor"] == "local" and snakemake_executor == "slurm":
        raise ConfigError(
            "config key 'cluster.executor': Snakemake runs with the SLURM executor, but cluster.executor is local: "
            "every GPU training job would train on the submitting host, not in SLURM. Leave cluster.executor at "
            "auto (or set it to slurm) to train in SLURM jobs; to train on this host, run without --profile slurm"
        )
    return cluster


def _check_consistency(config: dict) -> None:
    """Rules that a JSON schema cannot express."""
    _check_splits(config["dataset"], "dataset")
    check_signal_delay(config["cluster"]["signal_delay_s"],
                       {step: config["gpu_jobs"][step] for step in ("pretrain", "adapt")})
    adapt_job = config["gpu_jobs"]["adapt"]
    if adapt_job["nodes"] * max(adapt_job["gpus_per_node"], 1) > 1:
        raise ConfigError(
            "config key 'gpu_jobs.adapt': fine-tuning runs in one process; set nodes and gpus_per_node to 1 "
            "(several GPUs per job are for pretraining, gpu_jobs.pretrain)"
        )
    backbone = config["backbone"]
    if backbone["arch"] == "small_resnet" and len(backbone["widths"]) != len(
        backbone["blocks"]
    ):
        raise ConfigError(
            "config key 'backbone.blocks': needs one entry per stage of "
            f"backbone.widths ({len(backbone['widths'])}), got {len(backbone['blocks'])}"
        )
    for key in ("views.crop_scale", "small_crop.crop_scale", "supervised.crop_scale"):
        section, name = key.split(".")
        low, high = config[section][name]
        if low > high:
            raise ConfigError(f"config key '{key}': low {low} exceeds high {high}")
    seeds, imported = config["members"]["seeds"], config["members"]["imported"]
    if not imported and not any(seeds.get(mode) for mode in ("eq", "inv", "base", "sup")):
        raise ConfigError(
            "config key 'members.seeds': no member is defined; give seeds for at "
            "least one of eq, inv, base, sup (or members.imported)"
        )
    if (seeds.get("eq") or seeds.get("inv")) and not config["members"]["axes"]:
        raise ConfigError(
            "config key 'members.axes': eq and inv members need at least one axis "
            "(allowed: rotation, halfswap, invert)"
        )
    _check_imported(config)


OFFICIAL_TEST = ("cifar10", "cifar100", "mnist", "fashion_mnist", "flowers102", "food101", "imagenet", "imagenet100")
OFFICIAL_VAL = ("flowers102",)


def _check_splits(dataset: dict, key: str) -> None:
    """Held-out fractions exist exactly where the dataset lacks an official split."""
    name, splits = dataset["name"], dataset["splits"]
    if name in OFFICIAL_TEST and splits["test"] is not None:
        raise ConfigError(
            f"config key '{key}.splits.test': {name} has an official test split; set it to null"
        )
    if name not in OFFICIAL_TEST and splits["test"] is None:
        raise ConfigError(
            f"config key '{key}.splits.test': {name} has no labelled test split; give the fraction to hold out"
        )
    if name in OFFICIAL_VAL and splits["val"] is not None:
        raise ConfigError(f"config key '{key}.splits.val': {name} has an official val split; set it to null")
    if name not in OFFICIAL_VAL and splits["val"] is None:
        raise ConfigError(f"config key '{key}.splits.val': give the fraction of {name}'s training data to hold out")
    held_out = (splits["val"] or 0) + (splits["test"] or 0)
    if held_out >= 1:
        raise ConfigError(f"config key '{key}.splits': val + test = {held_out:g} leaves nothing to train on")
    if name == "imagenet100" and not dataset["classes"]:
        raise ConfigError(f"config key '{key}.classes': imagenet100 needs the list of its class wnids")
    if name != "imagenet100" and dataset["classes"] is not None:
        raise ConfigError(f"config key '{key}.classes': only imagenet100 takes a class list, not {name}")


def _check_imported(config: dict) -> None:
    """Imported members: an axis exactly for eq and inv (one of members.axes),
    and no member defined twice."""
    members, seen = config["members"], set()
    trained = {(mode, axis, seed) for mode in ("eq", "inv") for axis in members["axes"]
               for seed in members["seeds"][mode]}
    trained |= {(mode, None, seed) for mode in ("base", "sup") for seed in members["seeds"][mode]}
    for index, entry in enumerate(members["imported"]):
        key = f"members.imported.{index}"
        if entry["mode"] in ("eq", "inv") and entry["axis"] not in members["axes"]:
            raise ConfigError(
                f"config key '{key}.axis': an imported {entry['mode']} member needs one of "
                f"members.axes {members['axes']}, got {entry['axis']!r}"
            )
        if entry["mode"] in ("base", "sup") and entry["axis"] is not None:
            raise ConfigError(f"config key '{key}.axis': a {entry['mode']} member has no axis; set it to null")
        identity = (entry["mode"], entry["axis"], entry["seed"])
        if identity in trained or identity in seen:
            raise ConfigError(
                f"config key '{key}': duplicate member {entry['mode']} {entry['axis'] or ''} seed "
                f"{entry['seed']}; it is already defined (members.seeds or an earlier import)"
            )
        seen.add(identity)


def _fill_derived(config: dict) -> None:
    """Sizes that default to a function of another key (written out, so that
    the resolved config shows the value that is used)."""
    views = config["views"]
    if views["size"] is None:
        views["size"] = config["dataset"]["image_size"]
    small = config["small_crop"]
    if small["size"] is None:
        small["size"] = max(2, 2 * round(views["size"] * 3 / 7 / 2))
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


def class_sizes(config: dict) -> dict[str, int]:
    """Members available per hypothesis class (eq and inv: of the ensemble axis)."""
    seeds, axis = config["members"]["seeds"], config["ensembles"]["axis"]
    sizes = {mode: len(seeds[mode]) for mode in ("eq", "inv", "base", "sup")}
    for entry in config["members"]["imported"]:
        if entry["mode"] in ("base", "sup") or entry["axis"] == axis:
            sizes[entry["mode"]] += 1
    sizes["ssl_ft"] = len(config["finetune"]["seeds"]) if seeds["base"] else 0
    return sizes


def _check_ensembles(config: dict) -> None:
    """Every pool has members, every random size fits its pool (no silent repeats)."""
    ens, sizes = config["ensembles"], class_sizes(config)
    source = {"eq": "members.seeds.eq", "inv": "members.seeds.inv", "base": "members.seeds.base",
              "sup": "members.seeds.sup", "ssl_ft": "finetune.seeds (and members.seeds.base)"}
    if ens["axis"] is not None and ens["axis"] not in config["members"]["axes"]:
        raise ConfigError(
            f"config key 'ensembles.axis': {ens['axis']!r} has no members; allowed: {config['members']['axes']}"
        )
    for pool in ens["pools"]:
        for cls in POOL_CLASSES[pool]:
            if sizes[cls] == 0:
                raise ConfigError(
                    f"config key 'ensembles.pools': pool {pool!r} needs {cls} members, but {source[cls]} is empty; "
                    "add seeds or remove the pool"
                )
        for size in ens["random"]["sizes"]:
            classes = POOL_CLASSES[pool]
            need = {classes[0]: size} if len(classes) == 1 else {classes[0]: (size + 1) // 2, classes[1]: size // 2}
            for cls, count in need.items():
                if count > sizes[cls]:
                    raise ConfigError(
                        f"config key 'ensembles.random.sizes': a random {pool} ensemble of size {size} needs "
                        f"{count} {cls} members drawn without replacement, but {source[cls]} gives {sizes[cls]}; "
                        "lower the size or add seeds"
                    )
    if ens["diversity_size"] not in ens["random"]["sizes"]:
        raise ConfigError(
            f"config key 'ensembles.diversity_size': {ens['diversity_size']} must be one of "
            f"ensembles.random.sizes {ens['random']['sizes']}"
        )
    greedy = ens["greedy"]
    if len(config["members"]["axes"]) > 1 and ens["axes_size"] > greedy["max_size"]:
        raise ConfigError(
            f"config key 'ensembles.axes_size': {ens['axes_size']} exceeds ensembles.greedy.max_size "
            f"{greedy['max_size']}; the greedy ensembles of Tables 6 and 10 are prefixes of one greedy sequence"
        )
    if greedy["start"] == "fixed" and not greedy["start_member"]:
        raise ConfigError("config key 'ensembles.greedy.start_member': start 'fixed' needs a member id")
    base_seed = config["finetune"]["base_seed"]
    if config["finetune"]["seeds"] and base_seed not in config["members"]["seeds"]["base"]:
        raise ConfigError(
            f"config key 'finetune.base_seed': {base_seed} is not a base member seed "
            f"(members.seeds.base: {config['members']['seeds']['base']})"
        )


def load(path: str | Path) -> dict[str, Any]:
    """Read a YAML scale file and resolve it."""
    with open(path) as handle:
        raw = yaml.safe_load(handle) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config file must hold a mapping, got {type(raw).__name__}")
    return resolve(raw)
