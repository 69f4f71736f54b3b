"""Batched, generator-driven image augmentations ("views") for contrastive pretraining.

This module implements the paper's base augmentation distribution T_base
(docs/method.md#views), i.e. the SimCLR / BYOL pipeline

    RandomResizedCrop -> horizontal flip (p=.5) -> ColorJitter(.4, .4, .2, .1) (p=.8)
    -> grayscale (p=.2) -> Gaussian blur (p=blur_p) -> solarize (p=solarize_p)

on tensors of shape (B, C, H, W) with values in [0, 1] and C in {1, 3}.

Every operation is batched over the whole batch (no Python loop over samples)
and draws *per-sample* random parameters.  All randomness comes from an
explicit ``torch.Generator`` that lives on the CPU: parameters are drawn there
and then moved to the images' device, so a given generator state produces the
same views on CPU and CUDA (up to float round-off).  The global torch RNG,
numpy and ``random`` are never used.  The number and order of draws depends
only on the batch size, never on the spec's probabilities or on earlier
outcomes, so changing one probability does not reshuffle the other parameters.

Normalisation (mean/std) is not done here: the caller applies it after the
group actions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import roi_align

from multisym.runtime import to_device

__all__ = [
    "ViewSpec",
    "make_views",
    "make_view_batch",
    "resize_center",
    "sample_crop_boxes",
    "crop_resize",
    "hflip",
    "rgb_to_gray",
    "rgb_to_hsv",
    "hsv_to_rgb",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_saturation",
    "adjust_hue",
    "to_grayscale",
    "blur_kernel_size",
    "gaussian_kernels",
    "gaussian_blur",
    "solarize",
]

GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601 luma
SOLARIZE_THRESHOLD = 0.5
CROP_TRIES = 10


def _check_prob(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"ViewSpec.{name} must be a probability in [0, 1], got {value!r}")


def _check_pair(name: str, value: tuple[float, float]) -> tuple[float, float]:
    if len(value) != 2:
        raise ValueError(f"ViewSpec.{name} must be a pair (lo, hi), got {value!r}")
    return float(value[0]), float(value[1])


@dataclass(frozen=True)
class ViewSpec:
    """One augmentation pipeline (SimCLR / BYOL style, docs/method.md#views).

    Jitter factors are drawn as brightness f_b ~ U[max(0, 1-b), 1+b],
    contrast f_c ~ U[max(0, 1-c), 1+c], saturation f_s ~ U[max(0, 1-s), 1+s]
    and hue shift f_h ~ U[-h, h] (as torchvision does).
    """

    size: int  # output side length in pixels
    crop_scale: tuple[float, float] = (0.08, 1.0)  # RandomResizedCrop area fraction
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # aspect ratio w/h, log-uniform
    flip_p: float = 0.5  # horizontal flip probability
    jitter_p: float = 0.8  # probability of applying colour jitter
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale_p: float = 0.2
    blur_p: float = 0.0  # Gaussian blur probability
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # pixels of the OUTPUT image, uniform
    solarize_p: float = 0.0  # x -> 1 - x where x >= 0.5

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ValueError(f"ViewSpec.size must be an integer >= 1, got {self.size!r}")
        for name in ("flip_p", "jitter_p", "grayscale_p", "blur_p", "solarize_p"):
            _check_prob(name, getattr(self, name))
        for name in ("brightness", "contrast", "saturation", "hue"):
            if not getattr(self, name) >= 0.0:
                raise ValueError(f"ViewSpec.{name} must be >= 0, got {getattr(self, name)!r}")
        if self.hue > 0.5:
            raise ValueError(f"ViewSpec.hue must be in [0, 0.5], got {self.hue!r}")

        lo, hi = _check_pair("crop_scale", self.crop_scale)
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(
                f"ViewSpec.crop_scale must satisfy 0 < lo <= hi <= 1, got {self.crop_scale!r}"
            )
        object.__setattr__(self, "crop_scale", (lo, hi))

        lo, hi = _check_pair("crop_ratio", self.crop_ratio)
        if not 0.0 < lo <= hi:
            raise ValueError(
                f"ViewSpec.crop_ratio must satisfy 0 < lo <= hi, got {self.crop_ratio!r}"
            )
        object.__setattr__(self, "crop_ratio", (lo, hi))

        lo, hi = _check_pair("blur_sigma", self.blur_sigma)
        if not 0.0 < lo <= hi:
            raise ValueError(
                f"ViewSpec.blur_sigma must satisfy 0 < lo <= hi, got {self.blur_sigma!r}"
            )
        object.__setattr__(self, "blur_sigma", (lo, hi))


# --------------------------------------------------------------------------- helpers


def _check_images(images: Tensor) -> Tensor:
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"images must have shape (B, C, H, W) with C in {{1, 3}}, got {tuple(images.shape)}"
        )
    return images.to(torch.float32)


def _check_generator(generator: torch.Generator) -> None:
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if generator.device.type != "cpu":
        raise ValueError(f"generator must live on the CPU, got device {generator.device}")


def _uniform(u: Tensor, lo: float, hi: float) -> Tensor:
    """Map u ~ U[0, 1) to U[lo, hi)."""
    return lo + (hi - lo) * u


def _bcast(values: Tensor) -> Tensor:
    """(B,) -> (B, 1, 1, 1) for per-sample broadcasting over (C, H, W)."""
    return values.reshape(-1, 1, 1, 1)


def _apply_to_subset(
    images: Tensor, mask: Tensor, fn: Callable[..., Tensor], *params: Tensor
) -> Tensor:
    """Return images with ``fn(images[mask], *(p[mask] for p in params))`` written back.

    Samples outside the mask are returned bit-for-bit unchanged (and not
    computed). ``mask`` is the CPU draw, so choosing the subset never waits
    for the device.
    """
    idx = mask.cpu().nonzero().squeeze(1)
    if idx.numel() == 0:
        return images
    if idx.numel() == images.shape[0]:
        return fn(images, *params)
    idx = to_device(idx, images.device)
    out = images.clone()
    out[idx] = fn(images[idx], *(p[idx] for p in params))
    return out


# --------------------------------------------------------------------------- crop


def _fallback_box(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int]:
    """Centre-crop size (h, w) used when all tries fail: the whole image, with its
    aspect ratio clipped to ``ratio``."""
    in_ratio = width / height
    if in_ratio < min(ratio):
        w = width
        h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        h = height
        w = int(round(h * max(ratio)))
    else:
        h, w = height, width
    return h, w


def sample_crop_boxes(
    batch: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator,
) -> Tensor:
    """Sample RandomResizedCrop boxes, one per sample, vectorised over the batch.

    For each of ``CROP_TRIES`` tries: area A = U[scale] * H * W, aspect
    r = exp(U[log r_lo, log r_hi]), w = round(sqrt(A r)), h = round(sqrt(A / r));
    the first try with 0 < w <= W and 0 < h <= H is kept and placed at
    top = floor(u (H - h + 1)), left = floor(u' (W - w + 1)).  Samples with no
    valid try get a centre crop of the whole image with ratio clipped to ``ratio``.

    Returns a float32 CPU tensor (B, 4) of integer-valued pixel boxes
    (x1, y1, x2, y2) with x2 - x1 = w, y2 - y1 = h (continuous coordinates, pixel k
    covering [k, k + 1)).
    """
    _check_generator(generator)
    u = torch.rand(4, batch, CROP_TRIES, generator=generator, dtype=torch.float64)
    area = _uniform(u[0], scale[0], scale[1]) * (height * width)
    log_r = _uniform(u[1], math.log(ratio[0]), math.log(ratio[1]))
    aspect = torch.exp(log_r)
    w = torch.round(torch.sqrt(area * aspect))
    h = torch.round(torch.sqrt(area / aspect))
    valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)

    # argmax returns the first maximum, i.e. the first valid try.
    first = valid.to(torch.int8).argmax(dim=1, keepdim=True)
    w = w.gather(1, first).squeeze(1)
    h = h.gather(1, first).squeeze(1)
    top = torch.floor(u[2].gather(1, first).squeeze(1) * (height - h + 1))
    left = torch.floor(u[3].gather(1, first).squeeze(1) * (width - w + 1))

    fb_h, fb_w = _fallback_box(height, width, ratio)
    ok = valid.any(dim=1)
    h = torch.where(ok, h, torch.full_like(h, fb_h))
    w = torch.where(ok, w, torch.full_like(w, fb_w))
    top = torch.where(ok, top, torch.full_like(top, (height - fb_h) // 2))
    left = torch.where(ok, left, torch.full_like(left, (width - fb_w) // 2))
    return torch.stack([left, top, left + w, top + h], dim=1).to(torch.float32)


def crop_resize(images: Tensor, boxes: Tensor, size: int, index: Tensor | None = None) -> Tensor:
    """Crop each box and resample it to size x size with bilinear roi_align.

    Box k crops image ``index[k]`` (default: box i crops image i), so several
    views of one image need no copies of it. ``aligned=True`` makes box
    (0, 0, W, H) map pixel centres onto pixel centres. The sampling ratio is
    adaptive (ceil(box side / size) points per output bin), which averages when
    downscaling and samples exactly at bin centres otherwise.
    """
    if index is None:
        index = torch.arange(images.shape[0])
    rois = torch.cat([index[:, None].to(boxes.dtype), boxes], dim=1)
    out = roi_align(
        images, to_device(rois, images.device, images.dtype), output_size=(size, size),
        spatial_scale=1.0, sampling_ratio=0, aligned=True,
    )
    return out.clamp_(0.0, 1.0)


# --------------------------------------------------------------------------- flip


def hflip(images: Tensor, mask: Tensor) -> Tensor:
    """Flip the width axis of the samples where ``mask`` is True."""
    return torch.where(_bcast(mask), images.flip(-1), images)


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


def _color_jitter(images: Tensor, factors: Tensor, use_hue: bool) -> Tensor:
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


# --------------------------------------------------------------------------- pipeline

# Column layout of the per-sample uniform draws made after the crop boxes.
_U_FLIP, _U_JITTER, _U_BRIGHT, _U_CONTRAST, _U_SAT, _U_HUE = range(6)
_U_GRAY, _U_BLUR, _U_SIGMA, _U_SOLARIZE = range(6, 10)
_N_UNIFORMS = 10


def _jitter_factors(u: Tensor, spec: ViewSpec) -> Tensor:
    """(B, 4) factors: brightness, contrast, saturation in U[max(0, 1-s), 1+s],
    hue shift in U[-h, h]."""
    cols = []
    for col, strength in ((_U_BRIGHT, spec.brightness), (_U_CONTRAST, spec.contrast),
                          (_U_SAT, spec.saturation)):
        cols.append(_uniform(u[:, col], max(0.0, 1.0 - strength), 1.0 + strength))
    cols.append(_uniform(u[:, _U_HUE], -spec.hue, spec.hue))
    return torch.stack(cols, dim=1)


@dataclass
class _Draws:
    """One spec's random parameters for a batch, on the CPU."""

    boxes: Tensor  # (B, 4) crop boxes
    factors: Tensor  # (B, 4) jitter factors
    sigma: Tensor  # (B,) blur sigma
    masks: dict[str, Tensor]  # which samples each optional step applies to


def _draw(spec: ViewSpec, batch: int, height: int, width: int, generator: torch.Generator) -> _Draws:
    """The crop boxes, then ``_N_UNIFORMS`` uniforms per sample, in this order."""
    boxes = sample_crop_boxes(batch, height, width, spec.crop_scale, spec.crop_ratio, generator)
    u = torch.rand(batch, _N_UNIFORMS, generator=generator, dtype=torch.float64)
    masks = {
        name: u[:, col] < p
        for name, col, p in (
            ("flip", _U_FLIP, spec.flip_p),
            ("jitter", _U_JITTER, spec.jitter_p),
            ("gray", _U_GRAY, spec.grayscale_p),
            ("blur", _U_BLUR, spec.blur_p),
            ("solarize", _U_SOLARIZE, spec.solarize_p),
        )
    }
    return _Draws(boxes, _jitter_factors(u, spec), _uniform(u[:, _U_SIGMA], *spec.blur_sigma), masks)


def _render(images: Tensor, draws: list[_Draws], size: int, ksize: int, use_hue: bool,
            dtype: torch.dtype) -> Tensor:
    """The views of ``draws`` (each one view of every image) as one batch,
    (len(draws) B, C, size, size), in ``dtype`` after the crop."""
    device, batch = images.device, images.shape[0]
    boxes = torch.cat([d.boxes for d in draws])
    factors = to_device(torch.cat([d.factors for d in draws]), device, dtype)
    sigma = to_device(torch.cat([d.sigma for d in draws]), device, dtype)
    # kept on the CPU: _apply_to_subset picks its samples there
    masks = {name: torch.cat([d.masks[name] for d in draws]) for name in draws[0].masks}

    # roi_align in float32: in float16 its sampling positions would be off by
    # up to a quarter pixel on a 256-px image
    x = crop_resize(images, boxes, size, torch.arange(batch).repeat(len(draws))).to(dtype)
    x = hflip(x, to_device(masks["flip"], device))
    x = _apply_to_subset(x, masks["jitter"], lambda y, f: _color_jitter(y, f, use_hue), factors)
    if images.shape[1] == 3:
        x = _apply_to_subset(x, masks["gray"], to_grayscale)
    x = _apply_to_subset(x, masks["blur"], lambda y, s: gaussian_blur(y, s, ksize), sigma)
    return _apply_to_subset(x, masks["solarize"], solarize)


def make_view_batch(images: Tensor, specs: list[ViewSpec], generator: torch.Generator,
                    dtype: torch.dtype = torch.float32) -> list[Tensor]:
    """One view of every sample per spec: ``make_views`` for each spec in turn,
    with the same random numbers, and the same values up to float round-off
    (the blur's convolution may sum in another order for another batch).

    Specs with the same output size, blur kernel and hue step (the two 224-px
    views of docs/method.md#views) are computed as one batch: each operation
    is launched once for all of them, and on a GPU the host's launches are most of what the
    views cost (issue 15).
    """
    _check_generator(generator)
    images = _check_images(images)
    batch, channels, height, width = images.shape
    draws = [_draw(spec, batch, height, width, generator) for spec in specs]
    together: dict[tuple[int, int, bool], list[int]] = {}
    for i, spec in enumerate(specs):
        key = (spec.size, blur_kernel_size(spec.blur_sigma[1], spec.size), channels == 3 and spec.hue > 0)
        together.setdefault(key, []).append(i)
    views: list[Tensor | None] = [None] * len(specs)
    for (size, ksize, use_hue), members in together.items():
        rendered = _render(images, [draws[i] for i in members], size, ksize, use_hue, dtype)
        for i, view in zip(members, rendered.split(batch)):
            views[i] = view
    return views


def make_views(images: Tensor, spec: ViewSpec, generator: torch.Generator,
               dtype: torch.dtype = torch.float32) -> Tensor:
    """Draw one random view per sample: (B, C, H, W) in [0, 1] -> (B, C, size, size).

    Steps (each with per-sample parameters): random resized crop (roi_align),
    horizontal flip (p = flip_p), colour jitter (p = jitter_p), grayscale
    (p = grayscale_p), Gaussian blur with sigma ~ U[blur_sigma] (p = blur_p),
    solarize (p = solarize_p).  Random numbers are drawn on the CPU ``generator``
    in a fixed layout, then moved to ``images.device``.  Computed and returned
    in ``dtype`` after the crop: float16 halves the memory traffic of these
    bandwidth-bound passes and resolves [0, 1] to 2^-11, finer than 8-bit
    pixels and than the bf16 a mixed-precision backbone reads them in.
    """
    return make_view_batch(images, [spec], generator, dtype)[0]


def resize_center(images: Tensor, size: int) -> Tensor:
    """Deterministic evaluation transform: resize the whole image to size x size
    (bilinear, antialiased).  Returns float32 in [0, 1]."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be an integer >= 1, got {size!r}")
    images = _check_images(images)
    out = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False,
                        antialias=True)
    return out.clamp_(0.0, 1.0)
