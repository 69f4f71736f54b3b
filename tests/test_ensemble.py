"""Tests for multisym.ensembles.strategies: greedy selection with replacement, start
rules, random compositions, the runners on a synthetic pool of stored logits,
and class dominance (docs/method.md#random-ensembles, docs/method.md#greedy-ensembles,
docs/method.md#class-dominance)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from multisym.ensembles.strategies import (
    JOB_INPUTS,
    START_RULES,
    best_member,
    composition,
    dominance,
    greedy,
    greedy_results,
    load_logits,
    member_results,
    random_draws,
    random_results,
    start_member,
)
from multisym.ensembles.metrics import class_dominance
from multisym.ensembles.outputs import SplitOutputs
from multisym.logits import row_gaps, write_logits


def split_outputs(logits, labels, **options) -> SplitOutputs:
    """SplitOutputs of ``logits`` in the form ``logits.write_logits`` stores
    them: gaps to each row's maximum (float32 here) and the maxima."""
    return SplitOutputs(*row_gaps(logits), labels, **options)


def binary_logits(p_label):
    """(K, N, 2) logits of members whose probability of class 0 (the label of
    every sample) is ``p_label[k][n]``."""
    p = np.asarray(p_label, dtype=np.float64)
    return np.log(np.stack([p, 1.0 - p], axis=-1))


def designed_pool():
    """Four members on 10 samples, all labelled 0 (the correct class).

    member 2: right on 0..6 (p=0.9), wrong on 7..9 (p=0.4)   -> 70 %, best alone
    member 0: weakly wrong on 0..3 and 9, right on 4..8        -> 50 %
              {2, 0} fixes 7 and 8 (not 9)                     -> 90 %
    member 1: right only on 9 (p=0.95), 0.3 elsewhere          -> 10 %
              {2, 0, 1} fixes sample 9 without breaking others -> 100 %
    member 3: p=0.05 everywhere                                 -> 0 %, adds nothing

    No ensemble average that matters lands exactly on 0.5.
    """
    m0 = [0.45] * 4 + [0.9] * 5 + [0.45]
    m1 = [0.3] * 9 + [0.95]
    m2 = [0.9] * 7 + [0.4] * 3
    m3 = [0.05] * 10
    return binary_logits([m0, m1, m2, m3]), np.zeros(10, dtype=int)


def accuracy_of(logits, labels):
    probs = np.mean([np.exp(z) / np.exp(z).sum(-1, keepdims=True) for z in logits], axis=0)
    return float((probs.argmax(-1) == labels).mean())


# ------------------------------------------------------------------ greedy
def test_designed_pool_accuracies():
    logits, labels = designed_pool()
    assert [accuracy_of(logits[[k]], labels) for k in range(4)] == [0.5, 0.1, 0.7, 0.0]
    assert accuracy_of(logits[[2, 0]], labels) == 0.9
    assert accuracy_of(logits[[2, 0, 1]], labels) == 1.0
    for k in range(4):
        outputs = split_outputs(logits, labels)
        assert outputs.score(outputs.probs[k])[0] == accuracy_of(logits[[k]], labels)


def test_best_member_and_greedy_order_on_designed_pool():
    logits, labels = designed_pool()
    assert best_member(split_outputs(logits, labels), [0, 1, 2, 3]) == 2
    assert best_member(split_outputs(logits, labels), [0, 1, 3]) == 0
    assert best_member(split_outputs(logits, labels), [1, 3]) == 1
    outputs = split_outputs(logits, labels)
    order, scores = greedy(outputs, size=3, start=2)
    assert order == [2, 0, 1]
    # each step's score is that of the ensemble it chose, as scored from scratch
    for m, (accuracy, minus_nll) in enumerate(scores, start=1):
        assert (accuracy, minus_nll) == pytest.approx(outputs.score(outputs.mean_probs(order[:m])), rel=1e-6)
    # prefixes are the greedy ensembles; each step does not lower accuracy here
    assert [accuracy_of(logits[order[:m]], labels) for m in (1, 2, 3)] == [0.7, 0.9, 1.0]
    assert greedy(split_outputs(logits, labels), size=1, start=3)[0] == [3]


