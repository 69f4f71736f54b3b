"""Where a training run executes: in this process, or as a SLURM job that
submitit submits and this process waits for (the cluster path of DESIGN.md;
mse_spec §8 for how the official code launched its jobs).

With ``cluster.executor: slurm`` (set by the slurm profile) the Snakemake rule
runs on the submitting host and calls :func:`run`, which

1. reattaches to the SLURM job recorded in the run folder when it is still
   alive (a waiter killed with Snakemake leaves its job running), else
   submits a new one and records its id (``slurm_job.json``);
2. polls the job's state with bounded ``sacct``/``squeue`` calls until its
   result file appears or it ends, giving up after ``cluster.wait_hours`` with
   an error that says the job goes on and how to reattach;
3. returns the job's result (task 0's, rank 0 of the training processes), or
   raises with the job's own traceback and log.

A job on ``nodes`` x ``gpus_per_node`` GPUs runs one task per GPU; each task
exports torch.distributed's variables from submitit's job environment, and
``distributed.joined`` makes them one process group. With the local executor,
a one-node job of several GPUs starts one process per GPU here
(``processes.run``).

Inside the job, training stops at a step boundary on SLURM's warning signal
(SIGUSR2, ``cluster.signal_delay_s`` before the time limit or on preemption),
saves its full state, and hands the signal to submitit, which requeues the
job (at most ``cluster.max_requeues`` times for time limits); the requeued job
resumes from that state. On SIGTERM (a cancel) it saves its state and ends. A job killed without warning leaves the last epoch's
checkpoint, and the next run resumes from it. The run folder's lock keeps two
trainers out of one folder.
"""

from __future__ import annotations

import importlib
import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import processes
from .errors import UserError
from .files import atomic_write_text

RECORD = "slurm_job.json"
LIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING",
               "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT"}
QUERY_TIMEOUT_S = 60


class LaunchError(UserError, RuntimeError):
    """A training job that could not be submitted, found or finished."""


@dataclass
class Call:
    """A picklable training call: ``target`` is ``module:function``."""

    target: str
    kwargs: dict = field(default_factory=dict)

    def __call__(self):
        module, name = self.target.split(":")
        return getattr(importlib.import_module(module), name)(**self.kwargs)


def _checkpointable():
    import submitit

    class TrainingJob(submitit.helpers.Checkpointable):
        """The submitted job. When training stops on SIGUSR2 (the time-limit or
        preemption warning; its state saved), the signal goes back to
        submitit, whose handler calls ``checkpoint`` (inherited: resubmit this
        same call, which resumes) and requeues the job. SIGTERM (scancel, or
        SLURM ending the job) saves the state too but requeues nothing: the
        job ends, and the next run resumes."""

        def __init__(self, call: Call):
            self.call = call

        def __call__(self):
            from .stopping import InterruptedRun

            environment = submitit.JobEnvironment()
            if environment.num_tasks > 1:  # one task per GPU: torch.distributed from the job's tasks
                submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False,
                                                                      overwrite=True)
            try:
                return self.call()
            except InterruptedRun as stopped:
                print(stopped, file=sys.stderr, flush=True)
                if stopped.signum == signal.SIGUSR2 and environment.global_rank != 0:
                    return None  # rank 0 requeues the whole job; the others just stop
                if stopped.signum == signal.SIGUSR2:
                    try:
                        signal.raise_signal(signal.SIGUSR2)  # submitit: checkpoint, requeue, exit
                    except subprocess.CalledProcessError as error:
                        # SLURM tears the step down as soon as it accepts the requeue, and
                        # its SIGTERM can reach `scontrol requeue` before it returns: the job
                        # is requeued, so leave without a result (which would end the wait)
                        if error.returncode < 0 and "requeue" in error.cmd:
                            raise SystemExit(0) from None
                        raise
                raise

    return TrainingJob


# ------------------------------------------------------------------ queries
def slurm_state(job_id: str) -> str | None:
    """The job's state from sacct (squeue when sacct has nothing), or None when
    neither answers in time."""
    commands = (
        ["sacct", "-X", "-n", "-P", "-j", job_id, "--format=State"],
        ["squeue", "-h", "-j", job_id, "-o", "%T"],
    )
    for command in commands:
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=QUERY_TIMEOUT_S).stdout
        except (subprocess.TimeoutExpired, OSError):
            continue
        lines = [line.split()[0] for line in out.splitlines() if line.strip()]
        if lines:
            return lines[-1].rstrip("+")
    return None


def _record(run_dir: Path) -> dict | None:
    path = run_dir / RECORD
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


