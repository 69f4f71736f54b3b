"""The cluster path on a real one-node SLURM (tests/local_slurm.py): the slurm
profile as typed, GPU training submitted with submitit by waiting local rules,
and what a cluster job sees. They run one at a time, in one pytest-xdist
worker (--dist loadfile), as the node has 2 CPUs; each Snakemake call has a
hard timeout, so a hung status poll fails the test."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
import yaml

from conftest import SMOKE, planned_jobs, tool_env
from local_slurm import LocalSlurm, wait_until
from multisym.config import resolve, section_defaults
from multisym.data import prepare
from multisym.members import member_table

pytestmark = pytest.mark.workflow

# The node has 2 CPUs and 2 fake GPUs: every job must fit on it, and the
# ensembling jobs (8 threads, as many CPUs asked for) take one each, so that two
# run at once as the other CPU jobs do.
SMALL_JOBS = {"cpus_per_task": 1, "mem_gb": 2, "time_limit_min": 10}
FAST = ("--slurm-init-seconds-before-status-checks", "2", "--default-resources", "mem_mb=1000", "runtime=10",
        "cpus_per_task=1", "--set-threads", "ensemble=1", "member_metrics=1")


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
    # their jobs are CPU jobs like the others here (about 13 SLURM jobs): the local tests run them
    config["audit"] = {"enabled": False}
    config["emergence"] = {"enabled": False}
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
    assert "gpu_nodes=4, gpus_per_node=8, gpu_cpus_per_task=10, gpu_mem_gb=480, gpu_time_limit_min=1440" in pretrain
    assert "keep_every=100" in pretrain
    assert '"executor": "slurm"' in pretrain
    data_job = next(b for b in blocks if "rule prepare_data:" in b)
    assert "cpus_per_task=1" in data_job and "mem_mb=4000" in data_job and "runtime=60" in data_job
    # a job of several threads asks for as many CPUs; a probe sizes its memory
    # and time limit from its features file, which does not exist yet
    for rule in ("ensemble", "transfer_probe"):
        job = next(b for b in blocks if f"rule {rule}:" in b)
        assert re.search(r"cpus_per_task=(\d+)", job).group(1) == re.search(r"threads: (\d+)", job).group(1), job
    assert "mem_mb=<TBD>" in job and "runtime=<TBD>" in job


# ------------------------------------------------------- kills and restarts
def long_member(workflow_copy, name: str, epochs: int):
    """A config whose first Eq member trains long enough to be hit mid-run."""
    config = small_smoke()
    config["name"] = name
    config["pretrain"] = {**config["pretrain"], "epochs": epochs}
    path = workflow_copy.write_config(f"{name}.yaml", config)
    member = next(m for m in member_table(resolve(config)) if m.mode == "eq")
    run_dir = workflow_copy.folder / "results" / name / "members" / member.folder
    return path, member, run_dir


def epochs_done(run_dir: Path) -> int:
    log = run_dir / "epochs.csv"
    return max(0, len(log.read_text().splitlines()) - 1) if log.exists() else 0


def start_snakemake(workflow_copy, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        ["timeout", "-k", "10", "600", sys.executable, "-m", "snakemake", *args], cwd=workflow_copy.folder,
        env=tool_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )


def local_pretrain(member, data: Path, out: Path) -> list[str]:
    """The command that trains ``member`` in one piece, in-process (executor local),
    on the prepared data folder ``data``, into ``out``."""
    return [sys.executable, "-m", "multisym.cli", "pretrain", "--settings-json", json.dumps(member.settings),
            "--data", str(data / "dataset.npz"), "--manifest", str(data / "manifest.json"), "--run-dir", str(out),
            "--out-model", str(out / "model.pt"), "--out-log", str(out / "epochs.csv"), "--threads", "1"]


def uninterrupted_weights(workflow_copy, member, path: Path, tmp: Path) -> dict:
    """The same member trained in one piece, in this process's executor (local)."""
    data = workflow_copy.folder / "results" / path.stem / "data"
    subprocess.run(local_pretrain(member, data, tmp), check=True, env=tool_env(), capture_output=True)
    return torch.load(tmp / "model.pt", weights_only=True)


