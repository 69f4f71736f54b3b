"""Tests for multisym.ensembles.metrics: ensemble combination, per-sample metrics, ECE,
diversity, BALD, AUUQC, class dominance, the summary and the bootstrap
(docs/method.md#averaging-probabilities, docs/method.md#metrics)."""

from __future__ import annotations

import math
from itertools import permutations

import numpy as np
import pytest
import torch
from scipy.stats import entropy
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_calibration_error

from multisym.ensembles.metrics import (
    ECE_BINS,
    PROB_FLOOR,
    auuqc,
    bald_terms,
    bootstrap_ci,
    bootstrap_indices,
    brier_terms,
    class_dominance,
    correct,
    ece,
    ensemble_metrics,
    ensemble_probs,
    inconsistency_terms,
    kl_terms,
    nll_terms,
    percentile_ci,
    softmax,
    spread_terms,
    summarise,
)


def np_softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def logits_from_probs(p):
    """Logits whose softmax is exactly ``p`` (up to rounding)."""
    return np.log(np.asarray(p, dtype=np.float64))


def random_logits(seed, m, n, c, scale=2.0):
    return np.random.default_rng(seed).normal(scale=scale, size=(m, n, c))


# ------------------------------------------------------------- combination
def test_ensemble_probs_is_mean_of_softmaxes_not_softmax_of_mean_logits():
    # member 0 gives (0.5, 0.5), member 1 gives (0.75, 0.25)
    logits = np.array([[[0.0, 0.0]], [[math.log(3.0), 0.0]]])
    probs = ensemble_probs(logits)
    assert probs.shape == (1, 2)
    np.testing.assert_allclose(probs[0], [0.625, 0.375], atol=1e-12)
    # averaging logits would give softmax((log 3 / 2, 0)) = (√3/(√3+1), ...) ≈ 0.634
    from_mean_logits = np_softmax(logits.mean(0))[0]
    assert abs(from_mean_logits[0] - math.sqrt(3) / (math.sqrt(3) + 1)) < 1e-12
    assert abs(probs[0, 0] - from_mean_logits[0]) > 5e-3


def test_ensemble_probs_random_and_softmax_rows_sum_to_one():
    logits = random_logits(0, 3, 7, 4)
    probs = ensemble_probs(logits)
    manual = np.mean([np_softmax(z) for z in logits], axis=0)
    np.testing.assert_allclose(probs, manual, atol=1e-12)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-12)
    # large logits do not overflow
    big = softmax(np.array([[1000.0, 0.0, -1000.0]]))
    assert np.all(np.isfinite(big)) and abs(big[0, 0] - 1.0) < 1e-12


# -------------------------------------------------------- per-sample terms
PROBS = np.array([
    [0.7, 0.2, 0.1],
    [0.1, 0.3, 0.6],
    [0.2, 0.5, 0.3],
    [0.5, 0.5, 0.0],
])
LABELS = np.array([0, 1, 1, 2])


def test_correct_and_accuracy_by_hand():
    np.testing.assert_array_equal(correct(PROBS, LABELS), [1.0, 0.0, 1.0, 0.0])
    assert correct(PROBS, LABELS).mean() == 0.5


def test_top1_accuracy_matches_torchmetrics():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(6), size=300)
    labels = rng.integers(0, 6, size=300)
    ours = correct(probs, labels).mean()
    theirs = multiclass_accuracy(torch.tensor(probs), torch.tensor(labels), num_classes=6, average="micro").item()
    assert abs(ours - theirs) < 1e-6


def test_nll_terms_by_hand_and_clamp():
    terms = nll_terms(PROBS, LABELS)
    expected = [-math.log(0.7), -math.log(0.3), -math.log(0.5), -math.log(PROB_FLOOR)]
    np.testing.assert_allclose(terms, expected, rtol=1e-12)
    assert PROB_FLOOR == 1e-12
    assert abs(terms[3] - 12 * math.log(10)) < 1e-9
    assert np.all(np.isfinite(terms))


