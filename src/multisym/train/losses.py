"""Pretraining losses: the paper's cross-view InfoNCE and the equivariance loss.

References:
  [1] Loh et al., Multi-Symmetry Ensembles, ICML 2023, arXiv 2303.02484, Eq. (2).
  [2] Dangovski et al., Equivariant Contrastive Learning, ICLR 2022, arXiv 2111.00899.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


def _identity_gather(z: Tensor) -> Tensor:
    return z


def cross_view_info_nce(
    z1: Tensor,
    z2: Tensor,
    temperature: float,
    gather: Callable[[Tensor], Tensor] = _identity_gather,
) -> Tensor:
    """Symmetrised cross-view InfoNCE of the official code (docs/method.md#contrastive-loss).

    With u_i = z1_i / ||z1_i||, v_j = z2_j / ||z2_j|| and s_ij = u_i·v_j / τ,

        L = ½ · mean_i [ -log softmax_j(s_ij)_i ] + ½ · mean_j [ -log softmax_i(s_ij)_j ]

    so each anchor sees its positive and the N - 1 other samples *of the other
    view* as negatives (not the 2N - 2 of NT-Xent). ``gather`` all-gathers the
    projections across processes with gradients (identity on one process);
    N is then the global batch.

    Shapes: z1, z2 (B, D) -> scalar.
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"z1 and z2 must both be (B, D), got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    u = gather(F.normalize(z1.float(), dim=1))
    v = gather(F.normalize(z2.float(), dim=1))
    logits = u @ v.T / temperature
    targets = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


def equivariance_loss(logits: Tensor, elements: Tensor) -> Tensor:
    """E-SSL loss [2]: mean cross-entropy of the head's |G|-way prediction of
    the group element applied to each small crop. logits (N, |G|), elements (N,)."""
    if logits.ndim != 2 or elements.shape != logits.shape[:1]:
        raise ValueError(
            f"logits must be (N, |G|) and elements (N,), got {tuple(logits.shape)} and {tuple(elements.shape)}"
        )
    return F.cross_entropy(logits.float(), elements)
