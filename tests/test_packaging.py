"""Packaging: pins agree across pyproject and the conda environment, the
README holds the two commands that .ci/run and users run."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def normalise(requirement: str) -> tuple[str, str]:
    name, spec = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", requirement).groups()
    return name.lower().replace("_", "-"), "".join(spec.split())


def pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as handle:
        return tomllib.load(handle)


def test_conda_environment_pins_match_pyproject():
    project = dict(normalise(r) for r in pyproject()["project"]["dependencies"])
    env = yaml.safe_load((ROOT / "envs" / "workflow.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert dict(normalise(r) for r in pip) == project


def test_required_pins():
    deps = dict(normalise(r) for r in pyproject()["project"]["dependencies"])
    assert deps["snakemake"] == ">=9.20,<10"
    assert deps["snakemake-executor-plugin-slurm"] == ">=2.7.1,<3"
    assert deps["torch"] == "==2.14.1"
    assert deps["torchvision"] == "==0.29.1"
    for name in ("submitit", "pyyaml", "jsonschema", "matplotlib", "seaborn", "scikit-learn", "scipy",
                 "torchmetrics", "pygments"):
        assert name in deps
    test = dict(normalise(r) for r in pyproject()["project"]["optional-dependencies"]["test"])
    assert "pytest" in test and test["snakefmt"].startswith("==")


def readme_command(marker: str) -> str:
    text = (ROOT / "README.md").read_text()
    block = re.search(rf"<!-- {marker} -->\n```bash\n(.*?)\n```\n<!-- /{marker} -->", text, re.S)
    assert block, f"README.md has no {marker} block"
    lines = block.group(1).strip().splitlines()
    assert len(lines) == 1, f"the {marker} must be one command line"
    return lines[0]


def test_readme_has_the_two_commands():
    main, test = readme_command("main-command"), readme_command("test-command")
    for command in (main, test):
        assert "apt-get update && apt-get install" in command
        assert "python3 -m venv .venv" in command
    assert "snakemake" in main and "pytest" in test


def test_ci_runs_the_readme_test_command():
    script = (ROOT / ".ci" / "run").read_text()
    assert "test-command" in script and "README.md" in script


def test_workflow_profile_holds_only_the_core_count_and_reruns_failed_jobs():
    """No site values; rerun-incomplete so that a job a kill interrupted runs
    again on the next call."""
    profile = yaml.safe_load((ROOT / "profiles" / "default" / "config.yaml").read_text())
    assert profile == {"cores": "all", "rerun-incomplete": True}


def test_ruff_is_clean():
    """pyflakes and pycodestyle over the package, the tests and the benchmarks,
    configured in pyproject.toml."""
    import subprocess
    import sys

    ruff = Path(sys.executable).parent / "ruff"
    result = subprocess.run([str(ruff), "check", "src", "tests", "benchmarks"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
