"""The digital corruptions (``corruptions``); the pixelate block and the
elastic field's sizes are multiplied by the image's
``corruption_scale.spatial_scale``, the other parameters are intensities.

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
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from scipy import ndimage

from multisym.data.corruption_scale import batch_scale

_BRIGHTNESS = (0.1, 0.2, 0.3, 0.4, 0.5)
_CONTRAST = (0.4, 0.3, 0.2, 0.1, 0.05)
_PIXELATE = (0.6, 0.5, 0.4, 0.3, 0.25)
_JPEG = (25, 18, 15, 10, 7)
_ELASTIC = ((8, 2), (8, 3), (8, 4.5), (8, 6), (8, 8))  # (smoothness sigma, RMS) px


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


def pixelate(x, severity, rng):
    # area-average down to (h/b, w/b) and nearest-neighbour back up, in one
    # step: each pixel becomes the mean of the block it falls in
    block = 1 + (1 / _PIXELATE[severity - 1] - 1) * batch_scale(x)
    h, w = x.shape[2:]
    rows = _block_matrix(h, max(1, int(h / block)))
    cols = _block_matrix(w, max(1, int(w / block)))
    return rows @ x.astype(np.float64) @ cols.T


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


def elastic_transform(x, severity, rng):
    smooth, rms = _ELASTIC[severity - 1]
    s = batch_scale(x)
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


# name -> (function, the five severities' parameters as in the table above,
# whether it draws from the generator)
FAMILY = {
    "brightness": (brightness, _BRIGHTNESS, False),
    "contrast": (contrast, _CONTRAST, False),
    "pixelate": (pixelate, _PIXELATE, False),
    "jpeg_compression": (jpeg_compression, _JPEG, False),
    "elastic_transform": (elastic_transform, _ELASTIC, True),
}