def test_greedy_keeps_chosen_members_as_candidates():
    # a: 70 % alone; b: 30 %, and adding b to a drops accuracy to 30 %,
    # so the best step from {a} is to add a again (and again)
    a = [0.9] * 7 + [0.4] * 3
    b = [0.05] * 7 + [0.65] * 3
    logits, labels = binary_logits([a, b]), np.zeros(10, dtype=int)
    assert accuracy_of(logits[[0, 1]], labels) == pytest.approx(0.3)
    assert greedy(split_outputs(logits, labels), size=3, start=0)[0] == [0, 0, 0]


def test_greedy_repeats_a_member_picked_later():
    # samples 0,1 ("X"): s=0.2, a=0.75, b=0.1; samples 2,3 ("Y"): s=0.45, a=0.9, b=0.1
    # {s}: 0 %; {s,a}: X 0.475 wrong, Y right -> 50 %; {s,b}, {s,s}: 0 %
    # {s,a,a}: X 0.567 right -> 100 %; {s,a,s}: X 0.383; {s,a,b}: X 0.35 -> 50 %
    s = [0.2, 0.2, 0.45, 0.45]
    a = [0.75, 0.75, 0.9, 0.9]
    b = [0.1] * 4
    logits, labels = binary_logits([s, a, b]), np.zeros(4, dtype=int)
    assert accuracy_of(logits[[0, 1]], labels) == 0.5
    assert accuracy_of(logits[[0, 1, 1]], labels) == 1.0
    assert greedy(split_outputs(logits, labels), size=3, start=0)[0] == [0, 1, 1]


def test_ties_equal_accuracy_lower_nll_wins():
    # both members right everywhere; member 1 is more confident (lower NLL)
    logits, labels = binary_logits([[0.6] * 4, [0.9] * 4]), np.zeros(4, dtype=int)
    assert best_member(split_outputs(logits, labels), [0, 1]) == 1
    # from member 0, adding 1 keeps 100 % and lowers NLL below adding 0 again
    assert greedy(split_outputs(logits, labels), size=2, start=0)[0] == [0, 1]
    # from member 1, repeating 1 has the lowest NLL
    assert greedy(split_outputs(logits, labels), size=3, start=1)[0] == [1, 1, 1]


def test_full_tie_goes_to_first_in_pool_order():
    logits, labels = binary_logits([[0.8, 0.3, 0.7]] * 3), np.zeros(3, dtype=int)
    assert best_member(split_outputs(logits, labels), [0, 1, 2]) == 0
    assert best_member(split_outputs(logits, labels), [1, 2]) == 1
    assert greedy(split_outputs(logits, labels), size=3, start=2)[0] == [2, 0, 0]


# -------------------------------------------------------------- start rule
def test_start_member_rules():
    logits, labels = designed_pool()
    rng = np.random.default_rng(0)
    assert set(START_RULES) == {"best_val", "random", "fixed"}
    # best_val chooses among the candidates only (member 2 is better overall)
    assert start_member("best_val", split_outputs(logits, labels), [0, 1, 3], rng) == 0
    assert start_member("best_val", split_outputs(logits, labels), [0, 1, 2, 3], rng) == 2
    assert start_member("fixed", split_outputs(logits, labels), [0, 1], rng, fixed=3) == 3
    with pytest.raises(ValueError):
        start_member("fixed", split_outputs(logits, labels), [0, 1], rng)
    with pytest.raises(ValueError, match="unknown greedy start"):
        start_member("worst", split_outputs(logits, labels), [0, 1], rng)


def test_start_member_random_reproducible_and_within_candidates():
    logits, labels = designed_pool()
    candidates = [0, 1, 3]
    first = [start_member("random", split_outputs(logits, labels), candidates, np.random.default_rng(seed))
             for seed in range(40)]
    again = [start_member("random", split_outputs(logits, labels), candidates, np.random.default_rng(seed))
             for seed in range(40)]
    assert first == again
    assert set(first) <= set(candidates)
    assert len(set(first)) > 1
    assert all(isinstance(i, int) for i in first)


# ------------------------------------------------------------ composition
def test_composition_one_class_takes_all():
    for size in range(1, 6):
        assert composition(size, ["eq"]) == {"eq": size}


@pytest.mark.parametrize("size,eq,inv", [(2, 1, 1), (3, 2, 1), (4, 2, 2), (5, 3, 2)])
def test_composition_two_classes_paper(size, eq, inv):
    counts = composition(size, ["eq", "inv"])
    assert counts == {"eq": eq, "inv": inv}
    assert counts["eq"] == math.ceil(size / 2) and counts["inv"] == size // 2


