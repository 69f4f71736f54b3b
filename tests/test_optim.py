"""Tests for multisym.train.optim: the warm-up + cosine schedule, parameter groups, LARS."""

import math

import pytest
import torch
from torch import nn

from multisym.train.optim import (
    LARS,
    build_optimizer,
    learning_rate,
    parameter_groups,
    set_learning_rate,
)

SPEC = {"lr": 0.3, "final_lr_ratio": 0.001, "warmup_epochs": 3}
STEPS_PER_EPOCH = 10
TOTAL = 100  # 10 epochs


def lr_at(step, spec=SPEC, total=TOTAL, spe=STEPS_PER_EPOCH):
    return learning_rate(step, total, spe, spec)


def closed_form_cosine(t, total, warmup, base, end):
    return end + (base - end) * 0.5 * (1.0 + math.cos(math.pi * (t - warmup) / (total - warmup)))


# --- learning-rate schedule -----------------------------------------------------


def test_warmup_is_linear_and_reaches_lr():
    warmup = 30
    base = SPEC["lr"]
    assert lr_at(0) == pytest.approx(base / warmup, rel=1e-12)
    for t in range(warmup):
        assert lr_at(t) == pytest.approx(base * (t + 1) / warmup, rel=1e-12)
    diffs = [lr_at(t + 1) - lr_at(t) for t in range(warmup - 1)]
    assert all(d == pytest.approx(base / warmup, rel=1e-9) for d in diffs)
    # the last warm-up step and the first cosine step are both at the peak
    assert lr_at(warmup - 1) == pytest.approx(base, rel=1e-12)
    assert lr_at(warmup) == pytest.approx(base, rel=1e-12)
    assert max(lr_at(t) for t in range(TOTAL)) == pytest.approx(base, rel=1e-12)


def test_cosine_part_matches_closed_form_and_last_step():
    warmup, base = 30, SPEC["lr"]
    end = base * SPEC["final_lr_ratio"]
    for t in range(warmup, TOTAL):
        assert lr_at(t) == pytest.approx(closed_form_cosine(t, TOTAL, warmup, base, end), rel=1e-12)
    # the last step actually taken is TOTAL - 1: it is one cosine step short of lr_end,
    # i.e. lr_end + (lr - lr_end)·½(1 + cos(π (T - 1 - T_w) / (T - T_w)))
    last = lr_at(TOTAL - 1)
    gap = (base - end) * 0.5 * (1.0 + math.cos(math.pi * (TOTAL - 1 - warmup) / (TOTAL - warmup)))
    assert last == pytest.approx(end + gap, rel=1e-12)
    assert last > end
    # the gap is O(1 / (T - T_w)^2): ≤ (lr - lr_end) π² / (4 (T - T_w)²)
    assert last - end <= (base - end) * math.pi**2 / (4 * (TOTAL - warmup) ** 2) + 1e-15
    # at step T (one past the end) and beyond it is exactly lr_end
    assert lr_at(TOTAL) == pytest.approx(end, rel=1e-12)
    assert lr_at(TOTAL + 50) == pytest.approx(end, rel=1e-12)


def test_long_schedule_last_step_close_to_final_ratio():
    spec = {"lr": 1.0, "final_lr_ratio": 0.01, "warmup_epochs": 1}
    total, spe = 10_000, 100
    last = learning_rate(total - 1, total, spe, spec)
    end = 0.01
    assert last == pytest.approx(end, rel=1e-5)
    assert last >= end


def test_monotone_non_increasing_after_warmup():
    values = [lr_at(t) for t in range(30, TOTAL + 5)]
    assert all(b <= a + 1e-15 for a, b in zip(values, values[1:]))
    assert values[-1] < values[0]


def test_no_warmup_starts_at_lr():
    spec = {**SPEC, "warmup_epochs": 0}
    assert learning_rate(0, TOTAL, STEPS_PER_EPOCH, spec) == pytest.approx(spec["lr"], rel=1e-12)
    assert learning_rate(1, TOTAL, STEPS_PER_EPOCH, spec) < spec["lr"]
    end = spec["lr"] * spec["final_lr_ratio"]
    assert learning_rate(TOTAL, TOTAL, STEPS_PER_EPOCH, spec) == pytest.approx(end, rel=1e-12)


