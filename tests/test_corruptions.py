"""Common corruptions (multisym.data.corruptions and its families): output contract, determinism,
severity ordering, batch-order randomness and argument checks."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from scipy import ndimage

from multisym.data.corruptions import (
    CORRUPTIONS,
    GROUPS,
    NAMES,
    PARAMETERS,
    RANDOMISED,
    SEVERITIES,
    corrupt,
)
from multisym.data.corruption_scale import spatial_scale

SHAPES = [(1, 16, 16), (3, 32, 32)]
SPATIAL_AVERAGES = ("defocus_blur", "gaussian_blur", "motion_blur", "zoom_blur", "pixelate")


@functools.lru_cache(maxsize=None)
def _smooth_images(n: int, shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """Natural-looking test images: Gaussian-filtered noise (blobs about a
    tenth of the side wide), each image stretched to span [0, 1]."""
    c, h, w = shape
    noise = np.random.default_rng(seed).random((n, c, h, w))
    images = ndimage.gaussian_filter(noise, sigma=(0, 0, h / 10, w / 10), mode="wrap")
    low = images.min(axis=(1, 2, 3), keepdims=True)
    high = images.max(axis=(1, 2, 3), keepdims=True)
    return ((images - low) / (high - low)).astype(np.float32)


def smooth_images(n, shape, seed=0):
    return _smooth_images(n, tuple(shape), seed).copy()


def test_registry():
    assert len(NAMES) == 14 and set(NAMES) == set(CORRUPTIONS) == set(PARAMETERS)
    assert sorted(name for names in GROUPS.values() for name in names) == sorted(NAMES)
    assert set(GROUPS) == {"noise", "blur", "weather", "digital"}
    assert RANDOMISED == {
        "gaussian_noise",
        "shot_noise",
        "impulse_noise",
        "speckle_noise",
        "motion_blur",
        "fog",
        "elastic_transform",
    }
    assert all(len(PARAMETERS[name]) == 5 for name in NAMES)
    # a few of ImageNet-C's published tables
    assert PARAMETERS["gaussian_noise"] == (0.08, 0.12, 0.18, 0.26, 0.38)
    assert PARAMETERS["shot_noise"] == (60, 25, 12, 5, 3)
    assert PARAMETERS["contrast"] == (0.4, 0.3, 0.2, 0.1, 0.05)
    assert PARAMETERS["jpeg_compression"] == (25, 18, 15, 10, 7)
    assert PARAMETERS["fog"][0] == (1.5, 2.0)


def test_spatial_scale():
    assert spatial_scale(224) == 1.0
    assert spatial_scale(448) == 2.0
    assert spatial_scale(112) == 0.5
    assert spatial_scale(56) == spatial_scale(32) == spatial_scale(16) == 0.25


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", NAMES)
def test_output_contract(name, shape):
    x = smooth_images(6, shape)
    before = x.copy()
    for severity in SEVERITIES:
        y = corrupt(x, name, severity, seed=0)
        assert y.shape == x.shape and y.dtype == np.float32
        assert np.isfinite(y).all() and y.min() >= 0.0 and y.max() <= 1.0
    np.testing.assert_array_equal(x, before)  # the input is left alone


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_for_a_seed(name):
    x = smooth_images(6, (3, 32, 32))
    first = corrupt(x, name, 3, seed=11)
    np.testing.assert_array_equal(first, corrupt(x, name, 3, seed=11))
    other = corrupt(x, name, 3, seed=12)
    if name in RANDOMISED:
        assert not np.array_equal(first, other)
    else:
        np.testing.assert_array_equal(first, other)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", NAMES)
def test_severity_increases_the_change(name, shape):
    x = smooth_images(32, shape, seed=1)
    change = [np.abs(corrupt(x, name, s, seed=5) - x).mean() for s in SEVERITIES]
    assert change[0] > 1e-4, f"{name} hardly changes {shape} images at severity 1: {change}"
    for weaker, stronger in zip(change, change[1:]):
        # fog's severities 3 and 4 share their strength and can tie (module docstring)
        assert stronger >= weaker * 0.98, f"{name} not monotone on {shape}: {change}"


@pytest.mark.parametrize("name", NAMES)
def test_randomness_is_drawn_in_batch_order(name):
    x = smooth_images(5, (3, 16, 16), seed=2)
    function = CORRUPTIONS[name]
    batch = function(x, 4, np.random.default_rng(7))
    np.testing.assert_array_equal(batch, corrupt(x, name, 4, seed=7))
    shared = np.random.default_rng(7)
    one_by_one = np.concatenate([function(x[i : i + 1], 4, shared) for i in range(len(x))])
    np.testing.assert_allclose(batch, one_by_one, rtol=0, atol=1e-6)
    if name not in RANDOMISED:  # deterministic ones act on each image alone
        for i in range(len(x)):
            alone = corrupt(x[i : i + 1], name, 4, seed=100 + i)
            np.testing.assert_allclose(batch[i : i + 1], alone, rtol=0, atol=1e-6)


@pytest.mark.parametrize("shape", [(2, 1, 8, 8), (2, 3, 20, 20), (1, 1, 12, 9), (1, 3, 80, 80)])
@pytest.mark.parametrize("name", SPATIAL_AVERAGES)
def test_constant_images_stay_constant(name, shape):
    for value in (0.0, 0.37, 1.0):
        x = np.full(shape, value, dtype=np.float32)
        for severity in SEVERITIES:
            np.testing.assert_allclose(corrupt(x, name, severity, seed=3), x, atol=1e-6)


def test_contrast_severity_5_reduces_std():
    x = smooth_images(8, (3, 32, 32))
    y = corrupt(x, "contrast", 5, seed=0)
    assert (y.std(axis=(1, 2, 3)) < 0.6 * x.std(axis=(1, 2, 3))).all()
    # blended toward each channel's mean: that mean is kept, the spread shrinks 20-fold
    np.testing.assert_allclose(y.mean(axis=(2, 3)), x.mean(axis=(2, 3)), atol=1e-5)
    np.testing.assert_allclose(y.std(axis=(2, 3)), 0.05 * x.std(axis=(2, 3)), atol=1e-5)


def test_brightness_raises_value_and_keeps_hue():
    gray = smooth_images(4, (1, 16, 16))
    np.testing.assert_allclose(
        corrupt(gray, "brightness", 2, seed=0), np.minimum(gray + 0.2, 1), atol=1e-6
    )
    rgb = smooth_images(4, (3, 16, 16)) * 0.5  # values up to .5, so +.1 is never clipped
    out = corrupt(rgb, "brightness", 1, seed=0)
    np.testing.assert_allclose(out.max(axis=1), rgb.max(axis=1) + 0.1, atol=1e-6)
    keep = rgb.max(axis=1, keepdims=True) > 0.05
    ratio = out / np.maximum(rgb, 1e-6)
    spread = np.where(keep & (rgb > 0.05), ratio, np.nan)
    # every channel of a pixel is scaled by the same factor V'/V
    assert np.nanmax(np.nanmax(spread, axis=1) - np.nanmin(spread, axis=1)) < 1e-3


def test_pixelate_at_224_uses_imagenet_c_blocks():
    x = smooth_images(1, (1, 224, 224))
    y = corrupt(x, "pixelate", 2, seed=0)  # 224 -> 112 -> 224: 2x2 blocks
    np.testing.assert_array_equal(y[..., ::2, :], y[..., 1::2, :])
    np.testing.assert_array_equal(y[..., ::2], y[..., 1::2])
    blocks = x.reshape(1, 1, 112, 2, 112, 2).mean(axis=(3, 5))
    np.testing.assert_allclose(y[..., ::2, ::2], blocks, atol=1e-6)


@pytest.mark.parametrize("name", ["gaussian_blur", "defocus_blur", "zoom_blur", "pixelate"])
def test_spatial_parameters_scale_with_resolution(name):
    """The same scene at 112 and 224 px changes by about the same amount."""
    small = smooth_images(4, (1, 112, 112), seed=4)
    large = np.clip(ndimage.zoom(small, (1, 1, 2, 2), order=1), 0, 1).astype(np.float32)
    for severity in (3, 5):
        d_small = np.abs(corrupt(small, name, severity, seed=0) - small).mean()
        d_large = np.abs(corrupt(large, name, severity, seed=0) - large).mean()
        assert d_large == pytest.approx(d_small, rel=0.3), (severity, d_small, d_large)


@pytest.mark.parametrize("name", NAMES)
def test_smallest_images_and_empty_batches(name):
    for shape in [(2, 1, 8, 8), (2, 3, 8, 8)]:
        x = smooth_images(shape[0], shape[1:])
        assert corrupt(x, name, 5, seed=0).shape == shape
    empty = corrupt(np.zeros((0, 3, 16, 16), np.float32), name, 1, seed=0)
    assert empty.shape == (0, 3, 16, 16) and empty.dtype == np.float32


def test_unknown_name_lists_the_allowed_ones():
    x = smooth_images(2, (1, 16, 16))
    with pytest.raises(ValueError, match="allowed") as error:
        corrupt(x, "glass_blur", 1, seed=0)
    assert all(name in str(error.value) for name in NAMES)


@pytest.mark.parametrize("severity", [0, 6, -1, 2.5, True, "3", None])
def test_bad_severity_lists_the_allowed_ones(severity):
    x = smooth_images(2, (1, 16, 16))
    with pytest.raises(ValueError, match="1, 2, 3, 4, 5"):
        corrupt(x, "gaussian_noise", severity, seed=0)
    with pytest.raises(ValueError, match="1, 2, 3, 4, 5"):
        CORRUPTIONS["fog"](x, severity, np.random.default_rng(0))


def test_numpy_integer_severity_is_accepted():
    x = smooth_images(2, (1, 16, 16))
    np.testing.assert_array_equal(
        corrupt(x, "contrast", np.int64(2), seed=0), corrupt(x, "contrast", 2, seed=0)
    )


@pytest.mark.parametrize(
    "shape", [(1, 16, 16), (2, 2, 16, 16), (2, 4, 16, 16), (2, 1, 4, 4)], ids=str
)
def test_bad_shapes_raise(shape):
    with pytest.raises(ValueError):
        corrupt(np.zeros(shape, np.float32), "brightness", 1, seed=0)


def test_schema_lists_exactly_the_implemented_corruptions():
    from multisym.config_schema import load_schema

    schema = load_schema()["properties"]["shift"]["properties"]["corruptions"]
    assert tuple(schema["items"]["enum"]) == NAMES
    assert tuple(schema["default"]) == NAMES
