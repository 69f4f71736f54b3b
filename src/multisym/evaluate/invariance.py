"""How much a classifier's prediction respects a finite group (docs/method.md#orbit-consistency).

Everything here reads logits on an orbit, an array of shape ``(|G|, N, C)``
whose first index is the group element (0 = identity) applied to each of N
inputs, or, for the argmax-based measures, the predicted classes on it,
``(|G|, N)`` (the ``*_of_predictions`` helpers, which the logit-based ones
call: a stored run that keeps only its members' predictions gives the same
numbers). No torch, so analysis jobs and figures stay light.

- Orbit same predictions (Gerken & Kessel 2024):
  OSP_f(x) = Σ_{g∈G} 1[argmax f(g·x) = argmax f(x)] ∈ {1, …, |G|}.
- Orbit-consistent fraction: mean_x 1[OSP_f(x) = |G|].
- An ensemble's OSP is the OSP of its averaged output, never the mean of its
  members' OSPs: ``logit`` averages raw logits (what the NTK argument covers),
  ``prob`` averages softmax probabilities (what deep ensembles predict with).
"""

from __future__ import annotations

import numpy as np

from multisym.ensembles.metrics import softmax

COMBINATIONS = ("logit", "prob")


def predictions(orbit_logits: np.ndarray) -> np.ndarray:
    """(|G|, N) predicted classes."""
    return np.asarray(orbit_logits).argmax(axis=-1)


def osp_of_predictions(predicted: np.ndarray) -> np.ndarray:
    """(N,) orbit same predictions of each input, an integer in 1..|G|, from
    the (|G|, N) predicted classes on its orbit."""
    predicted = np.asarray(predicted)
    return (predicted == predicted[0]).sum(axis=0)


def consistent_of_predictions(predicted: np.ndarray) -> np.ndarray:
    """(N,) whether the (|G|, N) predicted classes are the same on the whole orbit."""
    return osp_of_predictions(predicted) == np.asarray(predicted).shape[0]


def osp(orbit_logits: np.ndarray) -> np.ndarray:
    """(N,) orbit same predictions of each input, an integer in 1..|G|."""
    return osp_of_predictions(predictions(orbit_logits))


def orbit_consistent(orbit_logits: np.ndarray) -> np.ndarray:
    """(N,) whether the prediction is the same on the whole orbit."""
    return consistent_of_predictions(predictions(orbit_logits))


def combine(member_orbit_logits: np.ndarray, how: str) -> np.ndarray:
    """An ensemble's output on the orbit from its members' (M, |G|, N, C)
    logits: the mean logit, or the log of the mean probability (whose argmax is
    the argmax of the mean probability)."""
    stacked = np.asarray(member_orbit_logits, dtype=np.float64)
    if how == "logit":
        return stacked.mean(axis=0)
    if how == "prob":
        return np.log(np.maximum(softmax(stacked).mean(axis=0), 1e-300))
    raise ValueError(f"unknown combination {how!r}; known: {COMBINATIONS}")


def osp_histogram(values: np.ndarray, order: int) -> list[float]:
    """Fraction of inputs with OSP = 1, 2, …, |G| (the distribution over inputs)."""
    counts = np.bincount(np.asarray(values, dtype=np.int64), minlength=order + 1)[1:order + 1]
    return (counts / max(1, len(values))).tolist()


def mean_osp_of_predictions(member_predictions: np.ndarray) -> np.ndarray:
    """(M,) mean OSP of each member, from (M, |G|, N) predicted classes."""
    return np.array([osp_of_predictions(p).mean() for p in member_predictions])


def mean_osp(member_orbit_logits: np.ndarray) -> np.ndarray:
    """(M,) mean OSP of each member, from (M, |G|, N, C) logits."""
    return mean_osp_of_predictions(predictions(member_orbit_logits))
