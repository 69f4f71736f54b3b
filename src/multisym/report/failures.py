"""The failure report of a run that did not finish: which jobs failed (a
member's id, its step, the error in its log) and every table and figure each
failure kept from being built.

Snakemake's ``onerror`` handler writes it from the failed jobs and the DAG
below them (``workflow/rules/common.smk``); ``onsuccess`` removes it, since a
finished run has no failure left to report. Torch-free.
"""

from __future__ import annotations

import json
import re
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