def test_brier_terms_by_hand_and_range():
    expected = [
        0.3**2 + 0.2**2 + 0.1**2,
        0.1**2 + 0.7**2 + 0.6**2,
        0.2**2 + 0.5**2 + 0.3**2,
        0.5**2 + 0.5**2 + 1.0**2,
    ]
    np.testing.assert_allclose(brier_terms(PROBS, LABELS), expected, atol=1e-12)
    perfect = np.eye(3)
    np.testing.assert_allclose(brier_terms(perfect, np.arange(3)), 0.0, atol=0)
    confident_wrong = np.eye(3)
    np.testing.assert_allclose(brier_terms(confident_wrong, np.array([1, 2, 0])), 2.0, atol=0)
    rng = np.random.default_rng(2)
    probs = rng.dirichlet(np.ones(5) * 0.3, size=500)
    terms = brier_terms(probs, rng.integers(0, 5, 500))
    assert terms.min() >= 0.0 and terms.max() <= 2.0


# ------------------------------------------------------------------- ECE
def hand_ece(probs, labels, bins=15):
    confidence = probs.max(-1)
    hits = probs.argmax(-1) == labels
    n = len(labels)
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        if b == bins - 1:
            inside = (confidence >= lo) & (confidence <= hi)
        else:
            inside = (confidence >= lo) & (confidence < hi)
        if inside.sum() == 0:
            continue
        acc = hits[inside].mean()
        conf = confidence[inside].mean()
        total += inside.sum() / n * abs(acc - conf)
    return total


def test_ece_hand_example():
    # confidences 0.95 (bin 14), 0.9 (bin 13), 0.55 and 0.58 (bin 8), 0.42 (bin 6)
    probs = np.array([
        [0.95, 0.05, 0.0],
        [0.1, 0.9, 0.0],
        [0.55, 0.45, 0.0],
        [0.2, 0.22, 0.58],
        [0.42, 0.29, 0.29],
    ])
    labels = np.array([0, 0, 0, 1, 0])
    # bin 14: acc 1, conf .95 -> .05; bin 13: acc 0, conf .9 -> .9;
    # bin 8: acc .5, conf .565 -> .065 (x2 samples); bin 6: acc 1, conf .42 -> .58
    expected = (0.05 + 0.9 + 2 * 0.065 + 0.58) / 5
    assert ECE_BINS == 15
    assert abs(ece(probs, labels) - expected) < 1e-12
    assert abs(hand_ece(probs, labels) - expected) < 1e-12


def test_ece_matches_explicit_bin_loop_and_torchmetrics():
    rng = np.random.default_rng(3)
    n, c = 800, 5
    probs = rng.dirichlet(np.ones(c) * 0.6, size=n)
    # labels agree with the argmax 70% of the time, so the ECE is non-trivial
    labels = np.where(rng.random(n) < 0.7, probs.argmax(-1), rng.integers(0, c, n))
    confidence = probs.max(-1)
    edges = np.arange(ECE_BINS + 1) / ECE_BINS
    away = np.abs(confidence[:, None] - edges[None]).min(1) > 1e-6
    probs, labels = probs[away], labels[away]
    assert len(labels) > 700
    ours = ece(probs, labels)
    assert abs(ours - hand_ece(probs, labels)) < 1e-12
    theirs = multiclass_calibration_error(
        torch.tensor(probs), torch.tensor(labels), num_classes=c, n_bins=15, norm="l1"
    ).item()
    assert abs(ours - theirs) < 1e-6
    assert ours > 0.01


def test_ece_bins_are_left_closed_and_one_is_in_the_last_bin():
    assert 0.6 * ECE_BINS == 9.0  # 0.6 is exactly the edge between bins 8 and 9
    probs = np.array([[0.6, 0.4], [0.41, 0.59], [1.0, 0.0], [0.95, 0.05]])
    labels = np.array([0, 0, 0, 1])
    # [lo, hi): 0.6 alone in bin 9 (right), 0.59 alone in bin 8 (wrong);
    # 1.0 (right) and 0.95 (wrong) share the last bin [14/15, 1]
    expected = (abs(1 - 0.6) + abs(0 - 0.59) + 2 * abs(0.5 - 0.975)) / 4
    assert abs(ece(probs, labels) - expected) < 1e-12
    assert abs(hand_ece(probs, labels) - expected) < 1e-12


