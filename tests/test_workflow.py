"""The Snakemake workflow: static checks, planning, config-file semantics, and a
run of the smoke scale in a temporary copy of the workflow."""

from __future__ import annotations

import copy
import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, SMOKE, planned_jobs, tool_env
from report_browser import check_report
from test_fuzz_plan import plan as dry_run
from multisym import config as config_module
from multisym.members import member_table
from multisym.plan import Plan
from multisym import targets

pytestmark = pytest.mark.workflow
RULE_FILES = [str(p) for p in sorted((ROOT / "workflow" / "rules").glob("*.smk"))]


def test_snakefmt_is_clean():
    result = subprocess.run(
        [sys.executable, "-m", "snakefmt", "--check", "Snakefile", *RULE_FILES],
        cwd=ROOT, capture_output=True, text=True, env=tool_env(),
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("configfile", [None, "config/smoke.yaml"])
def test_lint_is_clean(workflow_copy, configfile):
    args = ["--lint"] + ([f"--configfile={configfile}"] if configfile else [])
    result = workflow_copy.snakemake(*args)
    assert "Congratulations, your workflow is in a good condition" in result.stdout + result.stderr


def test_dry_run_plans_every_member_of_the_default(workflow_copy):
    result = workflow_copy.snakemake("-n")
    counts = planned_jobs(result.stdout)
    members = member_table(config_module.load(ROOT / "config.yaml"))
    assert counts["pretrain"] == len(members)
    assert counts["prepare_data"] == 1
    for m in members:
        assert m.folder in result.stdout


def test_imagenet100_scale_plans_tables_6_and_10(workflow_copy):
    """config/imagenet100.yaml, without any ImageNet on this machine: 3 Eq + 3
    Inv per axis for three axes, linearly probed, feeding Tables 6 and 10."""
    result = workflow_copy.snakemake("-n", "--configfile=config/imagenet100.yaml")
    counts = planned_jobs(result.stdout)
    assert counts["pretrain"] == 18 and counts["probe"] == 18 and "adapt_candidate" not in counts
    for table in ("table6", "table10"):
        assert f"results/imagenet100/tables/{table}.csv" in result.stdout


def test_digits_axes_scale_plans_every_table_and_figure(workflow_copy, capfd):
    """config/digits-axes.yaml, the three-axis CPU scale, planned through
    Snakemake's API: 3 Eq + 3 Inv members of each of rotation, half-swap and
    inversion, so that its ``figures`` builds every table and figure of the
    registry, Tables 6 and 10 included, with every axis in both."""
    path = ROOT / "config" / "digits-axes.yaml"
    plan = Plan(config_module.load(path))
    assert {t.name for t in targets.built(plan)} == set(targets.TARGETS)
    axes = ["rotation", "halfswap", "invert"]
    assert plan.config["members"]["axes"] == axes
    for axis in axes:
        modes = [m.mode for m in plan.members if m.axis == axis]
        assert modes.count("eq") == 3 and modes.count("inv") == 3
        assert len(plan.pool_members(f"eq_inv_{axis}")) == plan.config["ensembles"]["axes_size"] == 6
    assert plan.config["ensembles"]["axes_size"] <= plan.config["ensembles"]["greedy"]["max_size"]
    assert len(plan.pool_members("eq_inv_all")) == 18

    capfd.readouterr()
    dry_run(workflow_copy.folder, yaml.safe_load(path.read_text()))
    log = capfd.readouterr().err
    counts = planned_jobs(log)
    assert counts["pretrain"] == 24 and counts["finetune"] == 3
    assert "paper_comparison.csv" in log
    for target in targets.TARGETS.values():
        for output in target.outputs(plan):
            assert output.startswith("results/digits-axes/") and output in log, output
    for axis in axes:
        for pool in (f"eq_{axis}", f"eq_inv_{axis}"):
            assert plan.layout.ensemble(pool, "greedy") in log
        assert plan.layout.ensemble(f"eq_inv_{axis}", "all") in log
    assert plan.layout.ensemble("eq_inv_all", "greedy") in log


def test_each_table_and_figure_is_one_registry_entry(workflow_copy):
    """The target registry (multisym.targets) holds each table's and figure's
    result files, condition, title and builder: a dry run plans exactly the
    targets it says the scale feeds, from the files it names."""
    plan = Plan(config_module.load(SMOKE))
    for target in targets.TARGETS.values():
        assert callable(target.build()) and target.title.format(m=2, axes_size=6)
    result = workflow_copy.snakemake("-n", "--configfile=config/smoke.yaml", "figures")
    planned = set(re.findall(r"wildcards: (?:table|figure)=(\w+)", result.stdout))
    if "rule claims:" in result.stdout:  # the claims have a rule of their own, without a wildcard
        planned.add("claims")
    assert planned == {t.name for t in targets.built(plan)} and "table6" not in planned
    for target in targets.built(plan):
        for path in target.reads(plan):
            assert path in result.stdout


def test_planning_never_imports_torch(workflow_copy):
    """The Snakefile must stay light: planning a run imports no torch."""
    code = (
        "import sys, snakemake.cli as cli\n"
        "try:\n    cli.main(['-n', '-q'])\n"
        "except SystemExit:\n    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NOTORCH')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=workflow_copy.folder, capture_output=True,
                            text=True, env=tool_env())
    assert result.stdout.strip().endswith("NOTORCH"), result.stdout[-2000:] + result.stderr[-2000:]


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_a_probe_on_the_gpu_asks_the_cluster_for_one(workflow_copy, device):
    """probe.device cuda: every probe job asks the SLURM executor for a GPU on
    the cluster section's partition and model, and passes the device to the
    fit (so switching reruns the probes); on the CPU a probe asks for no GPU,
    keeps the profile's partition, and its settings name the device too."""
    site = '{"partition": "gpu", "gpu_model": "a100"}'
    result = workflow_copy.snakemake(
        "-n", "-p", "--configfile=config/smoke.yaml", "--default-resources", "slurm_partition=cpu",
        "--config", f'probe={{"device": "{device}"}}', f"cluster={site}",
    )
    blocks = result.stdout.split("\n\n")
    probes = [b for b in blocks if re.search(r"^rule (transfer_)?probe:", b, re.M)]
    others = [b for b in blocks if re.search(r"^rule ensemble:", b, re.M)]
    assert probes and others
    for job in probes:
        resources = re.search(r"resources: (.*)", job).group(1)
        settings = json.loads(re.search(r"--settings-json '(.*?)'", job).group(1))
        if device == "cuda":
            assert "gpu=1" in resources and "gpu_model=a100" in resources and "slurm_partition=gpu" in resources
            assert settings["device"] == "cuda"
        else:
            assert "gpu" not in resources.replace("slurm_partition=cpu", "") and "slurm_partition=cpu" in resources
            assert settings["device"] == "cpu" and set(settings) == {"C", "max_iter", "tol", "device"}
    assert all("slurm_partition=cpu" in job and "gpu=" not in job for job in others)


def test_a_config_file_fully_defines_its_run(workflow_copy):
    """--configfile X gives exactly X plus schema defaults, never values of config.yaml."""
    default = yaml.safe_load((ROOT / "config.yaml").read_text())
    default["pretrain"]["temperature"] = 0.77  # a value the smoke scale must not inherit
    workflow_copy.write_config("config.yaml", default)
    workflow_copy.snakemake("--configfile=config/smoke.yaml", "-c1", "resolved_config")
    produced = json.loads((workflow_copy.folder / "results/smoke/config.json").read_text())
    assert produced == config_module.load(SMOKE)
    assert produced["pretrain"]["temperature"] == 0.2


def test_config_overrides_single_keys(workflow_copy):
    workflow_copy.snakemake("--configfile=config/smoke.yaml", "--config", "name=other", "-c1", "resolved_config")
    produced = json.loads((workflow_copy.folder / "results/other/config.json").read_text())
    expected = config_module.load(SMOKE)
    expected["name"] = "other"
    assert produced == expected


def test_invalid_config_fails_before_any_job(workflow_copy):
    bad = yaml.safe_load(SMOKE.read_text())
    bad["pretrain"]["epochs"] = 0
    workflow_copy.write_config("bad.yaml", bad)
    result = workflow_copy.snakemake("--configfile=bad.yaml", "-n", check=False)
    assert result.returncode != 0
    assert "pretrain.epochs" in result.stdout + result.stderr
    assert not (workflow_copy.folder / "results").exists()


def test_figures_with_no_flags_then_one_seed_change_replans_one_chain(workflow_copy):
    """`snakemake figures` exactly as typed (the workflow profile gives the core
    count), on the smoke scale put in place of config.yaml; then what a
    reviewer does with the run: verify it, read its report in a browser."""
    smoke = yaml.safe_load(SMOKE.read_text())
    # one more Base member, imported from a checkpoint in the official release format
    smoke["members"]["imported"] = [{"mode": "base", "seed": 9, "path": "ckpt/base9.pth"}]
    write_official_checkpoint(workflow_copy.folder / "ckpt" / "base9.pth", smoke["backbone"])
    workflow_copy.write_config("config.yaml", smoke)
    workflow_copy.snakemake("figures")
    root = workflow_copy.folder / "results" / "smoke"
    cfg = config_module.resolve(smoke)
    (warm_log,) = (workflow_copy.folder / ".snakemake" / "log").glob("*.warm.log")
    assert len(re.findall(r"ended with 0 ", warm_log.read_text())) > 50  # the jobs ran warm (multisym.warm)
    imported = next(m for m in member_table(cfg) if m.imported)
    record = json.loads((root / "members" / imported.folder / "import.json").read_text())
    assert len(record["sha256"]) == 64
    members_json = json.loads((root / "metrics" / "members.json").read_text())
    assert "base-s9" in [m["member"] for m in members_json["members"]]
    for m in member_table(cfg):
        assert (root / "members" / m.folder / "model.pt").is_file()
        step = "import_member" if m.imported else "pretrain"
        assert (workflow_copy.folder / f"logs/smoke/{step}/{m.folder}.log").is_file()
    for table in ("table1", "table2", "table3", "table4", "table7"):
        for ext in ("csv", "md", "tex", "html"):
            assert (root / "tables" / f"{table}.{ext}").stat().st_size > 0
    for tex in (root / "tables").glob("*.tex"):
        text = tex.read_text()
        assert text.isascii() and "\\toprule" in text and "\\bottomrule" in text, tex.name
    for figure in ("figure2", "figure3"):
        for ext in ("pdf", "png"):
            assert (root / "figures" / f"{figure}.{ext}").stat().st_size > 1000
    check_numbers_agree(root)
    check_shift_agrees(root)
    check_transfer_agrees(root, cfg)
    check_audit_agrees(root, cfg)
    check_claims(root)
    comparison = list(csv.DictReader(open(root / "tables" / "paper_comparison.csv")))
    assert {r["status"] for r in comparison} == {"not comparable", "not reproduced"}
    assert any(r["target"] == "table2" and r["reproduced"] for r in comparison)

    again = workflow_copy.snakemake("figures", "-n")
    assert "Nothing to be done" in again.stdout + again.stderr
    # moving to a cluster, or changing what a GPU job asks for, retrains nothing
    moved = workflow_copy.snakemake("figures", "-n", "--config", "cluster={executor: slurm, partition: gpu}",
                                    "gpu_jobs={pretrain: {time_limit_min: 30, mem_gb: 8}}")
    assert "Nothing to be done" in moved.stdout + moved.stderr
    check_stage_versions(workflow_copy)

    check_verify(workflow_copy, root)
    check_report(workflow_copy, root)

    changed = copy.deepcopy(smoke)
    changed["members"]["seeds"]["eq"][0] = 7
    workflow_copy.write_config("config.yaml", changed)
    # review tier "results": the new member would need pretraining, so the run refuses
    refused = workflow_copy.snakemake("figures", "--config", "review={tier: results}", check=False)
    assert refused.returncode != 0
    log = next((workflow_copy.folder / "logs" / "smoke" / "pretrain").glob("eq-rotation-s7-*.log")).read_text()
    assert "review tier 'results'" in log and "Nothing was trained" in log
    assert not list((root / "members").glob("eq-rotation-s7-*/model.pt"))
    counts = planned_jobs(workflow_copy.snakemake("figures", "-n").stdout)
    assert counts["pretrain"] == 1 and counts["features"] == 1 and counts["probe"] == 1
    assert counts["transfer_features"] == 1 and counts["transfer_probe"] == 1
    assert "prepare_transfer_data" not in counts
    assert "sup_logits" not in counts and "finetune" not in counts and "prepare_data" not in counts
    # only the pools holding Eq members are rebuilt
    assert counts["ensemble"] == 4
    assert counts["audit_outputs"] == 1 and counts["audit_metrics"] == 1
    assert "emergence" not in counts and "prepare_audit" not in counts


def check_verify(workflow_copy, root):
    """The run's ledger verifies; a changed result file is named; restored, it verifies again."""
    def verify():
        return subprocess.run(["multisym", "verify", str(root)], cwd=workflow_copy.folder, env=tool_env(),
                              capture_output=True, text=True)

    assert verify().returncode == 0
    logits = next((root / "logits").glob("eq-*.npz"))
    original = logits.read_bytes()
    logits.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    result = verify()
    assert result.returncode != 0 and f"{logits.relative_to(workflow_copy.folder)}: changed" in result.stdout
    logits.write_bytes(original)
    assert verify().returncode == 0


def check_stage_versions(workflow_copy):
    """Planned with a copy of the package first on the path: editing a comment
    reruns nothing; bumping one stage's version reruns that stage and what
    depends on it, and nothing upstream."""
    import shutil

    import multisym

    package = workflow_copy.folder / "patched" / "multisym"
    shutil.copytree(Path(multisym.__file__).parent, package)
    env = {"PYTHONPATH": str(package.parent)}
    audit_module = package / "evaluate" / "audit.py"
    audit_module.write_text(audit_module.read_text() + "\n# a comment changes no result\n")
    quiet = workflow_copy.snakemake("figures", "-n", env=env)
    assert "Nothing to be done" in quiet.stdout + quiet.stderr
    stages = package / "stages.py"

    def bump(stage):
        text, found = re.subn(rf'"{stage}": (\d+),', lambda m: f'"{stage}": {int(m[1]) + 1},', stages.read_text())
        assert found == 1, stage
        stages.write_text(text)

    bump("audit_metrics")
    counts = planned_jobs(workflow_copy.snakemake("figures", "-n", env=env).stdout)
    assert counts.pop("audit_metrics") == 1 and counts.pop("table") == 1 and counts.pop("figure") == 1
    assert set(counts) <= {"comparison", "checksums", "provenance", "figures", "total"}, counts
    # a new pretraining version trains every trained member again, in new run folders
    bump("pretrain")
    counts = planned_jobs(workflow_copy.snakemake("figures", "-n", env=env).stdout)
    trained = [m for m in member_table(config_module.load(workflow_copy.folder / "config.yaml")) if not m.imported]
    assert counts["pretrain"] == len(trained) and "prepare_data" not in counts
    shutil.rmtree(package.parent)


def write_official_checkpoint(path, backbone):
    """A checkpoint as the official code releases them: {"backbone": state dict}
    with the DDP prefix module. on every key."""
    import torch

    from multisym.train.models import build_backbone

    torch.manual_seed(9)
    state = build_backbone({**backbone, "arch": "small_resnet"}, 1).state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"backbone": {f"module.{k}": v for k, v in state.items()}}, path)


