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


def test_the_program_exits_at_once_yet_delivers_its_output_and_exit_handlers():
    """As a program, a command skips the interpreter's finalisation (1-2 s with
    torch loaded) but still flushes piped output and runs atexit handlers."""
    script = ("import atexit, sys\n"
              "from multisym.cli import program\n"
              "class Finalised:\n"
              "    def __del__(self):\n"
              "        sys.stderr.write('finalised\\n')\n"
              "witness = Finalised()\n"
              "atexit.register(lambda: print('atexit ran'))\n"
              "sys.argv[1:] = ['members', '--config', 'config.yaml']\n"
              "program()\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=tool_env(), cwd=ROOT)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("eq-rotation-s1\teq") and lines[-1] == "atexit ran"
    assert "finalised" not in result.stderr
