"""Ensemble metrics from stored member logits (docs/method.md#metrics).

Shapes: member logits ``(M, N, C)``, labels ``(N,)``. The ensemble prediction is
the mean of the members' softmax probabilities
(docs/method.md#averaging-probabilities). Every metric is a mean over samples of
a per-sample quantity where one exists, so the bootstrap resamples per-sample
values instead of recomputing from logits. NumPy only (tables and figures never
import torch).

These functions are the definitions. The ensemble jobs compute the same
values through ``multisym.ensembles.outputs``, which prepares each member once and
shares it between every ensemble of a pool (paper scale: 50,000 x 1,000 x 18);
``tests/test_outputs.py`` holds the two to each other.
"""

from __future__ import annotations

from itertools import combinations
from typing import Callable

import numpy as np

from multisym.resamples import percentile_ci  # the CIs of every result, and of paired differences

ECE_BINS = 15
UQ_POINTS = 50  # fractions removed on the uncertainty-quantification curve
PROB_FLOOR = 1e-12  # NLL clamps probabilities here, so one confident miss cannot give inf


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def ensemble_probs(logits: np.ndarray) -> np.ndarray:
    """f̄(x) = (1/M) Σ_m softmax(z_m(x)), shape (N, C)."""
    return softmax(np.asarray(logits, dtype=np.float64)).mean(axis=0)


