"""config/emergence.yaml, Gerken & Kessel's experiments at their scale: a
member-free scale that plans without its data and runs, shrunk, on fixture
FashionMNIST and MNIST files (issue 38, item 5)."""

from __future__ import annotations

import json

import pytest
import yaml

import dataset_fixtures as fx
from conftest import ROOT, planned_jobs
from multisym import config as config_module
from multisym.plan import Plan

pytestmark = pytest.mark.workflow
SCALE = ROOT / "config" / "emergence.yaml"
GROUPS = ["rot4", "rot8", "rot12", "rot16"]
# jobs of the MSE pipeline, none of which a member-free scale may plan
MSE_RULES = {"pretrain", "import_member", "probe", "features", "adapt_candidate", "finetune", "logits",
             "member_metrics", "ensemble", "shift_sets", "shift_logits", "shift_metrics", "audit_outputs",
             "audit_metrics", "table", "claims", "dataset_summary"}


def scale() -> dict:
    return config_module.resolve(yaml.safe_load(SCALE.read_text()))


def test_scale_is_the_papers_setting():
    config = scale()
    plan = Plan(config)
    emergence = config["emergence"]
    assert config["dataset"]["name"] == "fashion_mnist" and config["dataset"]["image_size"] == 28
    assert [(e["key"], e["dataset"]["name"]) for e in config["audit"]["ood_datasets"]] == [("mnist", "mnist")]
    assert config["audit"]["max_images"] == 10000 and emergence["members"] == 100
    assert emergence["groups"] == GROUPS and emergence["so2_angles"] == 64
    assert not plan.members and not plan.pools
    from multisym.evaluate.emergence import member_network

    network = member_network(1, 28, 10, emergence["widths"], emergence["hidden"])
    assert 110_000 <= sum(p.numel() for p in network.parameters()) <= 130_000  # theirs: about 120k
    resources = plan.emergence_job_resources()
    assert resources["gpu"] == 1 and resources["runtime"] >= 240 and resources["mem_mb"] >= 32_000


@pytest.mark.parametrize("target", ["figures", "all"])
def test_scale_plans_without_data(workflow_copy, target):
    """Only the data and audit-set preparation, the emergence runs and metrics,
    the Ising jobs, their figures and the report's bookkeeping; the dataset
    roots (absent here) are read by no planning step."""
    result = workflow_copy.snakemake("-n", target, "--configfile=config/emergence.yaml")
    counts = planned_jobs(result.stdout)
    assert counts["emergence"] == 2 * len(GROUPS) and counts["ising"] == 2
    assert counts["emergence_metrics"] == 1 and counts["prepare_audit"] == 1 and counts["prepare_audit_ood"] == 1
    assert counts["prepare_data"] == 1 and counts["figure"] == 7 and counts["emergence_init"] == 1
    assert not MSE_RULES & set(counts)
    for group in GROUPS:
        for run in ("augmented", "control"):
            assert f"results/emergence/emergence/{group}/{run}.npz" in result.stdout
    assert "gpu=1" in result.stdout  # the image runs ask for a GPU


