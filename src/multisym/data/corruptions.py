"""Common corruptions at severities 1-5, generated locally (no downloads).

Distribution-shift evaluation sets in the style of ImageNet-C / CIFAR-10-C
(Hendrycks & Dietterich 2019), written with numpy / scipy / PIL. Every
corruption maps a float32 batch ``(N, C, H, W)`` in [0, 1] (C = 1 or 3, H and
W at least 8; inputs are clipped to [0, 1] first and never modified) to a
float32 batch of the same shape, clipped to [0, 1]. ``corrupt(images, name,
severity, seed)`` is the entry point; ``CORRUPTIONS[name](images, severity,
rng)`` the functions behind it, ``NAMES`` their order (14 corruptions).

Corruptions, by group
---------------------
noise
    ``gaussian_noise``  x + N(0, c²), c = .08 .12 .18 .26 .38
    ``shot_noise``      Poisson(x·c) / c, photon counts c = 60 25 12 5 3
    ``impulse_noise``   salt & pepper, fraction c = .03 .06 .09 .17 .27 of the
                        values (each channel on its own), half 0 and half 1
    ``speckle_noise``   x + x·N(0, c²), c = .15 .2 .35 .45 .6
blur
    ``defocus_blur``    anti-aliased disk of radius r = 3 4 6 8 10 px, then a
                        Gaussian of sigma a = .1 .5 .5 .5 .5 px (ImageNet-C's
                        (radius, alias_blur) table)
    ``gaussian_blur``   Gaussian of sigma 1 2 3 4 6 px (Lindeberg's discrete
                        Gaussian, so sub-pixel sigmas still blur)
    ``motion_blur``     one-sided streak: taps at 0, 1, ..., 2r px along a random
                        angle in [-45°, 45°] (one per image), weighted
                        exp(-t²/2σ²); (r, σ) = (10, 3) (15, 5) (15, 8) (15, 12)
                        (20, 15) px, ImageMagick's motion-blur parameters
    ``zoom_blur``       mean of the image and its centre zooms by 1, 1+d, ...,
                        up to 1.10 / 1.15 / 1.20 / 1.24 / 1.30 in steps d =
                        .01 .01 .02 .02 .03 (ImageNet-C's ``arange(1, stop, d)``
                        with stops 1.11 1.16 1.21 1.26 1.31)
weather
    ``fog``             plasma fractal f in [0, 1] (diamond-square, roughness
                        decay w): (x + s·f)·M/(M + s) with M the image maximum;
                        (s, w) = (1.5, 2) (2, 2) (2.5, 1.7) (2.5, 1.5) (3, 1.4);
                        octave amplitudes fall by w² as in ImageNet-C's code.
                        Severities 3 and 4 share the strength 2.5 and differ
                        only in roughness, so they change images by about the
                        same amount (the mean change can tie within ~1 %)
digital
    ``brightness``      HSV value + c, c = .1 .2 .3 .4 .5 (hue and saturation
                        kept: RGB is scaled by V'/V; grayscale: x + c)
    ``contrast``        blend toward the per-image, per-channel mean:
                        m + c·(x - m), c = .4 .3 .2 .1 .05
    ``pixelate``        area-average down to floor(H/b) x floor(W/b) blocks
                        and nearest-neighbour back up (each pixel becomes the
                        mean of its block, blocks of whole pixels whose sizes
                        differ by at most one); block size b = 1/c with
                        c = .6 .5 .4 .3 .25
    ``jpeg_compression`` PIL JPEG round trip at quality 25 18 15 10 7 (mode L for
                        one channel, RGB for three)
    ``elastic_transform`` smooth random displacement field (Gaussian-filtered
                        white noise, sigma 8 px, rescaled to an RMS of α = 2 3
                        4.5 6 8 px per axis), bilinear resampling with
                        ``scipy.ndimage.map_coordinates``. ImageNet-C's own table
                        mixes a random affine warp into the first severities and
                        is not monotone in severity, so this pure elastic table
                        is ours.

Resolution scaling
------------------
The pixel sizes above are ImageNet-C's, meant for 224 px images. For an image
whose shorter side is ``S`` px they are multiplied by the spatial scale

    s(S) = max(S / 224, 1/4)            (``spatial_scale``)

so that a corruption means the same amount relative to the image size at
every resolution from 56 px up (224 px images get exactly ImageNet-C's
values); below 56 px the scale stays at 1/4 so small images (16 px digits,
32 px CIFAR) still change at every severity, with severities kept apart
(e.g. Gaussian-blur sigmas .25 .5 .75 1 1.5 px at 16 and 32 px, close to
CIFAR-10-C's .4 .6 .7 .8 1). Scaled: blur radii and sigmas (defocus, Gaussian,
motion length and fall-off), elastic displacement and smoothness, and the
pixelate block size, whose distance from the no-op block of 1 px is scaled:
``b_S = 1 + (b - 1)·s`` (at 32 px: down to 27 25 23 20 18 px, close to
CIFAR-10-C's 30 29 27 24 21). Zoom factors and the fog fractal are already
relative to the image size (a zoom by 1.1 moves the border by 5 % of the side
at any resolution; the fractal's map is the next power of two above the image
side, so its coarsest octave always spans the image), so they are used as is.
Intensity parameters (noise, brightness, contrast, JPEG quality) do not depend
on the resolution.

Randomness
----------
``corrupt`` makes one ``numpy.random.Generator`` from the seed and the
corruption draws only from it; nothing uses global random state. Per-image
randomness is drawn in batch order: for every corruption, ``f(batch, s, rng)``
equals the concatenation of ``f(batch[i:i+1], s, rng)`` for i = 0, 1, ... in
order with one shared generator (noise fills one array in C order; motion
angles, fog fractals and elastic fields are drawn image after image). An image's
corruption therefore depends on its position in the batch, and corrupting a
dataset in chunks with one seed per chunk gives a different (equally valid)
set than corrupting it at once. Deterministic corruptions (``RANDOMISED``
lists the others) ignore the generator and act on each image on its own.
"""