def same_weights(a: dict, b: dict) -> bool:
    parts = [k for k, v in a.items() if isinstance(v, dict)]
    return all(torch.equal(a[p][k], b[p][k]) for p in parts for k in a[p])


def test_hard_kill_resumes_from_the_last_epoch(cluster, workflow_copy, tmp_path):
    """(c) scancel --signal=KILL of a running pretraining job (no warning, no
    state saved then): Snakemake fails; run again, the new job resumes from the
    last epoch's checkpoint and ends with an uninterrupted run's weights."""
    path, member, run_dir = long_member(workflow_copy, "killed", epochs=60)  # 50 left (10 s or more) at the kill
    target = str(run_dir.relative_to(workflow_copy.folder) / "model.pt")
    first = start_snakemake(workflow_copy, f"--configfile={path.name}", target, *slurm_args())
    wait_until(lambda: epochs_done(run_dir) >= 10, 300, "10 epochs in the SLURM job")
    killed = json.loads((run_dir / "slurm_job.json").read_text())["job_id"]
    subprocess.run(["scancel", "--signal=KILL", killed], check=True)
    output = first.communicate(timeout=300)[0]
    assert first.returncode != 0, output
    assert not (run_dir / "model.pt").exists()
    workflow_copy.snakemake(f"--configfile={path.name}", target, *slurm_args(), hard_timeout=600)
    again = json.loads((run_dir / "slurm_job.json").read_text())
    assert again["job_id"] != killed
    resumed = (Path(again["folder"]) / f"{again['job_id']}_0_log.err").read_text()
    assert re.search(r"resumed \S+ from epoch (\d+)", resumed) and int(
        re.search(r"from epoch (\d+)", resumed).group(1)) >= 10
    final = torch.load(run_dir / "model.pt", weights_only=True)
    assert same_weights(final, uninterrupted_weights(workflow_copy, member, path, tmp_path))


def test_restarted_snakemake_reattaches_to_its_job(cluster, workflow_copy):
    """(d) Snakemake killed while a GPU job runs, then --unlock and the same
    command: the waiter reattaches to the running job; no second job."""
    # 160 epochs: a member of its own (the kill test's has 60), so sacct's history by name is this test's
    path, member, run_dir = long_member(workflow_copy, "reattach", epochs=160)
    target = str(run_dir.relative_to(workflow_copy.folder) / "model.pt")
    first = start_snakemake(workflow_copy, f"--configfile={path.name}", target, *slurm_args())
    wait_until(lambda: epochs_done(run_dir) >= 3, 300, "3 epochs in the SLURM job")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    job = json.loads((run_dir / "slurm_job.json").read_text())["job_id"]
    workflow_copy.snakemake("--unlock", f"--configfile={path.name}", *slurm_args(), hard_timeout=120)
    workflow_copy.snakemake(f"--configfile={path.name}", target, *slurm_args(), hard_timeout=600)
    assert json.loads((run_dir / "slurm_job.json").read_text())["job_id"] == job
    jobs = subprocess.run(["sacct", "-X", "-n", "-P", "--name", run_dir.name, "--format=JobID"],
                          capture_output=True, text=True, check=True).stdout.split()
    assert jobs == [job]  # one SLURM job for this run folder, ever
    log = (workflow_copy.folder / "logs" / "reattach" / "pretrain" / f"{member.folder}.log").read_text()
    assert f"reattached to SLURM job {job}" in log
    assert (run_dir / "model.pt").is_file() and epochs_done(run_dir) == 160


