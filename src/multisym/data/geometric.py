"""The geometric steps of a view (docs/method.md#views): which pixels it shows
(RandomResizedCrop, resampled by ``roi_align``) and which way round
(horizontal flip), batched over (B, C, H, W) images with per-sample
parameters.

Every random number is drawn from an explicit CPU ``torch.Generator``
(``check_generator``) and then moved to the images' device, so one generator
state gives the same boxes on CPU and CUDA.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchvision.ops import roi_align

from multisym.runtime import to_device

__all__ = ["check_generator", "uniform", "sample_crop_boxes", "crop_resize", "hflip"]

CROP_TRIES = 10


def check_generator(generator: torch.Generator) -> None:
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if generator.device.type != "cpu":
        raise ValueError(f"generator must live on the CPU, got device {generator.device}")


def uniform(u: Tensor, lo: float, hi: float) -> Tensor:
    """Map u ~ U[0, 1) to U[lo, hi)."""
    return lo + (hi - lo) * u


def fallback_box(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int]:
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
    check_generator(generator)
    u = torch.rand(4, batch, CROP_TRIES, generator=generator, dtype=torch.float64)
    area = uniform(u[0], scale[0], scale[1]) * (height * width)
    log_r = uniform(u[1], math.log(ratio[0]), math.log(ratio[1]))
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

    fb_h, fb_w = fallback_box(height, width, ratio)
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


def hflip(images: Tensor, mask: Tensor) -> Tensor:
    """Flip the width axis of the samples where ``mask`` (B,) is True."""
    return torch.where(mask.reshape(-1, 1, 1, 1), images.flip(-1), images)
