"""Tests for multisym.symmetries: every axis's action is a group action (the
cyclic rotations C_N, exact only up to interpolation, in test_cyclic_rotations.py)."""

import itertools

import pytest
import torch

from multisym.symmetries import AXES, GROUPS, get_group

GROUP_NAMES = sorted(AXES)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rand_images(b=3, c=2, h=6, w=6, seed=0) -> torch.Tensor:
    return torch.rand(b, c, h, w, generator=gen(seed))


def const(group_element: int, batch: int) -> torch.Tensor:
    return torch.full((batch,), group_element, dtype=torch.long)


@pytest.fixture(params=GROUP_NAMES)
def group(request):
    return GROUPS[request.param]


def test_expected_groups_present():
    assert {"rotation", "halfswap", "invert"} <= set(GROUPS)
    assert GROUPS["rotation"].order == 4
    assert GROUPS["halfswap"].order == 2
    assert GROUPS["invert"].order == 2


def test_identity_element(group):
    x = rand_images()
    out = group.act(x, const(0, x.shape[0]))
    assert torch.equal(out, x)
    assert out.data_ptr() != x.data_ptr()  # a new tensor, the input is not aliased


def test_action_is_compatible_with_composition(group):
    x = rand_images(seed=1)
    b = x.shape[0]
    for a, c in itertools.product(range(group.order), repeat=2):
        ga, gc = const(a, b), const(c, b)
        lhs = group.act(group.act(x, gc), ga)  # first c, then a
        rhs = group.act(x, group.compose(ga, gc))
        assert torch.allclose(lhs, rhs, atol=1e-6), (group.name, a, c)


def test_compose_stays_in_group_and_identity_is_neutral(group):
    elements = torch.arange(group.order)
    for a in range(group.order):
        ga = const(a, group.order)
        composed = group.compose(ga, elements)
        assert composed.min() >= 0 and composed.max() < group.order
        # left multiplication by a fixed element is a bijection
        assert sorted(composed.tolist()) == list(range(group.order))
    zero = torch.zeros(group.order, dtype=torch.long)
    assert torch.equal(group.compose(zero, elements), elements)
    assert torch.equal(group.compose(elements, zero), elements)


def test_inverse_undoes_action(group):
    x = rand_images(seed=2)
    b = x.shape[0]
    for a in range(group.order):
        ga = const(a, b)
        inv = group.inverse(ga)
        assert torch.equal(group.compose(ga, inv), const(0, b))
        assert torch.equal(group.compose(inv, ga), const(0, b))
        back = group.act(group.act(x, inv), ga)
        assert torch.allclose(back, x, atol=1e-6), (group.name, a)
        back2 = group.act(group.act(x, ga), inv)
        assert torch.allclose(back2, x, atol=1e-6), (group.name, a)


def test_batched_mixed_elements_equal_per_sample(group):
    batch = 2 * group.order + 1
    x = rand_images(b=batch, seed=3)
    elements = torch.arange(batch) % group.order
    elements = elements[torch.randperm(batch, generator=gen(4))]
    out = group.act(x, elements)
    for i in range(batch):
        single = group.act(x[i : i + 1], elements[i : i + 1])
        assert torch.equal(out[i : i + 1], single), (group.name, i)


def test_orbit_is_element_major_with_matching_labels(group):
    b = 3
    x = rand_images(b=b, seed=5)
    images, labels = group.orbit(x)
    assert images.shape == (group.order * b, *x.shape[1:])
    assert labels.shape == (group.order * b,)
    assert labels.dtype == torch.long
    for g in range(group.order):
        block = slice(g * b, (g + 1) * b)
        assert torch.equal(labels[block], const(g, b))
        assert torch.equal(images[block], group.act(x, const(g, b)))


def test_act_rejects_bad_shapes(group):
    x = rand_images(b=3)
    with pytest.raises(ValueError):
        group.act(x[0], const(0, 3))  # 3-d input
    with pytest.raises(ValueError):
        group.act(x, const(0, 2))  # wrong number of elements


def test_act_on_channels_last_and_non_contiguous(group):
    batch = 2 * group.order
    x = rand_images(b=batch, c=3, h=6, w=6, seed=6)
    elements = torch.arange(batch) % group.order
    expected = group.act(x.contiguous(), elements)

    channels_last = x.contiguous(memory_format=torch.channels_last)
    assert not channels_last.is_contiguous()
    assert torch.equal(group.act(channels_last, elements), expected)

    # a non-contiguous view built by transposing twice through a different layout
    transposed = x.transpose(-1, -2).contiguous().transpose(-1, -2)
    assert not transposed.is_contiguous()
    assert torch.equal(group.act(transposed, elements), expected)

    # a strided slice of a larger tensor
    big = torch.zeros(batch * 2, 3, 6, 6)
    big[::2] = x
    strided = big[::2]
    assert not strided.is_contiguous()
    assert torch.equal(group.act(strided, elements), expected)


