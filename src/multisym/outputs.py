"""A pool's stored outputs on one split, prepared once and shared by every
ensemble drawn from the pool (mse_spec §4.4, metrics.md B.7).

Per member, computed once: probabilities p = softmax(z) (float32), the
per-sample log-sum-exp, entropy H = −Σ_c p log q with q = max(p, 1e-12), and
the hit 1[argmax z = y]. An ensemble is a list of member indices (repeats
allowed: greedy selection picks with replacement); with w_j the number of times
member j appears and m = Σ w_j, every metric of ``metrics.ensemble_metrics``
becomes a weighted sum over members:

    f̄ = S_p / m,  S_p = Σ w_j p_j                         accuracy, NLL, Brier, ECE
    BALD = H[f̄] − Σ w_j H_j / m
    inconsistency = k (m − k) / (m (m − 1) / 2),  k = Σ w_j hit_j
    KL (mean over ordered pairs) = (−m Σ w_j H_j − Σ_c S_p S_logq) / (m (m − 1))
    spread of x = mean_c sqrt((S_xx − S_x² / m) / (m − 1))   for x = p and x = z

(the definition weighs log q by q = max(p, 1e-12) where this weighs it by p:
they differ by less than C · 1e-12 · 28 per sample). No metric recomputes a
softmax, and an ensemble costs a few passes over each of its distinct members.
Bootstrap CIs take the resamples as a (B, N) count matrix once: the mean of every per-sample metric and the binned
sums of ECE over all resamples are one matrix product; AUUQC sorts each
ensemble once and reads every resample's curve from cumulative counts.
``tests/test_outputs.py`` checks all of it against the definitions in
``metrics``. NumPy only.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .metrics import ECE_BINS, PROB_FLOOR, UQ_POINTS, class_accuracy, percentile_ci, uq_curve

LOG_FLOOR = float(np.log(PROB_FLOOR))
BLOCK_ROWS = 256  # rows of every member sum: five blocks of 256 x 1,000 float32 stay in cache


class SplitOutputs:
    """``logits`` (M, N, C), kept in their stored dtype (float16 files stay
    float16 in memory: 2 bytes a value, beside 4 for the probabilities);
    ``labels`` (N,)."""

    def __init__(self, logits: np.ndarray, labels: np.ndarray):
        self.labels = np.asarray(labels)
        self.logits = logits
        members, n, classes = logits.shape
        self.probs = np.empty((members, n, classes), np.float32)
        self.lse = np.empty((members, n), np.float32)
        self.entropy = np.empty((members, n))
        self.hits = np.empty((members, n), bool)
        z_block, log_q = (np.empty((min(BLOCK_ROWS, n), classes), np.float32) for _ in range(2))
        for j in range(members):
            for start in range(0, n, BLOCK_ROWS):
                rows = slice(start, min(start + BLOCK_ROWS, n))
                z, t = self._z(j, rows, z_block), log_q[:rows.stop - start]
                top = z.max(axis=1, keepdims=True)
                p = self.probs[j, rows]
                np.subtract(z, top, out=p)
                np.exp(p, out=p)
                total = p.sum(axis=1, keepdims=True)
                p /= total
                lse = top + np.log(total)
                self.lse[j, rows] = lse[:, 0]
                np.subtract(z, lse, out=t)
                np.maximum(t, LOG_FLOOR, out=t)
                self.entropy[j, rows] = -np.einsum("nc,nc->n", p, t)
                self.hits[j, rows] = z.argmax(axis=1) == self.labels[rows]
        self._rows = np.arange(n)

    def _z(self, member: int, rows: slice, buffer: np.ndarray) -> np.ndarray:
        """A block of a member's logits as float32 (converted into ``buffer`` when stored otherwise)."""
        z = self.logits[member, rows]
        if z.dtype == np.float32:
            return z
        out = buffer[:len(z)]
        out[...] = z
        return out

    def __len__(self) -> int:
        return len(self.logits)

    # ------------------------------------------------------------ selection
    def mean_probs(self, chosen: list[int]) -> np.ndarray:
        """f̄ = (1/m) Σ_{j in chosen} p_j, shape (N, C)."""
        total = np.zeros_like(self.probs[0])
        for j, w in _weights(chosen):
            total += self.probs[j] if w == 1 else w * self.probs[j]
        return total / len(chosen)

    def score(self, probs: np.ndarray) -> tuple[float, float]:
        """(accuracy, −NLL) of ensemble probabilities: larger is better."""
        hits = probs.argmax(axis=1) == self.labels
        nll = -np.log(np.maximum(probs[self._rows, self.labels].astype(np.float64), PROB_FLOOR))
        return float(hits.mean()), -float(nll.mean())

    # -------------------------------------------------------------- metrics
    def terms(self, chosen: list[int], diversity: bool = True) -> dict[str, np.ndarray]:
        """Per-sample values of every metric of ``metrics.ensemble_metrics``,
        plus the confidence behind ECE; computed a block of rows at a time so
        the member sums stay in cache. Without ``diversity`` the KL and spread
        terms (four of the five sums over members, Table 3's columns) are left
        out; inconsistency, from the members' hits, stays."""
        m, weights = len(chosen), _weights(chosen)
        diversity = diversity and m > 1
        n, classes = self.probs.shape[1:]
        names = ("hits", "p_true", "confidence", "sum_squares", "entropy", "pairs", "spread_prob", "spread_logit")
        per_sample = {name: np.zeros(n) for name in names}
        sums = np.empty((5, min(BLOCK_ROWS, n), classes), np.float32)
        scratch, z_block = np.empty_like(sums[0]), np.empty_like(sums[0])
        for start in range(0, n, BLOCK_ROWS):
            rows = slice(start, min(start + BLOCK_ROWS, n))
            size = rows.stop - start
            s_p, s_log_q, s_pp, s_z, s_zz = (block[:size] for block in sums)
            t = scratch[:size]
            sums[:5 if diversity else 1, :size] = 0.0
            for j, w in weights:
                p = self.probs[j, rows]
                _accumulate(s_p, p, w, t)
                if not diversity:
                    continue
                z = self._z(j, rows, z_block)
                _accumulate(s_z, z, w, t)
                np.subtract(z, self.lse[j, rows, None], out=t)
                np.maximum(t, LOG_FLOOR, out=t)
                _accumulate(s_log_q, t, w, t)
                np.multiply(p, p, out=t)
                _accumulate(s_pp, t, w, t)
                np.multiply(z, z, out=t)
                _accumulate(s_zz, t, w, t)
            out = {name: values[rows] for name, values in per_sample.items()}
            if diversity:
                out["pairs"][:] = np.einsum("nc,nc->n", s_p, s_log_q)
                out["spread_prob"][:] = _spread(s_p, s_pp, m, t)
                out["spread_logit"][:] = _spread(s_z, s_zz, m, t)
            probs = s_p
            probs /= m
            labels = self.labels[rows]
            out["hits"][:] = probs.argmax(axis=1) == labels
            out["p_true"][:] = probs[np.arange(size), labels]
            out["confidence"][:] = probs.max(axis=1)
            out["sum_squares"][:] = np.einsum("nc,nc->n", probs, probs)
            np.maximum(probs, PROB_FLOOR, out=t)
            np.log(t, out=t)
            out["entropy"][:] = -np.einsum("nc,nc->n", probs, t)
        hits, p_true = per_sample["hits"], per_sample["p_true"]
        correct_members = sum(w * self.hits[j] for j, w in weights).astype(np.float64)
        mean_entropy = sum(w * self.entropy[j] for j, w in weights) / m
        terms = {
            "accuracy": 100.0 * hits,
            "nll": -np.log(np.maximum(p_true, PROB_FLOOR)),
            "brier": per_sample["sum_squares"] - 2.0 * p_true + 1.0,
            "member_accuracy": 100.0 * correct_members / m,
            "efficiency": 100.0 * (hits - correct_members / m),
            # one member repeated: exactly 0, not rounding noise that would order the AUUQC sort
            "bald": per_sample["entropy"] if m == 1 else (per_sample["entropy"] - mean_entropy) * (len(weights) > 1),
            "_confidence": per_sample["confidence"],
        }
        if m < 2:
            zeros = np.zeros(n)
            terms.update(inconsistency=zeros, kl=zeros, spread_prob=zeros, spread_logit=zeros)
            return terms
        terms["inconsistency"] = 100.0 * correct_members * (m - correct_members) / (m * (m - 1) / 2)
        if not diversity:
            return terms
        terms["kl"] = np.maximum(-m * m * mean_entropy - per_sample["pairs"], 0.0) / (m * (m - 1))
        terms["spread_prob"] = per_sample["spread_prob"]
        terms["spread_logit"] = per_sample["spread_logit"]
        return terms

    def summary(self, chosen: list[int], bootstrap: dict, terms: dict | None = None,
                ci: bool = True) -> dict[str, dict]:
        """Every metric with its percentile bootstrap CI over samples:
        {metric: {"value": v, "ci": [lo, hi]}} (the keys of ``metrics.summarise``);
        without ``ci``, {metric: {"value": v}}. ``terms``: the ensemble's
        ``terms`` when already computed."""
        terms = dict(self.terms(chosen) if terms is None else terms)
        confidence, uncertainty = terms.pop("_confidence"), terms.pop("bald")
        hits, n = terms["accuracy"] / 100.0, len(self.labels)
        bins = np.minimum((confidence * ECE_BINS).astype(int), ECE_BINS - 1)
        binned = np.zeros((n, ECE_BINS))
        binned[self._rows, bins] = hits - confidence
        out = {name: {"value": float(values.mean())} for name, values in terms.items()}
        out["ece"] = {"value": float(np.abs(binned.sum(axis=0)).sum() / n)}
        out["auuqc"] = {"value": float(uq_curve(hits, uncertainty)[1].mean())}
        if not ci:
            return out
        draws = (n, bootstrap["samples"], bootstrap["seed"])
        counts, by_item = resample_counts(*draws), resample_counts_by_item(*draws)
        names = list(terms)
        values = np.stack([terms[name] for name in names], axis=1)
        resampled = counts @ np.concatenate([values, binned], axis=1).astype(np.float32) / n
        level = bootstrap["level"]
        for i, name in enumerate(names):
            out[name]["ci"] = percentile_ci(resampled[:, i], level)
        out["ece"]["ci"] = percentile_ci(np.abs(resampled[:, len(names):]).sum(axis=1), level)
        out["auuqc"]["ci"] = percentile_ci(resampled_auuqc(by_item, hits, uncertainty), level)
        return out

    def uq_curve(self, chosen: list[int], terms: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Accuracy vs fraction removed by BALD uncertainty (Figure 7)."""
        terms = self.terms(chosen) if terms is None else terms
        return uq_curve(terms["accuracy"] / 100.0, terms["bald"])

    def per_class_accuracy(self, member: int, num_classes: int) -> np.ndarray:
        return class_accuracy(self.hits[member], self.labels, num_classes)[0]


def _weights(chosen: list[int]) -> list[tuple[int, int]]:
    counts = np.bincount(np.asarray(chosen))
    return [(int(j), int(counts[j])) for j in np.flatnonzero(counts)]


def _accumulate(total: np.ndarray, value: np.ndarray, weight: int, scratch: np.ndarray) -> None:
    """total += weight * value (``value`` may be ``scratch`` itself)."""
    if weight != 1:
        np.multiply(value, weight, out=scratch)
        value = scratch
    total += value


def _spread(total: np.ndarray, squares: np.ndarray, m: int, scratch: np.ndarray) -> np.ndarray:
    """mean_c sqrt(max(S_xx − S_x² / m, 0) / (m − 1)) per row."""
    np.multiply(total, total, out=scratch)
    scratch /= -m
    scratch += squares
    np.maximum(scratch, 0.0, out=scratch)
    scratch /= m - 1
    np.sqrt(scratch, out=scratch)
    return scratch.mean(axis=1)


@lru_cache(maxsize=4)
def resample_counts(n: int, samples: int, seed: int) -> np.ndarray:
    """(samples, n) float32: how often each item is in each resample; the
    resamples of ``metrics.bootstrap_indices`` (drawn a block at a time)."""
    rng = np.random.default_rng(seed)
    counts = np.zeros((samples, n), np.float32)
    block = max(1, 2**22 // max(n, 1))
    for start in range(0, samples, block):
        rows = min(block, samples - start)
        draws = rng.integers(0, n, size=(rows, n)) + n * np.arange(rows)[:, None]
        counts[start:start + rows] = np.bincount(draws.ravel(), minlength=rows * n).reshape(rows, n)
    counts.setflags(write=False)
    return counts


@lru_cache(maxsize=2)
def resample_counts_by_item(n: int, samples: int, seed: int) -> np.ndarray:
    """``resample_counts`` transposed to (n, samples)."""
    counts = np.ascontiguousarray(resample_counts(n, samples, seed).T)
    counts.setflags(write=False)
    return counts


def resampled_auuqc(by_item: np.ndarray, hits: np.ndarray, uncertainty: np.ndarray) -> np.ndarray:
    """AUUQC of every resample. The items sorted once by decreasing
    uncertainty; a resample is that order with each item repeated as often
    as it was drawn, so removing its k most uncertain means cutting its
    cumulative counts at k. Cumulative sums are taken per block of about
    sqrt(n) items (at most 64), then inside the one block where each cut falls."""
    n, samples = by_item.shape
    order = np.argsort(-uncertainty, kind="stable")
    sorted_hits = hits[order].astype(np.float32)
    removed = np.floor(np.linspace(0.0, 0.98, UQ_POINTS) * n).astype(int)
    # (items, resamples), in buffers kept between ensembles: a fresh 200 MB array
    # costs more in page faults than the arithmetic; whole counts below 2**24
    # are exact in float32
    drawn, drawn_hits = _scratch("drawn", by_item.shape), _scratch("drawn_hits", by_item.shape)
    np.take(by_item, order, axis=0, out=drawn, mode="clip")  # "raise" would copy through a buffer
    np.multiply(drawn, sorted_hits[:, None], out=drawn_hits)
    width = int(min(64, max(4, np.sqrt(n))))
    starts = np.arange(0, n, width)
    # counts and hits before each block, per resample: (blocks + 1, resamples)
    before = np.zeros((2, len(starts) + 1, samples), np.float64)
    np.cumsum(_block_sums(drawn, width), axis=0, out=before[0, 1:])
    np.cumsum(_block_sums(drawn_hits, width), axis=0, out=before[1, 1:])
    # the block holding the k-th removal: the last block whose start has fewer than k before it
    counts_by_draw = np.ascontiguousarray(before[0, 1:-1].T)
    block = np.stack([np.searchsorted(row, removed, side="left") for row in counts_by_draw], axis=1)
    block[removed == 0] = 0  # (points, resamples)
    columns = np.arange(samples)[None, :]
    count_before, hits_before = before[0][block, columns], before[1][block, columns]
    positions = starts[block][..., None] + np.arange(width)  # (points, resamples, block)
    rows, valid = np.minimum(positions, n - 1), positions < n
    inside = np.where(valid, drawn[rows, columns[..., None]], 0.0)
    inside_hits = np.where(valid, drawn_hits[rows, columns[..., None]], 0.0)
    cum = count_before[..., None] + np.cumsum(inside, axis=-1)
    cum_hits = hits_before[..., None] + np.cumsum(inside_hits, axis=-1)
    need = removed[:, None, None]
    item = np.minimum((cum < need).sum(axis=-1), width - 1)[..., None]  # where the k-th removal falls
    count_to = np.where(item > 0, np.take_along_axis(cum, np.maximum(item - 1, 0), -1), count_before[..., None])
    hits_to = np.where(item > 0, np.take_along_axis(cum_hits, np.maximum(item - 1, 0), -1), hits_before[..., None])
    hit_rate = sorted_hits[np.take_along_axis(rows, item, -1)]
    removed_hits = (hits_to + (need - count_to) * hit_rate)[..., 0]
    removed_hits[removed == 0] = 0.0
    total_hits = before[1, -1][None, :]
    return ((total_hits - removed_hits) / (n - removed)[:, None]).mean(axis=0)


def _block_sums(values: np.ndarray, width: int) -> np.ndarray:
    """Sums of consecutive ``width`` rows (the last block may be shorter)."""
    whole = len(values) // width * width
    sums = values[:whole].reshape(-1, width, values.shape[1]).sum(axis=1)
    if whole < len(values):
        sums = np.concatenate([sums, values[whole:].sum(axis=0, keepdims=True)])
    return sums


_SCRATCH: dict[str, np.ndarray] = {}


def _scratch(name: str, shape: tuple[int, ...]) -> np.ndarray:
    """A float32 buffer of ``shape`` reused by later calls."""
    if name not in _SCRATCH or _SCRATCH[name].shape != shape:
        _SCRATCH[name] = np.empty(shape, np.float32)
    return _SCRATCH[name]
