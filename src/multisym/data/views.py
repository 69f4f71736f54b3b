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

The crop and flip are in ``geometric``, the colour, blur and solarisation
steps in ``photometric``; this module holds the spec, the order of the
random draws and the pipeline that runs them. Where a dataset's views are
cut from the original image (``cuts``, docs/datasets.md#views-from-the-original-image)
the crop happens where the images are decoded, and ``finish_views`` runs
the rest of the pipeline on the cut views. Normalisation (mean/std) is
not done here: the caller applies it after the group actions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from multisym.data.cuts import Cut
from multisym.data.decoders import as_float
from multisym.data.geometric import check_generator, crop_resize, hflip, sample_crop_boxes, uniform
from multisym.data.photometric import blur_kernel_size, color_jitter, gaussian_blur, solarize, to_grayscale
from multisym.runtime import to_device

__all__ = ["ViewSpec", "make_views", "make_view_batch", "finish_views", "views_of", "resize_center"]


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
    # resampling of a view cut from the original image (cuts); views cut from
    # a square on the device are resampled by bilinear roi_align
    interpolation: str = "bilinear"

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
        Cut(self.size, self.crop_scale, self.crop_ratio, self.interpolation)  # checks the interpolation

    @property
    def cut(self) -> Cut:
        """The geometric half of this view, cut from the original image (``cuts``)."""
        return Cut(self.size, self.crop_scale, self.crop_ratio, self.interpolation)


# --------------------------------------------------------------------------- helpers


def _check_images(images: Tensor) -> Tensor:
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"images must have shape (B, C, H, W) with C in {{1, 3}}, got {tuple(images.shape)}"
        )
    return images.to(torch.float32)


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
        cols.append(uniform(u[:, col], max(0.0, 1.0 - strength), 1.0 + strength))
    cols.append(uniform(u[:, _U_HUE], -spec.hue, spec.hue))
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
    return _draw_photometric(spec, boxes, generator)


def _draw_photometric(spec: ViewSpec, boxes: Tensor, generator: torch.Generator) -> _Draws:
    """``_N_UNIFORMS`` uniforms per sample; ``boxes`` is (B, 4), or (B, 0)
    for views cut already."""
    batch = boxes.shape[0]
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
    return _Draws(boxes, _jitter_factors(u, spec), uniform(u[:, _U_SIGMA], *spec.blur_sigma), masks)


def _render(images: Tensor, draws: list[_Draws], size: int, ksize: int, use_hue: bool,
            dtype: torch.dtype) -> Tensor:
    """The views of ``draws`` (each one view of every image) as one batch,
    (len(draws) B, C, size, size), in ``dtype`` after the crop."""
    batch = images.shape[0]
    boxes = torch.cat([d.boxes for d in draws])
    # roi_align in float32: in float16 its sampling positions would be off by
    # up to a quarter pixel on a 256-px image
    x = crop_resize(images, boxes, size, torch.arange(batch).repeat(len(draws))).to(dtype)
    return _photometric(x, draws, ksize, use_hue, images.shape[1])


def _photometric(x: Tensor, draws: list[_Draws], ksize: int, use_hue: bool, channels: int) -> Tensor:
    """Flip, jitter, grayscale, blur and solarize of cut views ``x`` (the
    views of ``draws`` one after the other), each with its own draws."""
    device, dtype = x.device, x.dtype
    factors = to_device(torch.cat([d.factors for d in draws]), device, dtype)
    sigma = to_device(torch.cat([d.sigma for d in draws]), device, dtype)
    # kept on the CPU: _apply_to_subset picks its samples there
    masks = {name: torch.cat([d.masks[name] for d in draws]) for name in draws[0].masks}
    x = hflip(x, to_device(masks["flip"], device))
    x = _apply_to_subset(x, masks["jitter"], lambda y, f: color_jitter(y, f, use_hue), factors)
    if channels == 3:
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
    check_generator(generator)
    images = _check_images(images)
    batch, channels, height, width = images.shape
    draws = [_draw(spec, batch, height, width, generator) for spec in specs]
    views: list[Tensor | None] = [None] * len(specs)
    for (size, ksize, use_hue), members in _groups(specs, channels).items():
        rendered = _render(images, [draws[i] for i in members], size, ksize, use_hue, dtype)
        for i, view in zip(members, rendered.split(batch)):
            views[i] = view
    return views


def _groups(specs: list[ViewSpec], channels: int) -> dict[tuple[int, int, bool], list[int]]:
    """Specs with the same output size, blur kernel and hue step, rendered as one batch."""
    together: dict[tuple[int, int, bool], list[int]] = {}
    for i, spec in enumerate(specs):
        key = (spec.size, blur_kernel_size(spec.blur_sigma[1], spec.size), channels == 3 and spec.hue > 0)
        together.setdefault(key, []).append(i)
    return together


def finish_views(cut: list[Tensor], specs: list[ViewSpec], generator: torch.Generator,
                 dtype: torch.dtype = torch.float32) -> list[Tensor]:
    """The photometric half of ``make_view_batch`` on views cut already
    (``cuts``, docs/datasets.md#views-from-the-original-image): ``cut[i]`` is
    spec i's uint8 (B, C, size, size) views on the device. Flip, jitter,
    grayscale, blur and solarize as ``make_view_batch`` does them, from
    ``_N_UNIFORMS`` uniforms per sample and spec drawn on ``generator`` in
    spec order (no boxes: those were drawn where the views were cut)."""
    check_generator(generator)
    if len(cut) != len(specs):
        raise ValueError(f"{len(cut)} cut views for {len(specs)} view specs")
    batch, channels = cut[0].shape[:2]
    for view, spec in zip(cut, specs):
        if tuple(view.shape) != (batch, channels, spec.size, spec.size):
            raise ValueError(f"cut views of shape {tuple(view.shape)} for a {spec.size}-px spec")
    draws = [_draw_photometric(spec, torch.empty(batch, 0), generator) for spec in specs]
    views: list[Tensor | None] = [None] * len(specs)
    for (_, ksize, use_hue), members in _groups(specs, channels).items():
        x = torch.cat([as_float(cut[i]) for i in members]).to(dtype)
        rendered = _photometric(x, [draws[i] for i in members], ksize, use_hue, channels)
        for i, view in zip(members, rendered.split(batch)):
            views[i] = view
    return views


def views_of(images: Tensor | list[Tensor], specs: list[ViewSpec], generator: torch.Generator,
             dtype: torch.dtype = torch.float32) -> list[Tensor]:
    """One view of every sample per spec: ``make_view_batch`` on images
    (the square path), ``finish_views`` on a list of views cut already."""
    if isinstance(images, (list, tuple)):
        return finish_views(list(images), specs, generator, dtype)
    return make_view_batch(images, specs, generator, dtype)


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
