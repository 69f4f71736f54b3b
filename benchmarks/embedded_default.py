"""The embedded default from scratch (issue 15, target 6): ``snakemake figures``
on a clean copy of the committed tree, target under 10 minutes on 2 cores.

The copy is ``git archive HEAD`` in a temporary folder, run with ``PYTHONPATH``
pinned to its ``src/`` so the installed package cannot stand in for it; the
environment is this interpreter's (its ``bin/`` leads ``PATH``). Besides the
wall time it prints where the time went, from Snakemake's log: job-seconds per
rule (start to finish, 1 s resolution) and how long 0, 1 or 2 jobs ran at
once. Because this machine's speed varies from day to day, it first times
``import torch, torchvision`` in a fresh process (median of 3) as a
reference for comparing runs. ``--also-cold`` runs the chain a second time,
in a fresh copy, with ``warm_starts: false`` (every job a fresh process), so
that the warm-start server's benefit is measured on the same day.
``--configfile`` times another CPU scale the same way, for example the
three-axis digits scale ``config/digits-axes.yaml`` (its target is the same
10 minutes).

    python benchmarks/embedded_default.py [--cores 2] [--out run.json] [--keep DIR] [--also-cold]
                                          [--configfile config/digits-axes.yaml]
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from workflow import seconds, tool_env

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 600.0
STAMP = re.compile(r"^\[(\w+ \w+ +\d+ [\d:]+ \d+)\]$")
RULE = re.compile(r"^(?:local)?rule (\w+):$")
JOBID = re.compile(r"^\s+jobid: (\d+)$")
FINISHED = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)")


def job_spans(log: str) -> list[tuple[str, datetime, datetime]]:
    """(rule, start, end) of every finished job in a Snakemake log."""
    spans, started, stamp, rule = [], {}, None, None
    for line in log.splitlines():
        if match := STAMP.match(line):
            stamp = datetime.strptime(match.group(1), "%a %b %d %H:%M:%S %Y")
        elif match := RULE.match(line):
            rule = match.group(1)
        elif (match := JOBID.match(line)) and rule is not None:
            started[match.group(1)] = (rule, stamp)
            rule = None
        elif (match := FINISHED.match(line)) and match.group(1) in started:
            name, start = started.pop(match.group(1))
            spans.append((name, start, stamp))
    return spans


def per_rule(spans) -> dict[str, dict]:
    busy, jobs = collections.Counter(), collections.Counter()
    for rule, start, end in spans:
        busy[rule] += (end - start).total_seconds()
        jobs[rule] += 1
    return {rule: {"jobs": jobs[rule], "job_seconds": busy[rule]} for rule, _ in busy.most_common()}


def concurrency(spans) -> dict[int, float]:
    """Seconds during which n jobs ran at once, for each n."""
    events = sorted([(start, 1) for _, start, _ in spans] + [(end, -1) for _, _, end in spans])
    held, running, previous = collections.Counter(), 0, events[0][0] if events else None
    for stamp, change in events:
        held[running] += (stamp - previous).total_seconds()
        running, previous = running + change, stamp
    return {n: span for n, span in sorted(held.items()) if span > 0}


def run_once(folder: Path, cores: int, warm: bool, configfile: str | None = None) -> tuple[float, list] | None:
    """``snakemake figures`` on a fresh archive of HEAD in ``folder``, with the
    scale ``configfile`` (a path in the repository; the embedded default when
    None): its wall time and job spans (None when it failed; the folder is
    kept then)."""
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    extra = [f"--configfile={configfile}"] if configfile else []
    # --config takes every word up to the next flag, so it comes last
    extra += [] if warm else ["--config", "warm_starts=false"]
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "snakemake", "figures", "--cores", str(cores), *extra],
                         cwd=folder, env=tool_env(folder), capture_output=True, text=True)
    wall = time.perf_counter() - start
    if run.returncode != 0:
        sys.stderr.write(run.stderr[-5000:])
        print(f"snakemake figures failed (exit {run.returncode}); its folder is kept: {folder}", file=sys.stderr)
        return None
    return wall, job_spans(run.stdout + run.stderr)


def report(name: str, wall: float, spans: list) -> dict:
    rules, held = per_rule(spans), concurrency(spans)
    print(f"--- {name}")
    print(f"{'rule':<28} {'jobs':>5} {'job-s':>8}")
    for rule, row in rules.items():
        print(f"{rule:<28} {row['jobs']:>5} {row['job_seconds']:>8.0f}")
    total = sum(row["job_seconds"] for row in rules.values())
    print(f"{'all':<28} {len(spans):>5} {total:>8.0f}")
    print("seconds with n jobs running: " + ", ".join(f"{n}: {s:.0f}" for n, s in held.items()))
    print(f"snakemake figures from scratch ({name}) {wall / 60:5.2f} min  target < {TARGET_S / 60:.0f} min  "
          f"{'met' if wall < TARGET_S else 'MISSED'}")
    return {"wall_s": wall, "jobs": len(spans), "job_seconds": total, "rules": rules, "seconds_with_n_jobs": held}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--out", help="write the figures as JSON here")
    parser.add_argument("--keep", help="run in this (new) folder and keep it, instead of a temporary one")
    parser.add_argument("--also-cold", action="store_true", help="then again with warm_starts: false")
    parser.add_argument("--configfile", help="a scale file of the repository (default: the embedded default)")
    args = parser.parse_args()

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True, capture_output=True,
                            text=True).stdout.strip()
    reference = seconds([sys.executable, "-c", "import torch, torchvision"], repeats=3)
    scale = args.configfile or "config.yaml"
    print(f"commit {commit}, {scale}, {args.cores} cores; reference: import torch, torchvision {reference:.2f} s")
    figures = {"commit": commit, "configfile": scale, "cores": args.cores, "import_torch_torchvision_s": reference,
               "target_s": TARGET_S}
    for name, warm in (("warm", True), ("cold", False))[:2 if args.also_cold else 1]:
        if args.keep:
            folder = Path(args.keep) / name
            folder.mkdir(parents=True)  # a new folder: never one that holds results
        else:
            folder = Path(tempfile.mkdtemp(prefix=f"embedded-default-{name}-"))
        done = run_once(folder, args.cores, warm, args.configfile)
        if done is None:
            return 1
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
        result = report(name, *done)
        if name == "warm":
            figures.update(result)  # the default run, as earlier results files have it
        else:
            figures["cold"] = result
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