# ---------------------------------------------------------------- submission
def submit_parameters(job: dict, cluster: dict, name: str) -> dict:
    """submitit parameters from a ``gpu_jobs`` entry and the site settings."""
    gpus = job["gpus_per_node"]
    params = {
        "name": name,
        "timeout_min": job["time_limit_min"],
        "nodes": job["nodes"],
        "tasks_per_node": max(gpus, 1),
        "cpus_per_task": job["cpus_per_task"],
        "mem_gb": job["mem_gb"],
        "slurm_signal_delay_s": cluster["signal_delay_s"],
    }
    if gpus:
        if cluster["gpu_model"]:
            params["slurm_gres"] = f"gpu:{cluster['gpu_model']}:{gpus}"
        else:
            params["gpus_per_node"] = gpus
    for key in ("partition", "account", "qos", "constraint"):
        if cluster[key]:
            params[f"slurm_{key}"] = cluster[key]
    return params


def _submit(call: Call, run_dir: Path, job: dict, cluster: dict):
    import submitit

    # one folder per submission: SLURM job ids restart when a cluster's state
    # is wiped, and an old result file must never answer for a new job
    executor = submitit.AutoExecutor(folder=run_dir / "slurm" / f"{time.time_ns()}-%j", cluster="slurm",
                                     slurm_max_num_timeout=cluster["max_requeues"])
    executor.update_parameters(**submit_parameters(job, cluster, run_dir.name))
    handle = executor.submit(_checkpointable()(call))
    atomic_write_text(json.dumps({"job_id": handle.job_id, "folder": str(handle.paths.folder)}) + "\n",
                      run_dir / RECORD)
    print(f"{run_dir.name}: submitted SLURM job {handle.job_id}", file=sys.stderr, flush=True)
    return handle


def _reattach(run_dir: Path):
    import submitit

    record = _record(run_dir)
    if record is None:
        return None
    state = slurm_state(record["job_id"])
    # Only a live job is reattached. A finished one may have written outputs
    # that Snakemake has since removed as incomplete; a new job re-exports them
    # from the run's final state in seconds.
    if state not in LIVE_STATES:
        return None
    handle = submitit.SlurmJob(folder=record["folder"], job_id=record["job_id"])
    print(f"{run_dir.name}: reattached to SLURM job {record['job_id']} ({state})", file=sys.stderr, flush=True)
    return handle


def _wait(handle, run_dir: Path, cluster: dict):
    # rank 0 (task 0) writes the outputs and returns the run's result
    handle = handle.task(0)
    deadline = time.monotonic() + cluster["wait_hours"] * 3600
    ended_at = None
    while not handle.paths.result_pickle.exists():
        state = slurm_state(handle.job_id)
        if state is not None and state not in LIVE_STATES:
            ended_at = ended_at or time.monotonic()
            if time.monotonic() - ended_at > 3 * cluster["poll_s"] + 10:  # the result file may lag on shared storage
                raise LaunchError(
                    f"{run_dir.name}: SLURM job {handle.job_id} ended {state} without a result (killed or out of "
                    f"time without requeue); its log is {handle.paths.stderr}. Run the workflow again: training "
                    "resumes from the last saved state"
                )
        if time.monotonic() > deadline:
            raise LaunchError(
                f"{run_dir.name}: SLURM job {handle.job_id} is still {state or 'unknown'} after "
                f"{cluster['wait_hours']} h (cluster.wait_hours); it keeps running, and the next run of the "
                "workflow reattaches to it"
            )
        time.sleep(cluster["poll_s"])
    try:
        return handle.result()
    except Exception as error:  # submitit re-raises the job's failure with its traceback
        raise LaunchError(f"{run_dir.name}: SLURM job {handle.job_id} failed: {error}\nlog: {handle.paths.stderr}") from error


def run(call: Call, run_dir: str | Path, job: dict, cluster: dict):
    """Run ``call`` here (executor local; one process per GPU of a one-node
    job) or as a SLURM job with one task per GPU (executor slurm)."""
    if cluster["executor"] == "local":
        if job["nodes"] > 1:
            raise LaunchError(
                f"gpu_jobs asks for {job['nodes']} nodes, but cluster.executor is local (this machine only): "
                "set nodes to 1, or run with --profile slurm"
            )
        if job["gpus_per_node"] > 1:
            return processes.run(call, job["gpus_per_node"])
        return call()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    handle = _reattach(run_dir) or _submit(call, run_dir, job, cluster)
    return _wait(handle, run_dir, cluster)