def check_shift_agrees(root):
    """Each pool's clean 'members (mean)' under shift is the mean accuracy of
    exactly its members' own shift logits (member order cannot get mixed up)."""
    import numpy as np

    shift = json.loads((root / "shift" / "metrics.json").read_text())
    members = json.loads((root / "metrics" / "members.json").read_text())["members"]
    files = {p.stem: p for p in (root / "shift" / "logits").glob("*.npz")}
    for pool, entry in shift["pools"].items():
        pool_members = json.loads((root / "ensembles" / f"{pool}_greedy.json").read_text())["members"]
        accuracies = []
        for member in pool_members:
            path = next(p for stem, p in files.items() if stem.rsplit("-", 1)[0] == member)
            with np.load(path) as stored:
                accuracies.append(100.0 * (stored["clean_logits"].argmax(1) == stored["labels"]).mean())
        assert entry["sets"]["clean"]["members_mean"]["accuracy"] == pytest.approx(np.mean(accuracies))
    assert shift["stand_in"] is True and {m["member"] for m in members} >= {
        m for e in shift["pools"].values() for m in e["greedy_members"]}


def check_transfer_agrees(root, cfg):
    """Every Eq and Inv member has logits on the stand-in transfer set; the
    transfer tables repeat its ensembles' numbers and say they are a stand-in."""
    transfer = root / "transfer" / "rotated"
    members = [m for m in member_table(cfg) if m.mode in ("eq", "inv")]
    assert sorted(p.stem for p in (transfer / "logits").glob("*.npz") if "." not in p.stem) == sorted(
        m.folder for m in members)
    manifest = json.loads((transfer / "data" / "manifest.json").read_text())
    assert manifest["dataset"] == "digits_rotated" and manifest["image_size"] == cfg["dataset"]["image_size"]
    greedy = json.loads((transfer / "ensembles" / "eq_inv_greedy.json").read_text())
    table5 = list(csv.DictReader(open(root / "tables" / "table5.csv")))
    cell = next(r for r in table5 if r["row"] == "Greedy M=2 Eq+Inv" and r["column"] == "rotated top-1")
    assert float(cell["value"]) == pytest.approx(greedy["sizes"][1]["metrics"]["accuracy"]["value"])
    assert "stand-in" in (root / "tables" / "table5.md").read_text()
    table9 = list(csv.DictReader(open(root / "tables" / "table9.csv")))
    assert list(dict.fromkeys(r["column"] for r in table9)) == ["digits", "rotated"]
    dominance = json.loads((root / "metrics" / "members.json").read_text())["dominance"]
    cell = next(r for r in table9 if r["row"] == "Eq>Inv (% classes)" and r["column"] == "digits")
    assert float(cell["value"]) == pytest.approx(dominance["best_pair"]["eq_better"])
    for name in ("table8.csv", "table9.md"):
        assert (root / "tables" / name).stat().st_size > 0
    assert (root / "figures" / "figure4.png").stat().st_size > 1000


