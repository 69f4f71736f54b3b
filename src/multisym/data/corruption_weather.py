"""The weather corruption (``corruptions``): fog, one plasma fractal drawn
per image in batch order.

    ``fog``             plasma fractal f in [0, 1] (diamond-square, roughness
                        decay w): (x + s·f)·M/(M + s) with M the image maximum;
                        (s, w) = (1.5, 2) (2, 2) (2.5, 1.7) (2.5, 1.5) (3, 1.4);
                        octave amplitudes fall by w² as in ImageNet-C's code.
                        Severities 3 and 4 share the strength 2.5 and differ
                        only in roughness, so they change images by about the
                        same amount (the mean change can tie within ~1 %)

The fractal's map is the next power of two above the image side, so its
coarsest octave always spans the image at any resolution.
"""

from __future__ import annotations

import numpy as np

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


# name -> (function, the five severities' parameters as in the table above,
# whether it draws from the generator)
FAMILY = {
    "fog": (fog, _FOG, True),
}
