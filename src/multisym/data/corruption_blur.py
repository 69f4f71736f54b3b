"""The blur corruptions (``corruptions``); radii and sigmas are ImageNet-C's
at 224 px, multiplied by the image's ``corruption_scale.spatial_scale``.

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
                        with stops 1.11 1.16 1.21 1.26 1.31); zoom factors are
                        relative to the image size and are not scaled
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage, signal, special

from multisym.data.corruption_scale import batch_scale

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


def defocus_blur(x, severity, rng):
    radius, alias = _DEFOCUS[severity - 1]
    s = batch_scale(x)
    return _convolve(x, _disk_kernel(radius * s, alias * s))


def _discrete_gaussian(sigma: float) -> np.ndarray:
    """Lindeberg's discrete Gaussian, exp(-t)·I_n(t) with t = sigma², whose
    variance is exactly sigma² even below one pixel (a sampled Gaussian of
    sigma .25 would be the identity to 3e-4); truncated at 4 sigma + 1 px."""
    radius = int(np.ceil(4 * sigma)) + 1
    kernel = special.ive(np.abs(np.arange(-radius, radius + 1)), sigma**2)
    return kernel / kernel.sum()


def gaussian_blur(x, severity, rng):
    kernel = _discrete_gaussian(_GAUSSIAN_BLUR[severity - 1] * batch_scale(x))
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


def motion_blur(x, severity, rng):
    radius, sigma = _MOTION[severity - 1]
    s = batch_scale(x)
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


def zoom_blur(x, severity, rng):
    x = x.astype(np.float64)
    factors = _zoom_factors(severity)
    out = x.copy()
    for factor in factors:  # bilinear zoom = linear along rows, then along columns
        out += _zoom_axis(_zoom_axis(x, 2, factor), 3, factor)
    return out / (len(factors) + 1)


# name -> (function, the five severities' parameters as in the table above,
# whether it draws from the generator)
FAMILY = {
    "defocus_blur": (defocus_blur, _DEFOCUS, False),
    "gaussian_blur": (gaussian_blur, _GAUSSIAN_BLUR, False),
    "motion_blur": (motion_blur, _MOTION, True),
    "zoom_blur": (zoom_blur, _ZOOM, False),
}
