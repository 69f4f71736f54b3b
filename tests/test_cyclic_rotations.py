"""The cyclic rotation groups C_N (rot4, rot8, rot12, rot16) of the emergence
experiment: masking, exactness of C4, composition up to interpolation error,
and invariance of orbit-averaged networks."""

from __future__ import annotations

import pytest
import torch

from multisym.evaluate import invariance
from multisym.symmetries import CYCLIC_ROTATIONS, GROUPS, ROTATION_ORDERS, disc_mask, get_group, rotate_degrees

INTERPOLATED = [f"rot{n}" for n in ROTATION_ORDERS if n != 4]
# Relative L2 error of one bilinear resampling chain on the smooth blobs below,
# per resampling: each resampling blurs a little, so applying the generator N
# times drifts by about 2 % of the image's norm per step (measured at 16 and
# 28 px, 0.020-0.030 per step); the bound leaves some room.
DRIFT_PER_STEP = 0.035


def blobs(batch: int, size: int, seed: int = 0, sigma: float = 2.0) -> torch.Tensor:
    """Sums of four Gaussian blobs (σ = 2 px) inside the disc, peak 1: smooth
    images, on which bilinear interpolation is accurate."""
    generator = torch.Generator().manual_seed(seed)
    grid = torch.arange(size, dtype=torch.float32)
    out = torch.zeros(batch, 1, size, size)
    for index in range(batch):
        for _ in range(4):
            cy, cx = torch.rand(2, generator=generator) * size * 0.6 + size * 0.2
            out[index, 0] += torch.exp(-((grid[:, None] - cy) ** 2 + (grid[None, :] - cx) ** 2) / (2 * sigma**2))
    out = out / out.amax(dim=(1, 2, 3), keepdim=True)
    return out * disc_mask(size, size)


def elements(value: int, batch: int) -> torch.Tensor:
    return torch.full((batch,), value, dtype=torch.long)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).flatten(1).norm(dim=1) / b.flatten(1).norm(dim=1)


def test_every_element_masks_outside_the_inscribed_disc():
    x = torch.rand(3, 2, 16, 16, generator=torch.Generator().manual_seed(0)) + 0.5
    outside = ~disc_mask(16, 16)
    assert outside[0, 0] and not outside[8, 8] and outside.sum() > 0
    for name, group in CYCLIC_ROTATIONS.items():
        for g in range(group.order):
            out = group.act(x, elements(g, 3))
            assert (out[..., outside] == 0).all(), (name, g)
        # the identity restricts to the disc and keeps the inside as it is
        identity = group.act(x, elements(0, 3))
        assert torch.equal(identity[..., ~outside], x[..., ~outside])


def test_c4_is_rot90_exactly_and_the_rotation_axis_on_masked_images():
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    masked = x * disc_mask(16, 16)
    rot4 = get_group("rot4")
    assert rot4.exact and all(not get_group(name).exact for name in INTERPOLATED)
    for k in range(4):
        out = rot4.act(x, elements(k, 4))
        assert torch.equal(out, torch.rot90(masked, k, dims=(-2, -1)))
        assert torch.equal(out, GROUPS["rotation"].act(masked, elements(k, 4)))


