"""The photometric steps of a view (docs/method.md#views): colour jitter
(brightness, contrast, saturation, hue), grayscale, Gaussian blur and
solarisation, on (B, C, H, W) images in [0, 1] with C in {1, 3} and one
parameter per sample. Every result is clamped to [0, 1].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "rgb_to_gray",
    "rgb_to_hsv",
    "hsv_to_rgb",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_saturation",
    "adjust_hue",
    "color_jitter",
    "to_grayscale",
    "blur_kernel_size",
    "gaussian_kernels",
    "gaussian_blur",
    "solarize",
]

GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601 luma
SOLARIZE_THRESHOLD = 0.5


def _bcast(values: Tensor) -> Tensor:
    """(B,) -> (B, 1, 1, 1) for per-sample broadcasting over (C, H, W)."""
    return values.reshape(-1, 1, 1, 1)


# --------------------------------------------------------------------------- colour


def rgb_to_gray(images: Tensor) -> Tensor:
    """Luma Y = 0.299 R + 0.587 G + 0.114 B, shape (B, 1, H, W); identity for C = 1."""
    if images.shape[1] == 1:
        return images
    r, g, b = images.unbind(1)
    wr, wg, wb = GRAY_WEIGHTS
    return (wr * r + wg * g + wb * b).unsqueeze(1)


def _blend(images: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    """clamp(f x + (1 - f) o, 0, 1) with a per-sample factor f."""
    f = _bcast(factor)
    return (f * images + (1.0 - f) * other).clamp_(0.0, 1.0)


def adjust_brightness(images: Tensor, factor: Tensor) -> Tensor:
    """x -> clamp(f x, 0, 1), per-sample f."""
    return (images * _bcast(factor)).clamp_(0.0, 1.0)


def adjust_contrast(images: Tensor, factor: Tensor) -> Tensor:
    """x -> clamp(f x + (1 - f) m, 0, 1), m = per-image mean of the grayscale image."""
    mean = rgb_to_gray(images).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(images, mean, factor)


def adjust_saturation(images: Tensor, factor: Tensor) -> Tensor:
    """x -> clamp(f x + (1 - f) gray(x), 0, 1); no effect for C = 1 (gray(x) = x)."""
    if images.shape[1] == 1:
        return images
    return _blend(images, rgb_to_gray(images), factor)


def rgb_to_hsv(images: Tensor) -> Tensor:
    """RGB in [0, 1] -> HSV in [0, 1]^3 (hue as a fraction of a turn).

    V = max, C = max - min, S = C / V (0 if V = 0), and
    H = ((G - B)/C mod 6, (B - R)/C + 2, (R - G)/C + 4)[argmax] / 6 (0 if C = 0).
    """
    r, g, b = images.unbind(1)
    v, _ = images.max(dim=1)
    chroma = v - images.min(dim=1).values
    has_chroma = chroma > 0
    safe_c = torch.where(has_chroma, chroma, torch.ones_like(chroma))
    safe_v = torch.where(v > 0, v, torch.ones_like(v))
    s = torch.where(v > 0, chroma / safe_v, torch.zeros_like(v))
    h_r = torch.remainder((g - b) / safe_c, 6.0)
    h_g = (b - r) / safe_c + 2.0
    h_b = (r - g) / safe_c + 4.0
    h6 = torch.where(v == r, h_r, torch.where(v == g, h_g, h_b))
    h = torch.where(has_chroma, h6 / 6.0, torch.zeros_like(h6))
    return torch.stack([h, s, v], dim=1)


def hsv_to_rgb(hsv: Tensor) -> Tensor:
    """HSV -> RGB via channel_n = V - V S clamp(min(k, 4 - k), 0, 1),
    k = (n + 6 H) mod 6 with n = 5, 3, 1 for R, G, B."""
    h, s, v = hsv.unbind(1)
    # n = 5, 3, 1 made on the device: torch.tensor(..., device=) would be a
    # blocking copy, stopping the host until the device catches up
    n = torch.arange(5.0, 0.0, -2.0, dtype=hsv.dtype, device=hsv.device).reshape(1, 3, 1, 1)
    k = torch.remainder(n + 6.0 * h.unsqueeze(1), 6.0)
    ramp = torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)
    vs = (v * s).unsqueeze(1)
    return (v.unsqueeze(1) - vs * ramp).clamp_(0.0, 1.0)


def adjust_hue(images: Tensor, shift: Tensor) -> Tensor:
    """Rotate hue: H -> (H + shift) mod 1 in HSV space, per-sample shift in [-0.5, 0.5];
    no effect for C = 1."""
    if images.shape[1] == 1:
        return images
    hsv = rgb_to_hsv(images)
    h = torch.remainder(hsv[:, 0] + shift.reshape(-1, 1, 1), 1.0)
    return hsv_to_rgb(torch.cat([h.unsqueeze(1), hsv[:, 1:]], dim=1))


def color_jitter(images: Tensor, factors: Tensor, use_hue: bool) -> Tensor:
    """Brightness, contrast, saturation, hue with factors[:, 0..3].

    The order is fixed; torchvision's ColorJitter randomises it per call.
    """
    images = adjust_brightness(images, factors[:, 0])
    images = adjust_contrast(images, factors[:, 1])
    images = adjust_saturation(images, factors[:, 2])
    if use_hue:  # hue = 0 would only add HSV round-off
        images = adjust_hue(images, factors[:, 3])
    return images


def to_grayscale(images: Tensor) -> Tensor:
    """Replace every channel by the luma Y (ITU-R 601); identity for C = 1."""
    return rgb_to_gray(images).expand_as(images).contiguous()


# --------------------------------------------------------------------------- blur


def blur_kernel_size(sigma_max: float, size: int) -> int:
    """k = 2 ceil(3 sigma_max) + 1, capped at the largest odd number <= size."""
    k = 2 * math.ceil(3.0 * sigma_max) + 1
    cap = size if size % 2 == 1 else size - 1
    return max(1, min(k, cap))


def gaussian_kernels(sigma: Tensor, ksize: int) -> Tensor:
    """Normalised 1-D kernels (B, k): w_i ∝ exp(-i^2 / (2 sigma^2)), i = -k//2 .. k//2."""
    x = torch.arange(ksize, dtype=sigma.dtype, device=sigma.device) - (ksize // 2)
    w = torch.exp(-(x[None, :] ** 2) / (2.0 * sigma[:, None] ** 2))
    return w / w.sum(dim=1, keepdim=True)


def gaussian_blur(images: Tensor, sigma: Tensor, ksize: int) -> Tensor:
    """Separable per-sample Gaussian blur with reflect padding.

    The batch is folded into channels so one depthwise conv (groups = B C) applies
    each sample's own kernel.
    """
    b, c, hgt, wid = images.shape
    if ksize <= 1:
        return images
    kernels = gaussian_kernels(sigma.to(images.device, images.dtype), ksize)
    weight = kernels.repeat_interleave(c, dim=0)  # (B C, k)
    pad = ksize // 2
    x = images.reshape(1, b * c, hgt, wid)
    x = F.conv2d(F.pad(x, (pad, pad, 0, 0), mode="reflect"), weight[:, None, None, :], groups=b * c)
    x = F.conv2d(F.pad(x, (0, 0, pad, pad), mode="reflect"), weight[:, None, :, None], groups=b * c)
    return x.reshape(b, c, hgt, wid).clamp_(0.0, 1.0)


# --------------------------------------------------------------------------- solarize


def solarize(images: Tensor) -> Tensor:
    """x -> 1 - x where x >= 0.5, else x."""
    return torch.where(images >= SOLARIZE_THRESHOLD, 1.0 - images, images)
