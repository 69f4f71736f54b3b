"""The cluster path on a real one-node SLURM (tests/local_slurm.py): the slurm
profile as typed, GPU training submitted with submitit by waiting local rules,
and what a cluster job sees. Run one at a time (the node has 2 CPUs); each
Snakemake call has a hard timeout, so a hung status poll fails the test."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml

from conftest import SMOKE, planned_jobs
from local_slurm import LocalSlurm

pytestmark = pytest.mark.workflow

# The node has 2 CPUs and 2 fake GPUs: every job must fit on it.
SMALL_JOBS = {"cpus_per_task": 1, "mem_gb": 2, "time_limit_min": 10}
FAST = ("--slurm-init-seconds-before-status-checks", "2", "--default-resources", "mem_mb=1000", "runtime=10",
        "cpus_per_task=1")


@pytest.fixture(scope="module")
def cluster():
    if os.geteuid() != 0:
        pytest.fail("the SLURM tests start a local cluster and need root (CI runs as root)")
    # the daemons run as users slurm and mysql: pytest's private temporary folders are closed to them
    state = Path(tempfile.mkdtemp(prefix="multisym-slurm-", dir="/var/tmp"))
    state.chmod(0o755)
    slurm = LocalSlurm(state)
    try:
        yield slurm.start()
    finally:
        slurm.stop()
        shutil.rmtree(state, ignore_errors=True)


def slurm_args(poll_s: float = 2) -> tuple[str, ...]:
    jobs = json.dumps({"pretrain": SMALL_JOBS, "adapt": SMALL_JOBS})
    return ("--profile", "slurm", *FAST, "--config", f"gpu_jobs={jobs}",
            f'cluster={{"executor": "slurm", "poll_s": {poll_s}}}')


def small_smoke() -> dict:
    config = yaml.safe_load(SMOKE.read_text())
    config["members"]["seeds"] = {"eq": [1, 2], "inv": [1], "base": [1], "sup": [1]}
    config["finetune"] = {"seeds": [1]}
    config["ensembles"] = {**config["ensembles"], "pools": ["eq", "eq_inv"]}
    config["shift"] = {**config["shift"], "corruptions": ["contrast"], "severities": [3]}
    return config


def test_figures_through_the_slurm_profile(cluster, workflow_copy):
    """(a) The tiny config through `figures` with --profile slurm: CPU rules as
    plugin jobs, GPU rules as submitit jobs on fake GPUs. (f) Every cluster job
    sees exactly the main process's config: the scale file (not config.yaml)
    and the --config override of its name."""
    path = workflow_copy.write_config("tiny.yaml", small_smoke())
    workflow_copy.snakemake(f"--configfile={path.name}", "figures", *slurm_args(), "name=on-slurm",
                            hard_timeout=1200)
    root = workflow_copy.folder / "results" / "on-slurm"
    for name in ("table1", "table2", "table5", "table9", "table_shift"):
        assert (root / "tables" / f"{name}.md").stat().st_size > 0
    assert (root / "figures" / "figure2.png").stat().st_size > 1000
    # CPU jobs ran in SLURM, with the scale file's dataset (8 px, not config.yaml's 16)
    manifest = json.loads((root / "data" / "manifest.json").read_text())
    assert manifest["image_size"] == 8
    logs = list((workflow_copy.folder / ".snakemake" / "slurm_logs").rglob("*.log"))
    assert any("rule_prepare_data" in str(p) for p in logs) and any("rule_probe" in str(p) for p in logs)
    # every trained member ran as its own SLURM job, recorded in its run folder
    for run in (root / "members").iterdir():
        if (run / "import.json").exists():
            continue
        record = json.loads((run / "slurm_job.json").read_text())
        assert record["job_id"].isdigit() and Path(record["folder"]).is_dir()
        assert (run / "model.pt").is_file()
    assert json.loads(next((root / "finetune").glob("*/slurm_job.json")).read_text())["job_id"]


def test_paper_plan_with_the_slurm_profile(cluster, workflow_copy):
    """(e) The paper config plans its whole pool with each GPU job's request
    from the config, and CPU jobs' requests from the profile, not the host."""
    result = workflow_copy.snakemake("-n", "--profile", "slurm", "--configfile=config/paper.yaml",
                                     hard_timeout=120)
    counts = planned_jobs(result.stdout)
    assert counts["pretrain"] == 28 and counts["adapt_candidate"] == 21 and counts["finetune"] == 7
    blocks = result.stdout.split("\n\n")
    pretrain = next(b for b in blocks if "rule pretrain:" in b)
    assert "gpu_nodes=1, gpus_per_node=1, gpu_cpus_per_task=8, gpu_mem_gb=64, gpu_time_limit_min=1440" in pretrain
    assert '"executor": "slurm"' in pretrain
    probe_like = next(b for b in blocks if "rule prepare_data:" in b)
    assert "cpus_per_task=1" in probe_like and "mem_mb=4000" in probe_like and "runtime=60" in probe_like