from __future__ import annotations

import functools
import io
from typing import Callable

import numpy as np
from PIL import Image
from scipy import ndimage, signal, special

__all__ = [
    "CORRUPTIONS",
    "GROUPS",
    "MIN_SCALE",
    "NAMES",
    "PARAMETERS",
    "RANDOMISED",
    "REFERENCE_SIZE",
    "SEVERITIES",
    "corrupt",
    "spatial_scale",
]

REFERENCE_SIZE = 224
MIN_SCALE = 0.25
MIN_SIZE = 8
SEVERITIES = (1, 2, 3, 4, 5)

CORRUPTIONS: dict[str, Callable[[np.ndarray, int, np.random.Generator], np.ndarray]] = {}
# name -> the five severities' parameters as in the tables above (pixel sizes
# at 224 px, before ``spatial_scale``; zoom_blur: (step, largest factor))
PARAMETERS: dict[str, tuple] = {}
_GROUP_OF: dict[str, str] = {}
_RANDOMISED: set[str] = set()


def spatial_scale(size: int) -> float:
    """The factor for pixel-sized parameters at an image side of ``size`` px."""
    return max(size / REFERENCE_SIZE, MIN_SCALE)


def _check_severity(severity) -> int:
    if (
        isinstance(severity, bool)
        or not isinstance(severity, (int, np.integer))
        or int(severity) not in SEVERITIES
    ):
        raise ValueError(
            f"severity must be one of {', '.join(map(str, SEVERITIES))}, got {severity!r}"
        )
    return int(severity)


def _as_batch(images) -> np.ndarray:
    x = np.asarray(images, dtype=np.float32)
    if x.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {x.shape}")
    if x.shape[1] not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got {x.shape[1]}")
    if min(x.shape[2:]) < MIN_SIZE:
        raise ValueError(f"images must be at least {MIN_SIZE}x{MIN_SIZE}, got {x.shape[2:]}")
    return np.clip(x, 0.0, 1.0)


