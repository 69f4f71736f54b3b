"""The training step replayed from a CUDA graph (issue 15, target 2): where it
is used, and that replays train the weights that eager steps train."""

from __future__ import annotations

import pytest
import torch

from conftest import SMOKE
from multisym import config as config_module
from multisym.train import graphs
from multisym.train import optim
from multisym.data.splits import DatasetInfo
from multisym.members import member_table
from multisym.train.pretrain import ContrastiveStep, build_model
from multisym.train.trainer import LossMonitor
from multisym.runtime import make_runtime

INFO = DatasetInfo(name="digits", num_classes=10, channels=1, image_size=8, mean=(0.5,), std=(0.25,))
BATCH = 16


def eq_settings() -> dict:
    return next(m for m in member_table(config_module.load(SMOKE)) if m.mode == "eq").settings


def trainer(device: torch.device, capture: bool):
    """A smoke Eq member and the loop's calls around ``GradientStep``; returns
    (one step on a batch of images, the model, the GradientStep, the ContrastiveStep)."""
    settings = eq_settings()
    torch.manual_seed(0)
    model = build_model(settings, INFO)
    runtime = make_runtime(device, "fp32", INFO, model)
    model = runtime.place(model)
    step = ContrastiveStep(settings, model, runtime)
    spec = settings["pretrain"]["optimizer"]
    optimizer = optim.build_optimizer(model, spec, device)
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    gradients = graphs.GradientStep(step.loss, optimizer, scaler, capture)
    monitor = LossMonitor("graphs", device)
    views = torch.Generator().manual_seed(3)

    def train(images: torch.Tensor, index: int) -> dict[str, float]:
        optim.set_learning_rate(optimizer, optim.learning_rate(index, 100, 10, spec))
        terms = gradients(step.draw(images, torch.zeros(len(images), dtype=torch.long, device=device), views))
        monitor.record(terms, 0, index)
        scaler.step(optimizer)
        scaler.update()
        return {key: float(value) for key, value in terms.items()}

    return train, model, gradients, step


def batches(device: torch.device, count: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.rand(BATCH, 1, 8, 8, generator=generator).to(device) for _ in range(count)]


@pytest.mark.parametrize("device, processes, nvjpeg, allowed, expected", [
    ("cpu", 1, False, True, False), ("cuda", 1, False, True, True), ("cuda", 2, False, True, False),
    ("cuda", 1, True, True, False), ("cuda", 1, False, False, False),
])
def test_graphs_are_used_on_one_gpu_unless_nvjpeg_decodes_or_switched_off(device, processes, nvjpeg, allowed,
                                                                           expected):
    """``allowed`` is gpu_jobs.cuda_graphs."""
    assert graphs.wanted(torch.device(device), processes, nvjpeg, allowed) is expected


def test_eager_steps_set_each_batchs_gradients_afresh():
    """A step's gradients replace what ``.grad`` held (never added to it), and
    its terms are those of its own batch."""
    device = torch.device("cpu")
    train, model, gradients, step = trainer(device, capture=False)
    first, second = batches(device, 2)
    train(first, 0)
    batch = step.draw(second, torch.zeros(BATCH, dtype=torch.long), torch.Generator().manual_seed(5))
    model.zero_grad(set_to_none=True)
    expected_loss = step.loss(batch)["loss"]
    expected_loss.backward()
    expected = {name: p.grad.clone() for name, p in model.named_parameters()}
    got = gradients(batch)
    torch.testing.assert_close(got["loss"], expected_loss)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], msg=name)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")


@cuda
def test_replayed_steps_train_the_weights_of_eager_steps(monkeypatch):
    """Three eager warm-up steps, the capture, then replays: after every step
    the loss terms and, at the end, every weight and BatchNorm statistic match
    a run of eager steps (the same kernels, cuDNN's deterministic ones)."""
    device = torch.device("cuda")
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    data = batches(device, graphs.WARMUP_STEPS + 4)
    runs = {}
    for capture in (False, True):
        train, model, gradients, _ = trainer(device, capture)
        runs[capture] = ([train(images, index) for index, images in enumerate(data)], model.state_dict())
        assert (gradients.graph is not None) is capture
    (eager_terms, eager_state), (replayed_terms, replayed_state) = runs[False], runs[True]
    for index, (eager, replayed) in enumerate(zip(eager_terms, replayed_terms)):
        for key in eager:
            assert replayed[key] == pytest.approx(eager[key], rel=1e-4, abs=1e-5), (index, key)
    for name, tensor in eager_state.items():
        torch.testing.assert_close(replayed_state[name], tensor, rtol=1e-4, atol=1e-5, msg=name)


@cuda
def test_a_captured_step_refuses_a_batch_of_other_shapes():
    device = torch.device("cuda")
    train, *_ = trainer(device, capture=True)
    for index, images in enumerate(batches(device, graphs.WARMUP_STEPS + 1)):
        train(images, index)
    with pytest.raises(ValueError, match="captured training step takes view1 of shape"):
        train(torch.rand(BATCH // 2, 1, 8, 8, device=device), 9)
