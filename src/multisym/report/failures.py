"""The failure report of a run that did not finish: which jobs failed (a
member's id, its step, the error in its log) and every table and figure each
failure kept from being built.

Snakemake's ``onerror`` handler (``workflow/rules/failures.smk``) writes it
from the run's own log, the file Snakemake hands its handlers: each job's
block names its rule, jobid and wildcards, each ``Error in rule`` block the
failed job's jobid, inputs, outputs and log. The targets a failure could not
feed come from the target registry (``multisym.targets``). ``onsuccess``
clears what the run redid. Torch-free.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from multisym.report import pages
from multisym.files import atomic_write_text

FORMATS = ("json", "md", "html")


def paths(root: str | Path) -> dict[str, Path]:
    """``results/<name>/failures.{json,md,html}``."""
    return {ext: Path(root) / f"failures.{ext}" for ext in FORMATS}


# the last line of a Python traceback: "KeyError: 'splits'", "torch.OutOfMemoryError: ..."
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b.*:")


def error_line(log: str | Path | None) -> str:
    """The line of a failed job's log that names the cause, once:

    1. the first ``error: ...`` line, the message a ``multisym`` command gives
       for a problem it recognises (without its ``error: `` prefix); when
       that message ends by handing over to a trace (a SLURM job's failure:
       "failed during processing with trace:"), the trace's own cause below it;
    2. else the last exception line of a traceback ("KeyError: 'splits'");
    3. else the last non-empty line ("" when there is no log)."""
    if not log or not Path(log).is_file():
        return ""
    lines = [line.strip() for line in Path(log).read_text(errors="replace").splitlines() if line.strip()]
    for index, line in enumerate(lines):
        if line.startswith("error: "):
            message = line[len("error: "):]
            if message.endswith("trace:"):
                causes = [later for later in lines[index + 1:] if EXCEPTION_LINE.match(later)]
                if causes:
                    return f"{message.removesuffix('with trace:').rstrip()}: {causes[-1]}"
            return message
    causes = [line for line in lines if EXCEPTION_LINE.match(line)]
    return (causes or lines or [""])[-1]


@dataclass
class Job:
    """One job of a run as its log tells it."""

    rule: str
    jobid: str
    wildcards: dict[str, str] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    log: str | None = None

    @property
    def name(self) -> str:
        """``rule key=value ...``, the name the report gives the job."""
        return " ".join([self.rule] + [f"{k}={v}" for k, v in self.wildcards.items()])


@dataclass
class Run:
    """What a run's log says: every job it started (by jobid), the jobids that
    finished, and the jobs that failed, in the order they failed."""

    started: dict[str, Job] = field(default_factory=dict)
    finished: set[str] = field(default_factory=set)
    failed: list[Job] = field(default_factory=list)

    @property
    def done(self) -> set[str]:
        return {job.name for jobid, job in self.started.items() if jobid in self.finished}


JOB = re.compile(r"^(?:local)?rule (\w+):$")
ERROR = re.compile(r"^Error in rule (\w+):$")
ITEM = re.compile(r"^    ([\w-]+): (.*)$")
FINISHED = re.compile(r"^Finished jobid: (\w+)")
FLAG = re.compile(r" \([\w, ]*\)$")  # an output's flags: "(update)"
LOG_HINT = " (check log file(s) for error details)"


def _files(value: str) -> list[str]:
    return [FLAG.sub("", part) for part in value.removesuffix(LOG_HINT).split(", ") if part]


def read_log(path: str | Path) -> Run:
    """The jobs of a run from Snakemake's log of it (``.snakemake/log/*.snakemake.log``)."""
    run, block = Run(), None
    lines = Path(path).read_text(errors="replace").splitlines() if Path(path).is_file() else []
    for line in lines:
        if match := JOB.match(line):
            block = ("job", Job(match.group(1), ""))
        elif match := ERROR.match(line):
            block = ("error", Job(match.group(1), ""))
        elif (match := ITEM.match(line)) and block is not None:
            kind, job = block
            key, value = match.groups()
            if key == "jobid":
                job.jobid = value
                if kind == "job":
                    run.started[value] = job
                else:
                    known = run.started.get(value)
                    job.wildcards = dict(known.wildcards) if known else {}
                    run.failed.append(job)
            elif key == "wildcards":
                job.wildcards = dict(item.split("=", 1) for item in value.split(", "))
            elif key in ("input", "output"):
                setattr(job, f"{key}s", _files(value))
            elif key == "log":
                job.log = (_files(value) or [None])[0]
        elif not line.startswith("        "):
            block = None
            if match := FINISHED.match(line):
                run.finished.add(match.group(1))
    return run


def mark_for_rerun(job: Job) -> None:
    """A failed job's outputs that Snakemake put back (their previous version,
    ``update`` flag) or left behind are made older than the job's oldest
    input, so that the next run redoes the job: Snakemake reruns a job whose
    output is older than an input."""
    inputs = [os.stat(f).st_mtime_ns for f in job.inputs if os.path.exists(f)]
    if not inputs:
        return
    older = min(inputs) - 1_000_000_000
    for path in job.outputs:
        if os.path.exists(path):
            os.utime(path, ns=(older, older))


def _markdown(failures: list[dict]) -> str:
    lines = [f"# {len(failures)} failed job(s)", ""]
    for failure in failures:
        lines += [f"## {failure['job']}", "",
                  f"- member: {failure.get('member') or '(not a member)'}",
                  f"- error: {failure['error'] or '(see the log)'}",
                  f"- log: {failure['log'] or '(none)'}",
                  f"- targets it could not feed: {', '.join(failure['targets']) or '(none)'}", ""]
    lines.append("Fix the cause, then run the same command again: only what failed, and what "
                 "depends on it, runs again; every result built before is kept.")
    return "\n".join(lines) + "\n"


def _html(failures: list[dict]) -> str:
    rows = [[f["job"], f.get("member") or "", f["error"], f["log"] or "", ", ".join(f["targets"])]
            for f in failures]
    return pages.page(
        "Failed jobs",
        pages.paragraph("These jobs failed; the results they feed were not built. Results built "
                        "before are kept. Fix the cause and run the same command again."),
        pages.table(["job", "member", "error", "log", "targets it could not feed"], rows),
    )


def write(root: str | Path, failures: list[dict]) -> Path:
    """``failures``: one dict per failed job with keys job, member (or None),
    error, log and targets (sorted names). Returns the Markdown path."""
    out = paths(root)
    out["json"].parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps(failures, indent=2), out["json"])
    atomic_write_text(_markdown(failures), out["md"])
    atomic_write_text(_html(failures), out["html"])
    return out["md"]


def clear(root: str | Path, done: set[str] | None) -> None:
    """Drop the entries of jobs that have since run to completion (``done``:
    the job names of a successful run; None: every job); the report goes when
    none is left."""
    out = paths(root)
    if not out["json"].is_file():
        return
    left = [f for f in json.loads(out["json"].read_text()) if done is not None and f["job"] not in done]
    if left:
        write(root, left)
    else:
        for path in out.values():
            path.unlink(missing_ok=True)
