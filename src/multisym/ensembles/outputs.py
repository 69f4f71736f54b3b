"""A pool's stored outputs on one split, prepared once and shared by every
ensemble drawn from the pool (docs/method.md#metrics).

Per member, computed once from its logits z (one pass of each kind, see
``SplitOutputs._prepare``): probabilities p = softmax(z) (float32, kept only
where ensembles of several members will sum them), and per sample the
log-sum-exp, entropy H = −Σ_c p log p, p_y, max_c p_c, Σ_c p_c² and the hit
1[argmax z = y], which are every metric of the member alone. An ensemble is
a list of member indices (repeats allowed: greedy selection picks with
replacement); with w_j the number of times member j appears and m = Σ w_j,
every metric of ``metrics.ensemble_metrics`` becomes a weighted sum over
members:

    f̄ = S_p / m,  S_p = Σ w_j p_j                         accuracy, NLL, Brier, ECE
    BALD = H[f̄] − Σ w_j H_j / m
    inconsistency = k (m − k) / (m (m − 1) / 2),  k = Σ w_j hit_j
    KL (mean over ordered pairs) = (−m Σ w_j H_j − Σ_c S_p S_logq) / (m (m − 1))
    spread of x = mean_c sqrt((S_xx − S_x² / m) / (m − 1))   for x = p and x = z

(the definition weighs log q by q = max(p, 1e-12) where this weighs it by p:
they differ by less than C · 1e-12 · 28 per sample). No metric recomputes a
softmax, and an ensemble costs a few passes over each of its distinct members.
Both are done a block of rows at a time on every core of the job
(``rowblocks``); ensembles evaluated together (``terms_of``) share each
block's reads of the members. Bootstrap CIs over the per-sample values
are ``resampling``'s; the values on every resample behind them can be kept
for paired differences between ensembles (``multisym.resamples``). ``tests/test_outputs.py`` checks all of it against
the definitions in ``metrics``. NumPy only.
"""

from __future__ import annotations

import numpy as np

from multisym.ensembles.metrics import ECE_BINS, PROB_FLOOR, class_accuracy, percentile_ci, uq_curve
from multisym.ensembles.resampling import resample_counts_by_item, resampled_auuqc, resampled_means
from multisym.ensembles.rowblocks import for_each, row_blocks, scratch

LOG_FLOOR = float(np.log(PROB_FLOOR))

PREPARE = ("probs", "values", "later")


