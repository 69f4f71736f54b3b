"""Interrupted pretraining: signals as SLURM sends them (SIGUSR2 ahead of a
time limit, SIGTERM on preemption or scancel) make the member save its state
mid-epoch and exit cleanly with 128 + the signal number; kill -9, mid-epoch or
while a checkpoint is being written, loses at most the current epoch and never
leaves a partial checkpoint. In every case a rerun ends with exactly the
weights of an uninterrupted run (CPU, one thread)."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, eq_member_with_reference, tool_env
from multisym.train import checkpoint
from multisym.files import read_npz
from multisym import config as config_module
from multisym.members import adaptation_candidates, member_table
from multisym.train.pretrain import STATE_FILE


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return eq_member_with_reference(tmp_path_factory.mktemp("signals"))


def command(settings, prepared, run: Path) -> list[str]:
    return [
        sys.executable, "-m", "multisym.cli", "pretrain", "--settings-json", json.dumps(settings),
        "--data", str(prepared[0]), "--manifest", str(prepared[1]), "--run-dir", str(run),
        "--out-model", str(run / "model.pt"), "--out-log", str(run / "epochs.csv"), "--threads", "1",
        "--device", "cpu",
    ]


def wait_for_epochs(process, run: Path, count: int) -> None:
    deadline = time.time() + 120
    while not (run / "epochs.csv").exists() or len(rows(run / "epochs.csv")) < count:
        assert process.poll() is None and time.time() < deadline, "training ended before it could be interrupted"
        time.sleep(0.05)


def assert_same_as_reference(run: Path, reference: Path) -> None:
    final = torch.load(run / "model.pt", weights_only=True)
    expected = torch.load(reference / "model.pt", weights_only=True)
    for part in ("backbone", "projector", "eq_head"):
        for name, tensor in expected[part].items():
            assert torch.equal(final[part][name], tensor), f"{part}.{name} differs after the interrupted run"
    assert rows(run / "epochs.csv") == rows(reference / "epochs.csv")


def rows(path: Path) -> list[dict]:
    with open(path) as handle:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)]


@pytest.mark.parametrize("signum", [signal.SIGUSR2, signal.SIGTERM], ids=["SIGUSR2", "SIGTERM"])
def test_signal_saves_state_and_rerun_resumes_to_the_same_weights(tmp_path, setup, signum):
    settings, prepared, reference = setup
    run = tmp_path / "run"
    process = subprocess.Popen(command(settings, prepared, run), env=tool_env(), stderr=subprocess.PIPE, text=True)
    wait_for_epochs(process, run, 3)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, stderr[-2000:]
    assert f"stopped by {signal.Signals(signum).name}" in stderr
    assert not (run / "model.pt").exists()
    state = checkpoint.load(run / STATE_FILE, expected_hash=None)
    assert 3 <= state["epoch"] < 25 and "batch" in state  # saved mid-epoch

    resumed = subprocess.run(command(settings, prepared, run), env=tool_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed" in resumed.stderr
    assert_same_as_reference(run, reference)


def test_kill_9_mid_epoch_then_rerun_gives_the_same_weights(tmp_path, setup):
    settings, prepared, reference = setup
    run = tmp_path / "run"
    process = subprocess.Popen(command(settings, prepared, run), env=tool_env(), stderr=subprocess.DEVNULL)
    wait_for_epochs(process, run, 3)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    state = checkpoint.load(run / STATE_FILE, expected_hash=None)  # the last complete one, readable
    assert "batch" not in state and state["epoch"] >= 3
    resumed = subprocess.run(command(settings, prepared, run), env=tool_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_as_reference(run, reference)


KILL_DURING_WRITE = """
import os, signal, sys
from multisym import files
from multisym.cli import main

real_replace, calls = os.replace, [0]