def check_claims(root):
    """Every claim of the paper has a verdict; a claim's cells are paired
    differences of ensembles this run built, on the same resamples."""
    from multisym.resamples import read_resamples
    from multisym.report.claims import load_claims

    rows = list(csv.DictReader(open(root / "tables" / "claims.csv")))
    summary = {r["claim"]: r for r in rows if r["cell"] == "summary"}
    assert set(summary) == {c["id"] for c in load_claims()}
    verdicts = {"supported", "contradicted", "inconclusive", "not measured"}
    assert {r["verdict"] for r in rows} <= verdicts
    assert summary["several_axes"]["verdict"] == "not measured"  # one axis
    assert summary["greedy_accuracy"]["verdict"] != "not measured"
    eq, both = (read_resamples(str(root / "ensembles" / f"{pool}_greedy.resamples.npz")) for pool in ("eq", "eq_inv"))
    assert (eq.n, eq.samples, eq.labels_sha256) == (both.n, both.samples, both.labels_sha256)
    cell = next(r for r in rows if r["claim"] == "greedy_accuracy" and r["cell"].startswith("M=2 "))
    greedy = {pool: json.loads((root / "ensembles" / f"{pool}_greedy.json").read_text())["sizes"][1]
              for pool in ("eq", "eq_inv")}
    assert float(cell["estimate"]) == pytest.approx(
        greedy["eq_inv"]["metrics"]["accuracy"]["value"] - greedy["eq"]["metrics"]["accuracy"]["value"])
    assert float(cell["ci_low"]) <= float(cell["estimate"]) <= float(cell["ci_high"])
    for ext in ("md", "html"):
        assert "Eq+Inv" in (root / "tables" / f"claims.{ext}").read_text()


