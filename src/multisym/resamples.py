"""Each ensemble's metrics on every bootstrap resample, stored beside its
result, and paired differences between two ensembles
(docs/method.md#paired-differences).

An ensemble job draws its resamples of the test split once
(``resampling.resample_counts(n, samples, seed)``), so two ensembles of the
same split and bootstrap settings are measured on the same resamples b. The
difference of ensembles A and B is then taken resample by resample,

    d_b = f(A; b) − f(B; b),    b = 1 … samples,

and its percentile CI at ``level`` is the paired bootstrap CI of f(A) − f(B):
what the two share (hard test images, the labels) cancels in each d_b, so it
is far narrower than the two CIs side by side. A random ensemble of size M
is reported as the mean over its K draws; on each resample its K draws are
drawn again with replacement (from a stream seeded by the bootstrap seed), so
the CI also covers the choice of draws (a two-stage bootstrap).

A resamples file (``<pool>_<strategy>.resamples.npz``) holds, for the E
ensembles of one job: ``metrics`` (K names), ``value`` (E, K) float64, the
metric on the whole split as the result JSON reports it, ``resampled``
(E, K, samples) float32, NaN where an ensemble has no such metric (the
diversity terms are computed at one size), ``size``, ``draw`` and
``distinct`` (E,), and what identifies the resamples: ``n``, ``samples``,
``seed`` and the SHA-256 of the split's labels. ``check_paired`` refuses a
pair whose resamples differ. The file's format, shared by the ensemble jobs
that write it and the steps that read it (dataset summaries, Table 10, the
claims), which import no ensembling code. NumPy only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from multisym.files import read_npz, write_npz

VERDICTS = ("supported", "contradicted", "inconclusive")
DIRECTIONS = ("higher", "lower")


class PairingError(ValueError):
    """Two ensembles measured on different resamples (or splits): their
    difference per resample would pair unrelated numbers."""


def percentile_ci(values: np.ndarray, level: float) -> list[float]:
    """The percentile bootstrap CI at ``level`` of values over resamples."""
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return [float(low), float(high)]


def labels_digest(labels: np.ndarray) -> str:
    """SHA-256 of a split's labels as int64, which names its rows' order and classes."""
    return hashlib.sha256(np.ascontiguousarray(labels, np.int64).tobytes()).hexdigest()


@dataclass
class Resamples:
    """The per-resample metrics of one job's ensembles (see the module docstring)."""

    pool: str
    strategy: str
    dataset: str  # "" for the pretraining dataset, else the transfer dataset's key
    n: int
    samples: int
    seed: int
    labels_sha256: str
    metrics: list[str] = field(default_factory=list)
    value: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    resampled: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0), np.float32))
    size: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    draw: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    distinct: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    path: str = ""

    @property
    def label(self) -> str:
        where = f" on {self.dataset}" if self.dataset else ""
        return f"{self.pool} {self.strategy}{where}"

    def rows(self, size: int | None) -> np.ndarray:
        """The ensembles of ``size`` members: a greedy job's prefix of that
        size (its longest when the sequence is shorter, as Table 10 reads
        it), a random job's draws of that size, a whole-pool job's only
        ensemble (``size`` ignored). Empty when there is none."""
        if self.strategy == "all":
            return np.arange(len(self.size))
        if self.strategy == "greedy" and size is not None and len(self.size):
            size = min(size, int(self.size.max()))
        return np.flatnonzero(self.size == size)

    def sizes(self) -> list[int]:
        return sorted({int(s) for s in self.size})

    def has(self, name: str, rows: np.ndarray) -> bool:
        """Whether every ensemble of ``rows`` has metric ``name``."""
        return name in self.metrics and not np.isnan(self.value[rows, self.metrics.index(name)]).any()

    def metric(self, name: str, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(whole-split values (R,), per-resample values (R, samples)) of ``rows``."""
        if name not in self.metrics:
            raise KeyError(f"{self.path or self.label}: no metric {name!r}; it has {self.metrics}")
        k = self.metrics.index(name)
        return self.value[rows, k], self.resampled[rows, k]


class Recorder:
    """Collects a job's ensembles' per-resample values as they are computed."""

    def __init__(self, bootstrap: dict, labels: np.ndarray):
        self.bootstrap = bootstrap
        self.digest = labels_digest(labels)
        self.n = len(labels)
        self.entries: list[tuple[int, int, int, dict, dict]] = []

    def add(self, size: int, draw: int, distinct: int, summary: dict, resampled: dict) -> None:
        """One ensemble: its ``summary`` (metric -> {"value": ...}) and the
        ``resampled`` values ``SplitOutputs.summary`` kept."""
        self.entries.append((size, draw, distinct, {k: v["value"] for k, v in summary.items()}, resampled))

    def build(self, pool: str, strategy: str, dataset: str = "") -> Resamples:
        names = list(dict.fromkeys(k for *_, values, _ in self.entries for k in values))
        samples = self.bootstrap["samples"]
        value = np.full((len(self.entries), len(names)), np.nan)
        resampled = np.full((len(self.entries), len(names), samples), np.nan, np.float32)
        for e, (_, _, _, values, per_resample) in enumerate(self.entries):
            for k, name in enumerate(names):
                if name in per_resample:
                    value[e, k] = values[name]
                    resampled[e, k] = per_resample[name]
        column = np.array([[s, d, c] for s, d, c, *_ in self.entries], np.int64).reshape(-1, 3)
        return Resamples(pool, strategy, dataset, self.n, samples, self.bootstrap["seed"], self.digest, names,
                         value, resampled, column[:, 0], column[:, 1], column[:, 2])


def write_resamples(resamples: Resamples, path: str) -> None:
    r = resamples
    write_npz(path, pool=np.array(r.pool), strategy=np.array(r.strategy), dataset=np.array(r.dataset),
              n=np.array(r.n), samples=np.array(r.samples), seed=np.array(r.seed),
              labels_sha256=np.array(r.labels_sha256), metrics=np.array(r.metrics, dtype=str), value=r.value,
              resampled=r.resampled, size=r.size, draw=r.draw, distinct=r.distinct)


def read_resamples(path: str) -> Resamples:
    a = read_npz(path)
    return Resamples(str(a["pool"]), str(a["strategy"]), str(a["dataset"]), int(a["n"]), int(a["samples"]),
                     int(a["seed"]), str(a["labels_sha256"]), [str(m) for m in a["metrics"]], a["value"],
                     a["resampled"], a["size"], a["draw"], a["distinct"], str(path))


def check_paired(a: Resamples, b: Resamples) -> None:
    """Raise PairingError unless ``a`` and ``b`` were measured on the same
    resamples of the same split rows: the same n, number of resamples, seed
    and labels."""
    for key in ("n", "samples", "seed", "labels_sha256"):
        if getattr(a, key) != getattr(b, key):
            raise PairingError(
                f"{a.path or a.label} and {b.path or b.label} were not measured on the same resamples "
                f"({key}: {getattr(a, key)} vs {getattr(b, key)}); a paired difference needs both ensembles "
                "on the same split with the same ensembles.bootstrap settings: rebuild the older one")


@dataclass
class Side:
    """One side of a paired difference: the ensembles (one, or a random job's
    draws) of ``rows`` of a resamples file, and one metric."""

    resamples: Resamples
    rows: np.ndarray
    metric: str

    def values(self) -> tuple[float, np.ndarray]:
        """(the whole-split value: the mean over draws, its (samples,) per-resample values)."""
        value, per_resample = self.resamples.metric(self.metric, self.rows)
        return float(np.mean(value)), per_resample.astype(np.float64)


def redrawn_mean(per_resample: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(draws, samples) -> (samples,): on each resample the mean over the
    draws drawn again with replacement; one ensemble is its own values."""
    draws, samples = per_resample.shape
    if draws == 1:
        return per_resample[0]
    picks = rng.integers(0, draws, size=(samples, draws))
    return per_resample[picks, np.arange(samples)[:, None]].mean(axis=1)


@dataclass(frozen=True)
class Difference:
    estimate: float  # A − B on the whole split
    ci_low: float
    ci_high: float


def paired_difference(a: Side, b: Side, level: float, seed: int = 0) -> Difference:
    """f(A) − f(B) with its paired bootstrap CI (see the module docstring);
    refuses sides measured on different resamples. ``seed`` seeds the
    redrawing of random draws (two independent streams, one per side)."""
    check_paired(a.resamples, b.resamples)
    if not len(a.rows) or not len(b.rows):
        raise ValueError("a paired difference needs at least one ensemble on each side")
    (value_a, per_a), (value_b, per_b) = a.values(), b.values()
    if np.isnan(per_a).any() or np.isnan(per_b).any():
        raise ValueError(f"{a.metric} is not measured for every ensemble compared")
    diff = (redrawn_mean(per_a, np.random.default_rng([seed, 0]))
            - redrawn_mean(per_b, np.random.default_rng([seed, 1])))
    low, high = percentile_ci(diff, level)
    return Difference(value_a - value_b, low, high)


def verdict(low: float, high: float, direction: str, reference: float = 0.0) -> str:
    """``supported`` when the CI [low, high] lies wholly on the claimed side
    of ``reference`` (above it for ``higher``, below for ``lower``),
    ``contradicted`` when wholly on the other side, else ``inconclusive``."""
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; known: {DIRECTIONS}")
    above, below = low > reference, high < reference
    if direction == "lower":
        above, below = below, above
    return "supported" if above else "contradicted" if below else "inconclusive"