def test_multiples_of_a_quarter_turn_are_exact_in_every_order():
    """C4 ⊂ C8 ⊂ C16 and C4 ⊂ C12 hold exactly: those elements never interpolate."""
    x = torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(2))
    rot4 = get_group("rot4")
    for order in ROTATION_ORDERS:
        group = get_group(f"rot{order}")
        for k in range(4):
            assert torch.equal(group.act(x, elements(k * order // 4, 2)), rot4.act(x, elements(k, 2)))


def test_bilinear_turns_the_same_way_as_rot90():
    x = blobs(4, 16)
    nearly = rotate_degrees(x, 89.999)
    assert (nearly - torch.rot90(x, 1, dims=(-2, -1))).abs().max() < 1e-3


@pytest.mark.parametrize("size", [16, 28])
@pytest.mark.parametrize("name", INTERPOLATED)
def test_the_generator_applied_n_times_gives_the_input_back_within_the_drift_bound(name, size):
    group = get_group(name)
    x = blobs(8, size, seed=size)
    turned = x
    for _ in range(group.order):
        turned = group.act(turned, elements(1, len(x)))
    error = relative_error(turned, x)
    assert (error < DRIFT_PER_STEP * group.order).all(), error.max()
    # one composition against the element it should give: a single extra resampling
    two = group.act(group.act(x, elements(1, len(x))), elements(1, len(x)))
    assert (relative_error(two, group.act(x, elements(2, len(x)))) < 3 * DRIFT_PER_STEP).all()


def test_group_tables_are_cyclic():
    for group in CYCLIC_ROTATIONS.values():
        all_elements = torch.arange(group.order)
        for a in range(group.order):
            composed = group.compose(elements(a, group.order), all_elements)
            assert sorted(composed.tolist()) == list(range(group.order))
            assert torch.equal(group.compose(elements(a, 1), group.inverse(elements(a, 1))), elements(0, 1))


def test_orbit_and_act_agree_and_the_batch_is_mixed_correctly():
    x = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    for group in CYCLIC_ROTATIONS.values():
        orbit, labels = group.orbit(x)
        assert orbit.shape == (3 * group.order, 1, 16, 16)
        for g in range(group.order):
            assert torch.equal(orbit[g * 3:(g + 1) * 3], group.act(x, elements(g, 3)))
            assert torch.equal(labels[g * 3:(g + 1) * 3], elements(g, 3))
        mixed = torch.arange(3) % group.order
        out = group.act(x, mixed)
        for i in range(3):
            assert torch.allclose(out[i:i + 1], group.act(x[i:i + 1], mixed[i:i + 1]), atol=1e-6)


def _network(size: int) -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(size * size, 32), torch.nn.ReLU(),
                               torch.nn.Linear(32, 10))


def _orbit_average(net, group):
    """f̄(x) = (1/N) Σ_k f(g_k·x); the N outputs are sorted before summing, so an
    input whose orbit elements are a permutation of another's gets bitwise the
    same mean (floating-point addition is not associative)."""

    def averaged(x):
        stacked = torch.stack([net(group.act(x, elements(g, len(x)))) for g in range(group.order)])
        return stacked.sort(dim=0).values.sum(dim=0) / group.order

    return averaged


def test_a_c4_orbit_averaged_network_is_exactly_invariant_and_fully_consistent():
    group, x = get_group("rot4"), torch.rand(64, 1, 16, 16, generator=torch.Generator().manual_seed(4))
    net = _network(16)
    averaged = _orbit_average(net, group)
    with torch.no_grad():
        reference = averaged(x)
        logits = torch.stack([averaged(group.act(x, elements(g, len(x)))) for g in range(4)])
        bare = torch.stack([net(group.act(x, elements(g, len(x)))) for g in range(4)])
    for g in range(4):
        assert torch.equal(logits[g], reference)
    assert invariance.orbit_consistent(logits.numpy()).all()
    assert not invariance.orbit_consistent(bare.numpy()).all()  # the bare network is not invariant


@pytest.mark.parametrize("name", INTERPOLATED)
def test_orbit_averaged_networks_of_interpolated_groups_are_invariant_within_the_composition_bound(name):
    """‖f̄(g·x) − f̄(x)‖ ≤ (L/N) Σ_k ‖g_k·(g·x) − (g_k g)·x‖, L = ∏ ‖W_i‖₂ the
    network's Lipschitz constant (ReLU is 1-Lipschitz): the orbit average
    relabels its terms, and each term moves by at most L times the
    composition error of its element."""
    group, x = get_group(name), blobs(16, 16, seed=5)
    net = _network(16)
    with torch.no_grad():
        lipschitz = float(torch.linalg.matrix_norm(net[1].weight, 2) * torch.linalg.matrix_norm(net[3].weight, 2))
    averaged = _orbit_average(net, group)
    batch = len(x)
    with torch.no_grad():
        reference = averaged(x)
        for g in range(1, group.order):
            moved = group.act(x, elements(g, batch))
            deviation = (averaged(moved) - reference).norm(dim=1)
            composition = torch.stack([
                (group.act(moved, elements(k, batch)) - group.act(x, group.compose(elements(k, batch),
                                                                                  elements(g, batch))))
                .flatten(1).norm(dim=1) for k in range(group.order)])
            bound = lipschitz * composition.mean(dim=0)
            assert (deviation <= bound * (1 + 1e-4) + 1e-5).all(), (g, (deviation - bound).max())
            # and the bound is informative: small against the outputs themselves
            assert (bound < reference.norm(dim=1)).all()