def check_audit_agrees(root, cfg):
    """Every member is audited; the audit table repeats the audit's numbers;
    Eq members' heads are audited; the emergence and Ising figures exist."""
    from multisym.members import finetuned_members

    result = json.loads((root / "audit" / "metrics.json").read_text())
    members = member_table(cfg)
    expected = [m.id for m in members] + [m.id for m in finetuned_members(cfg, members)]
    assert list(result["members"]) == expected
    assert list(result["sets"]) == ["test", "noise", "photos"] and result["stand_in"] is True
    for member in members:
        head = result["members"][member.id]["eq_head_accuracy"]
        assert (head is not None) == (member.mode == "eq" and not member.imported)
    table = list(csv.DictReader(open(root / "tables" / "table_audit.csv")))
    cell = next(r for r in table if r["row"] == "inv-rotation-s1" and r["column"] == "OSP noise")
    assert float(cell["value"]) == pytest.approx(
        result["members"]["inv-rotation-s1"]["sets"]["noise"]["rotation"]["osp"]["value"])
    assert any(r["row"] == "Eq+Inv (MSE) whole pool, logit mean" for r in table)
    for figure in ("figure_audit", "figure_emergence", "figure_emergence_size", "figure_ising",
                   "figure_finite_ensemble"):
        assert (root / "figures" / f"{figure}.png").stat().st_size > 1000