def test_time_limit_checkpoints_requeues_and_resumes(cluster, workflow_copy, tmp_path_factory):
    """(b) A pretraining job longer than its 2-minute SLURM time limit: SIGUSR2
    arrives signal_delay_s ahead, the job saves its state mid-epoch and
    requeues itself, the requeued job resumes, and the final weights equal an
    uninterrupted run's (trained meanwhile on the node's other CPU)."""
    # 600 epochs: 120 s or more of training (0.2 s an epoch at best here), the signal at 90 s or sooner
    path, member, run_dir = long_member(workflow_copy, "limited", epochs=600)
    target = str(run_dir.relative_to(workflow_copy.folder) / "model.pt")
    data = workflow_copy.folder / "results" / "limited" / "data" / "dataset.npz"
    tmp_path = tmp_path_factory.mktemp("reference")
    workflow_copy.snakemake(f"--configfile={path.name}", str(data.relative_to(workflow_copy.folder)), *slurm_args(),
                            hard_timeout=300)
    reference = subprocess.Popen(local_pretrain(member, data.parent, tmp_path), env=tool_env(),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    limited = json.dumps({"pretrain": {**SMALL_JOBS, "time_limit_min": 2}, "adapt": SMALL_JOBS})
    workflow_copy.snakemake(
        f"--configfile={path.name}", target, "--profile", "slurm", *FAST, "--config", f"gpu_jobs={limited}",
        'cluster={"executor": "slurm", "poll_s": 2, "signal_delay_s": 30}', hard_timeout=900,
    )
    assert reference.wait(timeout=600) == 0
    record = json.loads((run_dir / "slurm_job.json").read_text())
    log = (Path(record["folder"]) / f"{record['job_id']}_0_log.err").read_text()
    assert "stopped by SIGUSR2" in log and "DUE TO JOB REQUEUE" in log
    assert re.search(r"resumed \S+ from epoch \d+, batch \d+", log)
    final = torch.load(run_dir / "model.pt", weights_only=True)
    assert same_weights(final, torch.load(tmp_path / "model.pt", weights_only=True))
    assert epochs_done(run_dir) == 600


# ------------------------------------------------------------ several GPUs
def test_a_two_gpu_job_trains_as_two_local_processes_do(cluster, tmp_path):
    """gpus_per_node 2: one SLURM task per (fake) GPU, torch.distributed set up
    from submitit's job environment (gloo on this CPU node). Rank 0 writes,
    and the weights equal those of the local executor's two processes."""
    config = resolve({**small_smoke(), "pretrain": {**small_smoke()["pretrain"], "epochs": 6, "batch_size": 64}})
    member = next(m for m in member_table(config) if m.mode == "eq")
    data = tmp_path / "data"
    prepare(config["dataset"], data / "dataset.npz", data / "manifest.json")
    two_gpus = ["--gpus-per-node", "2", "--gpu-cpus-per-task", "1", "--gpu-mem-gb", "2", "--gpu-time-limit-min", "10"]
    site = json.dumps({**section_defaults("cluster"), "executor": "slurm", "poll_s": 2})
    runs = {"local": [*two_gpus, "--device", "cpu"], "slurm": [*two_gpus, "--cluster-json", site]}
    for name, options in runs.items():
        done = subprocess.run(["timeout", "-k", "10", "400", *local_pretrain(member, data, tmp_path / name), *options],
                              env=tool_env(), capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "slurm" / "slurm_job.json").read_text())
    logs = {rank: Path(record["folder"]) / f"{record['job_id']}_{rank}_log.err" for rank in (0, 1)}
    assert all(log.exists() for log in logs.values()), "one task per GPU"
    assert "epoch 6/6" in logs[0].read_text() and "epoch 6/6" not in logs[1].read_text()  # rank 0 alone logs
    provenance = json.loads((tmp_path / "slurm" / "run.json").read_text())
    assert provenance["processes"] == 2 and provenance["slurm_job_id"] == record["job_id"]
    slurm, local = (torch.load(tmp_path / name / "model.pt", weights_only=True) for name in runs)
    assert same_weights(slurm, local)
