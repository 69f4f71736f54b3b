"""Tests for multisym.train.losses: the cross-view InfoNCE and the equivariance loss."""

import math

import pytest
import torch
import torch.nn.functional as F

from multisym.train.losses import cross_view_info_nce, equivariance_loss

Z1 = [
    [1.0, 0.0, 0.5],
    [0.2, -1.0, 0.3],
    [-0.7, 0.4, 1.2],
    [0.9, 0.9, -0.1],
]
Z2 = [
    [0.8, 0.1, 0.4],
    [0.0, -1.2, 0.6],
    [-0.5, 0.2, 1.0],
    [1.1, 0.7, 0.3],
]


def _cos(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def hand_info_nce(z1, z2, tau):
    """The documented formula, evaluated with plain Python loops."""
    n = len(z1)
    s = [[_cos(z1[i], z2[j]) / tau for j in range(n)] for i in range(n)]
    rows = 0.0
    for i in range(n):
        denom = 0.0
        for j in range(n):
            denom += math.exp(s[i][j])
        rows += -math.log(math.exp(s[i][i]) / denom)
    cols = 0.0
    for j in range(n):
        denom = 0.0
        for i in range(n):
            denom += math.exp(s[i][j])
        cols += -math.log(math.exp(s[j][j]) / denom)
    return 0.5 * rows / n + 0.5 * cols / n


def nt_xent(z1, z2, tau):
    """SimCLR's NT-Xent with 2N-2 negatives, used only to show the loss differs."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / tau
    n = z1.shape[0]
    sim.fill_diagonal_(float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    return F.cross_entropy(sim, targets)


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_info_nce_matches_hand_computation(tau):
    z1 = torch.tensor(Z1, dtype=torch.float64)
    z2 = torch.tensor(Z2, dtype=torch.float64)
    got = cross_view_info_nce(z1, z2, tau)
    expected = hand_info_nce(Z1, Z2, tau)
    assert got.ndim == 0
    # the implementation computes in float32
    assert got.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_info_nce_symmetric_in_views():
    z1 = torch.tensor(Z1)
    z2 = torch.tensor(Z2)
    a = cross_view_info_nce(z1, z2, 0.2)
    b = cross_view_info_nce(z2, z1, 0.2)
    assert torch.allclose(a, b, atol=1e-6)


def test_info_nce_scale_invariant():
    z1 = torch.tensor(Z1)
    z2 = torch.tensor(Z2)
    scales1 = torch.tensor([[0.01], [3.0], [250.0], [1.5]])
    scales2 = torch.tensor([[7.0], [0.2], [1.0], [40.0]])
    a = cross_view_info_nce(z1, z2, 0.3)
    b = cross_view_info_nce(z1 * scales1, z2 * scales2, 0.3)
    assert torch.allclose(a, b, atol=1e-5)


def test_info_nce_two_samples_closed_form():
    # B = 2: with a = s_11, b = s_12, c = s_21, d = s_22 (cross-view only)
    # L = 1/4 [softplus(b-a) + softplus(c-d)] + 1/4 [softplus(c-a) + softplus(b-d)]
    tau = 0.25
    z1 = torch.tensor([[1.0, 0.2, -0.3], [0.1, 0.9, 0.4]], dtype=torch.float64)
    z2 = torch.tensor([[0.7, 0.5, 0.0], [-0.2, 1.0, 0.8]], dtype=torch.float64)
    u, v = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    s = u @ v.T / tau
    a, b, c, d = s[0, 0], s[0, 1], s[1, 0], s[1, 1]
    sp = F.softplus
    expected = 0.25 * (sp(b - a) + sp(c - d)) + 0.25 * (sp(c - a) + sp(b - d))
    got = cross_view_info_nce(z1, z2, tau)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    # and it is not NT-Xent (which also uses same-view negatives)
    assert abs(got.item() - nt_xent(z1, z2, tau).item()) > 1e-3


def test_info_nce_ignores_same_view_similarities():
    """Negatives come only from the other view: moving z1_k so that its
    cosines to every z2_j are unchanged, but its cosine to the other z1_i
    changes, leaves the loss unchanged (NT-Xent would change)."""
    tau = 0.3
    z1 = torch.tensor([[0.6, -0.2, 0.9], [0.5, -0.3, 0.6]], dtype=torch.float64)
    z2 = torch.tensor([[0.7, 0.5, 0.0], [-0.2, 1.0, 0.8]], dtype=torch.float64)
    # reflect z1_1 through the plane spanned by z2_0 and z2_1
    normal = torch.linalg.cross(z2[0], z2[1])
    normal = normal / normal.norm()
    moved = z1.clone()
    moved[1] = z1[1] - 2 * (z1[1] @ normal) * normal
    # preconditions: cross-view cosines equal, same-view cosine different
    cross_before = F.normalize(z1, dim=1) @ F.normalize(z2, dim=1).T
    cross_after = F.normalize(moved, dim=1) @ F.normalize(z2, dim=1).T
    assert torch.allclose(cross_before, cross_after, atol=1e-12)
    same_before = F.cosine_similarity(z1[0], z1[1], dim=0)
    same_after = F.cosine_similarity(moved[0], moved[1], dim=0)
    assert abs(same_before - same_after) > 0.1

    a = cross_view_info_nce(z1, z2, tau)
    b = cross_view_info_nce(moved, z2, tau)
    assert torch.allclose(a, b, atol=1e-6)
    assert abs(nt_xent(z1, z2, tau) - nt_xent(moved, z2, tau)) > 1e-3


def test_info_nce_perfect_alignment_is_small():
    z = torch.eye(4) * 5
    loss = cross_view_info_nce(z, z.clone(), 0.05)
    assert loss.item() < 1e-6
    # and large when positives are swapped
    perm = torch.tensor([1, 0, 3, 2])
    assert cross_view_info_nce(z, z[perm], 0.05).item() > 10


@pytest.mark.parametrize(
    "shape1, shape2",
    [((4, 3), (4, 2)), ((4, 3), (3, 3)), ((4,), (4,)), ((2, 4, 3), (2, 4, 3))],
)
def test_info_nce_bad_shapes(shape1, shape2):
    with pytest.raises(ValueError):
        cross_view_info_nce(torch.ones(shape1), torch.ones(shape2), 0.2)


@pytest.mark.parametrize("tau", [0.0, -0.1])
def test_info_nce_bad_temperature(tau):
    with pytest.raises(ValueError, match="temperature"):
        cross_view_info_nce(torch.tensor(Z1), torch.tensor(Z2), tau)


def test_info_nce_gradients_reach_both_inputs():
    z1 = torch.tensor(Z1, requires_grad=True)
    z2 = torch.tensor(Z2, requires_grad=True)
    loss = cross_view_info_nce(z1, z2, 0.2)
    loss.backward()
    for z in (z1, z2):
        assert z.grad is not None
        assert torch.isfinite(z.grad).all()
        assert z.grad.abs().sum() > 0


def test_info_nce_uses_gather():
    calls = []

    def gather(z):
        calls.append(z.shape)
        return z

    cross_view_info_nce(torch.tensor(Z1), torch.tensor(Z2), 0.2, gather=gather)
    assert calls == [(4, 3), (4, 3)]


# --- equivariance loss -------------------------------------------------------


def test_equivariance_loss_is_cross_entropy():
    logits = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    elements = torch.tensor([0, 1, 2, 3, 1, 0])
    got = equivariance_loss(logits, elements)
    assert torch.allclose(got, F.cross_entropy(logits, elements))
    # by hand
    log_probs = logits.log_softmax(dim=1)
    hand = -sum(log_probs[i, elements[i]] for i in range(6)) / 6
    assert torch.allclose(got, hand, atol=1e-6)


def test_equivariance_loss_gradient():
    logits = torch.randn(5, 2, requires_grad=True)
    equivariance_loss(logits, torch.tensor([0, 1, 1, 0, 1])).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "logits_shape, elements_shape",
    [((6,), (6,)), ((6, 4), (5,)), ((6, 4), (6, 1)), ((2, 3, 4), (2,))],
)
def test_equivariance_loss_bad_shapes(logits_shape, elements_shape):
    with pytest.raises(ValueError):
        equivariance_loss(torch.zeros(logits_shape), torch.zeros(elements_shape, dtype=torch.long))
