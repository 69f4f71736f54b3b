"""The ensembles stage's subcommands: every member alone, and a pool's greedy,
random or whole-pool ensembles (docs/method.md#ensembles), from the members' logits."""

from __future__ import annotations

import json

from multisym.command import Command, write_json


def _job_threads(p) -> None:
    p.add_argument("--threads", type=int, help="threads of the job (default: $SLURM_CPUS_PER_TASK, else its CPUs)")


def _member_metrics_arguments(p) -> None:
    p.add_argument("--spec-json", required=True, help="members, modes and bootstrap settings")
    p.add_argument("--logits", nargs="+", required=True, help="logits files, in the order of the spec's members")
    p.add_argument("--out", required=True)
    _job_threads(p)


def member_metrics(args) -> None:
    from multisym.ensembles.rowblocks import set_job_threads
    from multisym.ensembles.strategies import JOB_INPUTS, load_logits, member_results

    set_job_threads(args.threads)
    spec = json.loads(args.spec_json)
    if len(spec["members"]) != len(args.logits):
        raise SystemExit(f"error: {len(spec['members'])} members but {len(args.logits)} logits files")
    stacks = load_logits(args.logits, JOB_INPUTS["members"])
    result = member_results(spec["members"], spec["modes"], stacks, spec, stacks["test_logits"][0].shape[-1],
                            spec.get("axes"), spec.get("axis"))
    write_json(result, args.out)


def _ensemble_arguments(p) -> None:
    p.add_argument("--strategy", required=True, choices=("greedy", "random", "all"),
                   help="all: the whole pool, each member once")
    p.add_argument("--spec-json", required=True, help="pool, members, classes and the ensembles settings")
    p.add_argument("--logits", nargs="+", required=True, help="logits files, in the order of the spec's members")
    p.add_argument("--out", required=True)
    p.add_argument("--out-resamples", help="each ensemble's test metrics on every bootstrap resample (.npz), "
                                           "for paired differences between ensembles")
    _job_threads(p)


def ensemble(args) -> None:
    from multisym.resamples import Recorder, write_resamples
    from multisym.ensembles.rowblocks import set_job_threads
    from multisym.ensembles.strategies import (JOB_INPUTS, greedy_results, load_logits, random_results,
                                               whole_pool_results)

    set_job_threads(args.threads)
    spec = json.loads(args.spec_json)
    if len(spec["members"]) != len(args.logits):
        raise SystemExit(f"error: {len(spec['members'])} members but {len(args.logits)} logits files")
    runner = {"greedy": greedy_results, "random": random_results, "all": whole_pool_results}[args.strategy]
    stacks = load_logits(args.logits, JOB_INPUTS[args.strategy])
    record = Recorder(spec["bootstrap"], stacks["test_labels"]) if args.out_resamples else None
    result = runner(spec["members"], spec["classes"], stacks, spec, record)
    if record is not None:
        write_resamples(record.build(spec["pool"], args.strategy, spec.get("dataset", "")), args.out_resamples)
    write_json({"pool": spec["pool"], "strategy": args.strategy, "members": spec["members"],
                "classes": spec["classes"], **result}, args.out)


COMMANDS = (
    Command("member-metrics", "test metrics of every member alone and class dominance", _member_metrics_arguments,
            member_metrics),
    Command("ensemble", "build a pool's greedy or random ensembles and their test metrics", _ensemble_arguments,
            ensemble),
)
