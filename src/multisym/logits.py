"""Stored logits: float16 gaps to each row's maximum plus the maxima
(docs/workflow.md#logits-are-stored-compactly), written by every stage that
evaluates a classifier and read by the ensemble and evaluation steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from multisym.files import write_npz

FLOAT16_MAX = 65504.0


def row_gaps(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(z − max z, max z) of each row of ``logits`` (..., C), float32: the two
    arrays ``write_logits`` stores (a row of NaN, from a diverged model,
    stays NaN)."""
    logits = np.asarray(logits, np.float32)
    top = logits.max(axis=-1)
    with np.errstate(invalid="ignore"):
        gaps = logits - top[..., None]
    return gaps, top


def write_logits(path: str | Path, **arrays: np.ndarray) -> None:
    """Write a logits file atomically. Each ``{name}_logits`` array (N, C) is
    stored compactly as its rows' maxima ``{name}_logit_max`` (N,) float32
    and z − max in float16 (half the bytes of float32; the ensemble jobs
    read every member's logits whole). Relative to the row's maximum, the
    top class is exactly 0 and the classes near it, which decide the
    prediction and carry the probability, keep 11 significant bits of their
    gap to it: no near-tie is reordered by rounding the raw logits. Where a
    gap is beyond float16's range (±65,504) the array stays float32. Other
    arrays are stored as they are; ``logits_of`` reads them back."""
    out = {}
    for key, array in arrays.items():
        if not key.endswith("_logits"):
            out[key] = array
            continue
        gaps, top = row_gaps(array)
        finite = gaps[np.isfinite(gaps)]
        fits = not finite.size or -finite.min() <= FLOAT16_MAX
        out[key] = gaps.astype(np.float16) if fits else gaps
        out[f"{key[:-len('_logits')]}_logit_max"] = top
    write_npz(path, **out)


def logits_of(stored: dict, name: str) -> np.ndarray:
    """The float32 logits ``{name}_logits`` of a file written by
    ``write_logits``: its gaps plus its row maxima."""
    return stored[f"{name}_logits"].astype(np.float32) + stored[f"{name}_logit_max"][..., None]