def test_scale_runs_on_fixture_files(workflow_copy):
    """The scale file itself, shrunk by a second --configfile (its keys
    override the first's), through `snakemake figures` on fixture files."""
    data = workflow_copy.folder / "data"
    fx.write_mnist(data / "fashion", folder="FashionMNIST", classes=4, per_class=6, size=28)
    fx.write_mnist(data / "mnist", folder="MNIST", classes=4, per_class=6, size=28, seed=1)
    splits = {"val": 0.25, "test": None, "seed": 0}
    small = {
        "dataset": {"root": str(data / "fashion"), "splits": splits},
        "audit": {"max_images": 24, "noise": 4, "photos": 4,
                  "ood_datasets": [{"key": "mnist", "dataset": {"name": "mnist", "root": str(data / "mnist"),
                                                                "splits": splits}}]},
        "emergence": {"members": 2, "epochs": 1, "widths": [4], "hidden": 8, "batch_size": 32, "so2_angles": 4,
                      "subensemble_draws": 2, "job": {"gpus": 0, "cpus": 1, "mem_gb": 2}, "init_members": 8,
                      "init_inputs": 3, "bootstrap_resamples": 10,
                      "ising": {"size": 4, "sweeps": 2, "train_lattices": 16, "test_lattices": 8, "ood_lattices": 8,
                                "widths": {"mlp": [4], "cnn": [2]}, "members": 2, "epochs": 1, "init_members": 8,
                                "init_inputs": 4, "bootstrap_resamples": 10}},
    }
    override = workflow_copy.write_config("small.yaml", small)
    workflow_copy.snakemake("figures", "--configfile", "config/emergence.yaml", override.name)
    root = workflow_copy.folder / "results" / "emergence"
    metrics = json.loads((root / "emergence" / "metrics.json").read_text())
    assert metrics["dataset"] == "fashion_mnist" and not metrics["stand_in"]
    assert metrics["sets"]["mnist"] == {**metrics["sets"]["mnist"], "kind": "out-of-distribution", "images": 24}
    assert {group: entry["order"] for group, entry in metrics["groups"].items()} == dict(zip(GROUPS, (4, 8, 12, 16)))
    for entry in metrics["groups"].values():
        assert all({"test", "mnist"} <= set(entry["runs"][run]) for run in ("augmented", "control"))
    for architecture, width in (("mlp", "4"), ("cnn", "2")):
        ising = json.loads((root / "emergence" / "ising" / f"{architecture}.json").read_text())
        assert list(ising["widths"]) == [width] and set(ising["widths"][width]) == {"augmented", "control"}
    init = json.loads((root / "emergence" / "initialisation.json").read_text())
    assert init["members"] == 8 and init["inputs"]["mnist"] == 3 and list(init["groups"]) == GROUPS
    for figure in ("figure_emergence", "figure_emergence_orders", "figure_emergence_so2", "figure_ising",
                   "figure_finite_ensemble", "figure_emergence_finite"):
        assert (root / "figures" / f"{figure}.png").stat().st_size > 1000
    assert not (root / "members").exists() and (root / "checksums.json").is_file()


def test_run_spec_holds_only_what_a_run_reads():
    """Ising settings, sub-ensemble draws, the untrained study's sizes and the
    job's resources rerun no image run; Ising settings and the untrained
    study's sizes rerun neither the metrics of the trained runs."""
    base = yaml.safe_load(SCALE.read_text())
    spec = Plan(config_module.resolve(base)).emergence_run_spec({})
    assert set(spec) == {"members", "epochs", "train_images", "widths", "hidden", "batch_size", "lr", "seed",
                         "so2_angles"}
    for change in ({"ising": {**base["emergence"]["ising"], "members": 7}}, {"subensemble_draws": 3},
                   {"job": {"gpus": 0, "cpus": 2, "mem_gb": 1, "time_limit_min": 5}}, {"groups": ["rot4"]}):
        changed = {**base, "emergence": {**base["emergence"], **change}}
        assert Plan(config_module.resolve(changed)).emergence_run_spec({}) == spec
    metrics = Plan(config_module.resolve(base)).emergence_spec({})
    for change in ({"ising": {**base["emergence"]["ising"], "members": 7}}, {"init_members": 64},
                   {"init_inputs": 3}, {"job": {"gpus": 0, "cpus": 2, "mem_gb": 1, "time_limit_min": 5}}):
        changed = {**base, "emergence": {**base["emergence"], **change}}
        assert Plan(config_module.resolve(changed)).emergence_spec({}) == metrics


def test_job_defaults_are_the_former_fixed_resources():
    """Left out, emergence.job and emergence.ising.job ask for what the rules
    asked for before they were settings, and no GPU; no spec carries them."""
    plan = Plan(config_module.load(ROOT / "config.yaml"))
    assert plan.emergence_job_resources() == {"cpus_per_task": 1, "mem_mb": 8000, "runtime": 120}
    assert plan.emergence_job_resources(ising=True) == {"cpus_per_task": 1, "mem_mb": 4000, "runtime": 120}
    assert "job" not in plan.emergence_spec({}) and "ising" not in plan.emergence_spec({})
    assert "job" not in plan.ising_spec({})
    provenance = plan.provenance_config_spec({})["emergence"]
    assert "job" not in provenance and "job" not in provenance["ising"]