class SplitOutputs:
    """``gaps``: each member's logits as ``logits.write_logits`` stores them,
    t = z − max z per row, (M, N, C) or M arrays of (N, C), kept in their
    stored dtype (float16 files stay float16 in memory, or mapped from the
    file: 2 bytes a value, beside 4 for the probabilities); ``row_max``:
    the rows' max z, (M, N) or M arrays of (N,); ``labels`` (N,). ``prepare``:
    what is computed now for every member: ``probs``, its per-sample values
    and probabilities; ``values``, its per-sample values, and probabilities
    when an ensemble of two or more distinct members first sums them;
    ``later``, nothing until a member is first used (a greedy pool's members
    never chosen are never read). Either way each member is prepared once
    (``prepare``). The work is spread over ``threads`` threads (the job's
    cores by default)."""

    def __init__(self, gaps, row_max, labels: np.ndarray, prepare: str = "probs", threads: int | None = None):
        if prepare not in PREPARE:
            raise ValueError(f"unknown preparation {prepare!r}; known: {PREPARE}")
        self.labels = np.asarray(labels)
        self.gaps = gaps
        self.row_max = row_max
        self.threads = threads
        members, n = len(gaps), len(self.labels)
        self.probs: list[np.ndarray | None] = [None] * members
        self.prepared = np.zeros(members, bool)
        self.lse = np.empty((members, n), np.float32)
        self.entropy, self.p_true, self.confidence, self.sum_squares = (np.empty((members, n)) for _ in range(4))
        self.hits = np.empty((members, n), bool)
        self._rows = np.arange(n)
        if prepare != "later":
            self.prepare(range(members), probs=prepare == "probs")

    def prepare(self, members, probs: bool = False) -> None:
        """Compute the per-sample values of those of ``members`` not prepared
        yet, and with ``probs`` the probabilities of those that have none (the
        block pass again for a member prepared without: the same numbers)."""
        todo = [j for j in dict.fromkeys(members) if not self.prepared[j] or (probs and self.probs[j] is None)]
        if probs:
            for j in todo:
                self.probs[j] = np.empty(self.gaps[j].shape, np.float32)
        n = len(self.labels)
        for_each([(j, rows) for j in todo for rows in row_blocks(n)], self._prepare, self.threads)
        self.prepared[todo] = True

    def _prepare(self, task: tuple[int, slice]) -> None:
        """One block of one member, in one pass of each kind: with the stored
        t = z − max z and e = exp t, p = e / Σe, lse = max z + log Σe and the
        entropy H = −Σ p log p = log Σe − Σ e t / Σe (t ≤ 0, so nothing
        cancels; the definition's floor q = max(p, 1e-12) changes H by less
        than C · 4e-13)."""
        j, rows = task
        stored = self.gaps[j][rows]
        t = scratch("t", stored.shape)
        index = np.arange(len(stored))
        t[...] = stored
        top, z_max = t.argmax(axis=1), self.row_max[j][rows]
        e = scratch("e", t.shape) if self.probs[j] is None else self.probs[j][rows]
        np.exp(t, out=e)
        total = e.sum(axis=1)
        log_total = np.log(total)
        labels = self.labels[rows]
        self.lse[j, rows] = z_max + log_total
        self.entropy[j, rows] = log_total - np.einsum("nc,nc->n", e, t) / total
        self.p_true[j, rows] = e[index, labels] / total
        self.confidence[j, rows] = 1.0 / total  # e = 1 at the top class
        self.sum_squares[j, rows] = np.einsum("nc,nc->n", e, e) / (total * total)
        self.hits[j, rows] = top == labels
        if self.probs[j] is not None:
            np.divide(e, total[:, None], out=e)

    def _z(self, member: int, rows: slice, name: str) -> np.ndarray:
        """A block of a member's logits z as float32, in the thread's buffer
        ``name``: its gaps with the row maxima added back."""
        t = self.gaps[member][rows]
        out = scratch(name, t.shape)
        out[...] = t
        out += self.row_max[member][rows, None]
        return out

    def _member_block(self, member: int, rows: slice, made: dict) -> tuple[np.ndarray, ...]:
        """A block of a member's diversity terms: its logits z as float32,
        log q = max(z − lse, log 1e-12), z² and p²; kept in ``made`` for the
        other ensembles of the block (converting float16 is the slowest pass)."""
        if member not in made:
            z = self._z(member, rows, f"z{member}")
            log_q, zz, pp = (scratch(f"{name}{member}", z.shape) for name in ("log_q", "zz", "pp"))
            np.subtract(z, self.lse[member, rows, None], out=log_q)
            np.maximum(log_q, LOG_FLOOR, out=log_q)
            np.multiply(z, z, out=zz)
            np.multiply(self.probs[member][rows], self.probs[member][rows], out=pp)
            made[member] = z, log_q, zz, pp
        return made[member]

    def __len__(self) -> int:
        return len(self.gaps)

    # ------------------------------------------------------------ selection
    def mean_probs(self, chosen: list[int]) -> np.ndarray:
        """f̄ = (1/m) Σ_{j in chosen} p_j, shape (N, C)."""
        self.prepare(chosen, probs=True)
        total = np.zeros(self.gaps[chosen[0]].shape, np.float32)
        for j, w in _weights(chosen):
            total += self.probs[j] if w == 1 else w * self.probs[j]
        return total / len(chosen)

    def score(self, probs: np.ndarray) -> tuple[float, float]:
        """(accuracy, −NLL) of ensemble probabilities: larger is better."""
        hits = probs.argmax(axis=1) == self.labels
        nll = -np.log(np.maximum(probs[self._rows, self.labels].astype(np.float64), PROB_FLOOR))
        return float(hits.mean()), -float(nll.mean())

    def candidate_scores(self, total: np.ndarray, m: int) -> list[tuple[float, float]]:
        """``score`` of (total + p_k) / m for every member k, a block of rows at
        a time on the job's threads (the block of ``total`` stays in cache);
        per-block sums are added in block order, so any thread count gives
        the same scores."""
        blocks, members = row_blocks(len(self.labels)), len(self)
        self.prepare(range(members), probs=True)
        hits, nll = np.zeros((2, members, len(blocks)))

        def score_block(b: int) -> None:
            rows = blocks[b]
            labels, index = self.labels[rows], np.arange(rows.stop - rows.start)
            trial = scratch("trial", total[rows].shape)
            for k in range(members):
                np.add(total[rows], self.probs[k][rows], out=trial)
                trial /= m
                hits[k, b] = np.count_nonzero(trial.argmax(axis=1) == labels)
                nll[k, b] = -np.log(np.maximum(trial[index, labels].astype(np.float64), PROB_FLOOR)).sum()

        for_each(range(len(blocks)), score_block, self.threads)
        n = len(self.labels)
        return [(float(hits[k].sum() / n), -float(nll[k].sum() / n)) for k in range(members)]

    def member_score(self, member: int) -> tuple[float, float]:
        """``score`` of one member alone, from its prepared hits and p_y."""
        self.prepare([member])
        nll = -np.log(np.maximum(self.p_true[member], PROB_FLOOR))
        return float(self.hits[member].mean()), -float(nll.mean())

    # -------------------------------------------------------------- metrics
    def terms(self, chosen: list[int], diversity: bool = True) -> dict[str, np.ndarray]:
        """Per-sample values of every metric of ``metrics.ensemble_metrics``,
        plus the confidence behind ECE. Without ``diversity`` the KL and
        spread terms (four of the five sums over members, Table 3's columns)
        are left out; inconsistency, from the members' hits, stays. One
        member, alone or repeated, is its prepared per-sample values."""
        return self.terms_of([chosen], [diversity])[0]

    def terms_of(self, ensembles: list[list[int]], diversity: list[bool]) -> list[dict[str, np.ndarray]]:
        """``terms`` of several ensembles at once: a block of rows at a time,
        every ensemble of the block in turn, so each member's block is read
        from memory once for all of them (summing members, not arithmetic,
        is what costs: an ensemble of m members reads m arrays of N x C) and
        each ensemble's sums stay in cache."""
        weights = [_weights(chosen) for chosen in ensembles]
        several = [k for k, w in enumerate(weights) if len(w) > 1]
        self.prepare([j for k in several for j, _ in weights[k]], probs=True)
        self.prepare([j for w in weights for j, _ in w])  # members alone: their values only
        n = len(self.labels)
        names = ("hits", "p_true", "confidence", "sum_squares", "entropy", "pairs", "spread_prob", "spread_logit")
        per_sample = {k: {name: np.zeros(n) for name in names} for k in several}

        def block(rows: slice) -> None:
            member_blocks = {}  # each member's diversity terms on this block, made once
            for k in several:
                self._ensemble_block(rows, weights[k], diversity[k], per_sample[k], member_blocks)

        for_each(row_blocks(n), block, self.threads)
        return [self._combined_terms(weights[k], diversity[k], per_sample[k]) if k in per_sample
                else self._member_terms(weights[k][0][0], len(ensembles[k]), diversity[k])
                for k in range(len(ensembles))]

    def _combined_terms(self, weights: list[tuple[int, int]], diversity: bool,
                        per_sample: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``terms`` of an ensemble of several distinct members from its sums over members."""
        m = sum(w for _, w in weights)
        hits, p_true = per_sample["hits"], per_sample["p_true"]
        correct_members = sum(w * self.hits[j] for j, w in weights).astype(np.float64)
        mean_entropy = sum(w * self.entropy[j] for j, w in weights) / m
        terms = {
            "accuracy": 100.0 * hits,
            "nll": -np.log(np.maximum(p_true, PROB_FLOOR)),
            "brier": per_sample["sum_squares"] - 2.0 * p_true + 1.0,
            "member_accuracy": 100.0 * correct_members / m,
            "efficiency": 100.0 * (hits - correct_members / m),
            "bald": per_sample["entropy"] - mean_entropy,
            "_confidence": per_sample["confidence"],
            "inconsistency": 100.0 * correct_members * (m - correct_members) / (m * (m - 1) / 2),
        }
        if diversity:
            terms["kl"] = np.maximum(-m * m * mean_entropy - per_sample["pairs"], 0.0) / (m * (m - 1))
            terms["spread_prob"] = per_sample["spread_prob"]
            terms["spread_logit"] = per_sample["spread_logit"]
        return terms

    def _member_terms(self, member: int, m: int, diversity: bool) -> dict[str, np.ndarray]:
        """``terms`` of one member taken m times: its own values; BALD is its
        entropy alone (m = 1) and 0 when repeated, as are the diversity terms."""
        hits, p_true, zeros = self.hits[member].astype(np.float64), self.p_true[member], np.zeros(len(self.labels))
        terms = {
            "accuracy": 100.0 * hits,
            "nll": -np.log(np.maximum(p_true, PROB_FLOOR)),
            "brier": self.sum_squares[member] - 2.0 * p_true + 1.0,
            "member_accuracy": 100.0 * hits,
            "efficiency": zeros,
            "bald": self.entropy[member] if m == 1 else zeros,
            "_confidence": self.confidence[member],
            "inconsistency": zeros,
        }
        if m == 1 or diversity:
            terms.update(kl=zeros, spread_prob=zeros, spread_logit=zeros)
        return terms

    def _ensemble_block(self, rows: slice, weights: list[tuple[int, int]], diversity: bool,
                        per_sample: dict[str, np.ndarray], member_blocks: dict) -> None:
        """``terms``' sums over members for one block of rows: S_p always, and
        S_log q, S_pp, S_z, S_zz for the diversity terms (``member_blocks``:
        the block's ``_member_block`` values made so far)."""
        m = sum(w for _, w in weights)
        shape = (rows.stop - rows.start, self.gaps[weights[0][0]].shape[1])
        s_p, t = scratch("s_p", shape), scratch("t", shape)
        s_log_q, s_pp, s_z, s_zz = (scratch(name, shape) for name in ("s_log_q", "s_pp", "s_z", "s_zz"))
        for k, (j, w) in enumerate(weights):
            first = k == 0  # the first member's term starts each sum: no pass to zero it
            p = self.probs[j][rows]
            _accumulate(s_p, p, w, t, first)
            if not diversity:
                continue
            z, log_q, zz, pp = self._member_block(j, rows, member_blocks)
            _accumulate(s_z, z, w, t, first)
            _accumulate(s_log_q, log_q, w, t, first)
            _accumulate(s_pp, pp, w, t, first)
            _accumulate(s_zz, zz, w, t, first)
        out = {name: values[rows] for name, values in per_sample.items()}
        if diversity:
            out["pairs"][:] = np.einsum("nc,nc->n", s_p, s_log_q)
            out["spread_prob"][:] = _spread(s_p, s_pp, m, t)
            out["spread_logit"][:] = _spread(s_z, s_zz, m, t)
        probs = s_p
        probs /= m
        labels, index = self.labels[rows], np.arange(shape[0])
        top = probs.argmax(axis=1)
        out["hits"][:] = top == labels
        out["p_true"][:] = probs[index, labels]
        out["confidence"][:] = probs[index, top]
        out["sum_squares"][:] = np.einsum("nc,nc->n", probs, probs)
        out["entropy"][:] = _entropy(probs, t)

    def summary(self, chosen: list[int], bootstrap: dict, terms: dict | None = None,
                ci: bool = True, resampled: dict | None = None) -> dict[str, dict]:
        """Every metric with its percentile bootstrap CI over samples:
        {metric: {"value": v, "ci": [lo, hi]}} (the keys of ``metrics.summarise``);
        without ``ci``, {metric: {"value": v}}. ``terms``: the ensemble's
        ``terms`` when already computed. ``resampled``: a dict that receives
        each metric's value on every resample, (samples,) per metric, the
        values the CIs are percentiles of (kept for paired differences,
        ``multisym.resamples``), with or without ``ci``."""
        terms = dict(self.terms(chosen) if terms is None else terms)
        confidence, uncertainty = terms.pop("_confidence"), terms.pop("bald")
        hits, n = terms["accuracy"] / 100.0, len(self.labels)
        bins = np.minimum((confidence * ECE_BINS).astype(int), ECE_BINS - 1)
        binned = np.zeros((n, ECE_BINS))
        binned[self._rows, bins] = hits - confidence
        out = {name: {"value": float(values.mean())} for name, values in terms.items()}
        out["ece"] = {"value": float(np.abs(binned.sum(axis=0)).sum() / n)}
        out["auuqc"] = {"value": float(uq_curve(hits, uncertainty)[1].mean())}
        if not ci and resampled is None:
            return out
        draws = (n, bootstrap["samples"], bootstrap["seed"])
        by_item = resample_counts_by_item(*draws)
        names = list(terms)
        values = np.stack([terms[name] for name in names], axis=1)
        means = resampled_means(by_item, np.concatenate([values, binned], axis=1))
        per_resample = {name: means[:, i] for i, name in enumerate(names)}
        per_resample["ece"] = np.abs(means[:, len(names):]).sum(axis=1)
        per_resample["auuqc"] = resampled_auuqc(by_item, hits, uncertainty)
        if resampled is not None:
            resampled.update(per_resample)
        if ci:
            for name, values in per_resample.items():
                out[name]["ci"] = percentile_ci(values, bootstrap["level"])
        return out

    def uq_curve(self, chosen: list[int], terms: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Accuracy vs fraction removed by BALD uncertainty (Figure 7)."""
        terms = self.terms(chosen) if terms is None else terms
        return uq_curve(terms["accuracy"] / 100.0, terms["bald"])

    def per_class_accuracy(self, member: int, num_classes: int) -> np.ndarray:
        self.prepare([member])
        return class_accuracy(self.hits[member], self.labels, num_classes)[0]


def _weights(chosen: list[int]) -> list[tuple[int, int]]:
    counts = np.bincount(np.asarray(chosen))
    return [(int(j), int(counts[j])) for j in np.flatnonzero(counts)]


def _accumulate(total: np.ndarray, value: np.ndarray, weight: int, scratch: np.ndarray, first: bool = False) -> None:
    """total += weight * value; total = weight * value for the ``first`` term
    (the same numbers as adding it to zeros). ``value`` may be ``scratch`` itself."""
    if first:
        np.multiply(value, weight, out=total)
        return
    if weight != 1:
        np.multiply(value, weight, out=scratch)
        value = scratch
    total += value


def _entropy(probs: np.ndarray, scratch: np.ndarray) -> np.ndarray:
    """−Σ_c p log max(p, 1e-12) per row. The floor matters only where p = 0
    (0 · log 0 is NaN): below 1e-12 it changes a term by under 1e-10. So the
    log is taken as it is, and only rows that came out NaN are redone with
    the floor (one pass fewer over every row)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        np.log(probs, out=scratch)
        entropy = -np.einsum("nc,nc->n", probs, scratch)
    zero = np.flatnonzero(np.isnan(entropy))
    if len(zero):
        entropy[zero] = -np.einsum("nc,nc->n", probs[zero], np.log(np.maximum(probs[zero], PROB_FLOOR)))
    return entropy


def _spread(total: np.ndarray, squares: np.ndarray, m: int, scratch: np.ndarray) -> np.ndarray:
    """mean_c sqrt(max(S_xx − S_x² / m, 0) / (m − 1)) per row (the 1 / (m − 1)
    taken out of the mean)."""
    np.multiply(total, total, out=scratch)
    scratch *= -1.0 / m
    scratch += squares
    np.maximum(scratch, 0.0, out=scratch)
    np.sqrt(scratch, out=scratch)
    return scratch.mean(axis=1) / np.sqrt(m - 1)
