"""The shared-precomputation ensemble metrics (multisym.ensembles.outputs) and their
bootstrap (multisym.ensembles.resampling) against the definitions in
multisym.ensembles.metrics, on random pools with repeated members."""

from __future__ import annotations

import numpy as np
import pytest

from multisym.ensembles import metrics
from multisym.ensembles import rowblocks
from multisym.ensembles import resampling
from multisym.ensembles.outputs import SplitOutputs
from multisym.ensembles.resampling import resample_counts, resample_counts_by_item, resampled_auuqc
from multisym.logits import row_gaps

ENSEMBLES = ([0], [2, 2], [0, 2, 3], [0, 0, 1, 3, 3], [3, 1])
BOOTSTRAP = {"samples": 200, "seed": 7, "level": 0.95}


def split_outputs(logits, labels, **options) -> SplitOutputs:
    """SplitOutputs of ``logits`` in the form ``logits.write_logits`` stores
    them: gaps to each row's maximum (float32 here) and the maxima."""
    return SplitOutputs(*row_gaps(logits), labels, **options)


@pytest.fixture(scope="module")
def pool():
    rng = np.random.default_rng(3)
    # 3 blocks of rows
    logits = (rng.standard_normal((4, 600, 7)) * rng.uniform(0.5, 6.0, size=(4, 1, 1))).astype(np.float32)
    logits[1, :5] *= 40.0  # probabilities below the 1e-12 floor
    labels = rng.integers(0, 7, size=600)
    return logits, labels, split_outputs(logits, labels)


@pytest.mark.parametrize("chosen", ENSEMBLES)
def test_terms_equal_the_definitions(pool, chosen):
    logits, labels, outputs = pool
    expected = metrics.ensemble_metrics(logits[chosen], labels)
    expected.pop("_probs")
    got = outputs.terms(chosen)
    for name, values in expected.items():
        np.testing.assert_allclose(got[name], values, rtol=2e-4, atol=2e-4, err_msg=name)
    np.testing.assert_allclose(got["bald"], metrics.bald_terms(logits[chosen]), rtol=2e-4, atol=1e-5)
    np.testing.assert_allclose(outputs.mean_probs(chosen), metrics.ensemble_probs(logits[chosen]), atol=1e-6)


@pytest.mark.parametrize("threads", [1, 3])
def test_resample_counts_are_the_bootstrap_resamples(threads):
    resample_counts.cache_clear()
    rowblocks.set_job_threads(threads)
    try:
        draws = metrics.bootstrap_indices(300, 120, 5)  # 120 resamples: three chunks, the last one short
        expected = np.stack([np.bincount(d, minlength=300) for d in draws])
        counts = resample_counts(300, 120, 5)
    finally:
        rowblocks.set_job_threads(None)
        resample_counts.cache_clear()
    assert counts.dtype == np.uint8
    np.testing.assert_array_equal(counts, expected)
    # resample b is its own stream: drawing fewer resamples keeps the first ones
    np.testing.assert_array_equal(metrics.bootstrap_indices(300, 4, 5), draws[:4])


def test_resample_counts_too_large_for_a_byte_are_kept_whole(monkeypatch):
    """A resample that draws one item 256 times or more (only possible from
    n = 256 items) gets wider integers, not a wrapped count."""
    class Stuck:  # every draw is item 0
        def __init__(self, seed, resample):
            pass

        def integers(self, low, high, size):
            return np.zeros(size, dtype=np.int64)

    monkeypatch.setattr(metrics, "resample_stream", Stuck)
    monkeypatch.setattr(resampling, "resample_stream", Stuck)
    resample_counts.cache_clear()
    try:
        counts = resample_counts(300, 3, 0)
    finally:
        resample_counts.cache_clear()
    assert counts.dtype != np.uint8 and (counts[:, 0] == 300).all() and (counts[:, 1:] == 0).all()


