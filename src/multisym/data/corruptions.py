"""Common corruptions at severities 1-5, generated locally (no downloads).

Distribution-shift evaluation sets in the style of ImageNet-C / CIFAR-10-C
(Hendrycks & Dietterich 2019), written with numpy / scipy / PIL. Every
corruption maps a float32 batch ``(N, C, H, W)`` in [0, 1] (C = 1 or 3, H and
W at least 8; inputs are clipped to [0, 1] first and never modified) to a
float32 batch of the same shape, clipped to [0, 1]. ``corrupt(images, name,
severity, seed)`` is the entry point; ``CORRUPTIONS[name](images, severity,
rng)`` the functions behind it, ``NAMES`` their order (14 corruptions).

Corruptions, by group (each module gives its formulas and severity tables)
-------------------------------------------------------------------------
noise       gaussian_noise, shot_noise, impulse_noise, speckle_noise
            (``corruption_noise``)
blur        defocus_blur, gaussian_blur, motion_blur, zoom_blur
            (``corruption_blur``)
weather     fog (``corruption_weather``)
digital     brightness, contrast, pixelate, jpeg_compression,
            elastic_transform (``corruption_digital``)

Pixel-sized parameters are ImageNet-C's at 224 px, scaled to the image's
resolution (``corruption_scale``).

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
from typing import Callable

import numpy as np

from multisym.data import corruption_blur, corruption_digital, corruption_noise, corruption_weather

__all__ = [
    "CORRUPTIONS",
    "GROUPS",
    "NAMES",
    "PARAMETERS",
    "RANDOMISED",
    "SEVERITIES",
    "corrupt",
]

MIN_SIZE = 8
SEVERITIES = (1, 2, 3, 4, 5)

# group -> its corruptions: name -> (function, parameters, randomised), in the order of NAMES
_FAMILIES = {
    "noise": corruption_noise.FAMILY,
    "blur": corruption_blur.FAMILY,
    "weather": corruption_weather.FAMILY,
    "digital": corruption_digital.FAMILY,
}


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


def _checked(function):
    """``function`` wrapped to check its arguments and to return float32
    values clipped to [0, 1]."""

    @functools.wraps(function)
    def wrapper(images, severity: int, rng: np.random.Generator) -> np.ndarray:
        severity = _check_severity(severity)
        x = _as_batch(images)
        if x.shape[0] == 0:
            return x.copy()
        out = function(x, severity, rng)
        return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)

    return wrapper


CORRUPTIONS: dict[str, Callable[[np.ndarray, int, np.random.Generator], np.ndarray]] = {
    name: _checked(function) for family in _FAMILIES.values() for name, (function, _, _) in family.items()
}
# name -> the five severities' parameters as in the tables of its group's
# module (pixel sizes at 224 px, before ``spatial_scale``; zoom_blur: (step,
# largest factor))
PARAMETERS: dict[str, tuple] = {
    name: parameters for family in _FAMILIES.values() for name, (_, parameters, _) in family.items()
}
NAMES: tuple[str, ...] = tuple(CORRUPTIONS)
GROUPS: dict[str, tuple[str, ...]] = {group: tuple(family) for group, family in _FAMILIES.items()}
RANDOMISED: frozenset[str] = frozenset(
    name for family in _FAMILIES.values() for name, (_, _, randomised) in family.items() if randomised
)


def corrupt(images: np.ndarray, name: str, severity: int, seed: int) -> np.ndarray:
    """Corrupt a batch ``(N, C, H, W)`` in [0, 1] with corruption ``name`` at
    ``severity`` (1-5), drawing randomness from ``numpy.random.default_rng(seed)``
    in batch order. Returns float32 of the same shape, clipped to [0, 1]."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; allowed: {', '.join(NAMES)}")
    severity = _check_severity(severity)
    return CORRUPTIONS[name](images, severity, np.random.default_rng(seed))
