"""Views cut from an image as decoded, at its own size and aspect ratio
(``dataset.views_from: original``, docs/datasets.md#views-from-the-original-image).

A :class:`Cut` is the geometric half of one view: RandomResizedCrop with
torchvision's ``RandomResizedCrop.get_params`` semantics on the image's own
height H and width W (area fraction s ~ U[scale], aspect ratio
r = exp(U[log r_lo, log r_hi]), w = round(sqrt(s H W r)), h = round(sqrt(s H W / r)),
ten tries, then the whole image with its ratio clipped to ``ratio``), the box
resampled to ``size`` x ``size`` with the view's interpolation, antialiased
(Loh et al. §4: bicubic 224-px views, a bilinear 96-px small crop). The
photometric half (flip, jitter, grayscale, blur, solarize) stays batched on
the device (``views.finish_views``).

Every sample's boxes come from a CPU generator of its own, seeded by
:func:`cut_seeds` from (the run's view seed, epoch, step, position in the
batch): counter-based, so a decoding worker can cut the next batch while
this one trains, a resumed run cuts exactly the same boxes, and the cut is
the same function of the same seed on every path (in memory, streamed,
CPU or device decoder).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from multisym.data.geometric import CROP_TRIES, fallback_box

__all__ = ["INTERPOLATIONS", "Cut", "crop_box", "resized_crop", "cut_views", "cut_seeds", "center_view"]

INTERPOLATIONS = ("bilinear", "bicubic")


@dataclass(frozen=True)
class Cut:
    """One view's crop: ``size`` px output, area range ``scale``, aspect range
    ``ratio`` (w/h), resampled with ``interpolation`` (antialiased)."""

    size: int
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    interpolation: str = "bicubic"

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"Cut.interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")


def _mode(interpolation: str):
    from torchvision.transforms import InterpolationMode

    return {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC}[interpolation]


def crop_box(height: int, width: int, cut: Cut, generator: torch.Generator) -> tuple[int, int, int, int]:
    """(top, left, h, w) of one RandomResizedCrop box on an H x W image: the
    draws and rules of ``geometric.sample_crop_boxes`` for one sample, in
    Python floats (a batch of one costs that function a millisecond of tensor
    calls; this is a few microseconds)."""
    u = torch.rand(4, CROP_TRIES, generator=generator, dtype=torch.float64).tolist()
    (s_lo, s_hi), (log_lo, log_hi) = cut.scale, (math.log(cut.ratio[0]), math.log(cut.ratio[1]))
    for t in range(CROP_TRIES):
        area = (s_lo + (s_hi - s_lo) * u[0][t]) * (height * width)
        aspect = math.exp(log_lo + (log_hi - log_lo) * u[1][t])
        w, h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < w <= width and 0 < h <= height:
            return math.floor(u[2][t] * (height - h + 1)), math.floor(u[3][t] * (width - w + 1)), h, w
    h, w = fallback_box(height, width, cut.ratio)
    return (height - h) // 2, (width - w) // 2, h, w


def resized_crop(image: Tensor, box: tuple[int, int, int, int], size: int, interpolation: str) -> Tensor:
    """The ``box`` (top, left, h, w) of a uint8 (C, H, W) image resampled to
    size x size, antialiased: torchvision's ``resized_crop``, on whatever device
    the image is."""
    from torchvision.transforms.v2 import functional as F

    return F.resized_crop(image, *box, [size, size], interpolation=_mode(interpolation), antialias=True)


def cut_views(image: Tensor, seed: int, cuts: tuple[Cut, ...]) -> list[Tensor]:
    """Every cut of one uint8 (C, H, W) image, boxes drawn in ``cuts``' order
    from a generator seeded with ``seed``."""
    generator = torch.Generator().manual_seed(int(seed))
    height, width = image.shape[-2:]
    return [resized_crop(image, crop_box(height, width, cut, generator), cut.size, cut.interpolation)
            for cut in cuts]


def center_view(image: Tensor, resize: int, crop: int) -> Tensor:
    """The evaluation view: the shorter side resized to ``resize`` (bilinear,
    antialiased), the centre ``crop`` x ``crop`` (Loh et al. §4: Resize(256) +
    CenterCrop(224))."""
    from torchvision.transforms.v2 import functional as F

    return F.center_crop(F.resize(image, [resize], antialias=True), [crop])


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection of uint64 that spreads every input bit."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def cut_seeds(base: int, epoch: int, step: int, count: int) -> np.ndarray:
    """``count`` per-sample seeds (uint64) of batch ``step`` of ``epoch`` in a
    run whose view seed is ``base``; distinct inputs give unrelated seeds."""
    with np.errstate(over="ignore"):
        x = _mix(np.uint64(base % 2**64) + _GOLDEN)
        for part in (epoch, step):
            x = _mix(x ^ (np.uint64(part) * _GOLDEN))
        return _mix(x ^ (np.arange(count, dtype=np.uint64) + np.uint64(1)) * _GOLDEN)
