"""How fast a finite ensemble approaches invariance
(docs/method.md#the-finite-ensemble-rate): the deviation of the ensemble
mean from invariance against the number of members M, and its log-log slope.

For members f_1..f_M with outputs on the orbit {g.x : g in G} of each input,
the ensemble mean is f_bar = (1/M) sum_m f_m and its deviation is

    D(M) = mean over inputs x and over the |G| - 1 elements g != e of
           || f_bar(x) - f_bar(g.x) ||_2,

on raw outputs (the Ising energy per site, a scalar, so the norm is |.|; for
vector outputs such as logits the Euclidean norm over the last axis). When
the members are drawn independently from a distribution whose mean function
is invariant, f_bar(x) - f_bar(g.x) is a mean of M independent zero-mean
terms, so D(M) = c / sqrt(M) up to sampling noise: a slope of -1/2 on a
log-log plot. An ensemble whose mean is not invariant levels off at the
infinite ensemble's deviation instead (slope above -1/2).

D(M) at a size is averaged over disjoint sub-ensembles (consecutive blocks of
one random order of the members); the slope b of log D = a + b log M is fitted by least squares
over the sizes. Its CI is the normal interval b +- z * SE, SE the standard
deviation of b over bootstrap resamples of the members (drawn with
replacement, the order redrawn). Not the percentile interval: a
resample's members have a mean that differs from the population's by about
sigma / sqrt(N), so a resample's D(M) levels off at large M even where the
members' population mean is invariant, and its slopes are shifted upwards,
not spread wider (on independent random functions the percentile interval
misses -1/2 while the normal one covers it).
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np


def member_seed(seed: int, index: int) -> int:
    """Member ``index``'s seed in a study seeded ``seed``: its own for every
    index below 100,000 (the schema's limit on members)."""
    return seed * 100_000 + index


def differences(outputs: np.ndarray) -> np.ndarray:
    """f(x) - f(g.x) for g != e from orbit outputs (M, |G|, N[, C]), element 0
    the identity: (M, |G| - 1, N[, C])."""
    return outputs[:, :1] - outputs[:, 1:]


def _norms(means: np.ndarray) -> np.ndarray:
    """Each sub-ensemble's mean over inputs and group elements of the norm of
    its mean difference, from (groups, |G|-1, N[, C])."""
    norms = np.abs(means) if means.ndim == 3 else np.linalg.norm(means, axis=-1)
    return norms.reshape(len(means), -1).mean(axis=1)


def group_deviations(diffs: np.ndarray, size: int, rng: np.random.Generator,
                     draws: int | None = None) -> np.ndarray:
    """The deviation of each of the disjoint sub-ensembles of ``size``
    members (a random partition, at most ``draws`` of them): the mean over
    inputs and group elements of ||f_bar(x) - f_bar(g.x)||, from the members'
    differences (M, |G|-1, N[, C])."""
    members = len(diffs)
    groups = members // size
    if groups < 1:
        raise ValueError(f"no sub-ensemble of {size} members among {members}")
    if draws is not None:
        groups = min(groups, draws)
    picked = rng.permutation(members)[: groups * size]
    return _norms(diffs[picked].reshape(groups, size, *diffs.shape[1:]).mean(axis=1))


def deviation(diffs: np.ndarray, size: int, rng: np.random.Generator, draws: int | None = None) -> float:
    """D(size): the mean of ``group_deviations``."""
    return float(group_deviations(diffs, size, rng, draws).mean())


def curve(diffs: np.ndarray, sizes: list[int], rng: np.random.Generator, draws: int | None = None) -> np.ndarray:
    """D(M) at every size of ``sizes``, all from one random order of the
    members: the sub-ensembles of a size are consecutive blocks of it, their
    sums differences of one running sum (one pass over the members' outputs
    for every size, which is what makes thousands of members and hundreds
    of resamples affordable)."""
    members = len(diffs)
    if max(sizes) > members:
        raise ValueError(f"no sub-ensemble of {max(sizes)} members among {members}")
    flat = diffs.reshape(members, -1)[rng.permutation(members)]
    running = np.zeros((members + 1, flat.shape[1]))
    np.cumsum(flat, axis=0, out=running[1:])
    values = []
    for size in sizes:
        groups = members // size if draws is None else min(members // size, draws)
        ends = np.arange(1, groups + 1) * size
        means = (running[ends] - running[ends - size]) / size
        values.append(float(_norms(means.reshape(groups, *diffs.shape[1:])).mean()))
    return np.array(values)


def slope(sizes, values) -> tuple[float, float]:
    """Least-squares fit of log D = a + b log M: (b, a)."""
    b, a = np.polyfit(np.log(np.asarray(sizes, dtype=float)), np.log(np.asarray(values, dtype=float)), 1)
    return float(b), float(a)


def sizes_up_to(members: int, smallest: int = 1) -> list[int]:
    """Powers of two from ``smallest`` up to ``members``, and ``members``
    itself: log-spaced sizes for the fit."""
    out, size = [], smallest
    while size <= members:
        out.append(size)
        size *= 2
    if out and out[-1] != members:
        out.append(members)
    return out


def fit(diffs: np.ndarray, sizes: list[int], resamples: int, level: float, seed: int,
        draws: int | None = None) -> dict:
    """D(M) over ``sizes``, the fitted slope b with its bootstrap CI over
    members (normal interval at ``level`` from the bootstrap SE) and the intercept."""
    rng = np.random.default_rng(seed)
    values = curve(diffs, sizes, rng, draws)
    b, a = slope(sizes, values)
    members, boot = len(diffs), []
    for _ in range(resamples):
        sample = diffs[rng.integers(0, members, size=members)]
        boot.append(slope(sizes, curve(sample, sizes, rng, draws))[0])
    half = NormalDist().inv_cdf(0.5 + level / 2.0) * float(np.std(boot, ddof=1))
    return {"sizes": list(sizes), "deviation": values.tolist(), "slope": b, "intercept": a,
            "slope_ci": [b - half, b + half], "slope_se": half / NormalDist().inv_cdf(0.5 + level / 2.0),
            "resamples": resamples, "level": level}


def initialisation_fits(outputs: np.ndarray, sizes: list[int], resamples: int, level: float, seed: int) -> dict:
    """An untrained ensemble's fits from its members' orbit outputs (M, |G|,
    N[, C]): D(M) (``deviation``), the ensemble mean's spread between
    neighbouring inputs of the set, the same norm of f_bar(x) - f_bar(x')
    (``spread``), and D(M) / spread (``relative``). At initialisation f_bar
    shrinks towards a constant as a whole, so D alone falls even when the
    ensemble is no more invariant relative to its own variation."""
    plain = outputs[:, 0]
    spread = (plain - np.roll(plain, 1, axis=1))[:, None]
    fits = {what: fit(values, sizes, resamples, level, seed)
            for what, values in (("deviation", differences(outputs)), ("spread", spread))}
    relative = np.array(fits["deviation"]["deviation"]) / np.array(fits["spread"]["deviation"])
    return {**fits, "relative": relative.tolist()}
