# What a failed run leaves behind: every result built before, unchanged; the
# failed jobs marked to run again; and a failure report naming each failed job
# (the member, its error) and every table and figure it could not feed.
#
# Every result output is flagged kept() (Snakemake's update()): Snakemake keeps
# the previous version while its job runs and puts it back when the job fails,
# where it would otherwise delete it. Snakemake 9 then records the failed job's
# params for the restored file, so the next run would take the old file as up
# to date; marking it incomplete makes that run (rerun-incomplete, set in the
# workflow profile) redo exactly the failed jobs.
import os
import sys

import multisym.report.failures

TARGET_RULES = {"table", "figure", "comparison", "provenance", "checksums"}


def failed_member(job):
    """The id of the member a job trains or evaluates, if it does."""
    for value in job.wildcards_dict.values():
        member = PLAN.member_of({"value": value})
        if member is not None:
            return member.id
    return None


def unfed_targets(dag, job):
    """The tables and figures downstream of ``job`` in the DAG of this run."""
    seen, stack, targets = {job}, [job], set()
    while stack:
        for dependent in dag.depending[stack.pop()]:
            if dependent not in seen:
                seen.add(dependent)
                stack.append(dependent)
                if dependent.rule.name in TARGET_RULES:
                    targets.update(
                        os.path.basename(f).split(".")[0] for f in dependent.output
                    )
    return sorted(targets)


def job_name(job):
    return " ".join(
        [job.rule.name] + [f"{k}={v}" for k, v in job.wildcards_dict.items()]
    )


def report_failures():
    failed = sorted(workflow.scheduler.failed, key=str)
    for job in failed:
        if any(os.path.exists(f) for f in job.output):
            workflow.persistence.started(job)
    if not failed:
        return
    page = multisym.report.failures.write(
        LAYOUT.root,
        [
            {
                "job": job_name(job),
                "member": failed_member(job),
                "error": multisym.report.failures.error_line(
                    job.log[0] if job.log else None
                ),
                "log": str(job.log[0]) if job.log else None,
                "targets": unfed_targets(workflow.dag, job),
            }
            for job in failed
        ],
    )
    print(page.read_text(), file=sys.stderr)


def clear_failures():
    """A whole run that succeeds leaves no failure standing (a failed member
    whose settings were changed has become another member); a partial one
    clears the jobs it ran."""
    whole = {job.rule.name for job in workflow.dag.targetjobs} & {"all", "figures"}
    done = {job_name(job) for job in workflow.dag.jobs}
    multisym.report.failures.clear(LAYOUT.root, None if whole else done)