def check_numbers_agree(root):
    """The same number is the same in every file that reports it."""
    members = json.loads((root / "metrics" / "members.json").read_text())
    single = {m["member"]: m["metrics"]["accuracy"]["value"] for m in members["members"]}
    for path in (root / "ensembles").glob("*_greedy.json"):
        result = json.loads(path.read_text())
        first = result["sizes"][0]
        assert first["size"] == 1 and first["distinct"] == 1
        assert first["metrics"]["accuracy"]["value"] == pytest.approx(single[first["members"][0]])
        assert result["protocol"] == []
    table2 = list(csv.DictReader(open(root / "tables" / "table2.csv")))
    eq_greedy = json.loads((root / "ensembles" / "eq_greedy.json").read_text())
    for entry in eq_greedy["sizes"]:
        cell = next(r for r in table2 if r["row"] == "Greedy Eq (DE)" and r["column"] == f"M={entry['size']}")
        assert float(cell["value"]) == pytest.approx(entry["metrics"]["accuracy"]["value"])
    table1 = list(csv.DictReader(open(root / "tables" / "table1.csv")))
    best_eq = next(r for r in table1 if r["row"] == "Best member on val" and r["column"] == "Eq")
    assert float(best_eq["value"]) == pytest.approx(eq_greedy["sizes"][0]["metrics"]["accuracy"]["value"])
    for cell in table1:
        if "% classes" in cell["column"] and cell["row"] == "Best member on val":
            assert 0 <= float(cell["value"]) <= 100


