"""Pretraining: every mode trains, and a resumed run equals an uninterrupted one."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from multisym.train import checkpoint
from multisym.data import splits
from multisym import config as config_module
from multisym.members import member_table
from multisym.train.pretrain import STATE_FILE, train_member

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def smoke():
    cfg = config_module.load(ROOT / "config" / "smoke.yaml")
    cfg["pretrain"]["epochs"] = cfg["supervised"]["epochs"] = 3
    return cfg


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, smoke):
    folder = tmp_path_factory.mktemp("data")
    splits.prepare(smoke["dataset"], folder / "dataset.npz", folder / "manifest.json")
    return folder / "dataset.npz", folder / "manifest.json"


def member(cfg, mode):
    table = config_module.resolve(cfg)
    return next(m for m in member_table(table) if m.mode == mode)


def run(settings, prepared, folder: Path, **kwargs) -> bool:
    return train_member(
        settings, *prepared, folder, folder / "model.pt", folder / "epochs.csv", device="cpu", threads=1, **kwargs
    )


def read_rows(path: Path) -> list[dict]:
    with open(path) as handle:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)]


@pytest.mark.parametrize("mode", ["eq", "inv", "base", "sup"])
def test_resumed_run_equals_uninterrupted_run(tmp_path, smoke, prepared, mode):
    settings = member(smoke, mode).settings
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert run(settings, prepared, straight)

    assert not run(settings, prepared, resumed, stop_after_epochs=1)
    assert not (resumed / "model.pt").exists()
    state = checkpoint.load(resumed / STATE_FILE)
    assert state["epoch"] == 1
    assert run(settings, prepared, resumed)

    a = torch.load(straight / "model.pt", weights_only=True)
    b = torch.load(resumed / "model.pt", weights_only=True)
    assert a.keys() == b.keys()
    for part in a:
        if isinstance(a[part], dict):
            for name, tensor in a[part].items():
                assert torch.equal(tensor, b[part][name]), f"{part}.{name} differs after resume"
    assert read_rows(straight / "epochs.csv") == read_rows(resumed / "epochs.csv")


def test_log_columns_per_mode(tmp_path, smoke, prepared):
    eq = member(smoke, "eq").settings
    run(eq, prepared, tmp_path / "eq")
    with open(tmp_path / "eq" / "epochs.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3
    assert {"epoch", "loss", "loss_cl", "loss_eq", "eq_acc", "lr", "seconds"} <= set(rows[0])
    assert all(0 <= float(r["eq_acc"]) <= 1 for r in rows)


def test_export_holds_every_part_and_loads_with_weights_only(tmp_path, smoke, prepared):
    eq = member(smoke, "eq")
    run(eq.settings, prepared, tmp_path)
    exported = torch.load(tmp_path / "model.pt", weights_only=True)
    assert exported["settings_hash"] == eq.settings_hash
    assert {"backbone", "projector", "eq_head"} <= set(exported)


def test_resume_refuses_a_checkpoint_of_other_settings(tmp_path, smoke, prepared):
    base = member(smoke, "base").settings
    assert not run(base, prepared, tmp_path, stop_after_epochs=1)
    other = dict(base, seed=base["seed"] + 1)
    with pytest.raises(checkpoint.CheckpointError, match="settings hash"):
        run(other, prepared, tmp_path)


def test_non_finite_loss_stops_with_member_and_epoch(tmp_path, smoke, prepared):
    settings = member(smoke, "sup").settings
    settings = {**settings, "supervised": {**settings["supervised"],
                                           "optimizer": {**settings["supervised"]["optimizer"], "lr": 1e30}}}
    with pytest.raises(FloatingPointError, match=r"epoch \d+"):
        run(settings, prepared, tmp_path)


def test_loss_monitor_sums_like_python_floats_and_names_the_first_bad_step():
    """The sums are exact; a non-finite loss is noted on the device and
    reported, with its step, where the loop reads the sums."""
    from multisym.train.trainer import LossMonitor

    values = torch.rand(20, generator=torch.Generator().manual_seed(0))
    monitor = LossMonitor("member eq-rotation-s1", torch.device("cpu"), {"loss": 0.5})
    expected = 0.5
    for index, value in enumerate(values):
        monitor.record({"loss": value}, epoch=2, index=index)
        expected += float(value)
    assert monitor.totals() == {"loss": expected}  # exact: a resumed epoch's log must not drift
    monitor.record({"loss": torch.tensor(float("nan"))}, epoch=2, index=7)
    monitor.record({"loss": torch.tensor(float("inf"))}, epoch=2, index=8)
    monitor.record({"loss": torch.tensor(1.0)}, epoch=2, index=9)
    with pytest.raises(FloatingPointError, match=r"member eq-rotation-s1: loss is nan at epoch 3, step 7"):
        monitor.totals()


def test_signal_on_an_epochs_last_step_resumes_into_the_next_epoch(tmp_path, smoke, prepared, monkeypatch):
    """SIGUSR2 during the last step of an epoch saves a state whose epoch has
    no step left; the resumed run ends exactly like an uninterrupted one."""
    import os
    import signal

    from multisym.train import optim
    from multisym.cluster.stopping import InterruptedRun

    settings = member(smoke, "base").settings
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert run(settings, prepared, straight)
    real = optim.set_learning_rate
    calls = {"n": 0}
    steps_per_epoch = 1257 // min(settings["pretrain"]["batch_size"], 1257)

    def signal_on_last_step(optimizer, lr):
        calls["n"] += 1
        if calls["n"] == steps_per_epoch:
            os.kill(os.getpid(), signal.SIGUSR2)
        real(optimizer, lr)

    monkeypatch.setattr(optim, "set_learning_rate", signal_on_last_step)
    with pytest.raises(InterruptedRun):
        run(settings, prepared, resumed)
    assert checkpoint.load(resumed / STATE_FILE)["batch"] == steps_per_epoch
    monkeypatch.setattr(optim, "set_learning_rate", real)
    assert run(settings, prepared, resumed)
    a, b = (torch.load(d / "model.pt", weights_only=True) for d in (straight, resumed))
    assert all(torch.equal(a["backbone"][k], b["backbone"][k]) for k in a["backbone"])
    assert read_rows(straight / "epochs.csv") == read_rows(resumed / "epochs.csv")


@pytest.mark.parametrize("widths, channels_last", [([4, 8], False), ([16, 32, 64], True)])
def test_cpu_runs_channels_last_unless_a_strided_1x1_conv_is_narrower_than_onednns_block(widths, channels_last):
    """The smoke backbone's 4-to-8 downsampling convolution would abort in
    oneDNN's NHWC backward; the embedded default's 16-channel one does not."""
    import copy

    from multisym.train.models import build_backbone
    from multisym.runtime import make_runtime

    info = splits.DatasetInfo("digits", 10, 1, 16, (0.3,), (0.4,))
    torch.manual_seed(0)
    nchw = build_backbone({"arch": "small_resnet", "widths": widths, "blocks": [1] * len(widths)}, 1)
    placed = copy.deepcopy(nchw)
    runtime = make_runtime(torch.device("cpu"), "auto", info, placed)
    assert runtime.channels_last is channels_last
    placed = runtime.place(placed)
    assert placed.stages[0][0].conv1.weight.is_contiguous(memory_format=torch.channels_last) is channels_last

    images = torch.rand(32, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    expected, got = nchw((images - 0.3) / 0.4), placed(runtime.prepare(images))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    expected.square().sum().backward()
    got.square().sum().backward()
    for (name, a), b in zip(nchw.named_parameters(), placed.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-4 * float(a.grad.abs().max()), msg=name)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")


@cuda
def test_non_finite_loss_on_cuda_stops_before_any_save(tmp_path, smoke, prepared):
    """On CUDA the NaN check is read one step late; it still fires in the
    epoch it happens, names the member, and no state of it is ever saved."""
    settings = member(smoke, "sup").settings
    settings = {**settings, "supervised": {**settings["supervised"],
                                           "optimizer": {**settings["supervised"]["optimizer"], "lr": 1e30}}}
    with pytest.raises(FloatingPointError, match=rf"member {tmp_path.name}: loss is \S+ at epoch 1, step \d"):
        train_member(settings, *prepared, tmp_path, tmp_path / "model.pt", tmp_path / "epochs.csv", device="cuda")
    assert not (tmp_path / STATE_FILE).exists()


@cuda
def test_signal_on_cuda_saves_device_sums_and_resumes(tmp_path, smoke, prepared, monkeypatch):
    import os
    import signal

    from multisym.train import optim
    from multisym.cluster.stopping import InterruptedRun

    settings = member(smoke, "eq").settings
    real, calls = optim.set_learning_rate, {"n": 0}

    def signal_on_second_step(optimizer, lr):
        calls["n"] += 1
        if calls["n"] == 2:
            os.kill(os.getpid(), signal.SIGUSR2)
        real(optimizer, lr)

    monkeypatch.setattr(optim, "set_learning_rate", signal_on_second_step)
    with pytest.raises(InterruptedRun):
        train_member(settings, *prepared, tmp_path, tmp_path / "model.pt", tmp_path / "epochs.csv", device="cuda")
    state = checkpoint.load(tmp_path / STATE_FILE)
    assert state["batch"] == 2 and all(isinstance(v, float) for v in state["sums"].values())
    monkeypatch.setattr(optim, "set_learning_rate", real)
    assert train_member(settings, *prepared, tmp_path, tmp_path / "model.pt", tmp_path / "epochs.csv", device="cuda")
    assert len(read_rows(tmp_path / "epochs.csv")) == settings["pretrain"]["epochs"]