def test_ece_perfectly_calibrated_bins_give_zero():
    # 4 samples at confidence 0.75 (bin 11), 3 right and 1 wrong
    probs = np.tile([0.75, 0.25], (4, 1))
    labels = np.array([0, 0, 0, 1])
    assert abs(ece(probs, labels)) < 1e-12


# -------------------------------------------------------------- diversity
def logits_with_hits(hits, labels, num_classes=3):
    """Member logits (M, N, C) whose argmax is the label where hits is True
    and (label + 1) % C otherwise."""
    hits = np.asarray(hits, dtype=bool)
    m, n = hits.shape
    out = np.zeros((m, n, num_classes))
    for i in range(m):
        for j in range(n):
            target = labels[j] if hits[i, j] else (labels[j] + 1) % num_classes
            out[i, j, target] = 2.0 + 0.1 * i
    return out


def test_inconsistency_terms_three_members_by_hand():
    labels = np.array([0, 1, 2, 0])
    hits = np.array([
        [1, 1, 1, 0],
        [1, 0, 1, 0],
        [1, 0, 0, 0],
    ])
    logits = logits_with_hits(hits, labels)
    # pairs (0,1), (0,2), (1,2): exactly one correct in
    # sample 0: none; sample 1: (0,1),(0,2); sample 2: (0,2),(1,2); sample 3: none
    np.testing.assert_allclose(inconsistency_terms(logits, labels), [0.0, 2 / 3, 2 / 3, 0.0], atol=1e-12)


def test_inconsistency_terms_single_member_is_zero():
    labels = np.array([0, 1, 2])
    logits = logits_with_hits(np.array([[1, 0, 1]]), labels)
    out = inconsistency_terms(logits, labels)
    assert out.shape == (3,)
    np.testing.assert_array_equal(out, 0.0)


def hand_kl(logits):
    probs = [np_softmax(z) for z in logits]
    m, n = len(probs), logits.shape[1]
    out = np.zeros(n)
    for x in range(n):
        values = [entropy(probs[j][x], probs[i][x]) for i in range(m) for j in range(m) if i != j]
        out[x] = np.mean(values)
    return out


def test_kl_terms_mean_over_ordered_pairs():
    logits = random_logits(4, 3, 6, 5)
    np.testing.assert_allclose(kl_terms(logits), hand_kl(logits), rtol=1e-9, atol=1e-12)
    two = logits[:2]
    p0, p1 = np_softmax(two[0]), np_softmax(two[1])
    both = 0.5 * (entropy(p0.T, p1.T) + entropy(p1.T, p0.T))
    np.testing.assert_allclose(kl_terms(two), both, rtol=1e-9)
    assert np.all(kl_terms(logits) > 0)


def test_kl_terms_zero_for_identical_members_and_single_member():
    z = random_logits(5, 1, 4, 3)
    np.testing.assert_allclose(kl_terms(np.concatenate([z, z, z])), 0.0, atol=1e-12)
    np.testing.assert_array_equal(kl_terms(z), 0.0)


def test_kl_terms_invariant_to_member_order():
    logits = random_logits(6, 3, 5, 4)
    reference = kl_terms(logits)
    for order in permutations(range(3)):
        np.testing.assert_allclose(kl_terms(logits[list(order)]), reference, rtol=1e-12, atol=1e-14)


def test_spread_terms_unbiased_std_averaged_over_classes():
    values = np.random.default_rng(7).normal(size=(4, 6, 3))
    expected = np.array([[np.std(values[:, x, c], ddof=1) for c in range(3)] for x in range(6)]).mean(-1)
    np.testing.assert_allclose(spread_terms(values), expected, rtol=1e-12)
    # by hand: two members 0 and 2 -> std (ddof 1) = √2 in every class
    pair = np.stack([np.zeros((1, 3)), np.full((1, 3), 2.0)])
    np.testing.assert_allclose(spread_terms(pair), [math.sqrt(2)], rtol=1e-12)
    single = spread_terms(values[:1])
    assert single.shape == (6,)
    np.testing.assert_array_equal(single, 0.0)