def test_finetune_adaptation_with_the_papers_selection(workflow_copy):
    """adapt mode finetune: one candidate per learning rate, the one best on the
    selection split kept; selection on test (the paper's protocol) is marked."""
    smoke = yaml.safe_load(SMOKE.read_text())
    smoke["members"]["seeds"] = {"eq": [1, 2], "inv": [1]}
    smoke["finetune"] = {"seeds": []}
    smoke["shift"] = {"enabled": False}
    smoke["ensembles"] = {**smoke["ensembles"], "pools": ["eq", "eq_inv"]}
    smoke["adapt"] = {"mode": "finetune", "selection_split": "test",
                      "finetune": {"epochs": 2, "batch_size": 256, "lr": {"eq": [0.01, 0.1], "inv": [0.05]}}}
    workflow_copy.write_config("ft.yaml", smoke)
    workflow_copy.snakemake("--configfile=ft.yaml", "figures")
    root = workflow_copy.folder / "results" / "smoke"
    for m in member_table(config_module.resolve(smoke)):
        choice = json.loads(next((root / "adapt").glob(f"{m.id}-*/choice.json")).read_text())
        expected = 2 if m.mode == "eq" else 1
        assert len(choice["candidates"]) == expected
        best = max(c["selection_accuracy"] for c in choice["candidates"])
        assert choice["chosen"]["selection_accuracy"] == best
        assert choice["protocol"] and "paper protocol" in choice["protocol"][0]
    assert not (root / "features").exists()