def replace_then_die(src, dst):
    # the 4th checkpoint: its temporary file is complete and fsynced, the rename never happens
    if str(dst).endswith("state.pt"):
        calls[0] += 1
        if calls[0] == 4:
            os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst)

files.os.replace = replace_then_die
main(sys.argv[1:])
"""


def test_kill_9_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, setup):
    settings, prepared, reference = setup
    run = tmp_path / "run"
    args = command(settings, prepared, run)[3:]  # drop "python -m multisym.cli"
    killed = subprocess.run([sys.executable, "-c", KILL_DURING_WRITE, *args], env=tool_env(), capture_output=True)
    assert killed.returncode == -signal.SIGKILL
    state = checkpoint.load(run / STATE_FILE, expected_hash=None)
    assert state["epoch"] == 3, "the checkpoint in place must be the last completely written one"
    resumed = subprocess.run(command(settings, prepared, run), env=tool_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert not list(run.glob(".*.tmp-*")), "the rerun must not leave the dead run's temporary file behind"
    assert_same_as_reference(run, reference)


# ------------------------------------------------------------- fine-tuning
def finetune_command(base_model: Path, settings: dict, prepared, run: Path) -> list[str]:
    return [
        sys.executable, "-m", "multisym.cli", "finetune", "--base-model", str(base_model),
        "--settings-json", json.dumps(settings), "--data", str(prepared[0]), "--manifest", str(prepared[1]),
        "--out-model", str(run / "model.pt"), "--out-logits", str(run / "logits.npz"),
        "--out-log", str(run / "epochs.csv"), "--threads", "1", "--device", "cpu",
    ]


def test_fine_tuning_resumes_after_a_signal_to_the_same_result(tmp_path, setup):
    """SIGUSR2 mid-epoch: the fine-tuning run saves its state (the best
    epoch's weights included) and exits 128 + 12; the rerun resumes and writes
    the uninterrupted run's model, logits and log, then drops its state."""
    _, prepared, member = setup
    cfg = config_module.resolve(config_module.load(ROOT / "config" / "smoke.yaml"))
    eq_member = next(m for m in member_table(cfg) if m.mode == "eq")
    settings = {**adaptation_candidates(cfg, eq_member)[0], "epochs": 14, "batch_size": 32}
    runs = {name: tmp_path / name for name in ("reference", "interrupted")}
    done = subprocess.run(finetune_command(member / "model.pt", settings, prepared, runs["reference"]),
                          env=tool_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    run = runs["interrupted"]
    process = subprocess.Popen(finetune_command(member / "model.pt", settings, prepared, run), env=tool_env(),
                               stderr=subprocess.PIPE, text=True)
    wait_for_state(process, run / STATE_FILE)
    process.send_signal(signal.SIGUSR2)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGUSR2, stderr[-2000:]
    state = checkpoint.load(run / STATE_FILE, expected_hash=None)
    assert 1 <= state["epoch"] < 14 and "batch" in state and state["best"]["model"] is not None
    resumed = subprocess.run(finetune_command(member / "model.pt", settings, prepared, run), env=tool_env(),
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed fine-tune" in resumed.stderr
    assert not (run / STATE_FILE).exists()
    final, expected = (torch.load(r / "model.pt", weights_only=True) for r in (run, runs["reference"]))
    for part in ("backbone", "classifier"):
        for name, tensor in expected[part].items():
            assert torch.equal(final[part][name], tensor), f"{part}.{name} differs after the interrupted run"
    logits, reference_logits = (read_npz(r / "logits.npz") for r in (run, runs["reference"]))
    assert all(np.array_equal(logits[k], reference_logits[k]) for k in reference_logits)
    assert rows(run / "epochs.csv") == rows(runs["reference"] / "epochs.csv")


def wait_for_state(process, path: Path) -> None:
    deadline = time.time() + 120
    while not path.exists():
        assert process.poll() is None and time.time() < deadline, "fine-tuning ended before it could be interrupted"
        time.sleep(0.05)