def test_fractional_warmup_epochs():
    spec = {**SPEC, "warmup_epochs": 0.5}  # 5 steps
    assert learning_rate(0, TOTAL, STEPS_PER_EPOCH, spec) == pytest.approx(spec["lr"] / 5)
    assert learning_rate(4, TOTAL, STEPS_PER_EPOCH, spec) == pytest.approx(spec["lr"])


def test_schedule_depends_on_step_only():
    # same inputs -> same value, so resuming only needs the step counter
    assert [lr_at(t) for t in range(TOTAL)] == [lr_at(t) for t in range(TOTAL)]


def test_set_learning_rate():
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(parameter_groups(model, 1e-4), lr=0.1)
    set_learning_rate(opt, 0.0123)
    assert all(g["lr"] == 0.0123 for g in opt.param_groups)


# --- parameter groups ---------------------------------------------------------


def test_parameter_groups_split_by_ndim():
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2), nn.LayerNorm(2)
    )
    model[0].bias.requires_grad_(False)  # frozen parameters are left out
    decay, no_decay = parameter_groups(model, 5e-4)
    assert decay["weight_decay"] == 5e-4 and decay["lars_exclude"] is False
    assert no_decay["weight_decay"] == 0.0 and no_decay["lars_exclude"] is True
    decay_ids = {id(p) for p in decay["params"]}
    no_decay_ids = {id(p) for p in no_decay["params"]}
    assert decay_ids == {id(model[0].weight), id(model[3].weight)}
    assert no_decay_ids == {
        id(model[1].weight), id(model[1].bias), id(model[3].bias),
        id(model[4].weight), id(model[4].bias),
    }
    assert all(p.ndim > 1 for p in decay["params"])
    assert all(p.ndim == 1 for p in no_decay["params"])


# --- LARS -----------------------------------------------------------------------


def _lars_reference(w, grads, lr, momentum, wd, eta):
    """The documented update, step by step, in float64 with explicit norms."""
    w = w.clone().double()
    m = torch.zeros_like(w)
    for g in grads:
        g = g.double() + wd * w
        w_norm = math.sqrt(float((w * w).sum()))
        g_norm = math.sqrt(float((g * g).sum()))
        trust = eta * w_norm / g_norm if w_norm > 0 and g_norm > 0 else 1.0
        g = g * trust
        m = momentum * m + g
        w = w - lr * m
    return w