def test_tables_6_and_10_from_two_symmetry_axes(workflow_copy):
    """Eq and Inv members of two axes: per-axis and all-axes greedy Eq+Inv
    ensembles (Table 6) and per-axis dominance and Δ (Table 10), each built by its target."""
    smoke = yaml.safe_load(SMOKE.read_text())
    smoke["members"] = {"axes": ["rotation", "halfswap"], "seeds": {"eq": [1, 2], "inv": [1, 2]}}
    smoke["finetune"] = {"seeds": []}
    smoke["transfer"] = {"datasets": []}
    smoke["ensembles"]["axes_size"] = 2
    workflow_copy.write_config("config.yaml", smoke)
    workflow_copy.snakemake("results/smoke/tables/table6.md", "results/smoke/tables/table10.md",
                            "results/smoke/tables/claims.md", "results/smoke/tables/table1.md",
                            "results/smoke/figures/figure6.pdf")
    root = workflow_copy.folder / "results" / "smoke"
    greedy = {p.stem[: -len("_greedy")]: json.loads(p.read_text()) for p in (root / "ensembles").glob("*_greedy.json")}
    assert {"eq_rotation", "eq_halfswap", "eq_inv_rotation", "eq_inv_halfswap", "eq_inv_all"} <= set(greedy)
    assert len(greedy["eq_inv_all"]["members"]) == 8 and len(greedy["eq_inv_rotation"]["members"]) == 4
    whole = json.loads((root / "ensembles" / "eq_inv_halfswap_all.json").read_text())
    assert whole["sizes"][0]["size"] == 4 and sorted(whole["sizes"][0]["members"]) == sorted(
        greedy["eq_inv_halfswap"]["members"])
    table6 = {(r["row"], r["column"]): float(r["value"]) for r in csv.DictReader(open(root / "tables" / "table6.csv"))}
    assert table6[("Eq+Inv, every member of the axis", "halfswap top-1")] == pytest.approx(
        whole["sizes"][0]["metrics"]["accuracy"]["value"])
    assert table6[("Greedy M=2 Eq+Inv over all axes", "all axes top-1")] == pytest.approx(
        greedy["eq_inv_all"]["sizes"][1]["metrics"]["accuracy"]["value"])
    table10 = {(r["row"], r["column"]): float(r["value"])
               for r in csv.DictReader(open(root / "tables" / "table10.csv"))}
    members = json.loads((root / "metrics" / "members.json").read_text())
    for axis in ("rotation", "halfswap"):
        dominance = members["dominance_by_axis"][axis]
        assert dominance["eq"].startswith(f"eq-{axis}") and dominance["inv"].startswith(f"inv-{axis}")
        assert table10[("Eq>Inv (% classes)", axis)] == pytest.approx(dominance["best_pair"]["eq_better"])
        delta = (greedy[f"eq_inv_{axis}"]["sizes"][1]["metrics"]["accuracy"]["value"]
                 - greedy[f"eq_{axis}"]["sizes"][1]["metrics"]["accuracy"]["value"])
        assert table10[("Δ top-1 (EI−EE, greedy M=2)", axis)] == pytest.approx(delta)
    # each Δ with its paired bootstrap CI; the note names both ensembles' distinct members and repeats
    for cell in csv.DictReader(open(root / "tables" / "table10.csv")):
        if cell["row"].startswith("Δ"):
            assert float(cell["ci_low"]) <= float(cell["value"]) <= float(cell["ci_high"])
            assert "EE = greedy eq_" in cell["note"] and "distinct members" in cell["note"]
    assert "repeats" in (root / "tables" / "table10.md").read_text()
    claims = {r["claim"]: r for r in csv.DictReader(open(root / "tables" / "claims.csv")) if r["cell"] == "summary"}
    assert claims["several_axes"]["verdict"] != "not measured" and claims["axis_gain"]["verdict"] != "not measured"
    # Table 1's dominance pairs members of the ensembles axis (the first one) only, and so do its columns
    assert members["dominance"] == members["dominance_by_axis"]["rotation"]
    table1 = {(r["row"], r["column"]): r for r in csv.DictReader(open(root / "tables" / "table1.csv"))}
    for column, mode in (("Eq", "eq"), ("Inv", "inv")):
        rows = [m for m in members["members"] if m["mode"] == mode and m["axis"] == "rotation"]
        assert table1[("Mean over members", column)]["n"] == "2"
        assert float(table1[("Mean over members", column)]["value"]) == pytest.approx(
            sum(m["metrics"]["accuracy"]["value"] for m in rows) / 2)
        assert table1[("Best member on val", column)]["note"].startswith(f"{mode}-rotation-")


def test_a_scale_named_dotdot_plans_nothing(workflow_copy):
    """name: ".." would put every output beside the repository's own files
    (results/../data/...): planning refuses it, naming the key."""
    result = workflow_copy.snakemake("-n", "--configfile=config/smoke.yaml", "--config", "name=..", check=False)
    assert result.returncode != 0
    assert "config key 'name'" in result.stdout + result.stderr
    assert "Job stats" not in result.stdout