@pytest.mark.parametrize("chosen", ENSEMBLES)
def test_summary_equals_summarise(pool, chosen):
    logits, labels, outputs = pool
    expected = metrics.summarise(logits[chosen], labels, BOOTSTRAP)
    got = outputs.summary(chosen, BOOTSTRAP)
    assert got.keys() == expected.keys()
    for name in expected:
        if name == "auuqc" and len(chosen) > 1 == len(set(chosen)):
            continue  # BALD is 0 for every sample: the order of the UQ curve is arbitrary
        np.testing.assert_allclose(got[name]["value"], expected[name]["value"], rtol=2e-4, atol=2e-4, err_msg=name)
        np.testing.assert_allclose(got[name]["ci"], expected[name]["ci"], rtol=2e-3, atol=2e-3, err_msg=name)


@pytest.mark.parametrize("n", [1, 7, 64, 120, 1000])
def test_resampled_auuqc_is_each_resample_sorted_afresh(n):
    rng = np.random.default_rng(n)
    hits, uncertainty = (rng.random(n) < 0.7).astype(float), rng.random(n)
    draws = metrics.bootstrap_indices(n, 40, 2)
    expected = [metrics.uq_curve(hits[d], uncertainty[d])[1].mean() for d in draws]
    np.testing.assert_allclose(resampled_auuqc(resample_counts_by_item(n, 40, 2), hits, uncertainty), expected,
                               rtol=1e-6)


def test_selection_score_and_per_class_accuracy(pool):
    logits, labels, outputs = pool
    probs = outputs.mean_probs([0, 3])
    accuracy, minus_nll = outputs.score(probs)
    reference = metrics.ensemble_probs(logits[[0, 3]])
    assert accuracy == pytest.approx(metrics.correct(reference, labels).mean())
    assert minus_nll == pytest.approx(-metrics.nll_terms(reference, labels).mean(), rel=1e-5)
    np.testing.assert_allclose(outputs.per_class_accuracy(2, 7), metrics.per_class_accuracy(logits[2], labels, 7))