def _register(name: str, group: str, parameters: tuple, randomised: bool):
    """Add a corruption to the registry, wrapped to check its arguments and to
    return float32 values clipped to [0, 1]."""

    def decorate(function):
        @functools.wraps(function)
        def wrapper(images, severity: int, rng: np.random.Generator) -> np.ndarray:
            severity = _check_severity(severity)
            x = _as_batch(images)
            if x.shape[0] == 0:
                return x.copy()
            out = function(x, severity, rng)
            return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)

        CORRUPTIONS[name] = wrapper
        PARAMETERS[name] = parameters
        _GROUP_OF[name] = group
        if randomised:
            _RANDOMISED.add(name)
        return wrapper

    return decorate


def _scale(x: np.ndarray) -> float:
    return spatial_scale(min(x.shape[2:]))


# ---------------------------------------------------------------- noise

_GAUSSIAN_NOISE = (0.08, 0.12, 0.18, 0.26, 0.38)
_SHOT_NOISE = (60, 25, 12, 5, 3)
_IMPULSE_NOISE = (0.03, 0.06, 0.09, 0.17, 0.27)
_SPECKLE_NOISE = (0.15, 0.2, 0.35, 0.45, 0.6)


@_register("gaussian_noise", "noise", _GAUSSIAN_NOISE, randomised=True)
def gaussian_noise(x, severity, rng):
    return x + rng.normal(0.0, _GAUSSIAN_NOISE[severity - 1], size=x.shape)


@_register("shot_noise", "noise", _SHOT_NOISE, randomised=True)
def shot_noise(x, severity, rng):
    photons = _SHOT_NOISE[severity - 1]
    return rng.poisson(x.astype(np.float64) * photons) / photons


@_register("impulse_noise", "noise", _IMPULSE_NOISE, randomised=True)
def impulse_noise(x, severity, rng):
    amount = _IMPULSE_NOISE[severity - 1]
    u = rng.random(size=x.shape)  # one draw per value: pepper below, salt above
    out = x.copy()
    out[u < amount / 2] = 0.0
    out[u >= 1.0 - amount / 2] = 1.0
    return out


@_register("speckle_noise", "noise", _SPECKLE_NOISE, randomised=True)
def speckle_noise(x, severity, rng):
    return x + x * rng.normal(0.0, _SPECKLE_NOISE[severity - 1], size=x.shape)


# ---------------------------------------------------------------- blur

_DEFOCUS = ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))
_GAUSSIAN_BLUR = (1, 2, 3, 4, 6)
_MOTION = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))
_ZOOM = ((0.01, 1.10), (0.01, 1.15), (0.02, 1.20), (0.02, 1.24), (0.03, 1.30))


def _convolve(x: np.ndarray, kernels: np.ndarray) -> np.ndarray:
    """'Same' convolution of every channel with a (k, k) kernel or one (k, k)
    kernel per image, (N, k, k); the border is mirrored (numpy 'reflect', any
    width), so kernels summing to one keep constant images constant."""
    half = kernels.shape[-1] // 2
    padded = np.pad(
        x.astype(np.float64), ((0, 0), (0, 0), (half, half), (half, half)), mode="reflect"
    )
    kern = kernels[None, None] if kernels.ndim == 2 else kernels[:, None]
    return signal.fftconvolve(padded, kern, mode="valid", axes=(2, 3))


def _disk_kernel(radius: float, alias_sigma: float) -> np.ndarray:
    """A disk of ``radius`` px, each pixel weighted by the share of it inside
    the circle (8x8 supersampling), blurred by ``alias_sigma``, sum one."""
    half = int(np.ceil(radius + 4 * alias_sigma)) + 1
    sub = (np.arange(8) + 0.5) / 8 - 0.5
    fine = (np.arange(-half, half + 1)[:, None] + sub[None, :]).ravel()
    inside = fine[:, None] ** 2 + fine[None, :] ** 2 <= radius**2
    size = 2 * half + 1
    disk = inside.reshape(size, 8, size, 8).mean(axis=(1, 3))
    if alias_sigma > 0:
        disk = ndimage.gaussian_filter(disk, alias_sigma, mode="constant", truncate=4.0)
    return disk / disk.sum()


