"""Provenance of a run: command, git commit and tree state, versions, host."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

PACKAGES = ("multisym", "torch", "torchvision", "numpy", "scikit-learn", "snakemake")


def git_state(start: str | Path | None = None) -> dict:
    """Commit and whether the tree is clean, for the repository holding ``start``
    (the package's own folder by default); empty values outside a checkout."""
    folder = Path(start or Path(__file__).parent)
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=folder, capture_output=True, text=True, check=True,
        ).stdout
        return {"commit": commit, "clean": status.strip() == ""}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "clean": None}


def versions() -> dict:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def record(**extra) -> dict:
    """A provenance record for the current process."""
    return {
        "command": sys.argv,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "git": git_state(),
        "versions": versions(),
        **extra,
    }
