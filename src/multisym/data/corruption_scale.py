"""The spatial scale of the corruptions' pixel-sized parameters
(``corruptions``).

The pixel sizes of the corruption tables are ImageNet-C's, meant for 224 px
images. For an image whose shorter side is ``S`` px they are multiplied by

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
"""

from __future__ import annotations

import numpy as np

REFERENCE_SIZE = 224
MIN_SCALE = 0.25


def spatial_scale(size: int) -> float:
    """The factor for pixel-sized parameters at an image side of ``size`` px."""
    return max(size / REFERENCE_SIZE, MIN_SCALE)


def batch_scale(x: np.ndarray) -> float:
    """``spatial_scale`` of a batch (N, C, H, W), from its shorter side."""
    return spatial_scale(min(x.shape[2:]))
