"""Every dataset read from a root, through `snakemake figures`, on fixture files
written in the dataset's own on-disk format."""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

import pytest
import yaml

import dataset_fixtures as fx
from conftest import ROOT, SMOKE
from multisym.logits import logits_of as stored_logits

pytestmark = pytest.mark.workflow
RELEASE_MD5 = ROOT / "tests" / "release_md5"
# the symmetry audit and the emergence experiment on an in-memory and on a streamed dataset
AUDITED = ("cifar10", "imagenet")


def write_fixture(name: str, root: Path) -> dict:
    """Write the fixture; return the dataset config section naming its root."""
    section = {"name": name, "root": str(root), "image_size": 8, "splits": {"val": 0.2, "test": None, "seed": 0}}
    if name == "cifar10":
        fx.write_cifar10(root, classes=4, per_class=10)
    elif name == "cifar100":
        fx.write_cifar100(root, classes=4, per_class=10)
    elif name == "flowers102":
        fx.write_flowers102(root, classes=4, per_class=4)
        section["splits"]["val"] = None
    elif name == "food101":
        fx.write_food101(root, classes=4, per_class=10)
    elif name == "inat2019":
        fx.write_inat2019(root, classes=4, per_class=14)
        section["splits"]["test"] = 0.2
    else:
        wnids = fx.fake_wnids(5)
        fx.write_imagenet(root, wnids, per_class=10)
        if name == "imagenet100":
            section["classes"] = wnids[:4]
    return section


def run_figures(workflow_copy, config_path: Path, patch_md5: bool, stream: bool = False) -> None:
    """`snakemake figures` on a scale file; ``patch_md5`` lets torchvision accept
    fixture release files (whose md5 are not the release's) in its subprocesses;
    ``stream`` streams every split, as ImageNet's are at full size."""
    saved = dict(os.environ)
    if patch_md5:
        os.environ["MULTISYM_TEST_FIXTURE_RELEASES"] = "1"
        os.environ["PYTHONPATH"] = f"{RELEASE_MD5}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    try:
        workflow_copy.snakemake("figures", f"--configfile={config_path.name}",
                                *(["--config", "streaming={in_memory_gib: 0}"] if stream else []))
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.mark.parametrize(
    "name", ["cifar10", "cifar100", "flowers102", "food101", "inat2019", "imagenet", "imagenet100", "food101-original"]
)
def test_dataset_runs_through_figures(workflow_copy, name):
    config = yaml.safe_load(SMOKE.read_text())
    config["name"] = f"fixture-{name}"
    original = name.endswith("-original")  # views and fine-tuning crops cut from the original image (issue 37)
    name = name.removesuffix("-original")
    config["dataset"] = write_fixture(name, workflow_copy.folder / "data" / name)
    if original:
        config["dataset"].update(views_from="original", eval_resize=10)
        config["adapt"] = {"mode": "finetune", "finetune": {"epochs": 1, "batch_size": 16, "crop_size": 8}}
    # the smallest chain that still feeds every table and figure
    config["members"]["seeds"] = {"eq": [1], "inv": [1], "sup": [1]}
    config["finetune"] = {"seeds": []}
    config["shift"] = {"enabled": False}
    config["transfer"] = {"datasets": []}
    config["ensembles"] = {**config["ensembles"], "pools": ["eq_inv"], "greedy": {"max_size": 2}}
    if name not in AUDITED:  # prepared as CIFAR-10's are: the same arrays downstream of prepare_data
        config["audit"] = {"enabled": False}
        config["emergence"] = {"enabled": False}
    if name == "imagenet":  # streamed, as at full size, through every step, and its evaluation-only sets
        config["emergence"] = {**config["emergence"], "train_images": 24}
        config["transfer"] = {"datasets": evaluation_sets(workflow_copy.folder / "data", config["dataset"])}
        config["ensembles"]["pools"] = ["eq", "eq_inv"]  # Table 9 and Figure 4 compare them
        config["members"]["seeds"]["eq"] = [1, 2]  # a random Eq ensemble of 2
    path = workflow_copy.write_config(f"{name}.yaml", config)
    run_figures(workflow_copy, path, patch_md5=name in ("cifar10", "cifar100", "flowers102"), stream=name == "imagenet")
    root = workflow_copy.folder / "results" / config["name"]
    manifest = json.loads((root / "data" / "manifest.json").read_text())
    assert manifest["files"]["count"] > 0 and len(manifest["files"]["listing_sha256"]) == 64
    assert manifest["channels"] == 3 and all(manifest["counts"][s] > 0 for s in ("train", "val", "test"))
    members = json.loads((root / "metrics" / "members.json").read_text())["members"]
    assert {m["mode"] for m in members} == {"eq", "inv", "sup"}
    for table in ("table1", "table2", "table3", "table4"):
        assert (root / "tables" / f"{table}.csv").stat().st_size > 0
    for figure in ("figure2", "figure3"):
        assert (root / "figures" / f"{figure}.png").stat().st_size > 1000
    if name == "imagenet":
        check_evaluation_sets(root, members)
    if original:
        runs = [json.loads(path.read_text())["settings"] for path in root.glob("**/run.json")]
        assert runs and all(run["dataset"]["views_from"] == "original" for run in runs)
        assert {run["views"]["interpolation"] for run in runs if "views" in run} == {"bicubic"}


