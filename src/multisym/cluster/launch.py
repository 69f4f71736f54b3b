"""Where a training run executes: in this process, or as a SLURM job that
submitit submits and this process waits for (docs/cluster.md).

With ``cluster.executor: slurm`` (``auto`` under Snakemake's SLURM executor,
as with ``--profile slurm``) the Snakemake rule runs on the submitting host
and calls :func:`run`, which

1. reattaches to the SLURM job recorded in the run folder when it is still
   alive (a waiter killed with Snakemake leaves its job running), else
   submits a new one and records its id (``slurm_job.json``); every attempt
   is appended to the run folder's ``waiter.log``;
2. polls the job's state and pending reason with bounded ``squeue``/``sacct``
   calls until its result file appears or it ends, logging every change; a
   reason that no wait clears (the request exceeds the partition, an unknown
   account, ...) cancels the job and fails naming the ``gpu_jobs`` key to
   change; after ``cluster.wait_hours`` it gives up with an error that says
   the job goes on and how to reattach;
3. on SIGINT (Ctrl-C) or SIGTERM cancels the job, waits for SLURM to end it
   and exits; any other end (SIGKILL, SIGHUP) leaves the job running;
4. returns the job's result (task 0's, rank 0 of the training processes), or
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
resumes from that state. On SIGTERM (a cancel) it saves its state and ends.
Once the final state is saved, both signals are ignored until the job exits
(``stopping.hold_after_finish``). A job killed without warning leaves the
last epoch's checkpoint, and the next run resumes from it. The run folder's
lock keeps two trainers out of one folder.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from multisym.cluster import processes
from multisym.errors import UserError
from multisym.files import atomic_write_text

RECORD = "slurm_job.json"
LIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING",
               "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT"}
QUERY_TIMEOUT_S = 60
WAITER_LOG = "waiter.log"
# Pending reasons that no amount of waiting clears: the request exceeds what
# the partition, its nodes, the account or the QoS allow, or names what does
# not exist. A reason ending in "PerJob"/"PerJobLimit" is a per-job limit too.
# Not PartitionNodeLimit: SLURM also gives it while the nodes are down or
# drained, which ends.
HOPELESS_REASONS = {"PartitionConfig", "PartitionTimeLimit", "InvalidAccount", "InvalidQOS",
                    "BadConstraints", "DependencyNeverSatisfied", "AccountNotAllowed", "QOSNotAllowed"}
# which request keys a reason points at (gpu_jobs.<step>.<key>, or cluster.<key>)
REASON_KEYS = {
    "PartitionTimeLimit": ["time_limit_min"],
    "PartitionConfig": ["cpus_per_task", "mem_gb", "gpus_per_node", "nodes", "time_limit_min"],
    "InvalidAccount": ["cluster.account"], "AccountNotAllowed": ["cluster.account", "cluster.partition"],
    "InvalidQOS": ["cluster.qos"], "QOSNotAllowed": ["cluster.qos", "cluster.partition"],
    "BadConstraints": ["cluster.constraint", "cluster.gpu_model"],
}
CANCEL_WAIT_S = 300


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
            from multisym.cluster.stopping import InterruptedRun, hold_after_finish

            hold_after_finish()
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
def _query(command: list[str]) -> str | None:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=QUERY_TIMEOUT_S).stdout
    except (subprocess.TimeoutExpired, OSError):
        return None


def slurm_status(job_id: str) -> tuple[str | None, str]:
    """The job's state and reason, from squeue while SLURM holds it in its
    queue, else from sacct; (None, "") when neither answers in time."""
    for command in (["squeue", "-h", "-j", job_id, "-o", "%T|%r"],
                    ["sacct", "-X", "-n", "-P", "-j", job_id, "--format=State,Reason"]):
        lines = [line.split("|") for line in (_query(command) or "").splitlines() if line.strip()]
        if lines:
            state, reason = (lines[-1] + [""])[:2]
            return state.split()[0].rstrip("+"), "" if reason in ("None", "(null)") else reason
    return None, ""


def slurm_state(job_id: str) -> str | None:
    """The job's state alone (see ``slurm_status``)."""
    return slurm_status(job_id)[0]