# ------------------------------------------------------- per-sample values
def correct(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """1[argmax_c p_c(x) = y]."""
    return (probs.argmax(axis=-1) == labels).astype(np.float64)


def nll_terms(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """−log f̄_y(x), with f̄_y clamped at 1e-12."""
    return -np.log(np.maximum(probs[np.arange(len(labels)), labels], PROB_FLOOR))


def brier_terms(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Σ_c (f̄_c(x) − 1[c = y])², in [0, 2] (not Ovadia's form shifted by −1)."""
    onehot = np.zeros_like(probs)
    onehot[np.arange(len(labels)), labels] = 1.0
    return ((probs - onehot) ** 2).sum(axis=-1)


def inconsistency_terms(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Pairwise error inconsistency per sample (docs/method.md#diversity,
    Loh et al. Table 3): the share of member pairs in which exactly one of the
    two is correct."""
    hits = logits.argmax(axis=-1) == labels[None]
    pairs = list(combinations(range(len(logits)), 2))
    if not pairs:
        return np.zeros(logits.shape[1])
    return np.mean([hits[i] != hits[j] for i, j in pairs], axis=0).astype(np.float64)


def kl_terms(logits: np.ndarray) -> np.ndarray:
    """Pairwise KL per sample: the mean of KL(p_j ‖ p_i) over ordered pairs
    i ≠ j. The archived code took one direction per unordered pair
    (docs/method.md#diversity), which makes the value depend on the order the
    members are listed in; averaging both directions removes that."""
    log_p = np.log(np.maximum(softmax(np.asarray(logits, dtype=np.float64)), PROB_FLOOR))
    pairs = [(i, j) for i in range(len(logits)) for j in range(len(logits)) if i != j]
    if not pairs:
        return np.zeros(logits.shape[1])
    return np.mean([(np.exp(log_p[j]) * (log_p[j] - log_p[i])).sum(-1) for i, j in pairs], axis=0)


def spread_terms(values: np.ndarray) -> np.ndarray:
    """Member spread per sample: the unbiased std across members, averaged over
    classes (the code behind Table 3; the paper's Eq. 4 writes a variance)."""
    if len(values) < 2:
        return np.zeros(values.shape[1])
    return values.std(axis=0, ddof=1).mean(axis=-1)


def bald_terms(logits: np.ndarray) -> np.ndarray:
    """BALD uncertainty H[f̄(x)] − (1/M) Σ_m H[p_m(x)] in nats (entropy for M = 1)."""
    probs = softmax(np.asarray(logits, dtype=np.float64))
    mean = probs.mean(axis=0)

    def entropy(p):
        return -(p * np.log(np.maximum(p, PROB_FLOOR))).sum(-1)

    if len(probs) == 1:
        return entropy(mean)
    return entropy(mean) - entropy(probs).mean(axis=0)


# ------------------------------------------------------------ dataset level
def ece(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE = Σ_b (|B_b| / N) |acc_b − conf_b| over equal-width bins of the top-label
    confidence on [0, 1]; bins are [lo, hi), the last one [lo, 1] (torchmetrics')."""
    confidence = probs.max(axis=-1)
    hits = correct(probs, labels)
    index = np.minimum((confidence * bins).astype(int), bins - 1)
    conf_sum = np.bincount(index, weights=confidence, minlength=bins)
    hit_sum = np.bincount(index, weights=hits, minlength=bins)
    return float(np.abs(hit_sum - conf_sum).sum() / len(labels))


def uq_curve(hits: np.ndarray, uncertainty: np.ndarray, points: int = UQ_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy of the samples left after dropping the r most uncertain ones,
    for ``points`` evenly spaced fractions r / N in [0, 0.98]."""
    ordered = hits[np.argsort(-uncertainty, kind="stable")]
    n = len(hits)
    fractions = np.linspace(0.0, 0.98, points)
    removed = np.floor(fractions * n).astype(int)
    tail_sums = np.concatenate([np.cumsum(ordered[::-1])[::-1], [0.0]])
    return fractions, tail_sums[removed] / (n - removed)


def auuqc(logits: np.ndarray, labels: np.ndarray, points: int = UQ_POINTS) -> tuple[float, np.ndarray, np.ndarray]:
    """Area under the uncertainty-quantification curve (docs/method.md#auuqc,
    Loh et al. Fig. 7): sort by BALD uncertainty, drop the r most uncertain
    samples for ``points`` evenly spaced fractions in [0, 0.98], take the
    accuracy of the rest, average. Works for any number of samples (the archived
    code hard-coded 50,000). Returns (AUUQC, fractions removed, accuracies)."""
    hits = correct(ensemble_probs(logits), labels)
    fractions, accuracies = uq_curve(hits, bald_terms(logits), points)
    return float(accuracies.mean()), fractions, accuracies


def per_class_accuracy(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    return class_accuracy(np.asarray(logits).argmax(-1) == labels, labels, num_classes)[0]


def class_accuracy(hits: np.ndarray, labels: np.ndarray, num_classes: int,
                   weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(accuracy of each class, its sample count) from per-sample hits; ``weights``:
    how often each sample counts (a bootstrap resample as counts). A class
    without samples has accuracy 0."""
    weights = np.ones(len(labels)) if weights is None else weights
    counts = np.bincount(labels, weights=weights, minlength=num_classes)
    return np.bincount(labels, weights=weights * hits, minlength=num_classes) / np.maximum(counts, 1), counts


def class_dominance(logits_a: np.ndarray, logits_b: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
    """Share of classes (in %) where model a's per-class accuracy is higher, lower
    or exactly equal to model b's (Table 1, Table 9)."""
    hits_a = np.asarray(logits_a).argmax(-1) == labels
    hits_b = np.asarray(logits_b).argmax(-1) == labels
    return dominance_of_hits(hits_a, hits_b, labels, num_classes)


def dominance_of_hits(hits_a: np.ndarray, hits_b: np.ndarray, labels: np.ndarray, num_classes: int,
                      weights: np.ndarray | None = None) -> dict:
    """``class_dominance`` from each model's per-sample hits; ``weights``: how
    often each sample counts (a bootstrap resample as counts)."""
    accuracy_a, counts = class_accuracy(hits_a, labels, num_classes, weights)
    present = counts > 0
    if not present.any():
        raise ValueError("class dominance needs at least one labelled sample")
    a = accuracy_a[present]
    b = class_accuracy(hits_b, labels, num_classes, weights)[0][present]
    total = len(a)
    return {
        "a_better": 100.0 * float((a > b).sum()) / total,
        "b_better": 100.0 * float((a < b).sum()) / total,
        "tie": 100.0 * float((a == b).sum()) / total,
    }


# ------------------------------------------------------------------- bundle
def ensemble_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray | float]:
    """Per-sample values of every metric of one ensemble, plus ECE (which is
    not a mean of per-sample values). Accuracies in %, efficiency in points."""
    logits = np.asarray(logits, dtype=np.float64)
    probs = ensemble_probs(logits)
    member_hits = np.stack([correct(softmax(z), labels) for z in logits])
    hits = correct(probs, labels)
    return {
        "accuracy": 100.0 * hits,
        "nll": nll_terms(probs, labels),
        "brier": brier_terms(probs, labels),
        "inconsistency": 100.0 * inconsistency_terms(logits, labels),
        "kl": kl_terms(logits),
        "spread_prob": spread_terms(softmax(logits)),
        "spread_logit": spread_terms(logits),
        "member_accuracy": 100.0 * member_hits.mean(axis=0),
        "efficiency": 100.0 * (hits - member_hits.mean(axis=0)),
        "_probs": probs,
    }


def summarise(logits: np.ndarray, labels: np.ndarray, bootstrap: dict) -> dict[str, dict]:
    """Every metric of one ensemble with a percentile bootstrap CI over test samples:
    {metric: {"value": v, "ci": [lo, hi]}}."""
    terms = ensemble_metrics(logits, labels)
    probs = terms.pop("_probs")
    draws = bootstrap_indices(len(labels), bootstrap["samples"], bootstrap["seed"])
    out = {}
    for name, values in terms.items():
        out[name] = {"value": float(values.mean()), "ci": percentile_ci(values[draws].mean(axis=1), bootstrap["level"])}
    ece_draws = np.array([ece(probs[d], labels[d]) for d in draws])
    out["ece"] = {"value": ece(probs, labels), "ci": percentile_ci(ece_draws, bootstrap["level"])}
    hits, uncertainty = terms["accuracy"] / 100.0, bald_terms(logits)
    auuqc_draws = np.array([uq_curve(hits[d], uncertainty[d])[1].mean() for d in draws])
    out["auuqc"] = {"value": float(uq_curve(hits, uncertainty)[1].mean()),
                    "ci": percentile_ci(auuqc_draws, bootstrap["level"])}
    return out


def bootstrap_indices(n: int, samples: int, seed: int) -> np.ndarray:
    """(samples, n) indices drawn with replacement; the same seed gives the same
    resamples for every ensemble, so CIs of two ensembles are paired. Resample
    b is drawn from its own stream, ``resample_stream(seed, b)``, so any
    subset of resamples can be drawn apart (on several threads)."""
    return np.stack([resample_stream(seed, b).integers(0, n, size=n) for b in range(samples)])


def resample_stream(seed: int, resample: int) -> np.random.Generator:
    """The generator of bootstrap resample ``resample``: NumPy's SeedSequence
    of the pair (seed, resample), which makes independent streams."""
    return np.random.default_rng([seed, resample])


def bootstrap_ci(statistic: Callable[[np.ndarray], float], n: int, samples: int, seed: int,
                 level: float) -> list[float]:
    """Percentile CI of any statistic of a resample of n items, given as a
    function of the resampled index array."""
    values = np.array([statistic(d) for d in bootstrap_indices(n, samples, seed)])
    return percentile_ci(values, level)
