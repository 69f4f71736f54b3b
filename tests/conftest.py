"""Shared fixtures: the repository root, the smoke scale, a runner for
Snakemake on a temporary copy of the workflow."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
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
    from multisym.data import splits
    from multisym.members import member_table

    cfg = config_module.load(SMOKE)
    cfg["pretrain"]["epochs"], cfg["pretrain"]["batch_size"] = epochs, batch_size
    prepared = (folder / "dataset.npz", folder / "manifest.json")
    splits.prepare(cfg["dataset"], *prepared)
    return next(m for m in member_table(config_module.resolve(cfg)) if m.mode == "eq").settings, prepared


def eq_member_with_reference(folder: Path) -> tuple[dict, tuple[Path, Path], Path]:
    """`prepared_eq_member` for 25 epochs at 64, and the folder of its
    uninterrupted run (CPU, one thread), for interrupted runs to match."""
    from multisym.train.pretrain import train_member

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
                f"snakemake {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout[-4000:]}\n{result.stderr[-6000:]}"
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


# ------------------------------------------------------- the test cluster
# One real SLURM cluster (tests/local_slurm.py) for the whole test session,
# started by the controlling pytest process before its workers and stopped at
# the end. While a slurm.conf names a controller that does not answer, every
# Snakemake start waits about 9 s: the SLURM executor plugin, imported with
# Snakemake, asks `scontrol show config` with a 10 s timeout
# (docs/troubleshooting.md). A controller that answers all session long keeps
# that wait out of every workflow test, whichever worker runs it.
CLUSTER_STATE = "TEST_SLURM_STATE"  # the state folder, for the workers
_CLUSTER: dict = {}


def _wants_cluster(config) -> bool:
    if os.geteuid() != 0:
        return False
    for arg in config.args or ["tests"]:
        path = Path(arg.split("::")[0])
        if path.is_dir() or path.name == "test_slurm.py":
            return True
    return False


def pytest_configure(config):
    if hasattr(config, "workerinput") or not _wants_cluster(config):
        return
    from local_slurm import LocalSlurm

    # the daemons run as users slurm and mysql: pytest's private temporary folders are closed to them
    state = Path(tempfile.mkdtemp(prefix="multisym-slurm-", dir="/var/tmp"))
    state.chmod(0o755)
    os.environ[CLUSTER_STATE] = str(state)
    slurm = LocalSlurm(state)

    def start():
        try:
            slurm.start()
            (state / "ready").write_text("ok\n")
        except Exception as error:  # the SLURM tests report it; the others need no cluster
            (state / "failed").write_text(f"{type(error).__name__}: {error}\n")

    thread = threading.Thread(target=start, daemon=True)
    thread.start()
    _CLUSTER.update(slurm=slurm, thread=thread, state=state)


def pytest_unconfigure(config):
    if not _CLUSTER:
        return
    _CLUSTER["thread"].join()
    _CLUSTER["slurm"].stop()
    shutil.rmtree(_CLUSTER["state"], ignore_errors=True)
    _CLUSTER.clear()


def session_cluster(timeout: float = 600) -> Path:
    """The session's cluster state folder once its daemons answer (pytest.fail
    with the reason when it could not start)."""
    import time

    import pytest

    if os.geteuid() != 0:
        pytest.fail("the SLURM tests start a local cluster and need root (CI runs as root)")
    if CLUSTER_STATE not in os.environ:
        pytest.fail("no session cluster: run the SLURM tests through pytest from the repository root")
    state = Path(os.environ[CLUSTER_STATE])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (state / "ready").exists():
            return state
        if (state / "failed").exists():
            pytest.fail(f"the local SLURM cluster did not start: {(state / 'failed').read_text()}")
        time.sleep(0.5)
    pytest.fail(f"the local SLURM cluster did not start within {timeout:.0f} s (logs in {state / 'log'})")
