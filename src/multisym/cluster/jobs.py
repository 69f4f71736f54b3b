"""A training step's GPU job, shared by the subcommands that train (pretrain, fine-tune).

The options of the job request (``gpu_jobs.<step>``, docs/cluster.md) and the
site settings that say where it runs (here, or as a SLURM job through
``cluster.launch``), and the review tier that may refuse the step before it
starts (README "Reviewing").
"""

from __future__ import annotations

import json

GPU_JOB_OPTIONS = (("--gpu-nodes", "nodes"), ("--gpus-per-node", "gpus_per_node"),
                   ("--gpu-cpus-per-task", "cpus_per_task"), ("--gpu-mem-gb", "mem_gb"),
                   ("--gpu-time-limit-min", "time_limit_min"))

# Review tiers (README "Reviewing"): which training steps each one allows.
TIER_ALLOWS = {"scratch": ("pretrain", "adapt"), "checkpoints": ("adapt",), "results": ()}


def add_gpu_job_options(p) -> None:
    """What a SLURM job asks for (gpu_jobs.<step>; schema defaults when left out)."""
    for option, key in GPU_JOB_OPTIONS:
        p.add_argument(option, type=int, dest=f"gpu_{key}", help=f"gpu_jobs.<step>.{key} of a SLURM job")
    p.add_argument("--cluster-json", help="the cluster section as JSON: executor local runs here, slurm submits")
    p.add_argument("--cluster", action="append", default=[], metavar="KEY=VALUE",
                   help="one key of the cluster section "
                        "(over --cluster-json; as the workflow passes its resources)")
    p.add_argument("--snakemake-executor", default="local",
                   help="the executor Snakemake runs with (cluster.executor auto follows it)")
    p.add_argument("--review-tier", choices=sorted(TIER_ALLOWS), default="scratch",
                   help="review.tier: checkpoints refuses pretraining, results refuses all training")


def gpu_job(args, step: str, kwargs: dict) -> tuple[dict, dict, str]:
    """The job request and the site settings (``gpu_jobs.<step>`` and
    ``cluster``, checked against the schema); without them the run stays in
    this process. A SLURM job takes its thread count from its allocation, not
    from the submitting rule."""
    from multisym.config import check_signal_delay, resolve_cluster, section_defaults

    check_review_tier(args.review_tier, step, kwargs.get("out_model"))
    job = section_defaults("gpu_jobs")[step]
    job.update({key: getattr(args, f"gpu_{key}")
                for _, key in GPU_JOB_OPTIONS if getattr(args, f"gpu_{key}") is not None})
    given = json.loads(args.cluster_json) if args.cluster_json else {}
    for pair in args.cluster:
        key, _, value = pair.partition("=")
        given[key] = value
    cluster = resolve_cluster(given, args.snakemake_executor)
    if cluster["executor"] == "slurm":
        check_signal_delay(cluster["signal_delay_s"], {step: job})
        kwargs["threads"] = None
    return job, cluster, step


def check_review_tier(tier: str, step: str, output) -> None:
    """Refuse a training step the review tier forbids, before it starts."""
    from multisym.errors import UserError

    if step in TIER_ALLOWS[tier]:
        return
    what = {"pretrain": "pretrain a member", "adapt": "fine-tune a member"}[step]
    fix = ("put the existing results (with their .snakemake metadata) in place, or run `snakemake --touch` if they "
           "are only older than their inputs" if tier == "results" else
           "declare every member under members.imported")
    raise UserError(
        f"review tier {tier!r} (config key review.tier) forbids training, but this run would {what} "
        f"({output}: missing, or older than its inputs). Nothing was trained; {fix}, or set review.tier: scratch"
    )
