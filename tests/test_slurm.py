"""The cluster path on a real one-node SLURM (tests/local_slurm.py): the slurm
profile as typed, GPU training submitted with submitit by waiting local rules,
and what a cluster job sees. They run one at a time, in one pytest-xdist
worker (--dist loadfile), as the node has 2 CPUs; each Snakemake call has a
hard timeout, so a hung status poll fails the test."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import ROOT, SMOKE, planned_jobs, session_cluster, tool_env
from local_slurm import wait_until
from multisym.config import resolve, section_defaults
from multisym.data.splits import prepare
from multisym.cluster.launch import LIVE_STATES, slurm_state
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
    """The session's cluster (conftest.py starts it once, before the workers)."""
    return session_cluster()


def slurm_args(poll_s: float = 2) -> tuple[str, ...]:
    """The slurm profile as typed, plus a --config: training still goes to
    SLURM (cluster.executor auto follows the SLURM executor)."""
    jobs = json.dumps({"pretrain": SMALL_JOBS, "adapt": SMALL_JOBS})
    return ("--profile", "slurm", *FAST, "--config", f"gpu_jobs={jobs}", f'cluster={{"poll_s": {poll_s}}}')


def sacct(*args: str) -> list[list[str]]:
    out = subprocess.run(["sacct", "-X", "-n", "-P", *args], capture_output=True, text=True, check=True).stdout
    return [line.split("|") for line in out.splitlines() if line.strip()]


LOG_TABLE = re.compile(r"^\| (?P<what>[^|]+) \| `(?P<path>[^`]+)` \|$", re.MULTILINE)


def documented_log_paths() -> dict[str, str]:
    """docs/cluster.md's table of log locations: what -> a glob pattern."""
    text = (ROOT / "docs" / "cluster.md").read_text()
    table = text[text.index("## Logs"):]
    return {m["what"]: re.sub(r"<[^>]+>", "*", m["path"]) for m in LOG_TABLE.finditer(table)}


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
    finetuned = json.loads(next((root / "finetune").glob("*/slurm_job.json")).read_text())["job_id"]
    # a --config beside the profile kept every GPU job in SLURM: sacct knows each one, completed
    trained = [json.loads(p.read_text())["job_id"] for p in root.glob("*/*/slurm_job.json")]
    assert finetuned in trained and len(trained) == sum(1 for _ in root.glob("*/*/model.pt"))
    states = {row[0]: row[1] for row in sacct("-j", ",".join(trained), "--format=JobID,State")}
    assert states == {job: "COMPLETED" for job in trained}, states
    # every waiter logged its attempt and the job's states
    waiter = next((root / "members").glob("eq-*/waiter.log")).read_text()
    assert "=== attempt by pid" in waiter and "submitted SLURM job" in waiter and " RUNNING" in waiter
    # every log location of docs/cluster.md exists after such a run
    for what, pattern in documented_log_paths().items():
        assert list(workflow_copy.folder.glob(pattern)), (what, pattern)
    # sacct maps a plugin job to its rule through the plugin's comment
    comments = [row[0] for row in sacct("--format=Comment%200", "--starttime=now-1hour") if row[0]]
    assert any(c.startswith("rule_probe_wildcards_") for c in comments), comments[:5]


