"""Paired bootstrap differences of ensembles (multisym.resamples) and the
paper's claims tested with them (multisym.report.claims, docs/method.md#claims)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from multisym.ensembles.metrics import percentile_ci
from multisym.resamples import (PairingError, Recorder, Resamples, Side, check_paired, paired_difference,
                                       read_resamples, verdict, write_resamples)
from multisym.ensembles.strategies import greedy_results, load_logits, random_results, whole_pool_results
from multisym.report import claims as claims_module
from multisym.report.claims import claims, load_claims, summary_verdict
from test_ensemble import CLASSES, IDS, pool_files, settings  # noqa: F401 (pool_files: a fixture)

SAMPLES = 400


def resamples(values: np.ndarray, pool: str = "eq", strategy: str = "greedy", sizes=None, metric: str = "accuracy",
              seed: int = 0, n: int = 270, labels: str = "abc", dataset: str = "") -> Resamples:
    """A resamples file's contents: ``values`` (ensembles, samples) of one metric;
    the whole-split value of each ensemble is its mean over resamples."""
    values = np.atleast_2d(values).astype(np.float32)
    count = len(values)
    sizes = np.arange(1, count + 1) if sizes is None else np.asarray(sizes)
    draws = np.zeros(count, np.int64) if strategy != "random" else np.arange(count)
    return Resamples(pool, strategy, dataset, n, values.shape[1], seed, labels, [metric],
                     values.mean(axis=1, keepdims=True).astype(np.float64), values[:, None, :], sizes, draws,
                     sizes.copy())


def side(r: Resamples, size: int = 1, metric: str = "accuracy") -> Side:
    return Side(r, r.rows(size), metric)


@pytest.fixture
def shared():
    """Per-resample values both ensembles share (how hard each resample is):
    far wider than the differences the tests put on top of them."""
    return np.random.default_rng(0).normal(90.0, 2.0, SAMPLES)


@pytest.mark.parametrize("shift, direction, expected", [
    (0.5, "higher", "supported"), (-0.5, "higher", "contradicted"), (0.5, "lower", "contradicted"),
    (-0.5, "lower", "supported"), (0.0, "higher", "inconclusive"), (0.0, "lower", "inconclusive"),
])
def test_paired_difference_verdicts(shared, shift, direction, expected):
    """A difference of 0.5 points with a paired noise of 0.1 is supported (or
    contradicted) although each ensemble's own CI is 8 points wide; no
    difference at all is inconclusive."""
    rng = np.random.default_rng(1)
    a = resamples(shared + shift + rng.normal(0.0, 0.1, SAMPLES), pool="eq_inv")
    b = resamples(shared, pool="eq")
    low, high = percentile_ci(shared, 0.95)
    assert high - low > 6.0
    difference = paired_difference(side(a), side(b), 0.95)
    assert difference.estimate == pytest.approx(shift, abs=0.03)
    assert difference.ci_high - difference.ci_low < 0.5
    assert verdict(difference.ci_low, difference.ci_high, direction) == expected


def test_verdict_against_a_reference_and_at_its_edge():
    assert verdict(20.0, 70.0, "higher", 10.0) == "supported"
    assert verdict(0.0, 50.0, "higher", 10.0) == "inconclusive"
    assert verdict(0.0, 5.0, "higher", 10.0) == "contradicted"
    assert verdict(0.0, 0.0, "higher") == "inconclusive"  # identical ensembles
    with pytest.raises(ValueError, match="unknown direction"):
        verdict(0.0, 1.0, "sideways")


@pytest.mark.parametrize("key, value", [("seed", 1), ("n", 271), ("samples", SAMPLES - 1),
                                        ("labels_sha256", "abd")])
def test_a_pair_measured_on_other_resamples_is_refused(shared, key, value):
    a, b = resamples(shared, pool="eq_inv"), resamples(shared)
    check_paired(a, b)
    setattr(b, key, value)
    with pytest.raises(PairingError, match=key):
        paired_difference(side(a), side(b), 0.95)


def test_random_draws_are_redrawn_on_each_resample(shared):
    """Draws that disagree widen the CI beyond the test resampling alone."""
    rng = np.random.default_rng(2)
    spread = np.array([-3.0, -1.0, 0.0, 1.0, 3.0])[:, None]
    a = resamples(shared + 0.5 + spread + rng.normal(0, 0.1, (5, SAMPLES)), "eq_inv", "random", [2] * 5)
    b = resamples(np.tile(shared, (5, 1)), "eq", "random", [2] * 5)
    difference = paired_difference(side(a, 2), side(b, 2), 0.95)
    assert difference.estimate == pytest.approx(0.5, abs=0.05)
    assert difference.ci_low < 0.0 < difference.ci_high
    agreeing = resamples(np.tile(a.resampled[:, 0].mean(axis=0), (5, 1)), "eq_inv", "random", [2] * 5)
    narrow = paired_difference(side(agreeing, 2), side(b, 2), 0.95)
    assert narrow.ci_low > 0.0 and narrow.estimate == pytest.approx(difference.estimate, abs=1e-5)
    assert difference.ci_high - difference.ci_low > 5 * (narrow.ci_high - narrow.ci_low)
    assert paired_difference(side(a, 2), side(b, 2), 0.95) == difference  # seeded


def test_greedy_rows_clamp_to_the_longest_prefix(shared):
    greedy = resamples(np.tile(shared, (3, 1)), sizes=[1, 2, 3])
    assert list(greedy.rows(2)) == [1] and list(greedy.rows(6)) == [2]
    random = resamples(np.tile(shared, (3, 1)), strategy="random", sizes=[2, 2, 3])
    assert list(random.rows(2)) == [0, 1] and not len(random.rows(6))


def test_recorded_resamples_are_the_json_cis(pool_files, tmp_path):  # noqa: F811
    """What an ensemble job stores per resample gives back its result's CIs;
    random ensembles keep their JSON without CIs, and the file reads back."""
    stacks = load_logits(pool_files)
    greedy_record, random_record, all_record = (Recorder(settings()["bootstrap"], stacks["test_labels"])
                                                for _ in range(3))
    greedy = greedy_results(IDS, CLASSES, stacks, settings(), greedy_record)
    assert greedy == greedy_results(IDS, CLASSES, stacks, settings())
    random = random_results(IDS, CLASSES, stacks, settings(), random_record)
    assert random == random_results(IDS, CLASSES, stacks, settings())
    assert all("ci" not in m for e in random["sizes"] for d in e["draws"] for m in d["metrics"].values())
    whole_pool_results(IDS, CLASSES, stacks, settings(), all_record)
    path = tmp_path / "eq_inv_greedy.resamples.npz"
    write_resamples(greedy_record.build("eq_inv", "greedy"), str(path))
    stored = read_resamples(str(path))
    assert (stored.pool, stored.strategy, stored.n, stored.samples) == ("eq_inv", "greedy", 80, 50)
    assert list(stored.size) == [1, 2, 3] and stored.resampled.dtype == np.float32
    for entry, row in zip(greedy["sizes"], range(3)):
        assert stored.distinct[row] == entry["distinct"]
        for metric in ("accuracy", "nll", "ece", "auuqc"):
            value, per_resample = stored.metric(metric, np.array([row]))
            assert value[0] == entry["metrics"][metric]["value"]
            np.testing.assert_allclose(percentile_ci(per_resample[0].astype(np.float64), 0.95),
                                       entry["metrics"][metric]["ci"], rtol=1e-5, atol=1e-5)
    drawn = random_record.build("eq_inv", "random")
    assert list(drawn.size) == [2, 2, 2, 3, 3, 3] and list(drawn.draw) == [0, 1, 2, 0, 1, 2]
    value, _ = drawn.metric("kl", drawn.rows(3))  # the diversity terms: at diversity_size only
    assert not np.isnan(value).any() and np.isnan(drawn.metric("kl", drawn.rows(2))[0]).all()
    assert all_record.build("eq_inv", "all").rows(None).tolist() == [0]


def test_summary_rules():
    assert summary_verdict(["supported"] * 3, "all") == "supported"
    assert summary_verdict(["supported", "inconclusive"], "all") == "inconclusive"
    assert summary_verdict(["supported", "supported", "contradicted"], "all") == "contradicted"
    assert summary_verdict(["supported", "supported", "inconclusive"], "majority") == "supported"
    assert summary_verdict(["supported", "inconclusive"], "majority") == "inconclusive"
    assert summary_verdict(["supported", "supported", "contradicted"], "majority") == "inconclusive"
    assert summary_verdict(["contradicted", "contradicted", "inconclusive"], "majority") == "contradicted"


def test_every_claim_of_the_brief_is_data():
    listed = load_claims()
    assert {c["id"] for c in listed} >= {"greedy_accuracy", "random_accuracy", "diversity", "nll", "auuqc",
                                         "class_dominance", "transfer_gain", "several_axes", "ssl_over_supervised"}
    for claim in listed:
        assert claim["source"].startswith("Loh et al.") and claim["summary"] in ("all", "majority")


SPEC = {"name": "t", "dataset": "digits", "diversity_size": 3, "delta_size": 3, "axes_size": 6, "level": 0.95,
        "seed": 0, "transfer": [], "axes": ["rotation"], "pools": ["eq", "eq_inv", "sup"], "axis_pools": []}


def synthetic_results(shared) -> list[dict]:
    """Greedy Eq+Inv above greedy Eq by 1 point at every size; random Eq+Inv
    below random Eq by 1; diversity equal; supervised far below; dominance of
    Table 1 with Eq on 50 % [30, 70] and Inv on 10 % [0, 30] of the classes."""
    rng = np.random.default_rng(5)

    def values(shift, count):
        return shared + shift + rng.normal(0.0, 0.05, (count, SAMPLES))

    out = [{"resamples": resamples(values(1.0, 4), "eq_inv", "greedy", [1, 2, 3, 4])},
           {"resamples": resamples(values(0.0, 4), "eq", "greedy", [1, 2, 3, 4])},
           {"resamples": resamples(values(-1.0, 6), "eq_inv", "random", [2, 2, 2, 3, 3, 3])},
           {"resamples": resamples(values(0.0, 6), "eq", "random", [2, 2, 2, 3, 3, 3])},
           {"resamples": resamples(values(-9.0, 6), "sup", "random", [2, 2, 2, 3, 3, 3])}]
    for name in ("inconsistency", "nll", "auuqc"):
        same = rng.normal(1.0, 0.2, SAMPLES)
        for r in out:
            r["resamples"] = _with_metric(r["resamples"], name, same)
    dominance = {"eq": "eq-s1", "inv": "inv-s1", "best_pair": {"eq_better": 50.0, "inv_better": 10.0, "tie": 40.0},
                 "best_pair_ci": {"eq_better": [30.0, 70.0], "inv_better": [0.0, 30.0], "tie": [20.0, 60.0]}}
    return [*out, {"members": [], "dominance": dominance}]


def _with_metric(r: Resamples, name: str, same: np.ndarray) -> Resamples:
    """``r`` with one more metric, ``same`` on every resample for every ensemble."""
    extra = np.tile(same, (len(r.size), 1)).astype(np.float32)
    r.metrics = [*r.metrics, name]
    r.value = np.concatenate([r.value, extra.mean(axis=1, keepdims=True)], axis=1)
    r.resampled = np.concatenate([r.resampled, extra[:, None, :]], axis=1)
    return r


def test_claims_on_synthetic_results(shared):
    rows = claims(synthetic_results(shared), SPEC)
    summary = {r.claim: r for r in rows if r.cell == "summary"}
    cells = {(r.claim, r.cell, r.compared, r.metric): r for r in rows if r.cell != "summary"}
    assert summary["greedy_accuracy"].verdict == "supported"
    assert [r.cell for r in rows if r.claim == "greedy_accuracy" and r.cell != "summary"] == [
        "M=2 on digits", "M=3 on digits", "M=4 on digits"]
    assert summary["random_accuracy"].verdict == "contradicted"
    cell = cells[("random_accuracy", "M=2 on digits", "random Eq+Inv (MSE) − random Eq (DE)", "accuracy")]
    assert cell.estimate == pytest.approx(-1.0, abs=0.05) and cell.ci_high < 0 and "3 random draws" in cell.note
    # diversity: inconsistency equal on both sides, the other three terms not stored
    assert summary["diversity"].verdict == "inconclusive" and "no kl at M=3 on digits" in summary["diversity"].note
    assert summary["nll"].verdict == "inconclusive" and summary["auuqc"].verdict == "inconclusive"
    assert "1 supported, 0 contradicted, 1 inconclusive" in summary["class_dominance"].note
    assert summary["class_dominance"].verdict == "inconclusive"
    assert summary["transfer_gain"].verdict == "not measured" and "transfer.datasets" in summary["transfer_gain"].note
    for claim in ("axis_gain", "several_axes"):
        assert summary[claim].verdict == "not measured" and "members.axes" in summary[claim].note
    ssl = summary["ssl_over_supervised"]
    assert ssl.verdict == "supported" and "ssl_ft is not built at this scale" in ssl.note


def test_missing_metrics_and_sizes_are_named(shared):
    results = synthetic_results(shared)
    rows = claims(results, {**SPEC, "diversity_size": 5})
    note = next(r.note for r in rows if r.claim == "diversity" and r.cell == "summary")
    assert "no ensembles of M=5" in note


def test_claims_are_written_as_csv_markdown_and_html(shared, tmp_path, monkeypatch):
    paths = []
    for k, result in enumerate(synthetic_results(shared)):
        if "resamples" in result:
            path = tmp_path / f"{k}.resamples.npz"
            write_resamples(result["resamples"], str(path))
        else:
            path = tmp_path / "members.json"
            path.write_text(json.dumps(result))
        paths.append(str(path))
    out = {ext: str(tmp_path / f"claims.{ext}") for ext in ("csv", "md", "html")}
    rows = claims_module.write(paths, SPEC, out["csv"], out["md"], out["html"])
    with open(out["csv"]) as handle:
        stored = list(csv.DictReader(handle))
    assert len(stored) == len(rows) and {"claim", "verdict", "ci_low", "ci_high", "estimate"} <= set(stored[0])
    markdown = (tmp_path / "claims.md").read_text()
    assert "| claim | source | verdict | cells |" in markdown and "supported" in markdown
    assert "Eq and Inv members each win" in (tmp_path / "claims.html").read_text()