def hopeless(reason: str) -> bool:
    """Whether a pending reason can never clear by waiting."""
    return reason in HOPELESS_REASONS or reason.endswith(("PerJob", "PerJobLimit"))


def partition_limits(partition: str | None) -> str:
    """What the partition allows and what its nodes have, as SLURM reports
    them (``scontrol show partition``, ``sinfo``), for an error message."""
    name = partition or next((line.split()[0].rstrip("*") for line in (_query(
        ["sinfo", "-h", "-o", "%P"]) or "").splitlines() if line.endswith("*")), "")
    shown = _query(["scontrol", "show", "partition", name]) if name else None
    fields = dict(item.split("=", 1) for item in (shown or "").split() if "=" in item)
    limits = ", ".join(f"{key}={fields[key]}" for key in ("MaxTime", "MaxNodes", "MaxCPUsPerNode",
                                                           "MaxMemPerNode", "TotalCPUs", "TotalNodes")
                       if key in fields)
    nodes = sorted({line.strip() for line in (_query(["sinfo", "-h", "-p", name, "-o",
                                                       "%c CPUs, %m MB, gres %G"]) or "").splitlines()
                    if line.strip()}) if name else []
    if not limits and not nodes:
        return f"partition {name or '(default)'}: SLURM did not say what it allows"
    return f"partition {name}: {limits}; its nodes: {'; '.join(nodes) or 'unknown'}"


def _describe_request(job: dict, cluster: dict, step: str) -> str:
    asked = ", ".join(f"gpu_jobs.{step}.{key}={job[key]}" for key in
                      ("nodes", "gpus_per_node", "cpus_per_task", "mem_gb", "time_limit_min"))
    site = ", ".join(f"cluster.{key}={cluster[key]}" for key in ("partition", "account", "qos", "constraint",
                                                                   "gpu_model") if cluster[key])
    return asked + (f"; {site}" if site else "")


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


class WaiterLog:
    """What the waiter says: to its standard error (the rule's log, which
    Snakemake empties before each run of the job) and appended to the run
    folder's ``waiter.log``, which keeps every attempt."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.path = run_dir / WAITER_LOG

    def say(self, text: str) -> None:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {self.run_dir.name}: {text}"
        print(line, file=sys.stderr, flush=True)
        with open(self.path, "a") as handle:
            handle.write(line + "\n")

    def attempt(self, how: str) -> None:
        self.say(f"=== attempt by pid {os.getpid()} on {socket.gethostname()}: {how}")


def _submit(call: Call, run_dir: Path, job: dict, cluster: dict, step: str, log: WaiterLog):
    import submitit

    # one folder per submission: SLURM job ids restart when a cluster's state
    # is wiped, and an old result file must never answer for a new job
    executor = submitit.AutoExecutor(folder=run_dir / "slurm" / f"{time.time_ns()}-%j", cluster="slurm",
                                     slurm_max_num_timeout=cluster["max_requeues"])
    executor.update_parameters(**submit_parameters(job, cluster, run_dir.name))
    try:
        handle = executor.submit(_checkpointable()(call))
    except Exception as error:  # sbatch's refusal, as submitit reports it
        raise LaunchError(
            f"{run_dir.name}: SLURM refused the job: {' '.join(str(error).split())[-600:]}\n"
            f"It asked for {_describe_request(job, cluster, step)}.\n{partition_limits(cluster['partition'])}.\n"
            f"Size gpu_jobs.{step} for your site (docs/cluster.md, \"Sizing\") or set the site values in the "
            "slurm profile's set-resources (cluster_partition, ...). Nothing was submitted."
        ) from None
    atomic_write_text(json.dumps({"job_id": handle.job_id, "folder": str(handle.paths.folder)}) + "\n",
                      run_dir / RECORD)
    log.attempt(f"submitted SLURM job {handle.job_id}")
    return handle


def _reattach(run_dir: Path, log: WaiterLog):
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
    log.attempt(f"reattached to SLURM job {record['job_id']} ({state})")
    return handle


class Cancelled(Exception):
    """The waiter was told to stop (SIGINT: Ctrl-C at the terminal, or SIGTERM)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_cancelled(signum, frame):
    raise Cancelled(signum)