# ----------------------------------------------------------- random draws
POOL = {"eq": [0, 1, 2, 3], "inv": [4, 5, 6]}


def test_random_draws_composition_order_and_no_repeats():
    draws = random_draws(POOL, 5, 30, np.random.default_rng(1))
    assert len(draws) == 30
    for draw in draws:
        assert len(draw) == 5
        classes = ["eq" if i in POOL["eq"] else "inv" for i in draw]
        assert classes == ["eq", "inv", "eq", "inv", "eq"]
        assert len(set(draw)) == 5
        assert all(isinstance(i, int) for i in draw)
    assert len({tuple(d) for d in draws}) > 1


def test_random_draws_reproducible_with_seed():
    one = random_draws(POOL, 3, 10, np.random.default_rng(7))
    two = random_draws(POOL, 3, 10, np.random.default_rng(7))
    assert one == two
    other = random_draws(POOL, 3, 10, np.random.default_rng(8))
    assert one != other


def test_random_draws_single_class():
    draws = random_draws({"eq": [2, 5, 7]}, 3, 10, np.random.default_rng(0))
    for draw in draws:
        assert sorted(draw) == [2, 5, 7]
    assert len({tuple(d) for d in draws}) > 1


def test_random_draws_too_large_raises():
    with pytest.raises(ValueError, match=r"needs 2 inv members, the pool has 1"):
        random_draws({"eq": [0, 1], "inv": [2]}, 4, 3, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"needs 4 eq members, the pool has 3"):
        random_draws({"eq": [0, 1, 2]}, 4, 3, np.random.default_rng(0))


# ---------------------------------------------------- runners on npz files
IDS = ["eq0", "eq1", "inv0", "inv1"]
CLASSES = ["eq", "eq", "inv", "inv"]
VAL_RIGHT = [30, 40, 50, 35]  # of 60: the best on val overall is inv0, the best Eq is eq1
TEST_RIGHT = [44, 52, 60, 48]  # of 80
NUM_CLASSES = 3


def member_logits(labels, right, rng):
    """Logits that are right on exactly ``right`` (random) samples."""
    n = len(labels)
    hit = np.zeros(n, dtype=bool)
    hit[rng.choice(n, size=right, replace=False)] = True
    target = np.where(hit, labels, (labels + 1) % NUM_CLASSES)
    logits = rng.random((n, NUM_CLASSES))
    logits[np.arange(n), target] += 2.0 + rng.random(n)
    return logits


def pool_arrays() -> list[dict[str, np.ndarray]]:
    """Each member's float32 logits and the labels, val and test."""
    rng = np.random.default_rng(42)
    val_labels = rng.integers(0, NUM_CLASSES, 60)
    test_labels = rng.integers(0, NUM_CLASSES, 80)
    return [{"val_logits": member_logits(val_labels, v, rng).astype(np.float32),
             "test_logits": member_logits(test_labels, t, rng).astype(np.float32),
             "val_labels": val_labels, "test_labels": test_labels}
            for v, t in zip(VAL_RIGHT, TEST_RIGHT)]


@pytest.fixture
def pool_files(tmp_path):
    """The pool's files as the workflow writes them (``logits.write_logits``)."""
    paths = []
    for name, arrays in zip(IDS, pool_arrays()):
        path = tmp_path / f"{name}.npz"
        write_logits(path, **arrays)
        paths.append(str(path))
    return paths


def settings(**greedy_overrides):
    greedy_settings = {"max_size": 3, "start": "best_val", "start_member": None, "selection_split": "val", "seed": 0}
    greedy_settings.update(greedy_overrides)
    return {
        "greedy": greedy_settings,
        "random": {"sizes": [2, 3], "draws": 3, "seed": 0},
        "bootstrap": {"samples": 50, "level": 0.95, "seed": 0},
        "diversity_size": 3,
    }


def test_load_logits_reads_every_member(pool_files):
    stacks = load_logits(pool_files)
    assert [z.shape for z in stacks["val_logits"]] == [(60, NUM_CLASSES)] * 4
    assert [z.shape for z in stacks["test_logits"]] == [(80, NUM_CLASSES)] * 4
    assert stacks["val_logits"][0].dtype == np.float16  # as written
    assert stacks["val_labels"].shape == (60,) and stacks["test_labels"].shape == (80,)
    for k, right in enumerate(VAL_RIGHT):
        assert accuracy_of(stacks["val_logits"][k][None], stacks["val_labels"]) == right / 60
        assert stacks["val"].member_score(k)[0] == right / 60