def test_float16_gaps_stay_float16_and_give_the_same_terms(pool):
    logits, labels, _ = pool
    gaps, row_max = row_gaps(logits)
    half = gaps.astype(np.float16)
    outputs = SplitOutputs(half, row_max, labels)
    assert outputs.gaps.dtype == np.float16
    reference = SplitOutputs(half.astype(np.float32), row_max, labels)
    for name, values in reference.terms([0, 1, 1, 3]).items():
        np.testing.assert_allclose(outputs.terms([0, 1, 1, 3])[name], values, rtol=1e-6, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("chosen", [[0, 2, 2, 3], [1, 3]])
def test_without_diversity_or_ci_the_other_values_are_unchanged(pool, chosen):
    """An ensemble whose diversity is not reported skips four of the five member
    sums, and a random draw its bootstrap: every value left is the same."""
    outputs = pool[2]
    full = outputs.summary(chosen, BOOTSTRAP)
    lean = outputs.summary(chosen, BOOTSTRAP, outputs.terms(chosen, diversity=False), ci=False)
    assert set(full) - set(lean) == {"kl", "spread_prob", "spread_logit"}
    for name, metric in lean.items():
        assert metric == {"value": pytest.approx(full[name]["value"], rel=1e-12, abs=1e-12)}, name


def test_prepared_member_values_are_the_definitions(pool):
    """One pass per member gives its softmax, log-sum-exp, entropy, p_y, max p,
    Σ p² and hits: every metric of the member alone."""
    logits, labels, outputs = pool
    rows = np.arange(len(labels))
    for j, z in enumerate(logits.astype(np.float64)):
        p = metrics.softmax(z)
        np.testing.assert_allclose(outputs.probs[j], p, atol=1e-6)
        np.testing.assert_allclose(outputs.lse[j], np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1))
                                   + z.max(-1), rtol=1e-6)
        np.testing.assert_allclose(outputs.entropy[j], metrics.bald_terms(z[None]), atol=1e-5)
        np.testing.assert_allclose(outputs.p_true[j], p[rows, labels], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(outputs.confidence[j], p.max(-1), rtol=1e-6)
        np.testing.assert_allclose(outputs.sum_squares[j], (p * p).sum(-1), rtol=1e-5)
        np.testing.assert_array_equal(outputs.hits[j], z.argmax(-1) == labels)
        assert outputs.member_score(j) == pytest.approx(outputs.score(outputs.probs[j]), rel=1e-6)


def test_threads_and_kept_probabilities_change_no_value(pool):
    """Blocks are computed alike on any number of threads; without kept
    probabilities a member alone has exactly the same terms."""
    logits, labels, outputs = pool
    one_thread = split_outputs(logits, labels, threads=1)
    lean = split_outputs(logits, labels, prepare="values", threads=3)
    for chosen in ENSEMBLES:
        for name, values in one_thread.terms(chosen).items():
            np.testing.assert_array_equal(outputs.terms(chosen)[name], values, err_msg=name)
    for j in range(len(logits)):
        for name, values in outputs.terms([j, j]).items():
            np.testing.assert_array_equal(lean.terms([j, j])[name], values, err_msg=name)
        assert lean.summary([j], BOOTSTRAP) == outputs.summary([j], BOOTSTRAP)


def test_counts_by_item_are_small_integers_of_any_width():
    """The uint8 counts give every resample's AUUQC exactly as wider integers do."""
    by_item = resample_counts_by_item(300, 40, 3)
    assert by_item.dtype == np.uint8
    np.testing.assert_array_equal(by_item, resample_counts(300, 40, 3).T)
    rng = np.random.default_rng(0)
    hits, uncertainty = (rng.random(300) < 0.6).astype(float), rng.random(300)
    np.testing.assert_array_equal(resampled_auuqc(by_item, hits, uncertainty),
                                  resampled_auuqc(by_item.astype(np.int32), hits, uncertainty))


def test_resampled_auuqc_split_between_threads_is_unchanged():
    by_item = resample_counts_by_item(500, 61, 4)  # 61 resamples: unequal parts
    rng = np.random.default_rng(1)
    hits, uncertainty = (rng.random(500) < 0.7).astype(float), rng.random(500)
    one = resampled_auuqc(by_item, hits, uncertainty, threads=1)
    for threads in (2, 3):
        np.testing.assert_array_equal(resampled_auuqc(by_item, hits, uncertainty, threads=threads), one)


def test_candidate_scores_are_each_candidates_score(pool):
    logits, labels, outputs = pool
    total = outputs.probs[0] + 2 * outputs.probs[3]
    expected = [outputs.score((total + outputs.probs[k]) / 4) for k in range(len(logits))]
    for threads in (1, 2):
        outputs.threads = threads
        got = outputs.candidate_scores(total, 4)
        assert [g[0] for g in got] == [e[0] for e in expected]
        assert [g[1] for g in got] == pytest.approx([e[1] for e in expected], rel=1e-12)
    outputs.threads = None


def test_a_jobs_threads_are_the_ones_it_was_given():
    """The workflow's ensemble jobs pass their rule's threads, so jobs side by
    side do not each take every core."""
    from multisym.ensembles import rowblocks

    try:
        rowblocks.set_job_threads(3)
        assert rowblocks.job_threads() == 3
        seen = rowblocks.for_each(list(range(6)), lambda task: task * task)
        assert seen == [0, 1, 4, 9, 16, 25]
    finally:
        rowblocks.set_job_threads(None)
    assert rowblocks.job_threads() >= 1


def test_ensemble_entropy_where_every_member_gives_a_class_no_probability():
    """Rows where the mean probability of a class is exactly 0 (every member's
    softmax underflows there) take the 1e-12 floor, not 0 · log 0."""
    rng = np.random.default_rng(5)
    logits = rng.standard_normal((2, 300, 6)).astype(np.float32)
    logits[:, :20] *= 500.0
    labels = rng.integers(0, 6, 300)
    outputs = split_outputs(logits, labels)
    assert (outputs.mean_probs([0, 1])[:20] == 0).any()
    got = outputs.terms([0, 1])
    assert all(np.isfinite(values).all() for values in got.values())
    np.testing.assert_allclose(got["bald"], metrics.bald_terms(logits), rtol=2e-4, atol=1e-5)