def _cancel(handle, log: WaiterLog, signum: int) -> None:
    """scancel the job (SLURM sends SIGTERM first: the trainer saves its
    state), and wait, bounded, until SLURM no longer runs it."""
    for other in (signal.SIGINT, signal.SIGTERM):
        signal.signal(other, signal.SIG_IGN)  # a second Ctrl-C must not leave the job behind
    log.say(f"{signal.Signals(signum).name}: cancelling SLURM job {handle.job_id} (its state is saved; "
            "the next run resumes it)")
    _query(["scancel", handle.job_id])
    deadline = time.monotonic() + CANCEL_WAIT_S
    while time.monotonic() < deadline:
        state = slurm_state(handle.job_id)
        if state is not None and state not in LIVE_STATES:
            log.say(f"SLURM job {handle.job_id} ended {state}")
            return
        time.sleep(1)
    log.say(f"SLURM job {handle.job_id} still runs {CANCEL_WAIT_S} s after scancel; check it with squeue")


def _fail_if_hopeless(handle, state: str, reason: str, job: dict, cluster: dict, step: str, log: WaiterLog):
    if state != "PENDING" or not hopeless(reason):
        return
    _query(["scancel", handle.job_id])
    keys = ", ".join(key if key.startswith("cluster.") else f"gpu_jobs.{step}.{key}"
                     for key in REASON_KEYS.get(reason, ["time_limit_min", "cpus_per_task", "mem_gb"]))
    message = (f"SLURM job {handle.job_id} can never start: pending with reason {reason}. It asked for "
               f"{_describe_request(job, cluster, step)}; {partition_limits(cluster['partition'])}. Change {keys} "
               "to fit (docs/cluster.md, \"Sizing\"); the job was cancelled")
    log.say(message)
    raise LaunchError(f"{log.run_dir.name}: {message}")


def _wait(handle, run_dir: Path, job: dict, cluster: dict, step: str, log: WaiterLog):
    # rank 0 (task 0) writes the outputs and returns the run's result
    job_handle, handle = handle, handle.task(0)
    deadline = time.monotonic() + cluster["wait_hours"] * 3600
    ended_at, seen = None, None
    previous = {s: signal.signal(s, _raise_cancelled) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not handle.paths.result_pickle.exists():
            state, reason = slurm_status(handle.job_id)
            if state is not None and (state, reason) != seen:
                seen = (state, reason)
                log.say(f"SLURM job {handle.job_id} {state}" + (f" (reason {reason})" if reason else ""))
                _fail_if_hopeless(job_handle, state, reason, job, cluster, step, log)
            if state is not None and state not in LIVE_STATES:
                ended_at = ended_at or time.monotonic()
                # the result file may lag on shared storage
                if time.monotonic() - ended_at > 3 * cluster["poll_s"] + 10:
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
    except Cancelled as stop:
        _cancel(job_handle, log, stop.signum)
        raise SystemExit(128 + stop.signum) from None
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    try:
        return handle.result()
    except Exception as error:  # submitit re-raises the job's failure with its traceback
        raise LaunchError(
            f"{run_dir.name}: SLURM job {handle.job_id} failed: {error}\nlog: {handle.paths.stderr}") from error


def run(call: Call, run_dir: str | Path, job: dict, cluster: dict, step: str = "pretrain"):
    """Run ``call`` here (executor local; one process per GPU of a one-node
    job) or as a SLURM job with one task per GPU (executor slurm). ``step``
    (``pretrain`` or ``adapt``) names the ``gpu_jobs`` entry in messages."""
    if cluster["executor"] != "slurm":
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
    log = WaiterLog(run_dir)
    handle = _reattach(run_dir, log) or _submit(call, run_dir, job, cluster, step, log)
    return _wait(handle, run_dir, job, cluster, step, log)