def test_load_logits_reads_only_the_splits_a_job_uses(pool_files):
    """Random and whole-pool jobs read test only; member metrics compute no
    probabilities, greedy prepares on test only the chosen members, with
    probabilities where they are summed, and all give the same results."""
    test_only = load_logits(pool_files, JOB_INPUTS["random"])
    assert set(test_only) == {"test", "test_logits", "test_labels"}
    lean, full = load_logits(pool_files, JOB_INPUTS["members"]), load_logits(pool_files)
    assert member_results(IDS, CLASSES, lean, settings(), NUM_CLASSES) == member_results(
        IDS, CLASSES, full, settings(), NUM_CLASSES)
    assert all(p is None for p in lean["test"].probs + lean["val"].probs)
    greedy_lean = load_logits(pool_files, JOB_INPUTS["greedy"])
    assert not greedy_lean["test"].prepared.any()
    out = greedy_results(IDS, CLASSES, greedy_lean, settings(max_size=2))
    assert out == greedy_results(IDS, CLASSES, full, settings(max_size=2))
    chosen = [IDS[i] in out["order"] for i in range(len(IDS))]
    assert list(greedy_lean["test"].prepared) == chosen
    kept = [p is not None for p in greedy_lean["test"].probs]
    assert kept == [c and len(set(out["order"])) > 1 for c in chosen]
    with pytest.raises(ValueError, match="unknown preparation 'eager'"):
        SplitOutputs(lean["test_logits"], lean["test"].row_max, lean["test_labels"], prepare="eager")


def exact_stacks() -> dict:
    """What ``load_logits`` gives for the pool, from its float32 logits
    themselves: their gaps kept in float32, no rounding."""
    arrays, out = pool_arrays(), {}
    for split in ("val", "test"):
        gaps, row_max = zip(*(row_gaps(member[f"{split}_logits"]) for member in arrays))
        out[f"{split}_labels"], out[f"{split}_logits"] = arrays[0][f"{split}_labels"], list(gaps)
        out[split] = SplitOutputs(list(gaps), list(row_max), out[f"{split}_labels"])
    return out


def test_compact_logits_files_give_the_results_of_the_exact_logits(pool_files):
    """Files as the workflow writes them (float16 gaps to each row's maximum,
    ``logits.write_logits``) give the results of the float32 logits they
    were written from: the same members chosen, every value within
    float16's rounding."""
    exact, small = exact_stacks(), load_logits(pool_files)
    assert small["test_logits"][0].dtype == np.float16
    for run in (lambda s: member_results(IDS, CLASSES, s, settings(), NUM_CLASSES),
                lambda s: greedy_results(IDS, CLASSES, s, settings()),
                lambda s: random_results(IDS, CLASSES, s, settings())):
        assert_close(run(small), run(exact), atol=2e-3)


def assert_close(got, expected, atol):
    """Nested results equal, numbers to ``atol``; ECE to one test sample's
    share (1/80): rounding may move a confidence across a bin's edge."""
    if isinstance(expected, dict):
        assert got.keys() == expected.keys()
        for key in expected:
            assert_close(got[key], expected[key], 1 / 80 if key == "ece" else atol)
    elif isinstance(expected, list):
        assert len(got) == len(expected)
        for a, b in zip(got, expected):
            assert_close(a, b, atol)
    elif isinstance(expected, float):
        assert got == pytest.approx(expected, abs=atol)
    else:
        assert got == expected


def test_load_logits_rejects_different_labels(pool_files, tmp_path):
    with np.load(pool_files[0]) as stored:
        data = dict(stored)
    data["test_labels"] = (data["test_labels"] + 1) % NUM_CLASSES
    bad = tmp_path / "bad.npz"
    np.savez(bad, **data)  # the stored arrays as they are: only the labels differ
    with pytest.raises(ValueError, match="test labels differ"):
        load_logits([pool_files[0], str(bad)])