def test_act_does_not_modify_input(group):
    x = rand_images(b=4, seed=7)
    copy = x.clone()
    group.act(x, torch.arange(4) % group.order)
    assert torch.equal(x, copy)


# --- rotation ---------------------------------------------------------------


def test_rotation_element_one_is_counter_clockwise_quarter_turn():
    rot = GROUPS["rotation"]
    x = rand_images(b=2, c=1, h=5, w=5, seed=8)
    out = rot.act(x, const(1, 2))
    assert torch.equal(out, torch.rot90(x, 1, dims=(-2, -1)))
    # counter-clockwise: the top-right pixel moves to the top-left corner
    img = torch.arange(9.0).reshape(1, 1, 3, 3)
    turned = rot.act(img, const(1, 1))
    assert turned[0, 0, 0, 0] == img[0, 0, 0, 2]
    assert turned[0, 0, 2, 0] == img[0, 0, 0, 0]
    for k in range(4):
        assert torch.equal(rot.act(x, const(k, 2)), torch.rot90(x, k, dims=(-2, -1)))


def test_rotation_elements_pairwise_distinct():
    rot = GROUPS["rotation"]
    x = rand_images(b=1, c=1, h=8, w=8, seed=9)
    images = [rot.act(x, const(k, 1)) for k in range(4)]
    for a, b in itertools.combinations(range(4), 2):
        assert not torch.equal(images[a], images[b]), (a, b)


# --- half-swap --------------------------------------------------------------


def test_halfswap_swaps_top_and_bottom_halves():
    swap = GROUPS["halfswap"]
    x = rand_images(b=2, c=3, h=8, w=5, seed=10)
    out = swap.act(x, const(1, 2))
    assert torch.equal(out[..., :4, :], x[..., 4:, :])
    assert torch.equal(out[..., 4:, :], x[..., :4, :])
    assert torch.equal(out, torch.cat([x[..., 4:, :], x[..., :4, :]], dim=-2))


def test_halfswap_odd_height_raises():
    swap = GROUPS["halfswap"]
    x = rand_images(b=2, c=1, h=7, w=6)
    with pytest.raises(ValueError, match="even"):
        swap.act(x, const(1, 2))


# --- inversion --------------------------------------------------------------


def test_invert_is_one_minus_x():
    inv = GROUPS["invert"]
    x = rand_images(b=3, seed=11)
    out = inv.act(x, const(1, 3))
    assert torch.allclose(out, 1.0 - x, atol=0, rtol=0)
    assert out.min() >= 0 and out.max() <= 1


# --- sampling ---------------------------------------------------------------


def test_sample_non_identity_p0_is_identity(group):
    g = group.sample_non_identity(1000, 0.0, gen(0))
    assert g.shape == (1000,)
    assert torch.all(g == 0)


def test_sample_non_identity_p1_never_identity(group):
    g = group.sample_non_identity(1000, 1.0, gen(0))
    assert torch.all(g >= 1)
    assert torch.all(g < group.order)
    # every non-identity element is used
    assert set(g.tolist()) == set(range(1, group.order))


def test_sample_non_identity_half(group):
    n = 20000
    g = group.sample_non_identity(n, 0.5, gen(123))
    assert g.min() >= 0 and g.max() < group.order
    identity_share = (g == 0).float().mean().item()
    assert 0.47 < identity_share < 0.53
    non_identity = g[g != 0]
    counts = torch.bincount(non_identity, minlength=group.order)[1:].float()
    shares = counts / counts.sum()
    expected = 1.0 / (group.order - 1)
    assert torch.all((shares - expected).abs() < 0.03), shares


def test_sample_non_identity_reproducible(group):
    a = group.sample_non_identity(500, 0.5, gen(42))
    b = group.sample_non_identity(500, 0.5, gen(42))
    c = group.sample_non_identity(500, 0.5, gen(43))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


# --- lookup -----------------------------------------------------------------


def test_get_group_known():
    for name in GROUP_NAMES:
        assert get_group(name) is GROUPS[name]


def test_get_group_unknown_lists_known_names():
    with pytest.raises(ValueError) as info:
        get_group("nope")
    message = str(info.value)
    assert "nope" in message
    for name in GROUP_NAMES:
        assert name in message


def test_rotation_refuses_non_square_images():
    group = get_group("rotation")
    with pytest.raises(ValueError, match="square"):
        group.act(torch.rand(2, 1, 4, 6), torch.tensor([1, 0]))