@_register("defocus_blur", "blur", _DEFOCUS, randomised=False)
def defocus_blur(x, severity, rng):
    radius, alias = _DEFOCUS[severity - 1]
    s = _scale(x)
    return _convolve(x, _disk_kernel(radius * s, alias * s))


def _discrete_gaussian(sigma: float) -> np.ndarray:
    """Lindeberg's discrete Gaussian, exp(-t)·I_n(t) with t = sigma², whose
    variance is exactly sigma² even below one pixel (a sampled Gaussian of
    sigma .25 would be the identity to 3e-4); truncated at 4 sigma + 1 px."""
    radius = int(np.ceil(4 * sigma)) + 1
    kernel = special.ive(np.abs(np.arange(-radius, radius + 1)), sigma**2)
    return kernel / kernel.sum()


@_register("gaussian_blur", "blur", _GAUSSIAN_BLUR, randomised=False)
def gaussian_blur(x, severity, rng):
    kernel = _discrete_gaussian(_GAUSSIAN_BLUR[severity - 1] * _scale(x))
    out = ndimage.correlate1d(x.astype(np.float64), kernel, axis=2, mode="reflect")
    return ndimage.correlate1d(out, kernel, axis=3, mode="reflect")


def _motion_kernels(radius: float, sigma: float, angles_deg: np.ndarray) -> np.ndarray:
    """One streak kernel per angle: taps at t = 0, 1, ..., floor(2·radius) px
    from the centre along the angle, weights exp(-t²/2σ²), each tap split
    bilinearly over its four nearest pixels; (N, k, k), each summing to one."""
    taps = np.arange(int(np.floor(2 * radius)) + 1, dtype=np.float64)
    weights = np.exp(-(taps**2) / (2 * sigma**2))
    half = int(taps[-1]) + 1
    size = 2 * half + 1
    theta = np.deg2rad(angles_deg)[:, None]
    cols = half + taps[None, :] * np.cos(theta)
    rows = half - taps[None, :] * np.sin(theta)
    c0, r0 = np.floor(cols), np.floor(rows)
    fc, fr = cols - c0, rows - r0
    c0, r0 = c0.astype(np.int64), r0.astype(np.int64)
    n = len(angles_deg)
    image = np.broadcast_to(np.arange(n)[:, None], c0.shape)
    kernels = np.zeros((n, size, size))
    for dr, wr in ((0, 1 - fr), (1, fr)):
        for dc, wc in ((0, 1 - fc), (1, fc)):
            np.add.at(kernels, (image, r0 + dr, c0 + dc), weights[None, :] * wr * wc)
    return kernels / kernels.sum(axis=(1, 2), keepdims=True)


@_register("motion_blur", "blur", _MOTION, randomised=True)
def motion_blur(x, severity, rng):
    radius, sigma = _MOTION[severity - 1]
    s = _scale(x)
    angles = rng.uniform(-45.0, 45.0, size=x.shape[0])
    return _convolve(x, _motion_kernels(radius * s, sigma * s, angles))


def _zoom_factors(severity: int) -> np.ndarray:
    step, top = _ZOOM[severity - 1]
    return 1.0 + step * np.arange(int(round((top - 1.0) / step)) + 1)


def _zoom_axis(x: np.ndarray, axis: int, factor: float) -> np.ndarray:
    """Magnify a (N, C, H, W) batch along axis 2 or 3 by ``factor`` about the
    centre, linearly interpolated: output p samples the input at
    c + (p - c) / factor."""
    size = x.shape[axis]
    centre = (size - 1) / 2
    source = centre + (np.arange(size) - centre) / factor
    left = np.clip(np.floor(source).astype(np.int64), 0, size - 2)
    frac = source - left
    if size <= 64:  # small images: a dense interpolation matrix (BLAS) is fastest
        matrix = np.zeros((size, size))
        matrix[np.arange(size), left] = 1 - frac
        matrix[np.arange(size), left + 1] += frac
        return matrix @ x if axis == 2 else x @ matrix.T
    frac = frac.reshape([-1 if a == axis else 1 for a in range(x.ndim)])
    return np.take(x, left, axis=axis) * (1 - frac) + np.take(x, left + 1, axis=axis) * frac