def test_paper_plan_with_the_slurm_profile(cluster, workflow_copy):
    """(e) The paper config plans its whole pool with each GPU job's request
    from the config, and CPU jobs' requests from the profile, not the host."""
    profile = workflow_copy.folder / "slurm" / "config.yaml"
    profile.write_text(profile.read_text().replace("&gpu_site {", "&gpu_site {cluster_partition: site-gpus, "))
    result = workflow_copy.snakemake("-n", "--profile", "slurm", "--configfile=config/paper.yaml",
                                     "--config", "name=paper-here", hard_timeout=120)
    counts = planned_jobs(result.stdout)
    assert counts["pretrain"] == 28 and counts["adapt_candidate"] == 21 and counts["finetune"] == 7
    blocks = result.stdout.split("\n\n")
    pretrain = next(b for b in blocks if "rule pretrain:" in b)
    assert "gpu_nodes=4, gpus_per_node=8, gpu_cpus_per_task=10, gpu_mem_gb=480, gpu_time_limit_min=1440" in pretrain
    assert "keep_every=100" in pretrain
    # the site values of the profile survive a --config (it replaces a profile's config: list)
    assert "cluster_partition=site-gpus" in pretrain and "--cluster partition=site-gpus" in pretrain
    assert "cluster_executor=auto" in pretrain  # a dry run cannot tell where training will go
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
    # numbered from 1, as "epoch 10/60" when the tenth ends
    assert int(re.search(r"resumed \S+ (?:at the start of|in) epoch (\d+)/60", resumed).group(1)) >= 11
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
    assert slurm_state(job) in LIVE_STATES  # a hard kill of Snakemake leaves its GPU job running
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
    # 1000 epochs: 90 s or more of training (0.09 s an epoch at best here), the signal 75 s into the job
    path, member, run_dir = long_member(workflow_copy, "limited", epochs=1000)
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
        'cluster={"poll_s": 2, "signal_delay_s": 45}', hard_timeout=900,
    )
    assert reference.wait(timeout=600) == 0
    record = json.loads((run_dir / "slurm_job.json").read_text())
    log = (Path(record["folder"]) / f"{record['job_id']}_0_log.err").read_text()
    assert "stopped by SIGUSR2" in log and "DUE TO JOB REQUEUE" in log
    stopped = re.search(r"stopped by SIGUSR2 in epoch (\d+) after batch (\d+)", log)
    assert f"resumed {run_dir.name} in epoch {stopped[1]}/1000 after batch {stopped[2]}" in log
    final = torch.load(run_dir / "model.pt", weights_only=True)
    assert same_weights(final, torch.load(tmp_path / "model.pt", weights_only=True))
    assert epochs_done(run_dir) == 1000


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


# ------------------------------------------------ what a cluster user meets
def test_local_training_under_the_slurm_executor_is_refused(cluster, workflow_copy):
    """cluster.executor local with --profile slurm would train on the login
    node: the run stops when it starts, before anything is submitted."""
    path = workflow_copy.write_config("refused.yaml", {**small_smoke(), "name": "refused"})
    before = len(sacct("--starttime=now-1hour", "--format=JobID"))
    result = workflow_copy.snakemake(f"--configfile={path.name}", "--profile", "slurm", *FAST, "--config",
                                     'cluster={"executor": "local"}', check=False, hard_timeout=300)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "cluster.executor is local" in output and "Nothing was submitted" in output, output[-3000:]
    assert len(sacct("--starttime=now-1hour", "--format=JobID")) == before
    assert not (workflow_copy.folder / "results" / "refused").exists()


def pretrain_by_hand(member, data: Path, out: Path, *options: str) -> subprocess.CompletedProcess:
    """A waiter as the workflow starts it under --profile slurm, by hand."""
    command = [*local_pretrain(member, data, out), "--snakemake-executor", "slurm", "--cluster", "poll_s=1",
               *options]
    return subprocess.run(["timeout", "-k", "10", "300", *command], env=tool_env(), capture_output=True, text=True)


