"""The settings of the GPU jobs and of the cluster they run on: the
``cluster`` section as a GPU waiter receives it (``resolve_cluster``), and
the rules that tie it to ``gpu_jobs``: SLURM's warning before a job's time
limit leaves the job most of its time, and fine-tuning runs in one process
(docs/cluster.md#time-limits-and-preemption).
"""

from __future__ import annotations

from multisym.config_schema import coerce, describe, load_schema, validator_filling_defaults
from multisym.errors import ConfigError

WARNING_SHARE = 0.4  # of a job's time limit, at most, for SLURM's warning before it


def check_signal_delay(signal_delay_s: int, jobs: dict[str, dict]) -> None:
    """SLURM's warning (``cluster.signal_delay_s`` before the time limit) must
    leave a job most of its time: at 40 % or more of the limit a job would
    save and requeue itself soon after every start, or at once."""
    for step, job in jobs.items():
        limit_s = job["time_limit_min"] * 60
        if signal_delay_s >= WARNING_SHARE * limit_s:
            shortest = signal_delay_s // int(WARNING_SHARE * 60) + 1
            raise ConfigError(
                f"config key 'cluster.signal_delay_s': SLURM's warning {signal_delay_s} s before the time limit "
                f"is {signal_delay_s / limit_s:.0%} of gpu_jobs.{step}.time_limit_min ({job['time_limit_min']} min), "
                f"so the job would requeue itself soon after every start. Keep it under {WARNING_SHARE:.0%}: "
                f"lower cluster.signal_delay_s below {int(WARNING_SHARE * limit_s)} s, or raise "
                f"gpu_jobs.{step}.time_limit_min to {shortest} or more"
            )


def resolve_cluster(given: dict, snakemake_executor: str = "local") -> dict:
    """The ``cluster`` section as a GPU waiter receives it (the workflow's
    resources ``cluster_<key>``, strings; empty for null), checked against the
    schema with its defaults, and ``executor: auto`` resolved: slurm when
    Snakemake runs with the SLURM executor, else local. Refuses local training
    under the SLURM executor, which would train on the submitting host."""
    schema = load_schema()
    section = schema["properties"]["cluster"]
    given = {key: (None if value == "" else value) for key, value in given.items()}
    cluster = coerce(given, section, schema)
    validator = validator_filling_defaults()({"$defs": schema["$defs"], **section})
    errors = sorted(validator.iter_errors(cluster), key=lambda e: list(e.absolute_path))
    if errors:
        lines = "\n".join(f"  - {describe(e)}".replace("config key '", "config key 'cluster.", 1) for e in errors)
        raise ConfigError(f"invalid cluster settings (the slurm profile's set-resources cluster_<key>, or the "
                          f"config's cluster section):\n{lines}")
    if cluster["executor"] == "auto":
        cluster["executor"] = "slurm" if snakemake_executor == "slurm" else "local"
    elif cluster["executor"] == "local" and snakemake_executor == "slurm":
        raise ConfigError(
            "config key 'cluster.executor': Snakemake runs with the SLURM executor, but cluster.executor is local: "
            "every GPU training job would train on the submitting host, not in SLURM. Leave cluster.executor at "
            "auto (or set it to slurm) to train in SLURM jobs; to train on this host, run without --profile slurm"
        )
    return cluster


def check_gpu_jobs(config: dict) -> None:
    """``cluster.signal_delay_s`` against each training job's time limit, and
    one process for fine-tuning."""
    check_signal_delay(config["cluster"]["signal_delay_s"],
                       {step: config["gpu_jobs"][step] for step in ("pretrain", "adapt")})
    adapt_job = config["gpu_jobs"]["adapt"]
    if adapt_job["nodes"] * max(adapt_job["gpus_per_node"], 1) > 1:
        raise ConfigError(
            "config key 'gpu_jobs.adapt': fine-tuning runs in one process; set nodes and gpus_per_node to 1 "
            "(several GPUs per job are for pretraining, gpu_jobs.pretrain)"
        )
