"""Symmetry groups as data: finite groups acting on batches of images.

The paper's axes (docs/method.md#symmetry-groups): 4-fold rotation C4 (main
axis), the half-swap of the top and bottom image halves, and intensity inversion
(both of order 2, Table 6). Each group has its order, a batched action on
tensors of shape (B, C, H, W) with values in [0, 1] on any device, and its
composition and inverse, so tests can check that the action is a group action.

Inversion acts in pixel space, x -> 1 - x on [0, 1] images, before the
normalisation (the official code inverted normalised tensors,
docs/method.md#where-the-official-code-differs item 8).
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
    identity. ``compose(a, b)`` is the element of "first b, then a".
    """

    name: str
    order: int
    _apply_element: Callable[[Tensor, int], Tensor]
    compose: Callable[[Tensor, Tensor], Tensor]
    inverse: Callable[[Tensor], Tensor]

    def act(self, images: Tensor, elements: Tensor) -> Tensor:
        """Apply element ``elements[i]`` to ``images[i]`` for the whole batch."""
        if images.ndim != 4:
            raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
        if elements.shape != images.shape[:1]:
            raise ValueError(
                f"need one element per image: {tuple(elements.shape)} vs batch {images.shape[0]}"
            )
        out = images.clone()
        for g in range(1, self.order):
            # Draws live on the CPU, so finding each element's samples never waits for the device.
            index = (elements == g).nonzero().squeeze(1)
            if index.numel():
                index = to_device(index, images.device)
                out[index] = self._apply_element(images[index], g)
        return out

    def orbit(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Every element applied to every image: ``(|G|·B, C, H, W)`` images
        ordered element-major, and their element labels (the Eq targets)."""
        batch = images.shape[0]
        labels = torch.arange(self.order, device=images.device).repeat_interleave(batch)
        copies = [images] + [self._apply_element(images, g) for g in range(1, self.order)]
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


def _half_swap(images: Tensor, _: int) -> Tensor:
    height = images.shape[-2]
    if height % 2:
        raise ValueError(f"half-swap needs an even image height, got {height}")
    return torch.roll(images, height // 2, dims=-2)


def _invert(images: Tensor, _: int) -> Tensor:
    return 1.0 - images


def _cyclic(order: int):
    return (lambda a, b: (a + b) % order), (lambda a: (-a) % order)


GROUPS: dict[str, SymmetryGroup] = {
    "rotation": SymmetryGroup("rotation", 4, _rotate, *_cyclic(4)),
    "halfswap": SymmetryGroup("halfswap", 2, _half_swap, *_cyclic(2)),
    "invert": SymmetryGroup("invert", 2, _invert, *_cyclic(2)),
}


def get_group(name: str) -> SymmetryGroup:
    try:
        return GROUPS[name]
    except KeyError:
        raise ValueError(
            f"unknown symmetry axis {name!r}; known axes: {sorted(GROUPS)}"
        ) from None
