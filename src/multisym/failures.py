"""The failure report of a run that did not finish: which jobs failed (a
member's id, its step, the error in its log) and every table and figure each
failure kept from being built.

Snakemake's ``onerror`` handler writes it from the failed jobs and the DAG
below them (``workflow/rules/common.smk``); ``onsuccess`` removes it, since a
finished run has no failure left to report. Torch-free.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import pages
from .files import atomic_write_text

FORMATS = ("json", "md", "html")


def paths(root: str | Path) -> dict[str, Path]:
    """``results/<name>/failures.{json,md,html}``."""
    return {ext: Path(root) / f"failures.{ext}" for ext in FORMATS}


def error_line(log: str | Path | None) -> str:
    """The error a failed job's log ends with: its last ``Error``/``error:``
    line, else its last non-empty line ("" when there is no log)."""
    if not log or not Path(log).is_file():
        return ""
    lines = [line.strip() for line in Path(log).read_text(errors="replace").splitlines() if line.strip()]
    marked = [line for line in lines if "error" in line.lower()]
    return (marked or lines or [""])[-1]


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
