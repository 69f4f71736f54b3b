"""The rules of a scale that the JSON schema cannot express, checked on the
resolved config (defaults and derived values filled in): held-out splits
exactly where a dataset has no official one, members defined once and with
an axis where they need one, every ensemble pool and random ensemble size
filled by the members given (docs/method.md#member-pool,
docs/method.md#random-ensembles), and transfer and evaluation-only datasets
that the members can serve. Each error names its key.
"""

from __future__ import annotations

from multisym.errors import ConfigError
from multisym.job_settings import check_gpu_jobs

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


def check(config: dict) -> None:
    """Every rule, in this order; the first broken one raises ``ConfigError``."""
    _check_consistency(config)
    _check_ensembles(config)
    _check_transfer(config)
    _check_evaluation_sets(config)


def _check_consistency(config: dict) -> None:
    """Rules that a JSON schema cannot express."""
    _check_splits(config["dataset"], "dataset")
    _check_geometry(config["dataset"], "dataset")
    _check_interpolation(config)
    check_gpu_jobs(config)
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
    _check_ising(config["emergence"]["ising"])
    seeds, imported = config["members"]["seeds"], config["members"]["imported"]
    # a scale without members runs the emergence study alone (config/emergence.yaml)
    if not imported and not any(seeds.get(mode) for mode in ("eq", "inv", "base", "sup")) \
            and not config["emergence"]["enabled"]:
        raise ConfigError(
            "config key 'members.seeds': no member is defined and emergence.enabled is false, so there is "
            "nothing to build; give seeds for at least one of eq, inv, base, sup (or members.imported)"
        )
    if (seeds.get("eq") or seeds.get("inv")) and not config["members"]["axes"]:
        raise ConfigError(
            "config key 'members.axes': eq and inv members need at least one axis "
            "(allowed: rotation, halfswap, invert)"
        )
    _check_imported(config)


def _check_ising(ising: dict) -> None:
    """The Ising study's temperature ranges: ordered, and the OOD range outside the training range."""
    for name in ("train_temperatures", "ood_temperatures"):
        low, high = ising[name]
        if low > high:
            raise ConfigError(f"config key 'emergence.ising.{name}': low {low} exceeds high {high}")
    (low, high), (ood_low, ood_high) = ising["train_temperatures"], ising["ood_temperatures"]
    if ood_low < high and ood_high > low:
        raise ConfigError(f"config key 'emergence.ising.ood_temperatures': [{ood_low}, {ood_high}] overlaps the "
                          f"training range [{low}, {high}]; out-of-distribution lattices need temperatures outside it")


OFFICIAL_TEST = ("cifar10", "cifar100", "mnist", "fashion_mnist", "flowers102", "food101", "imagenet", "imagenet100")
OFFICIAL_VAL = ("flowers102",)


EMBEDDED_DATASETS = ("digits", "digits_rotated")  # shipped with the package (config.is_embedded)


def _check_geometry(dataset: dict, key: str) -> None:
    """views_from and eval_resize apply to datasets read from a root, and the
    centre crop must fit in the resized image."""
    for name in ("views_from", "eval_resize"):
        if name in dataset and dataset["name"] in EMBEDDED_DATASETS:
            raise ConfigError(f"config key '{key}.{name}': applies to datasets read from a root, "
                              f"not {dataset['name']} (its images are made at image_size); leave it out")
    if dataset.get("eval_resize") is not None and dataset["eval_resize"] < dataset["image_size"]:
        raise ConfigError(f"config key '{key}.eval_resize': {dataset['eval_resize']} is below "
                          f"{key}.image_size {dataset['image_size']}, the centre crop taken from it")


def _check_interpolation(config: dict) -> None:
    """The interpolation keys resample views cut from the original image only."""
    if config["dataset"].get("views_from") == "original":
        return
    for section in ("views", "small_crop"):
        if "interpolation" in config[section]:
            raise ConfigError(f"config key '{section}.interpolation': applies only with dataset.views_from "
                              "original; views cut from the square are resampled by bilinear roi_align")


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
        key = f"members.imported[{index}]"
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


EVALUATION_SETS = ("imagenet_v2", "imagenet_r")


def _check_dataset_list(entries: list[dict], key: str) -> None:
    """Unique keys and valid splits in a list of keyed datasets."""
    keys = [entry["key"] for entry in entries]
    for index, entry in enumerate(entries):
        prefix = f"{key}[{index}]"
        if entry["key"] in keys[:index]:
            raise ConfigError(f"config key '{prefix}.key': {entry['key']!r} is used by two datasets of {key}")
        if entry["dataset"]["name"] in EVALUATION_SETS and entry.get("mode") != "evaluate":
            raise ConfigError(f"config key '{prefix}.dataset.name': {entry['dataset']['name']} is an evaluation-only "
                              "set; it is a transfer dataset with mode evaluate")
        if entry.get("mode") != "evaluate":
            _check_splits(entry["dataset"], f"{prefix}.dataset")
        _check_geometry(entry["dataset"], f"{prefix}.dataset")


def _check_evaluation_sets(config: dict) -> None:
    """Evaluation-only sets share ImageNet's 1000-way class index, so they
    evaluate members of an ImageNet scale; ImageNet-V2 names its variant."""
    primary = config["dataset"]
    if primary["name"] in EVALUATION_SETS:
        raise ConfigError(f"config key 'dataset.name': {primary['name']} is an evaluation-only set; add it to "
                          "transfer.datasets with mode evaluate under an imagenet scale")
    for index, entry in enumerate(config["transfer"]["datasets"]):
        prefix, dataset = f"transfer.datasets[{index}]", entry["dataset"]
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