def test_a_job_that_can_never_start_fails_at_once(cluster, tmp_path):
    """More CPUs than the partition's node has: SLURM keeps the job PENDING
    (PartitionConfig) forever; the waiter cancels it and fails within a
    minute, naming the key to change and the partition's limits. A request
    sbatch refuses outright fails before anything is submitted."""
    config = resolve(small_smoke())
    member = next(m for m in member_table(config) if m.mode == "eq")
    data = tmp_path / "data"
    prepare(config["dataset"], data / "dataset.npz", data / "manifest.json")
    started = time.monotonic()
    done = pretrain_by_hand(member, data, tmp_path / "pending", "--gpu-cpus-per-task", "64", "--gpu-mem-gb", "1",
                            "--gpu-time-limit-min", "10")
    seconds = time.monotonic() - started
    assert done.returncode == 2 and seconds < 60, (seconds, done.stderr[-3000:])
    assert "can never start: pending with reason PartitionConfig" in done.stderr
    assert "gpu_jobs.pretrain.cpus_per_task" in done.stderr and "TotalCPUs=" in done.stderr
    assert "Traceback" not in done.stderr
    job = json.loads((tmp_path / "pending" / "slurm_job.json").read_text())["job_id"]
    assert slurm_state(job) not in LIVE_STATES  # cancelled, not left pending
    refused = pretrain_by_hand(member, data, tmp_path / "refused", "--gpu-cpus-per-task", "1",
                               "--gpu-mem-gb", "100000", "--gpu-time-limit-min", "10")
    assert refused.returncode == 2 and "SLURM refused the job" in refused.stderr, refused.stderr[-3000:]
    assert "gpu_jobs.pretrain.mem_gb=100000" in refused.stderr and "Nothing was submitted" in refused.stderr
    assert not (tmp_path / "refused" / "slurm_job.json").exists()


def test_a_late_warning_leaves_a_finished_job_completed(cluster, workflow_copy):
    """SIGUSR2 sent again and again from the last epoch's log line until the
    job ends: the outputs are exported, the job exits 0 and SLURM accounts it
    COMPLETED (it was FAILED 12:0, "User defined signal 2")."""
    path, member, run_dir = long_member(workflow_copy, "late", epochs=40)
    target = str(run_dir.relative_to(workflow_copy.folder) / "model.pt")
    run = start_snakemake(workflow_copy, f"--configfile={path.name}", target, *slurm_args(poll_s=1))
    wait_until(lambda: epochs_done(run_dir) >= 40, 300, "the last epoch in the SLURM job")
    job = json.loads((run_dir / "slurm_job.json").read_text())["job_id"]
    sent = 0
    while run.poll() is None and slurm_state(job) in LIVE_STATES | {None}:
        subprocess.run(["scancel", "--signal=USR2", job], capture_output=True)
        sent += 1
        time.sleep(0.1)
    output = run.communicate(timeout=120)[0]
    assert run.returncode == 0, output[-3000:]
    assert sent > 0
    assert sacct("-j", job, "--format=State,ExitCode") == [["COMPLETED", "0:0"]]
    model = torch.load(run_dir / "model.pt", weights_only=True)
    assert model["epochs"] == 40


def test_ctrl_c_cancels_the_gpu_jobs(cluster, workflow_copy):
    """SIGINT to Snakemake's process group (Ctrl-C at a terminal): the waiter
    cancels its SLURM job, which saves its state, waits for it to end and
    exits; nothing keeps running."""
    path, member, run_dir = long_member(workflow_copy, "interrupted", epochs=400)
    target = str(run_dir.relative_to(workflow_copy.folder) / "model.pt")
    run = start_snakemake(workflow_copy, f"--configfile={path.name}", target, *slurm_args())
    wait_until(lambda: epochs_done(run_dir) >= 3, 300, "3 epochs in the SLURM job")
    job = json.loads((run_dir / "slurm_job.json").read_text())["job_id"]
    os.killpg(run.pid, signal.SIGINT)
    output = run.communicate(timeout=180)[0]
    assert run.returncode != 0
    assert slurm_state(job) == "CANCELLED", output[-3000:]
    waiter = (run_dir / "waiter.log").read_text()
    assert f"SIGINT: cancelling SLURM job {job}" in waiter and f"SLURM job {job} ended CANCELLED" in waiter
    record = json.loads((run_dir / "slurm_job.json").read_text())
    job_log = (Path(record["folder"]) / f"{job}_0_log.err").read_text()
    assert "stopped by SIGTERM" in job_log and (run_dir / "state.pt").is_file()
