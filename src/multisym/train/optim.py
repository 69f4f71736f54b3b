"""Optimizers and the learning-rate schedule of the official recipe
(docs/method.md#optimizer-and-schedule).

LARS (You et al., arXiv 1708.03888) with momentum; parameters with ndim == 1
(biases, norm layers) are excluded from weight decay and from the LARS
adaptation. The schedule is a linear warm-up followed by a cosine decay to
``final_lr_ratio x lr``, evaluated at every step from the step index alone, so
resuming only needs the step counter.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class LARS(torch.optim.Optimizer):
    """LARS with momentum.

    For a weight w with gradient g (both excluded groups skip steps 1-2):
      1. g <- g + wd · w
      2. g <- g · η ||w|| / ||g||   (when both norms are > 0)
      3. m <- μ m + g;  w <- w - lr · m

    ``foreach=True`` (the default) updates each group with a few multi-tensor
    kernels and never reads a norm back to the host; ``foreach=False`` is the
    per-parameter loop of the official code, kept as the baseline of
    ``benchmarks/pretrain_step.py``. Both compute the same update.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 eta: float = 0.001, foreach: bool = True):
        if lr <= 0 or eta <= 0 or not 0 <= momentum < 1 or weight_decay < 0:
            raise ValueError("LARS: need lr > 0, eta > 0, 0 <= momentum < 1, weight_decay >= 0; "
                             f"got {lr}, {eta}, {momentum}, {weight_decay}")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, lars_exclude=False)
        super().__init__(params, defaults)
        self.foreach = foreach

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            buffers = []
            for p in params:
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buffers.append(state["momentum_buffer"])
            update = self._update_foreach if self.foreach else self._update_loop
            update(group, params, [p.grad for p in params], buffers)

    @staticmethod
    def _trust(group: dict, w_norm: Tensor, g_norm: Tensor) -> Tensor:
        """η ||w|| / ||g|| where both norms are positive, else 1."""
        ok = (w_norm > 0) & (g_norm > 0)
        return torch.where(ok, group["eta"] * w_norm / torch.where(ok, g_norm, 1.0), 1.0)

    def _update_foreach(self, group: dict, params: list, grads: list, buffers: list) -> None:
        if not group["lars_exclude"]:
            grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            trust = self._trust(group, torch.stack(torch._foreach_norm(params)),
                                torch.stack(torch._foreach_norm(grads)))
            torch._foreach_mul_(grads, list(trust.to(grads[0].dtype).unbind()))
        torch._foreach_mul_(buffers, group["momentum"])
        torch._foreach_add_(buffers, grads)
        torch._foreach_add_(params, buffers, alpha=-group["lr"])

    def _update_loop(self, group: dict, params: list, grads: list, buffers: list) -> None:
        for p, grad, buf in zip(params, grads, buffers):
            if not group["lars_exclude"]:
                grad = grad.add(p, alpha=group["weight_decay"])
                grad = grad.mul(self._trust(group, torch.linalg.norm(p), torch.linalg.norm(grad)))
            buf.mul_(group["momentum"]).add_(grad)
            p.add_(buf, alpha=-group["lr"])


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weights (ndim > 1) get weight decay; biases and norm parameters do not
    and are excluded from the LARS adaptation."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim == 1 else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay, "lars_exclude": False},
        {"params": no_decay, "weight_decay": 0.0, "lars_exclude": True},
    ]


def build_optimizer(model: nn.Module, spec: dict, device: torch.device) -> torch.optim.Optimizer:
    """From an ``optimizer`` config section (name sgd or lars)."""
    groups = parameter_groups(model, spec["weight_decay"])
    if spec["name"] == "lars":
        return LARS(groups, lr=spec["lr"], momentum=spec["momentum"], eta=spec["lars_eta"])
    if spec["name"] == "sgd":
        for group in groups:
            group.pop("lars_exclude")
        return torch.optim.SGD(
            groups, lr=spec["lr"], momentum=spec["momentum"], fused=device.type == "cuda"
        )
    raise ValueError(f"unknown optimizer {spec['name']!r}; known: sgd, lars")


def learning_rate(step: int, total_steps: int, steps_per_epoch: int, spec: dict) -> float:
    """Warm-up then cosine (docs/method.md#optimizer-and-schedule):

    lr(t) = lr · t / T_w                                   for t < T_w
    lr(t) = lr_end + (lr - lr_end) · ½ (1 + cos(π (t - T_w) / (T - T_w)))   otherwise

    with T_w = warmup_epochs · steps_per_epoch and lr_end = final_lr_ratio · lr.
    """
    base, end = spec["lr"], spec["lr"] * spec["final_lr_ratio"]
    warmup = int(round(spec["warmup_epochs"] * steps_per_epoch))
    if step < warmup:
        return base * (step + 1) / warmup
    span = max(1, total_steps - warmup)
    progress = min(1.0, (step - warmup) / span)
    return end + (base - end) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
