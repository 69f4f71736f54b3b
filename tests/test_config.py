"""Config validation: defaults filled, every violation named by its key."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from multisym import config as config_module
from multisym.config import ConfigError, resolve
from multisym.config_schema import load_schema

ROOT = Path(__file__).resolve().parents[1]
SCALE_FILES = [ROOT / "config.yaml", *sorted((ROOT / "config").glob("*.yaml"))]


def minimal() -> dict:
    return {"name": "x", "dataset": {"name": "digits"}, "members": {"seeds": {"eq": [1, 2, 3, 4, 5]}}}


@pytest.mark.parametrize("path", SCALE_FILES, ids=lambda p: p.name)
def test_shipped_scales_resolve(path):
    resolved = config_module.load(path)
    assert resolved["name"]


def test_defaults_are_filled():
    resolved = resolve(minimal())
    assert resolved["pretrain"]["temperature"] == 0.2
    assert resolved["pretrain"]["optimizer"]["name"] == "sgd"
    assert resolved["symmetries"]["rotation"] == {"lambda": 0.4, "p": 0.5}
    assert resolved["symmetries"]["halfswap"]["lambda"] == 0.1
    assert resolved["members"]["axes"] == ["rotation"]
    assert resolved["members"]["seeds"] == {"eq": [1, 2, 3, 4, 5], "inv": [], "base": [], "sup": []}
    assert resolved["ensembles"]["pools"] == ["eq"]
    assert resolved["ensembles"]["axis"] == "rotation"
    assert resolved["dataset"]["splits"] == {"val": 0.15, "test": 0.15, "seed": 0}
    assert resolved["dataset"]["root"] is None and resolved["dataset"]["checksum"] == "listing"
    # derived sizes are written out
    assert resolved["views"]["size"] == 16
    assert resolved["small_crop"]["size"] == 6


def test_resolve_does_not_modify_its_input():
    raw = minimal()
    before = copy.deepcopy(raw)
    resolve(raw)
    assert raw == before


def test_resolving_twice_is_stable():
    once = resolve(minimal())
    assert resolve(once) == once


@pytest.mark.parametrize(
    "mutate, key, fragment",
    [
        (lambda c: c.update(pretrain={"epochs": "ten"}), "pretrain.epochs", "is not of type 'integer'"),
        (lambda c: c.update(pretrain={"epochs": 0}), "pretrain.epochs", "minimum"),
        (lambda c: c.update(pretrain={"epoch": 3}), "pretrain.epoch", "unknown key; the keys of 'pretrain' are"),
        (lambda c: c.update(colour="red"), "colour", "unknown key; the keys at the top level are"),
        (lambda c: c.update(backbone={"arch": "vgg"}), "backbone.arch", "allowed values"),
        (lambda c: c["members"].update(axes=["flip"]), "members.axes[0]", "allowed values"),
        (lambda c: c["members"]["seeds"].update(eq=[1, 1]), "members.seeds.eq", "non-unique"),
        (lambda c: c["members"]["seeds"].update(eq=[1, 2, 3]), "ensembles.random.sizes", "needs 4 eq members"),
        (lambda c: c.update(ensembles={"pools": ["inv"]}), "ensembles.pools", "members.seeds.inv is empty"),
        (lambda c: c.update(ensembles={"pools": ["mse"]}), "ensembles.pools[0]", "allowed values"),
        (lambda c: c.update(ensembles={"diversity_size": 7}), "ensembles.diversity_size", "must be one of"),
        (lambda c: c.update(ensembles={"greedy": {"start": "fixed"}}), "ensembles.greedy.start_member",
         "needs a member"),
        (lambda c: c.update(ensembles={"random": {"draws": 0}}), "ensembles.random.draws", "minimum"),
        (lambda c: c.update(finetune={"seeds": [1], "base_seed": 3}), "finetune.base_seed", "not a base member seed"),
        (lambda c: c.update(symmetries={"rotation": {"lambda": -1}}), "symmetries.rotation.lambda", "minimum"),
        (lambda c: c.update(symmetries={"rotation": {"p": 1.5}}), "symmetries.rotation.p", "maximum"),
        (lambda c: c.pop("name"), "<top level>", "'name' is a required property"),
        (lambda c: c["dataset"].update(splits={"val": 0.5, "test": 0.6}), "dataset.splits", "nothing to train on"),
        (lambda c: c["dataset"].update(name="cifar10"), "dataset.splits.test", "official test split"),
        (lambda c: c["dataset"].update(name="flowers102", splits={"test": None}), "dataset.splits.val", "official val"),
        (lambda c: c["dataset"].update(name="inat2019", splits={"test": None}),
         "dataset.splits.test", "no labelled test"),
        (lambda c: c["dataset"].update(name="imagenet100", splits={"test": None}), "dataset.classes", "wnids"),
        (lambda c: c["dataset"].update(classes=["n01440764"]), "dataset.classes", "only imagenet100"),
        (lambda c: c["dataset"].update(name="svhn"), "dataset.name", "allowed values"),
        (lambda c: c["dataset"].update(checksum="md5"), "dataset.checksum", "allowed values"),
        (lambda c: c.update(adapt={"mode": "tune"}), "adapt.mode", "allowed values"),
        (lambda c: c.update(adapt={"finetune": {"lr": {"eq": []}}}), "adapt.finetune.lr.eq", "should be non-empty"),
        (lambda c: c.update(adapt={"selection_split": "train"}), "adapt.selection_split", "allowed values"),
        (lambda c: c.update(shift={"severities": [6]}), "shift.severities[0]", "maximum"),
        (lambda c: c.update(shift={"corruptions": ["frost"]}), "shift.corruptions[0]", "allowed values"),
        (lambda c: c["members"].update(imported=[{"mode": "eq", "seed": 1, "path": "x.pth", "axis": "rotation"}]),
         "members.imported[0]", "duplicate member"),
        (lambda c: c["members"].update(imported=[{"mode": "eq", "seed": 9, "path": "x.pth"}]),
         "members.imported[0].axis", "needs one of members.axes"),
        (lambda c: c["members"].update(imported=[{"mode": "base", "seed": 9, "path": "x.pth", "axis": "rotation"}]),
         "members.imported[0].axis", "has no axis"),
        (lambda c: c["members"].update(imported=[{"mode": "base", "seed": 9}]),
         "members.imported[0]", "'path' is a required"),
        (lambda c: c["members"].update(imported=[{"mode": "base", "seed": 9, "path": "x", "sha256": "abc"}]),
         "members.imported[0].sha256", "does not match"),
        # a member-free scale is the emergence study alone (config/emergence.yaml); without it nothing is built
        (lambda c: c.update(members={"seeds": {}}, emergence={"enabled": False}), "members.seeds", "no member"),
        (lambda c: c.update(backbone={"widths": [8, 16], "blocks": [1]}), "backbone.blocks", "one entry per stage"),
        (lambda c: c.update(views={"crop_scale": [0.9, 0.2]}), "views.crop_scale", "exceeds"),
        (lambda c: c["members"].update(axes=[]), "members.axes", "at least one axis"),
        (lambda c: c.update(transfer={"datasets": [{"key": "c100", "dataset": {"name": "cifar100"}}]}),
         "transfer.datasets[0].dataset.splits.test", "official test split"),
        (lambda c: c.update(transfer={"datasets": [{"key": "a", "dataset": {"name": "digits_rotated"}}] * 2}),
         "transfer.datasets[1].key", "used by two"),
        (lambda c: c.update(transfer={"datasets": [{"key": "A b", "dataset": {"name": "digits_rotated"}}]}),
         "transfer.datasets[0].key", "does not match"),
        (lambda c: c.update(transfer={"datasets": [{"key": "a", "dataset": {"name": "digits_rotated"}, "mode": "lp"}]}),
         "transfer.datasets[0].mode", "allowed values"),
        (lambda c: c.update(
            transfer={"datasets": [{"key": "a", "dataset": {"name": "digits_rotated", "channels": 2}}]}),
         "transfer.datasets[0].dataset.channels", "allowed values"),
        (lambda c: c.update(members={"seeds": {"base": [1, 2, 3, 4, 5]}}, ensembles={"pools": ["base"]},
                            transfer={"datasets": [{"key": "a", "dataset": {"name": "digits_rotated"}}]}),
         "transfer.datasets", "Eq and Inv members"),
    ],
)
def test_invalid_configs_name_the_key(mutate, key, fragment):
    raw = minimal()
    mutate(raw)
    with pytest.raises(ConfigError) as error:
        resolve(raw)
    message = str(error.value)
    assert f"'{key}'" in message
    assert fragment in message


def test_transfer_datasets_take_the_pretraining_format_unless_given():
    raw = minimal()
    raw["dataset"]["image_size"] = 24
    raw["transfer"] = {"datasets": [
        {"key": "inherits", "dataset": {"name": "cifar100", "root": "c", "splits": {"test": None}}},
        {"key": "own", "dataset": {"name": "cifar100", "root": "c", "splits": {"test": None}, "image_size": 32,
                                   "channels": 3}, "mode": "finetune", "finetune": {"epochs": 5}},
    ]}
    inherits, own = resolve(raw)["transfer"]["datasets"]
    assert (inherits["dataset"]["image_size"], inherits["dataset"]["channels"]) == (24, 1)  # digits: grey
    assert inherits["mode"] == "probe" and inherits["finetune"]["epochs"] == 100
    assert (own["dataset"]["image_size"], own["dataset"]["channels"]) == (32, 3)
    assert own["finetune"]["epochs"] == 5 and own["finetune"]["lr"]["inv"] == [0.004]


def test_all_violations_are_reported_at_once():
    raw = minimal()
    raw["pretrain"] = {"epochs": 0, "batch_size": "big"}
    with pytest.raises(ConfigError) as error:
        resolve(raw)
    assert "pretrain.epochs" in str(error.value) and "pretrain.batch_size" in str(error.value)


def _properties(schema: dict, prefix: str = ""):
    defs = schema.get("$defs", {})
    for key, sub in schema.get("properties", {}).items():
        if "$ref" in sub:
            sub = {**defs[sub["$ref"].split("/")[-1]], **sub}
        yield f"{prefix}{key}", sub
        yield from _properties({**sub, "$defs": defs}, f"{prefix}{key}.")


def test_every_schema_key_has_a_description_and_a_type():
    schema = load_schema()
    for key, sub in _properties(schema):
        assert sub.get("description"), f"schema key {key} has no description"
        assert "type" in sub or "enum" in sub, f"schema key {key} has no type or allowed values"


def test_load_rejects_a_non_mapping(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(ConfigError, match="must hold a mapping"):
        config_module.load(path)


@pytest.mark.parametrize("name", ["..", ".", "...", "../elsewhere", "/tmp/x", "a/b", ".hidden", "-x", "x;rm -rf y",
                                  "$(touch z)", "a b", ""])
def test_a_scale_name_is_one_folder_inside_results(name):
    """results/<name>/ and logs/<name>/ must stay inside results/ and logs/."""
    with pytest.raises(ConfigError, match="config key 'name'"):
        resolve({**minimal(), "name": name})


@pytest.mark.parametrize("name", ["digits", "paper-2026.12", "in100_run2", "A1"])
def test_ordinary_scale_names_pass(name):
    assert resolve({**minimal(), "name": name})["name"] == name