def test_greedy_results_best_val(pool_files):
    stacks = load_logits(pool_files)
    out = greedy_results(IDS, CLASSES, stacks, settings())
    assert out["protocol"] == []
    # the start is the best Eq member on val (eq1), not the best overall (inv0)
    assert out["order"][0] == "eq1"
    assert len(out["order"]) == 3 and len(out["sizes"]) == 3
    first = out["sizes"][0]
    assert first["size"] == 1 and first["members"] == ["eq1"]
    assert first["selection_accuracy"] == pytest.approx(100.0 * 40 / 60)
    assert first["metrics"]["accuracy"]["value"] == pytest.approx(100.0 * 52 / 80)
    assert first["metrics"]["efficiency"]["value"] == pytest.approx(0.0)
    order_idx = [IDS.index(m) for m in out["order"]]
    assert order_idx == greedy(stacks["val"], 3, 1)[0]
    for m, row in enumerate(out["sizes"], start=1):
        assert row["members"] == out["order"][:m]
        assert row["distinct"] == len(set(row["members"]))
        assert row["selection_accuracy"] == pytest.approx(
            100.0 * accuracy_of([stacks["val_logits"][i] for i in order_idx[:m]], stacks["val_labels"]))
        assert row["metrics"]["accuracy"]["value"] == pytest.approx(
            100.0 * accuracy_of([stacks["test_logits"][i] for i in order_idx[:m]], stacks["test_labels"]))


def test_greedy_results_paper_variants_are_flagged(pool_files):
    stacks = load_logits(pool_files)
    on_test = greedy_results(IDS, CLASSES, stacks, settings(selection_split="test"))
    assert on_test["protocol"] and any("paper" in note for note in on_test["protocol"])
    # on test the best Eq member is still eq1, and selection accuracy is test accuracy
    assert on_test["sizes"][0]["selection_accuracy"] == pytest.approx(100.0 * 52 / 80)

    random_start = greedy_results(IDS, CLASSES, stacks, settings(start="random", seed=3))
    assert random_start["protocol"] and any("paper" in note for note in random_start["protocol"])
    assert random_start["order"][0] in ("eq0", "eq1")
    again = greedy_results(IDS, CLASSES, stacks, settings(start="random", seed=3))
    assert again["order"] == random_start["order"]

    fixed = greedy_results(IDS, CLASSES, stacks, settings(start="fixed", start_member="eq0"))
    assert fixed["order"][0] == "eq0"
    assert fixed["protocol"]
    assert fixed["sizes"][0]["metrics"]["accuracy"]["value"] == pytest.approx(100.0 * 44 / 80)


def test_random_results_mean_and_std_over_draws(pool_files):
    stacks = load_logits(pool_files)
    cfg = settings()
    out = random_results(IDS, CLASSES, stacks, cfg)
    assert out["protocol"] == []
    assert [s["size"] for s in out["sizes"]] == [2, 3]
    for block in out["sizes"]:
        assert len(block["draws"]) == 3
        for draw in block["draws"]:
            assert [m[:2] for m in draw["members"]] == (["eq", "in", "eq"][: block["size"]])
            chosen = [IDS.index(m) for m in draw["members"]]
            assert draw["metrics"]["accuracy"]["value"] == pytest.approx(
                100.0 * accuracy_of([stacks["test_logits"][i] for i in chosen], stacks["test_labels"]))
        for name in block["mean"]:
            values = np.array([d["metrics"][name]["value"] for d in block["draws"]])
            assert block["mean"][name] == pytest.approx(np.mean(values))
            assert block["std"][name] == pytest.approx(np.std(values, ddof=0))
        # reported as mean ± std over draws: no per-draw CI; diversity at diversity_size only
        assert all("ci" not in metric for d in block["draws"] for metric in d["metrics"].values())
        assert ("kl" in block["mean"]) == (block["size"] == 3) and "inconsistency" in block["mean"]
    # reproducible with the same seed
    again = random_results(IDS, CLASSES, stacks, cfg)
    assert [[d["members"] for d in s["draws"]] for s in again["sizes"]] == \
        [[d["members"] for d in s["draws"]] for s in out["sizes"]]


