"""The CLI: a user error prints what to fix, without a traceback, exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT, tool_env


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "multisym.cli", *args], capture_output=True, text=True,
                          env=tool_env(), cwd=ROOT)


def test_missing_dataset_root_is_a_clear_error(tmp_path):
    dataset = {"name": "food101", "root": str(tmp_path / "absent"), "image_size": 32, "checksum": "listing",
               "classes": None, "splits": {"val": 0.1, "test": None, "seed": 0}}
    result = run("prepare-data", "--dataset-json", json.dumps(dataset),
                 "--out-data", str(tmp_path / "d.npz"), "--out-manifest", str(tmp_path / "m.json"))
    assert result.returncode == 2
    assert result.stderr.startswith("error: config key 'dataset.root'")
    assert "Traceback" not in result.stderr and "food-101/{images" in result.stderr
    assert not (tmp_path / "d.npz").exists()


def test_invalid_config_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ndataset: {name: digits}\nmembers: {seeds: {eq: [1]}}\npretrain: {epochs: -3}\n")
    result = run("validate", "--config", str(path))
    assert result.returncode != 0
    assert "pretrain.epochs" in result.stderr and "Traceback" not in result.stderr


def test_members_lists_the_table():
    result = run("members", "--config", "config.yaml")
    assert result.returncode == 0
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("eq-rotation-s1\teq\trotation\t1\teq-rotation-s1-")



def test_a_table_job_loads_no_torch(tmp_path):
    """The parser holds every stage's commands, yet a report step imports only
    its own code: no torch, and no training, ensembling, data or cluster code."""
    members = tmp_path / "members.json"
    members.write_text(json.dumps({"dominance": None, "members": [
        {"member": "eq-s1", "mode": "eq", "val_accuracy": 0.5, "metrics": {"accuracy": {"value": 80.0}}}]}))
    spec = {"name": "t", "dataset": "digits", "selection_split": "val"}
    code = (
        "import sys\nfrom multisym import cli\ncli.main(sys.argv[1:])\n"
        "stages = ('multisym.train.', 'multisym.ensembles.', 'multisym.data.', 'multisym.cluster.launch')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision')\n"
        "             or m.startswith(stages) and not m.endswith('.commands')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "table", "--table", "table1", "--spec-json", json.dumps(spec),
         "--inputs", str(members), "--out-csv", str(tmp_path / "t.csv"), "--out-md", str(tmp_path / "t.md")],
        capture_output=True, text=True, env=tool_env(), cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "Eq" in (tmp_path / "t.csv").read_text()
    assert result.stdout.strip() == "[]"


def test_every_subcommand_is_listed_once_with_the_options_of_a_run_by_hand(capsys):
    """Each stage owns its subcommands; the program lists them all, each with
    the options every subcommand has."""
    from multisym.cli import COMMANDS, build_parser

    names = [command.name for command in COMMANDS]
    assert len(names) == len(set(names)) == 34
    parser = build_parser()
    for name in names:
        with pytest.raises(SystemExit):
            parser.parse_args([name, "--help"])
        usage = capsys.readouterr().out
        assert all(option in usage for option in ("--config", "--results", "--in-memory-gib")), name