@pytest.mark.parametrize("foreach", [True, False])
def test_lars_matches_hand_computation(foreach):
    gen = torch.Generator().manual_seed(0)
    w0 = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    grads = [torch.randn(3, 4, generator=gen, dtype=torch.float64) for _ in range(3)]
    lr, momentum, wd, eta = 0.5, 0.9, 0.01, 0.02
    w = nn.Parameter(w0.clone())
    opt = LARS([{"params": [w], "weight_decay": wd, "lars_exclude": False}], lr=lr, momentum=momentum, eta=eta,
               foreach=foreach)
    for g in grads:
        w.grad = g.clone()
        opt.step()
    expected = _lars_reference(w0, grads, lr, momentum, wd, eta)
    assert torch.allclose(w.detach(), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("foreach", [True, False])
def test_lars_single_step_by_hand(foreach):
    # w = (3, 4): ||w|| = 5; g = (0, 1) + wd·w with wd = 0 -> ||g|| = 1
    w = nn.Parameter(torch.tensor([[3.0, 4.0]], dtype=torch.float64))
    opt = LARS([{"params": [w], "weight_decay": 0.0, "lars_exclude": False}], lr=0.1, momentum=0.9, eta=0.01,
               foreach=foreach)
    w.grad = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    opt.step()
    # trust = 0.01 * 5 / 1 = 0.05; m = (0, 0.05); w = (3, 4 - 0.005)
    assert torch.allclose(w.detach(), torch.tensor([[3.0, 3.995]], dtype=torch.float64), atol=1e-12)
    assert torch.allclose(opt.state[w]["momentum_buffer"], torch.tensor([[0.0, 0.05]], dtype=torch.float64))


@pytest.mark.parametrize("foreach", [True, False])
def test_lars_zero_weight_uses_unit_trust(foreach):
    w = nn.Parameter(torch.zeros(2, 2, dtype=torch.float64))
    opt = LARS([{"params": [w], "weight_decay": 0.1, "lars_exclude": False}], lr=0.1, momentum=0.0, eta=0.01,
               foreach=foreach)
    w.grad = torch.ones(2, 2, dtype=torch.float64)
    opt.step()
    assert torch.allclose(w.detach(), torch.full((2, 2), -0.1, dtype=torch.float64))


@pytest.mark.parametrize("foreach", [True, False])
def test_lars_excluded_group_is_momentum_sgd(foreach):
    gen = torch.Generator().manual_seed(1)
    b0 = torch.randn(5, generator=gen, dtype=torch.float64)
    grads = [torch.randn(5, generator=gen, dtype=torch.float64) for _ in range(3)]
    lr, momentum = 0.2, 0.8
    b = nn.Parameter(b0.clone())
    # weight_decay set on purpose: it must be ignored for an excluded group
    opt = LARS([{"params": [b], "weight_decay": 0.5, "lars_exclude": True}], lr=lr, momentum=momentum, eta=0.001,
               foreach=foreach)
    ref = nn.Parameter(b0.clone())
    sgd = torch.optim.SGD([ref], lr=lr, momentum=momentum)
    expected = b0.clone()
    m = torch.zeros_like(expected)
    for g in grads:
        b.grad = g.clone()
        ref.grad = g.clone()
        opt.step()
        sgd.step()
        m = momentum * m + g
        expected = expected - lr * m
    assert torch.allclose(b.detach(), expected, rtol=1e-12, atol=1e-12)
    assert torch.allclose(b.detach(), ref.detach(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("foreach", [True, False])
def test_lars_skips_params_without_grad(foreach):
    w = nn.Parameter(torch.ones(2, 2))
    opt = LARS([w], lr=0.1, foreach=foreach)
    opt.step()
    assert torch.equal(w.detach(), torch.ones(2, 2))


@pytest.mark.parametrize(
    "kwargs",
    [dict(lr=0.0), dict(lr=0.1, eta=0.0), dict(lr=0.1, momentum=1.0), dict(lr=0.1, weight_decay=-1.0)],
)
def test_lars_rejects_bad_hyperparameters(kwargs):
    with pytest.raises(ValueError):
        LARS([nn.Parameter(torch.ones(2))], **kwargs)


def test_lars_foreach_equals_per_parameter_loop():
    """The multi-tensor update and the official per-parameter loop agree on a
    real model, over several steps, in both parameter groups."""
    torch.manual_seed(0)
    models = [_model().double() for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    opts = [LARS(parameter_groups(m, 0.01), lr=0.3, eta=0.02, foreach=f) for m, f in zip(models, (True, False))]
    x = torch.randn(8, 4, dtype=torch.float64)
    for _ in range(4):
        for model, opt in zip(models, opts):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)


# --- build_optimizer ------------------------------------------------------------


def _spec(name):
    return {"name": name, "lr": 0.3, "momentum": 0.9, "weight_decay": 1e-5, "lars_eta": 0.002,
            "warmup_epochs": 0, "final_lr_ratio": 0.001}


def _model():
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))


def test_build_optimizer_lars():
    model = _model()
    opt = build_optimizer(model, _spec("lars"), torch.device("cpu"))
    assert isinstance(opt, LARS)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 1e-5 and not decay["lars_exclude"]
    assert no_decay["weight_decay"] == 0.0 and no_decay["lars_exclude"]
    assert decay["eta"] == 0.002 and decay["lr"] == 0.3 and decay["momentum"] == 0.9
    n_params = sum(len(g["params"]) for g in opt.param_groups)
    assert n_params == len(list(model.parameters()))


def test_build_optimizer_sgd():
    model = _model()
    opt = build_optimizer(model, _spec("sgd"), torch.device("cpu"))
    assert type(opt) is torch.optim.SGD
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 1e-5 and no_decay["weight_decay"] == 0.0
    assert decay["momentum"] == 0.9 and decay["lr"] == 0.3
    assert "lars_exclude" not in decay
    # it steps without error
    model(torch.randn(4, 4)).sum().backward()
    before = model[0].weight.detach().clone()
    opt.step()
    assert not torch.equal(before, model[0].weight.detach())


def test_build_optimizer_unknown_name():
    with pytest.raises(ValueError, match="adam"):
        build_optimizer(_model(), _spec("adam"), torch.device("cpu"))