# ------------------------------------------------------ members, dominance
def test_member_results_and_dominance(pool_files):
    stacks = load_logits(pool_files)
    out = member_results(IDS, CLASSES, stacks, settings(), NUM_CLASSES)
    rows = out["members"]
    assert [r["member"] for r in rows] == IDS and [r["mode"] for r in rows] == CLASSES
    for row, v, t in zip(rows, VAL_RIGHT, TEST_RIGHT):
        assert row["val_accuracy"] == pytest.approx(100.0 * v / 60)
        assert row["metrics"]["accuracy"]["value"] == pytest.approx(100.0 * t / 80)
    dom = out["dominance"]
    assert dom["eq"] == "eq1" and dom["inv"] == "inv0"
    assert dom["pairs"] == 4
    for key in ("best_pair", "all_pairs_mean"):
        assert set(dom[key]) == {"eq_better", "inv_better", "tie"}
        assert sum(dom[key].values()) == pytest.approx(100.0)
    direct = class_dominance(stacks["test_logits"][1], stacks["test_logits"][2], stacks["test_labels"], NUM_CLASSES)
    assert dom["best_pair"] == {"eq_better": direct["a_better"], "inv_better": direct["b_better"], "tie": direct["tie"]}
    assert dom == dominance(IDS, CLASSES, stacks, NUM_CLASSES, settings()["bootstrap"])
    for key, (low, high) in dom["best_pair_ci"].items():
        assert low <= dom["best_pair"][key] <= high


def test_dominance_empty_without_both_classes(pool_files):
    stacks = load_logits(pool_files)
    assert dominance(IDS, ["eq"] * 4, stacks, NUM_CLASSES, settings()["bootstrap"]) == {}
    assert dominance(IDS, ["inv"] * 4, stacks, NUM_CLASSES, settings()["bootstrap"]) == {}
    out = member_results(IDS[:2], ["eq", "eq"], load_logits(pool_files[:2]), settings(), NUM_CLASSES)
    assert out["dominance"] == {} and len(out["members"]) == 2


def test_dominance_pairs_eq_and_inv_of_the_same_axis(pool_files):
    """With members of two axes, Table 1's dominance uses the ensembles axis only,
    and each axis gets its own (Table 10): eq0 pairs with inv1, eq1 with inv0."""
    stacks = load_logits(pool_files)
    axes = ["halfswap", "rotation", "rotation", "halfswap"]
    out = member_results(IDS, CLASSES, stacks, settings(), NUM_CLASSES, axes, "rotation")
    assert (out["dominance"]["eq"], out["dominance"]["inv"]) == ("eq1", "inv0")
    assert out["dominance"]["pairs"] == 1
    by_axis = out["dominance_by_axis"]
    assert set(by_axis) == {"rotation", "halfswap"}
    assert (by_axis["halfswap"]["eq"], by_axis["halfswap"]["inv"]) == ("eq0", "inv1")
    assert by_axis["rotation"] == out["dominance"]
    expected = class_dominance(stacks["test_logits"][0], stacks["test_logits"][3], stacks["test_labels"], NUM_CLASSES)
    assert by_axis["halfswap"]["best_pair"]["eq_better"] == expected["a_better"]


def test_table1_keeps_to_the_ensembles_axis(pool_files):
    """With members of two axes, each member's row names its axis, and Table 1's
    Eq and Inv columns (and Figure 6's members) are those of the ensembles axis
    only, as its dominance columns are; without axes every member counts."""
    from multisym.report.tables import ensembles_axis_members, table1

    stacks = load_logits(pool_files)
    axes = ["halfswap", "rotation", "rotation", "halfswap"]
    out = member_results(IDS, CLASSES, stacks, settings(), NUM_CLASSES, axes, "rotation")
    assert out["axis"] == "rotation" and [r["axis"] for r in out["members"]] == axes
    assert [r["member"] for r in ensembles_axis_members(out)] == ["eq1", "inv0"]
    means = {c.column: c for c in table1([out], {}) if c.row == "Mean over members" and c.column in ("Eq", "Inv")}
    assert means["Eq"].n == 1 and means["Eq"].value == out["members"][1]["metrics"]["accuracy"]["value"]
    assert means["Inv"].n == 1 and means["Inv"].value == out["members"][2]["metrics"]["accuracy"]["value"]
    single = member_results(IDS, CLASSES, stacks, settings(), NUM_CLASSES)
    assert "axis" not in single and ensembles_axis_members(single) == single["members"]
    assert {c.column: c.n for c in table1([single], {}) if c.row == "Mean over members"}["Eq"] == 2
