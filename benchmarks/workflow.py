"""Planning and no-op times of the workflow (issue 15, target 5).

  plan    ``snakemake -n --configfile=config/paper.yaml`` (146 jobs; no torch
          import while planning): target under 5 s
  no-op   ``snakemake figures`` on up-to-date results of the embedded default:
          target under 10 s (run ``snakemake figures`` once first; skipped,
          with a note, when anything is out of date)

Each figure is the median of ``--repeats`` runs, in ``--folder`` (the
repository root by default; a copy kept by ``embedded_default.py --keep DIR``
has the embedded default's results), with this interpreter's environment
and the folder's own package (``tool_env``).

    python benchmarks/workflow.py [--repeats 3] [--folder DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tool_env(folder: Path = ROOT) -> dict:
    """This process's environment for a workflow in ``folder``: its package
    (``folder/src``) pinned on ``PYTHONPATH``, so an installed copy cannot
    stand in for it, and this interpreter's ``bin/`` first on ``PATH``, so
    ``snakemake`` is the one installed beside it, activated or not."""
    return {**os.environ, "PYTHONPATH": str(folder / "src"),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def seconds(command: list[str], repeats: int, folder: Path = ROOT) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, cwd=folder, check=True, capture_output=True, text=True, env=tool_env(folder))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def up_to_date(folder: Path) -> bool:
    result = subprocess.run(["snakemake", "figures", "-n", "--quiet", "all"], cwd=folder, capture_output=True,
                            text=True, check=True, env=tool_env(folder))
    return "Nothing to be done" in result.stdout + result.stderr


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--folder", type=Path, default=ROOT, help="the workflow's folder (default: this repository)")
    args = parser.parse_args()
    rows = [("plan, paper config (snakemake -n)",
             seconds(["snakemake", "-n", "--configfile=config/paper.yaml"], args.repeats, args.folder), 5.0)]
    if up_to_date(args.folder):
        rows.append(("no-op snakemake figures, embedded default",
                     seconds(["snakemake", "figures"], args.repeats, args.folder), 10.0))
    else:
        print("results of the embedded default are missing or out of date: run `snakemake figures` first "
              "to time the no-op", file=sys.stderr)
    for label, value, target in rows:
        print(f"{label:<44} {value:6.2f} s  target < {target:.0f} s  {'met' if value < target else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
