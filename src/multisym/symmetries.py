"""Symmetry groups as data: finite groups acting on batches of images.

The paper's axes (docs/method.md#symmetry-groups): 4-fold rotation C4 (main
axis), the half-swap of the top and bottom image halves, and intensity inversion
(both of order 2, Table 6). Each group has its order, a batched action on
tensors of shape (B, C, H, W) with values in [0, 1] on any device, and its
composition and inverse, so tests can check that the action is a group action.

Inversion acts in pixel space, x -> 1 - x on [0, 1] images, before the
normalisation (the official code inverted normalised tensors,
docs/method.md#where-the-official-code-differs item 8).

The cyclic rotation groups C_N of Gerken & Kessel's emergence experiment
(``rot4``, ``rot8``, ``rot12``, ``rot16``; docs/method.md#emergent-equivariance)
act on images supported on the inscribed disc: element k is
x -> D ⊙ R_{2πk/N}(D ⊙ x), with D the disc mask (pixel centres at distance at
most H/2 from the image centre) and R_θ the counter-clockwise rotation about
the centre. Angles that are multiples of 90° use ``rot90`` and are exact (the
mask is invariant under them), so C4 ⊂ C8 ⊂ C16 and C4 ⊂ C12 hold exactly and
``rot4`` is ``rotation`` on masked images; other angles use torchvision's
``rotate`` with bilinear interpolation and zero fill, so C8, C12 and C16 are
group actions only up to interpolation error. Every element masks, the
identity included: without it the corners, empty after a 45° turn but not
before, would tell the elements of an orbit apart. ``rotation`` stays the
unmasked exact C4 of the MSE members.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from multisym.runtime import to_device


@dataclass(frozen=True)
class SymmetryGroup:
    """A finite group G = {0, ..., order-1} acting on images.

    ``act(x, g)`` applies element ``g[i]`` to image ``x[i]``; element 0 is the
    identity on the images ``restrict`` keeps (all images where it is None).
    ``compose(a, b)`` is the element of "first b, then a".
    """

    name: str
    order: int
    _apply_element: Callable[[Tensor, int], Tensor]
    compose: Callable[[Tensor, Tensor], Tensor]
    inverse: Callable[[Tensor], Tensor]
    # the projection onto the images the group acts on (the disc mask of C_N); None: all images
    restrict: Callable[[Tensor], Tensor] | None = None

    @property
    def exact(self) -> bool:
        """Whether every element permutes pixels or values exactly (no interpolation)."""
        return self.name not in INTERPOLATED

    def identity(self, images: Tensor) -> Tensor:
        """Element 0 applied: a copy, restricted to the images the group acts on."""
        return self.restrict(images) if self.restrict is not None else images.clone()

    def act(self, images: Tensor, elements: Tensor) -> Tensor:
        """Apply element ``elements[i]`` to ``images[i]`` for the whole batch."""
        if images.ndim != 4:
            raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
        if elements.shape != images.shape[:1]:
            raise ValueError(
                f"need one element per image: {tuple(elements.shape)} vs batch {images.shape[0]}"
            )
        # elements partition the batch, so each write reads only rows not yet written
        out = base = self.identity(images)
        for g in range(1, self.order):
            # Draws live on the CPU, so finding each element's samples never waits for the device.
            index = (elements == g).nonzero().squeeze(1)
            if index.numel():
                index = to_device(index, images.device)
                out[index] = self._apply_element(base[index], g)
        return out

    def orbit(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Every element applied to every image: ``(|G|·B, C, H, W)`` images
        ordered element-major, and their element labels (the Eq targets)."""
        batch = images.shape[0]
        labels = torch.arange(self.order, device=images.device).repeat_interleave(batch)
        base = self.identity(images)
        copies = [base] + [self._apply_element(base, g) for g in range(1, self.order)]
        return torch.cat(copies), labels

    def sample_non_identity(
        self, batch: int, p: float, generator: torch.Generator
    ) -> Tensor:
        """Inv-mode draw (docs/method.md#inv-members): identity with probability
        1 - p, otherwise a uniformly chosen non-identity element. Drawn on
        ``generator`` (CPU)."""
        apply = torch.rand(batch, generator=generator) < p
        other = torch.randint(1, self.order, (batch,), generator=generator)
        return torch.where(apply, other, torch.zeros_like(other))