@_register("zoom_blur", "blur", _ZOOM, randomised=False)
def zoom_blur(x, severity, rng):
    x = x.astype(np.float64)
    factors = _zoom_factors(severity)
    out = x.copy()
    for factor in factors:  # bilinear zoom = linear along rows, then along columns
        out += _zoom_axis(_zoom_axis(x, 2, factor), 3, factor)
    return out / (len(factors) + 1)


# ---------------------------------------------------------------- weather

_FOG = ((1.5, 2.0), (2.0, 2.0), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4))


def _plasma_fractal(size: int, decay: float, rng: np.random.Generator) -> np.ndarray:
    """Diamond-square noise on a periodic ``size`` x ``size`` grid (a power of
    two), rescaled to [0, 1]. The random amplitude is divided by ``decay²`` at
    every finer octave, as in ImageNet-C, whose displacement term is
    ``wibble · U(-wibble, wibble)`` with ``wibble`` divided by ``decay``."""
    grid = np.zeros((size, size))
    step, amplitude = size, 100.0
    while step >= 2:
        half = step // 2
        corners = grid[::step, ::step].copy()
        square = (
            corners
            + np.roll(corners, -1, axis=0)
            + np.roll(corners, -1, axis=1)
            + np.roll(corners, (-1, -1), axis=(0, 1))
        ) / 4
        centres = square + rng.uniform(-amplitude, amplitude, size=square.shape)
        grid[half::step, half::step] = centres
        # points between corners on corner rows: corners left/right, centres below/above
        across = (
            corners + np.roll(corners, -1, axis=1) + centres + np.roll(centres, 1, axis=0)
        ) / 4
        grid[::step, half::step] = across + rng.uniform(-amplitude, amplitude, size=across.shape)
        # points between corners on corner columns: corners above/below, centres right/left
        down = (
            corners + np.roll(corners, -1, axis=0) + centres + np.roll(centres, 1, axis=1)
        ) / 4
        grid[half::step, ::step] = down + rng.uniform(-amplitude, amplitude, size=down.shape)
        step, amplitude = half, amplitude / decay**2
    grid -= grid.min()
    return grid / grid.max()


@_register("fog", "weather", _FOG, randomised=True)
def fog(x, severity, rng):
    strength, decay = _FOG[severity - 1]
    n, _, h, w = x.shape
    size = 1 << (max(h, w) - 1).bit_length()
    out = np.empty(x.shape, dtype=np.float64)
    for i in range(n):
        fractal = _plasma_fractal(size, decay, rng)[:h, :w]
        top = float(x[i].max())
        out[i] = (x[i] + strength * fractal) * top / (top + strength)
    return out


# ---------------------------------------------------------------- digital

_BRIGHTNESS = (0.1, 0.2, 0.3, 0.4, 0.5)
_CONTRAST = (0.4, 0.3, 0.2, 0.1, 0.05)
_PIXELATE = (0.6, 0.5, 0.4, 0.3, 0.25)
_JPEG = (25, 18, 15, 10, 7)
_ELASTIC = ((8, 2), (8, 3), (8, 4.5), (8, 6), (8, 8))  # (smoothness sigma, RMS) px


@_register("brightness", "digital", _BRIGHTNESS, randomised=False)
def brightness(x, severity, rng):
    shift = _BRIGHTNESS[severity - 1]
    x = x.astype(np.float64)
    if x.shape[1] == 1:
        return x + shift
    # HSV value V = max channel; raising V with hue and saturation fixed scales RGB by V'/V
    value = x.max(axis=1, keepdims=True)
    raised = np.minimum(value + shift, 1.0)
    ratio = raised / np.where(value > 0, value, 1.0)
    return np.where(value > 0, x * ratio, raised)


