"""The CLI: a user error prints what to fix, without a traceback, exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys

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