def _rotate(images: Tensor, quarter_turns: int) -> Tensor:
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"rotation needs square images, got {tuple(images.shape[-2:])}")
    return torch.rot90(images, quarter_turns, dims=(-2, -1))


def disc_mask(height: int, width: int, device=None) -> Tensor:
    """(H, W) booleans: pixel centres within the inscribed disc, radius min(H, W) / 2."""
    rows = torch.arange(height, device=device, dtype=torch.float32) - (height - 1) / 2
    cols = torch.arange(width, device=device, dtype=torch.float32) - (width - 1) / 2
    return rows[:, None] ** 2 + cols[None, :] ** 2 <= (min(height, width) / 2) ** 2


def restrict_to_disc(images: Tensor) -> Tensor:
    """Pixels outside the inscribed disc set to zero (a new tensor)."""
    mask = disc_mask(images.shape[-2], images.shape[-1], images.device)
    return images * mask.to(images.dtype)


def rotate_degrees(images: Tensor, degrees: float) -> Tensor:
    """D ⊙ R_θ(D ⊙ x), θ counter-clockwise in degrees: exact ``rot90`` for
    multiples of 90°, else torchvision's bilinear ``rotate`` with zero fill."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2.functional import rotate

    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"rotation needs square images, got {tuple(images.shape[-2:])}")
    masked = restrict_to_disc(images)
    quarter_turns, rest = divmod(float(degrees) % 360.0, 90.0)
    if rest == 0.0:
        return torch.rot90(masked, int(quarter_turns), dims=(-2, -1))
    turned = rotate(masked, float(degrees), interpolation=InterpolationMode.BILINEAR, expand=False, fill=0.0)
    # bilinear weights reach one pixel past the disc's rim
    return restrict_to_disc(turned)


def _cyclic_rotation(order: int) -> Callable[[Tensor, int], Tensor]:
    return lambda images, element: rotate_degrees(images, 360.0 * element / order)


def _half_swap(images: Tensor, _: int) -> Tensor:
    height = images.shape[-2]
    if height % 2:
        raise ValueError(f"half-swap needs an even image height, got {height}")
    return torch.roll(images, height // 2, dims=-2)


def _invert(images: Tensor, _: int) -> Tensor:
    return 1.0 - images


def _cyclic(order: int):
    return (lambda a, b: (a + b) % order), (lambda a: (-a) % order)


ROTATION_ORDERS = (4, 8, 12, 16)
INTERPOLATED = frozenset(f"rot{order}" for order in ROTATION_ORDERS if 4 % order)
# the paper's axes, acting on whole images
AXES: dict[str, SymmetryGroup] = {
    "rotation": SymmetryGroup("rotation", 4, _rotate, *_cyclic(4)),
    "halfswap": SymmetryGroup("halfswap", 2, _half_swap, *_cyclic(2)),
    "invert": SymmetryGroup("invert", 2, _invert, *_cyclic(2)),
}
# Gerken & Kessel's C_N, acting on images restricted to the inscribed disc
CYCLIC_ROTATIONS: dict[str, SymmetryGroup] = {
    f"rot{order}": SymmetryGroup(f"rot{order}", order, _cyclic_rotation(order), *_cyclic(order), restrict_to_disc)
    for order in ROTATION_ORDERS
}
GROUPS: dict[str, SymmetryGroup] = {**AXES, **CYCLIC_ROTATIONS}


def get_group(name: str) -> SymmetryGroup:
    try:
        return GROUPS[name]
    except KeyError:
        raise ValueError(
            f"unknown symmetry axis {name!r}; known axes: {sorted(GROUPS)}"
        ) from None
