"""Evaluation-only sets of an ImageNet scale (ImageNet-V2, ImageNet-R): their
config rules, their prepared splits (all test, in ImageNet's class index, with
ImageNet-R's class mask) and the 200-of-1000 restriction of logits and labels.
The whole chain, through Table 9, runs in test_workflow_datasets.py."""

from __future__ import annotations

import numpy as np
import pytest

import dataset_fixtures as fx
from multisym.data import splits
from multisym.config import ConfigError, resolve
from multisym.evaluate.evaluation_sets import restrict


def imagenet_scale(tmp_path, *transfer) -> dict:
    return {"name": "x", "dataset": {"name": "imagenet", "root": str(tmp_path / "imagenet"), "splits": {"test": None}},
            "members": {"seeds": {"eq": [1, 2, 3], "inv": [1, 2, 3]}}, "transfer": {"datasets": list(transfer)},
            "ensembles": {"random": {"sizes": [2]}, "diversity_size": 2}}


def v2_entry(tmp_path, **dataset) -> dict:
    return {"key": "in_v2", "mode": "evaluate",
            "dataset": {"name": "imagenet_v2", "root": str(tmp_path / "v2"), "variant": "matched", **dataset}}


def test_restrict_keeps_the_masked_classes_and_their_rows():
    logits = np.arange(20, dtype=np.float32).reshape(4, 5)
    kept, labels = restrict(logits, np.array([0, 3, 4, 1]), np.array([1, 3]))
    assert labels.tolist() == [1, 0]  # rows 1 and 3, labels renumbered among the mask
    assert kept.tolist() == [[6, 8], [16, 18]]


def test_config_rules(tmp_path):
    resolved = resolve(imagenet_scale(tmp_path, v2_entry(tmp_path),
                                      {"key": "in_r", "mode": "evaluate",
                                       "dataset": {"name": "imagenet_r", "root": str(tmp_path / "r")}}))
    in_r = resolved["transfer"]["datasets"][1]["dataset"]
    assert in_r["imagenet_root"] == str(tmp_path / "imagenet")  # its class index: the scale's ImageNet
    assert in_r["image_size"] == resolved["dataset"]["image_size"]
    cases = [
        (imagenet_scale(tmp_path, {**v2_entry(tmp_path), "dataset": {"name": "imagenet_v2", "root": "v2"}}),
         "variant.*name the ImageNet-V2 variant"),
        (imagenet_scale(tmp_path, {**v2_entry(tmp_path), "mode": "probe"}), "evaluation-only set.*mode evaluate"),
        ({**imagenet_scale(tmp_path, v2_entry(tmp_path)),
          "dataset": {"name": "cifar10", "root": "c", "splits": {"test": None}}},
         "evaluates members of an imagenet scale, not cifar10"),
        (imagenet_scale(tmp_path, {**v2_entry(tmp_path), "dataset": {"name": "food101", "root": "f"}}),
         "evaluate takes imagenet_v2 or imagenet_r, not food101"),
        ({**imagenet_scale(tmp_path), "dataset": {"name": "imagenet_r", "root": "r"}},
         "'dataset.name'.*evaluation-only"),
    ]
    for config, message in cases:
        with pytest.raises(ConfigError, match=message):
            resolve(config)


def test_prepared_sets_are_all_test_in_imagenets_class_index(tmp_path):
    wnids = fx.fake_wnids(5)
    fx.write_imagenet(tmp_path / "imagenet", wnids, per_class=2)
    fx.write_imagenet_v2(tmp_path / "v2", "matched", (0, 2, 4), per_class=3)
    fx.write_imagenet_r(tmp_path / "r", [wnids[3], wnids[1]], per_class=2)
    config = resolve(imagenet_scale(tmp_path, v2_entry(tmp_path),
                                    {"key": "in_r", "mode": "evaluate",
                                     "dataset": {"name": "imagenet_r", "root": str(tmp_path / "r")}}))
    for entry, labels, mask in ((config["transfer"]["datasets"][0], [0] * 3 + [2] * 3 + [4] * 3, None),
                                (config["transfer"]["datasets"][1], [1, 1, 3, 3], [1, 3])):
        paths = (tmp_path / f"{entry['key']}.npz", tmp_path / f"{entry['key']}.json")
        manifest = splits.prepare(entry["dataset"], *paths)
        assert manifest["counts"] == {"train": 0, "val": 0, "test": len(labels)}
        arrays, _ = splits.load_arrays(*paths)
        assert sorted(arrays["test_labels"].tolist()) == labels
        assert (arrays["class_mask"].tolist() if "class_mask" in arrays else None) == mask
        images, _, _ = splits.load_split(*paths, "test")
        assert tuple(images.shape) == (len(labels), 3, 16, 16)