def evaluation_sets(folder: Path, imagenet: dict) -> list[dict]:
    """ImageNet-V2 (classes 0-4 of the fixture's 5) and ImageNet-R (3 of them)."""
    wnids = sorted(p.name for p in (Path(imagenet["root"]) / "train").iterdir())
    fx.write_imagenet_v2(folder / "imagenet_v2", "matched-frequency", tuple(range(5)), per_class=4)
    fx.write_imagenet_r(folder / "imagenet_r", wnids[1:4], per_class=4)
    return [{"key": "in_v2", "mode": "evaluate",
             "dataset": {"name": "imagenet_v2", "root": str(folder / "imagenet_v2"), "variant": "matched-frequency"}},
            {"key": "in_r", "mode": "evaluate", "dataset": {"name": "imagenet_r", "root": str(folder / "imagenet_r")}}]


def logits_of(member: str, folder: Path) -> Path:
    """The member's logits: named by its folder, its id and settings hash."""
    return next(p for p in folder.iterdir() if re.fullmatch(rf"{re.escape(member)}-[0-9a-f]+\.npz", p.name))


def check_evaluation_sets(root: Path, members: list[dict]) -> None:
    """Each Eq and Inv member evaluated without retraining: val logits its own on
    ImageNet (restricted to ImageNet-R's classes there), test logits on the set;
    both sets are columns of Table 9 and not of Table 5 (no adaptation)."""
    import numpy as np


    for member in (m for m in members if m["mode"] in ("eq", "inv")):
        own, v2, in_r = (np.load(logits_of(member["member"], folder)) for folder in
                         (root / "logits", root / "transfer" / "in_v2" / "logits",
                          root / "transfer" / "in_r" / "logits"))
        own_val = stored_logits(own, "val")  # stored again: equal to float16's rounding of each gap
        np.testing.assert_allclose(stored_logits(v2, "val"), own_val, rtol=1e-3, atol=1e-3)
        assert v2["test_logits"].shape == (20, 5)
        assert in_r["test_logits"].shape == (12, 3) and set(in_r["test_labels"].tolist()) == {0, 1, 2}
        keep = np.isin(own["val_labels"], [1, 2, 3])
        np.testing.assert_allclose(stored_logits(in_r, "val"), own_val[keep][:, 1:4], rtol=1e-3, atol=2e-2)
    with open(root / "tables" / "table9.csv") as handle:
        columns = {row["column"] for row in csv.DictReader(handle)}
    assert {"in_v2", "in_r"} <= columns
    assert not (root / "tables" / "table5.csv").exists()


def test_transfer_datasets_from_roots(workflow_copy):
    """Digits members transferred to two datasets read from roots
    (docs/method.md#transfer-and-distribution-shift): CIFAR-100
    fine-tuned without train augmentation (the paper's protocol) with two
    learning rates, Food-101 probed; both converted to the members' grey 8 px."""
    config = yaml.safe_load(SMOKE.read_text())
    config["name"] = "fixture-transfer"
    config["members"]["seeds"] = {"eq": [1, 2], "inv": [1]}
    config["finetune"] = {"seeds": []}
    config["shift"] = {"enabled": False}
    config["ensembles"] = {**config["ensembles"], "pools": ["eq", "eq_inv"], "greedy": {"max_size": 3}}
    c100, food = (write_fixture(name, workflow_copy.folder / "data" / name) for name in ("cifar100", "food101"))
    for section in (c100, food):
        del section["image_size"]  # take the pretraining dataset's
    config["transfer"] = {"ensemble_size": 2, "datasets": [
        {"key": "c100", "dataset": c100, "mode": "finetune",
         "finetune": {"epochs": 2, "batch_size": 32, "train_augment": False,
                      "lr": {"eq": [0.01, 0.05], "inv": [0.02]}}},
        {"key": "food", "dataset": food},
    ]}
    path = workflow_copy.write_config("transfer.yaml", config)
    run_figures(workflow_copy, path, patch_md5=True)
    root = workflow_copy.folder / "results" / config["name"]
    for key in ("c100", "food"):
        manifest = json.loads((root / "transfer" / key / "data" / "manifest.json").read_text())
        assert manifest["channels"] == 1 and manifest["image_size"] == 8
        summary = json.loads((root / "transfer" / key / "metrics" / "dataset_summary.json").read_text())
        assert summary["stand_in"] is None and summary["singles"]["eq"]["n"] == 2
    choices = sorted((root / "transfer" / "c100" / "adapt").glob("*/choice.json"))
    assert len(choices) == 3
    eq_candidates = sorted((root / "transfer" / "c100" / "adapt").glob("eq-*/lr*/summary.json"))
    assert len(eq_candidates) == 4  # two Eq members x two learning rates
    table5 = (root / "tables" / "table5.md").read_text()
    assert "c100 top-1" in table5 and "food top-1" in table5
    table9 = list(csv.DictReader(open(root / "tables" / "table9.csv")))
    assert list(dict.fromkeys(r["column"] for r in table9)) == ["digits", "c100", "food"]
    assert (root / "figures" / "figure4.png").stat().st_size > 1000
