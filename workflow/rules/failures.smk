# What a failed run leaves behind: every result built before, unchanged; the
# failed jobs set to run again; and a failure report naming each failed job (the
# member, its error) and every table and figure it could not feed. Built from the
# run's log, the file Snakemake hands its onerror and onsuccess handlers
# (multisym.report.failures), and the target registry (multisym.targets).
#
# Every result output whose job has an input is flagged kept() (Snakemake's
# update()): Snakemake keeps the previous version while its job runs and puts it
# back when the job fails, where it would otherwise delete it. Snakemake then
# records the failed job as having made it, so the handler makes the restored
# file older than the job's inputs: the next run redoes exactly the failed jobs
# (Snakemake's mtime rerun trigger). The data preparation jobs, which have no
# input to be older than, keep no previous version.
import sys

import multisym.report.failures


def run_logs(logs):
    """Snakemake's own log of this run among the log files it hands a handler."""
    own = [path for path in logs if path.endswith(".snakemake.log")]
    return [multisym.report.failures.read_log(path) for path in own or logs]


def report_failures(logs):
    failed = [job for run in run_logs(logs) for job in run.failed]
    for job in failed:
        multisym.report.failures.mark_for_rerun(job)
    if not failed:
        return
    page = multisym.report.failures.write(
        LAYOUT.root,
        [
            {
                "job": job.name,
                "member": getattr(PLAN.member_of(job.wildcards), "id", None),
                "error": multisym.report.failures.error_line(job.log),
                "log": job.log,
                "targets": targets.unfed(PLAN, job.outputs, job.wildcards),
            }
            for job in sorted(failed, key=lambda job: job.name)
        ],
    )
    print(page.read_text(), file=sys.stderr)


def clear_failures(logs):
    """A whole run (rule all or figures) that succeeds leaves no failure
    standing (a failed member whose settings were changed has become another
    member); a partial one clears the jobs it ran."""
    runs = run_logs(logs)
    whole = any(
        job.rule in ("all", "figures") for run in runs for job in run.started.values()
    )
    done = {name for run in runs for name in run.done}
    multisym.report.failures.clear(LAYOUT.root, None if whole else done)
