"""Shared fixtures: the repository root, the smoke scale, a runner for
Snakemake on a temporary copy of the workflow."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "config" / "smoke.yaml"
WORKFLOW_FILES = ("Snakefile", "config.yaml", "workflow", "profiles", "slurm", "envs", "config")


@pytest.fixture
def smoke_config() -> dict:
    with open(SMOKE) as handle:
        return yaml.safe_load(handle)


def prepared_eq_member(folder: Path, epochs: int, batch_size: int) -> tuple[dict, tuple[Path, Path]]:
    """The smoke scale's first Eq member trained for ``epochs`` at ``batch_size``,
    and its dataset prepared in ``folder`` (data file, manifest)."""
    from multisym import config as config_module
    from multisym import data
    from multisym.members import member_table

    cfg = config_module.load(SMOKE)
    cfg["pretrain"]["epochs"], cfg["pretrain"]["batch_size"] = epochs, batch_size
    prepared = (folder / "dataset.npz", folder / "manifest.json")
    data.prepare(cfg["dataset"], *prepared)
    return next(m for m in member_table(config_module.resolve(cfg)) if m.mode == "eq").settings, prepared


def eq_member_with_reference(folder: Path) -> tuple[dict, tuple[Path, Path], Path]:
    """`prepared_eq_member` for 25 epochs at 64, and the folder of its
    uninterrupted run (CPU, one thread), for interrupted runs to match."""
    from multisym.pretrain import train_member

    settings, prepared = prepared_eq_member(folder, 25, 64)
    reference = folder / "reference"
    assert train_member(settings, *prepared, reference, reference / "model.pt", reference / "epochs.csv",
                        device="cpu", threads=1)
    return settings, prepared, reference


def tool_env() -> dict:
    """The environment for subprocesses: this interpreter's bin folder first,
    so `multisym` and `snakemake` are the ones installed beside it."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


class WorkflowCopy:
    """A copy of the workflow in a temporary folder, where Snakemake runs."""

    def __init__(self, folder: Path):
        self.folder = folder
        for name in WORKFLOW_FILES:
            source = ROOT / name
            if source.is_dir():
                shutil.copytree(source, folder / name)
            elif source.exists():
                shutil.copy2(source, folder / name)

    def write_config(self, name: str, data: dict) -> Path:
        path = self.folder / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    def snakemake(self, *args: str, check: bool = True, timeout: float = 900,
                  hard_timeout: float | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
        """``hard_timeout`` runs it under ``timeout -k``: a hung run (a SLURM
        status poll that never returns) is killed, and the test fails.
        ``env`` adds variables to the environment."""
        prefix = ["timeout", "-k", "10", str(int(hard_timeout))] if hard_timeout else []
        result = subprocess.run(
            [*prefix, sys.executable, "-m", "snakemake", *args],
            cwd=self.folder, env={**tool_env(), **(env or {})}, capture_output=True, text=True, timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"snakemake {' '.join(args)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}"
            )
        return result


@pytest.fixture
def workflow_copy(tmp_path) -> WorkflowCopy:
    return WorkflowCopy(tmp_path)


def planned_jobs(dry_run_output: str) -> dict[str, int]:
    """Job counts per rule from the 'Job stats' table of `snakemake -n`."""
    counts: dict[str, int] = {}
    lines = dry_run_output.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.startswith("Job stats:"))
    except StopIteration:
        return counts
    for line in lines[start + 3:]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        if parts[0] != "total":
            counts[parts[0]] = int(parts[1])
    return counts