# ------------------------------------------------------------------- BALD
def test_bald_single_member_is_entropy():
    z = random_logits(8, 1, 5, 4)
    expected = entropy(np_softmax(z[0]).T)
    np.testing.assert_allclose(bald_terms(z), expected, rtol=1e-9)
    uniform = np.zeros((1, 1, 4))
    np.testing.assert_allclose(bald_terms(uniform), [math.log(4)], rtol=1e-12)


def test_bald_multi_member_is_mutual_information():
    z = random_logits(9, 4, 10, 5)
    probs = np.stack([np_softmax(m) for m in z])
    expected = entropy(probs.mean(0).T) - np.mean([entropy(p.T) for p in probs], axis=0)
    got = bald_terms(z)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    assert np.all(got >= -1e-12)
    assert got.max() > 0.01
    # identical members carry no epistemic uncertainty
    np.testing.assert_allclose(bald_terms(np.concatenate([z[:1]] * 3)), 0.0, atol=1e-12)


# ------------------------------------------------------------------ AUUQC
def ordered_uncertainty_logits(n, wrong_every=3, seed=0):
    """One member; wrong samples are near-uniform (high entropy), right ones
    confident, so the most uncertain samples are exactly the wrong ones."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, size=n)
    logits = np.zeros((1, n, 3))
    wrong = np.arange(n) % wrong_every == 0
    for j in range(n):
        if wrong[j]:
            logits[0, j, (labels[j] + 1) % 3] = 0.05 + 0.01 * rng.random()
        else:
            logits[0, j, labels[j]] = 6.0 + rng.random()
    return logits, labels, wrong


@pytest.mark.parametrize("n", [270, 1000])
def test_auuqc_perfectly_ordered_uncertainty(n):
    logits, labels, wrong = ordered_uncertainty_logits(n)
    value, fractions, accuracies = auuqc(logits, labels)
    assert len(fractions) == 50 and len(accuracies) == 50
    assert fractions[0] == 0.0 and abs(fractions[-1] - 0.98) < 1e-12
    plain = correct(ensemble_probs(logits), labels).mean()
    assert abs(plain - (1 - wrong.mean())) < 1e-12
    assert abs(accuracies[0] - plain) < 1e-12
    assert np.all(np.diff(accuracies) >= -1e-12)
    # once the wrong third is removed every remaining sample is right
    assert accuracies[-1] == 1.0
    assert abs(value - accuracies.mean()) < 1e-12
    assert plain < value <= 1.0


def test_auuqc_points_and_reversed_ordering():
    logits, labels, _ = ordered_uncertainty_logits(270)
    value, fractions, accuracies = auuqc(logits, labels, points=7)
    assert len(fractions) == 7 and len(accuracies) == 7
    np.testing.assert_allclose(fractions, np.linspace(0, 0.98, 7))
    # the removed count is floor(fraction * N): check one point by hand
    bald = bald_terms(logits)
    hits = correct(ensemble_probs(logits), labels)[np.argsort(-bald, kind="stable")]
    r = int(np.floor(fractions[3] * 270))
    assert abs(accuracies[3] - hits[r:].mean()) < 1e-12
    # uncertainty anti-correlated with errors: curve decreases, area below accuracy
    n = 300
    labels = np.arange(n) % 3
    bad = np.zeros((1, n, 3))
    wrong = np.arange(n) % 3 == 0
    bad[0, wrong, (labels[wrong] + 1) % 3] = 8.0  # confidently wrong
    bad[0, ~wrong, labels[~wrong]] = 0.05  # barely right, near-uniform
    value, _, accuracies = auuqc(bad, labels)
    assert np.all(np.diff(accuracies) <= 1e-12)
    assert value < correct(ensemble_probs(bad), labels).mean()


# -------------------------------------------------------- class dominance
def test_class_dominance_better_worse_tie_and_absent_classes():
    labels = np.array([0, 0, 1, 1, 2, 2])
    # a: class 0 both right, class 1 one right, class 2 one right
    # b: class 0 one right, class 1 both right, class 2 one right (a different one)
    hits_a = np.array([1, 1, 1, 0, 1, 0])
    hits_b = np.array([1, 0, 1, 1, 0, 1])
    for num_classes in (3, 5):  # classes 3 and 4 never appear in the labels
        a = logits_with_hits(hits_a[None], labels, num_classes)[0]
        b = logits_with_hits(hits_b[None], labels, num_classes)[0]
        shares = class_dominance(a, b, labels, num_classes)
        assert set(shares) == {"a_better", "b_better", "tie"}
        for key in shares:
            assert abs(shares[key] - 100.0 / 3) < 1e-9
        swapped = class_dominance(b, a, labels, num_classes)
        assert swapped["a_better"] == shares["b_better"] and swapped["b_better"] == shares["a_better"]
    same = class_dominance(a, a, labels, 5)
    assert same == {"a_better": 0.0, "b_better": 0.0, "tie": 100.0}


# ------------------------------------------------------------------ bundle
def fixing_ensemble():
    """3 members, 3 samples, label 0; member m is (weakly) wrong on sample m
    and confidently right elsewhere, so the probability average is always right."""
    p_label = np.full((3, 3), 0.9)
    np.fill_diagonal(p_label, 0.4)
    probs = np.stack([p_label, 1 - p_label], axis=-1)
    return logits_from_probs(probs), np.zeros(3, dtype=int)


def test_ensemble_metrics_efficiency_when_ensemble_fixes_errors():
    logits, labels = fixing_ensemble()
    terms = ensemble_metrics(logits, labels)
    np.testing.assert_allclose(terms["accuracy"], 100.0)
    np.testing.assert_allclose(terms["member_accuracy"], 200.0 / 3)
    assert abs(terms["efficiency"].mean() - (terms["accuracy"].mean() - terms["member_accuracy"].mean())) < 1e-9
    assert abs(terms["efficiency"].mean() - 100.0 / 3) < 1e-9
    # every sample: two of the three pairs have exactly one correct member
    np.testing.assert_allclose(terms["inconsistency"], 200.0 / 3)
    np.testing.assert_allclose(terms["nll"], -np.log((0.9 + 0.9 + 0.4) / 3), rtol=1e-9)
    p = (0.9 + 0.9 + 0.4) / 3
    np.testing.assert_allclose(terms["brier"], 2 * (1 - p) ** 2, rtol=1e-9)
    np.testing.assert_allclose(terms["_probs"][:, 0], p, rtol=1e-12)
    for name in ("kl", "spread_prob", "spread_logit"):
        assert terms[name].shape == (3,) and np.all(terms[name] > 0)


def test_ensemble_metrics_efficiency_negative_when_ensemble_hurts():
    # member 0 right with 0.6, member 1 wrong with 0.9 -> ensemble wrong
    probs = np.array([[[0.6, 0.4]], [[0.1, 0.9]]])
    terms = ensemble_metrics(logits_from_probs(probs), np.array([0]))
    assert terms["accuracy"][0] == 0.0
    assert abs(terms["efficiency"][0] - (-50.0)) < 1e-9


BOOT = {"samples": 200, "level": 0.95, "seed": 11}
PER_SAMPLE = ("accuracy", "nll", "brier", "inconsistency", "kl", "spread_prob", "spread_logit",
              "member_accuracy", "efficiency")


def summary_inputs():
    rng = np.random.default_rng(12)
    n, c = 150, 4
    labels = rng.integers(0, c, n)
    logits = rng.normal(size=(3, n, c))
    logits[:, np.arange(n), labels] += 1.5
    return logits, labels


def test_summarise_values_and_cis():
    logits, labels = summary_inputs()
    out = summarise(logits, labels, BOOT)
    assert set(PER_SAMPLE) | {"ece", "auuqc"} == set(out)
    terms = ensemble_metrics(logits, labels)
    for name in PER_SAMPLE:
        assert abs(out[name]["value"] - terms[name].mean()) < 1e-12
        lo, hi = out[name]["ci"]
        assert lo <= hi
    lo, hi = out["ece"]["ci"]
    assert lo <= hi
    assert abs(out["ece"]["value"] - ece(ensemble_probs(logits), labels)) < 1e-12
    assert abs(out["auuqc"]["value"] - auuqc(logits, labels)[0]) < 1e-12
    lo, hi = out["accuracy"]["ci"]
    assert lo <= out["accuracy"]["value"] <= hi
    assert hi - lo > 1.0  # a real interval, in percent, for N = 150
    lo, hi = out["nll"]["ci"]
    assert lo <= out["nll"]["value"] <= hi


def test_summarise_same_seed_same_cis_other_seed_differs():
    logits, labels = summary_inputs()
    first = summarise(logits, labels, BOOT)
    second = summarise(logits, labels, dict(BOOT))
    assert first == second
    other = summarise(logits, labels, {**BOOT, "seed": BOOT["seed"] + 1})
    assert other["accuracy"]["value"] == first["accuracy"]["value"]
    assert other["nll"]["ci"] != first["nll"]["ci"]


# -------------------------------------------------------------- bootstrap
def test_bootstrap_indices_shape_range_and_seed():
    draws = bootstrap_indices(37, 20, seed=3)
    assert draws.shape == (20, 37)
    assert draws.min() >= 0 and draws.max() < 37
    np.testing.assert_array_equal(draws, bootstrap_indices(37, 20, seed=3))
    assert not np.array_equal(draws, bootstrap_indices(37, 20, seed=4))


def test_percentile_ci_by_hand():
    values = np.arange(101, dtype=float)  # percentiles equal the values
    np.testing.assert_allclose(percentile_ci(values, 0.9), [5.0, 95.0], atol=1e-9)
    np.testing.assert_allclose(percentile_ci(values, 0.5), [25.0, 75.0], atol=1e-9)
    lo, hi = percentile_ci(np.random.default_rng(0).normal(size=1000), 0.95)
    assert lo < 0 < hi


def test_bootstrap_percentile_ci_coverage():
    p, n, reps = 0.7, 200, 200
    rng = np.random.default_rng(2023)
    covered = 0
    for rep in range(reps):
        values = (rng.random(n) < p).astype(np.float64)
        ci = percentile_ci(values[bootstrap_indices(n, 300, seed=rep)].mean(1), 0.95)
        covered += ci[0] <= p <= ci[1]
    coverage = covered / reps
    assert 0.89 <= coverage <= 0.99, coverage


def test_bootstrap_ci_statistic_function():
    rng = np.random.default_rng(5)
    x = rng.normal(loc=2.0, size=300)

    def median(indices):
        return float(np.median(x[indices]))

    ci = bootstrap_ci(median, len(x), samples=200, seed=9, level=0.95)
    assert len(ci) == 2 and ci[0] < np.median(x) < ci[1]
    assert ci == bootstrap_ci(median, len(x), samples=200, seed=9, level=0.95)
    # the same as the percentile CI of the statistic over bootstrap_indices
    manual = percentile_ci(np.array([median(d) for d in bootstrap_indices(len(x), 200, 9)]), 0.95)
    assert ci == manual
    assert ci != bootstrap_ci(median, len(x), samples=200, seed=10, level=0.95)


def test_probe_logits_cover_every_class():
    """A class absent from the probe's training data is never predicted, but
    every member's logits keep one column per class of the dataset; the stored
    parameters reproduce the logistic regression's probabilities."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from multisym.evaluate.probe import probe_logits, probe_parameters

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4))
    y = np.repeat([0, 2, 3], 20)
    x[y == 2] += 3.0
    scaler = StandardScaler().fit(x)
    model = LogisticRegression().fit(scaler.transform(x), y)
    logits = probe_logits(probe_parameters(model, scaler, 5), x)
    assert logits.shape == (60, 5)
    np.testing.assert_allclose(softmax(logits)[:, [0, 2, 3]], model.predict_proba(scaler.transform(x)), atol=1e-5)
    assert (logits.argmax(1) != 1).all() and (logits.argmax(1) != 4).all()
    binary = LogisticRegression().fit(scaler.transform(x[:40]), y[:40])
    two = probe_logits(probe_parameters(binary, scaler, 5), x[:40])
    np.testing.assert_allclose(softmax(two)[:, [0, 2]], binary.predict_proba(scaler.transform(x[:40])), atol=1e-5)