@_register("contrast", "digital", _CONTRAST, randomised=False)
def contrast(x, severity, rng):
    keep = _CONTRAST[severity - 1]
    x = x.astype(np.float64)
    mean = x.mean(axis=(2, 3), keepdims=True)
    return mean + keep * (x - mean)


def _block_matrix(size: int, blocks: int) -> np.ndarray:
    """(size, size) matrix replacing each pixel by the mean of its block:
    ``blocks`` contiguous blocks whose sizes differ by at most one pixel
    (pixel p is in block floor((p + 1/2)·blocks/size), as nearest-neighbour
    upsampling would place it)."""
    group = np.floor((np.arange(size) + 0.5) * blocks / size).astype(np.int64)
    same = (group[:, None] == group[None, :]).astype(np.float64)
    return same / same.sum(axis=1, keepdims=True)


@_register("pixelate", "digital", _PIXELATE, randomised=False)
def pixelate(x, severity, rng):
    # area-average down to (h/b, w/b) and nearest-neighbour back up, in one
    # step: each pixel becomes the mean of the block it falls in
    block = 1 + (1 / _PIXELATE[severity - 1] - 1) * _scale(x)
    h, w = x.shape[2:]
    rows = _block_matrix(h, max(1, int(h / block)))
    cols = _block_matrix(w, max(1, int(w / block)))
    return rows @ x.astype(np.float64) @ cols.T


@_register("jpeg_compression", "digital", _JPEG, randomised=False)
def jpeg_compression(x, severity, rng):
    quality = _JPEG[severity - 1]
    pixels = np.round(x * 255).astype(np.uint8)
    out = np.empty(x.shape, dtype=np.float32)
    for i in range(x.shape[0]):
        # uint8 (H, W) opens as mode L, (H, W, 3) as RGB
        if x.shape[1] == 1:
            image = Image.fromarray(pixels[i, 0])
        else:
            image = Image.fromarray(np.ascontiguousarray(pixels[i].transpose(1, 2, 0)))
        assert image.mode == ("L" if x.shape[1] == 1 else "RGB")
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)
        decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())), dtype=np.float32)
        out[i] = decoded[None] if decoded.ndim == 2 else decoded.transpose(2, 0, 1)
    return out / 255.0


@_register("elastic_transform", "digital", _ELASTIC, randomised=True)
def elastic_transform(x, severity, rng):
    smooth, rms = _ELASTIC[severity - 1]
    s = _scale(x)
    n, c, h, w = x.shape
    grid = np.stack(np.meshgrid(np.arange(h), np.arange(w), indexing="ij")).astype(np.float64)
    out = np.empty(x.shape, dtype=np.float64)
    for i in range(n):
        field = ndimage.gaussian_filter(
            rng.standard_normal((2, h, w)), sigma=(0, smooth * s, smooth * s), mode="reflect"
        )
        field *= rms * s / np.sqrt(np.mean(field**2))
        coords = grid + field
        for channel in range(c):
            out[i, channel] = ndimage.map_coordinates(
                x[i, channel].astype(np.float64), coords, order=1, mode="reflect"
            )
    return out


# ---------------------------------------------------------------- registry

NAMES: tuple[str, ...] = tuple(CORRUPTIONS)
GROUPS: dict[str, tuple[str, ...]] = {
    group: tuple(name for name in NAMES if _GROUP_OF[name] == group)
    for group in ("noise", "blur", "weather", "digital")
}
RANDOMISED: frozenset[str] = frozenset(_RANDOMISED)


def corrupt(images: np.ndarray, name: str, severity: int, seed: int) -> np.ndarray:
    """Corrupt a batch ``(N, C, H, W)`` in [0, 1] with corruption ``name`` at
    ``severity`` (1-5), drawing randomness from ``numpy.random.default_rng(seed)``
    in batch order. Returns float32 of the same shape, clipped to [0, 1]."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; allowed: {', '.join(NAMES)}")
    severity = _check_severity(severity)
    return CORRUPTIONS[name](images, severity, np.random.default_rng(seed))
