"""The noise corruptions (``corruptions``), drawn from the generator in C
order over the whole batch; no parameter depends on the resolution.

    ``gaussian_noise``  x + N(0, c²), c = .08 .12 .18 .26 .38
    ``shot_noise``      Poisson(x·c) / c, photon counts c = 60 25 12 5 3
    ``impulse_noise``   salt & pepper, fraction c = .03 .06 .09 .17 .27 of the
                        values (each channel on its own), half 0 and half 1
    ``speckle_noise``   x + x·N(0, c²), c = .15 .2 .35 .45 .6
"""

from __future__ import annotations

import numpy as np

_GAUSSIAN_NOISE = (0.08, 0.12, 0.18, 0.26, 0.38)
_SHOT_NOISE = (60, 25, 12, 5, 3)
_IMPULSE_NOISE = (0.03, 0.06, 0.09, 0.17, 0.27)
_SPECKLE_NOISE = (0.15, 0.2, 0.35, 0.45, 0.6)


def gaussian_noise(x, severity, rng):
    return x + rng.normal(0.0, _GAUSSIAN_NOISE[severity - 1], size=x.shape)


def shot_noise(x, severity, rng):
    photons = _SHOT_NOISE[severity - 1]
    return rng.poisson(x.astype(np.float64) * photons) / photons


def impulse_noise(x, severity, rng):
    amount = _IMPULSE_NOISE[severity - 1]
    u = rng.random(size=x.shape)  # one draw per value: pepper below, salt above
    out = x.copy()
    out[u < amount / 2] = 0.0
    out[u >= 1.0 - amount / 2] = 1.0
    return out


def speckle_noise(x, severity, rng):
    return x + x * rng.normal(0.0, _SPECKLE_NOISE[severity - 1], size=x.shape)


# name -> (function, the five severities' parameters as in the table above,
# whether it draws from the generator)
FAMILY = {
    "gaussian_noise": (gaussian_noise, _GAUSSIAN_NOISE, True),
    "shot_noise": (shot_noise, _SHOT_NOISE, True),
    "impulse_noise": (impulse_noise, _IMPULSE_NOISE, True),
    "speckle_noise": (speckle_noise, _SPECKLE_NOISE, True),
}
