"""Transfer summaries and the tables and figure built from them (Tables 5, 8, 9, Figure 4)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from multisym.report import figures
from multisym.report import tables
from multisym.resamples import Recorder, write_resamples
from multisym.ensembles.strategies import greedy_results, load_logits, member_results, random_results
from multisym.evaluate.transfer import summarise_dataset, write_summary
from multisym.logits import write_logits
from test_ensemble import member_logits

IDS = ["eq0", "eq1", "eq2", "inv0", "inv1"]
MODES = ["eq", "eq", "eq", "inv", "inv"]
TEST_RIGHT = [44, 52, 48, 60, 40]  # of 80
VAL_RIGHT = [30, 40, 35, 50, 20]  # of 60
NUM_CLASSES = 3
POOLS = {"eq": [0, 1, 2], "inv": [3, 4], "eq_inv": [0, 1, 2, 3, 4]}
SETTINGS = {
    "greedy": {"max_size": 3, "start": "best_val", "start_member": None, "selection_split": "val", "seed": 0},
    "random": {"sizes": [2], "draws": 3, "seed": 0},
    "bootstrap": {"samples": 50, "level": 0.95, "seed": 0},
    "diversity_size": 2,
}


def dataset_results(tmp_path, seed, resample_paths: dict | None = None):
    """Member metrics and every Eq / Inv / Eq+Inv ensemble of one dataset, as
    the workflow writes them; with ``resample_paths``, each greedy ensemble's
    values on every resample are written too, their paths kept by pool."""
    rng = np.random.default_rng(seed)
    val_labels, test_labels = rng.integers(0, NUM_CLASSES, 60), rng.integers(0, NUM_CLASSES, 80)
    paths = []
    for name, v, t in zip(IDS, VAL_RIGHT, TEST_RIGHT):
        path = tmp_path / f"{name}-{seed}.npz"
        write_logits(path, val_logits=member_logits(val_labels, v, rng), test_logits=member_logits(test_labels, t, rng),
                     val_labels=val_labels, test_labels=test_labels)
        paths.append(str(path))
    stacks = load_logits(paths)
    members = member_results(IDS, MODES, stacks, SETTINGS, NUM_CLASSES)
    ensembles = []
    for pool, index in POOLS.items():
        sub = load_logits([paths[i] for i in index])  # as the workflow's job for the pool reads it
        ids, classes = [IDS[i] for i in index], [MODES[i] for i in index]
        for strategy, runner in (("greedy", greedy_results), ("random", random_results)):
            record = Recorder(SETTINGS["bootstrap"], sub["test_labels"])
            ensembles.append({"pool": pool, "strategy": strategy, **runner(ids, classes, sub, SETTINGS, record)})
            if resample_paths is not None and strategy == "greedy":
                path = tmp_path / f"{pool}-{seed}.resamples.npz"
                write_resamples(record.build(pool, strategy), str(path))
                resample_paths[pool] = str(path)
    return members, ensembles


@pytest.fixture
def summaries(tmp_path):
    out = []
    for seed, (key, name) in enumerate((("digits", "digits"), ("rotated", "digits_rotated"), ("c100", "cifar100"))):
        resample_paths = {}
        members, ensembles = dataset_results(tmp_path, seed, resample_paths)
        spec = {"key": key, "label": key, "dataset": name, "delta_size": 3, "level": 0.95}
        members_path = tmp_path / f"{key}-members.json"
        members_path.write_text(json.dumps(members))
        ensemble_paths = []
        for result in ensembles:
            path = tmp_path / f"{key}-{result['pool']}-{result['strategy']}.json"
            path.write_text(json.dumps(result))
            ensemble_paths.append(str(path))
        out.append(write_summary(spec, str(members_path), ensemble_paths, str(tmp_path / f"{key}-summary.json"),
                                 [resample_paths["eq"], resample_paths["eq_inv"]]))
    return out


def test_summary_singles_greedy_random_and_delta(tmp_path):
    members, ensembles = dataset_results(tmp_path, 0)
    summary = summarise_dataset({"key": "k", "label": "K", "dataset": "cifar100", "delta_size": 3}, members, ensembles)
    eq_acc = [100 * r / 80 for r in TEST_RIGHT[:3]]
    assert summary["singles"]["eq"]["mean"] == pytest.approx(np.mean(eq_acc))
    assert summary["singles"]["eq"]["std"] == pytest.approx(np.std(eq_acc))
    assert summary["singles"]["inv"]["n"] == 2 and summary["stand_in"] is None
    by = {(r["pool"], r["strategy"]): r for r in ensembles}
    for pool in POOLS:
        greedy = by[(pool, "greedy")]["sizes"]
        assert [e["size"] for e in summary["greedy"][pool]] == [e["size"] for e in greedy]
        assert summary["greedy"][pool][1]["accuracy"] == greedy[1]["metrics"]["accuracy"]["value"]
        assert summary["random"][pool][0]["accuracy_std"] == by[(pool, "random")]["sizes"][0]["std"]["accuracy"]
    third = {pool: by[(pool, "greedy")]["sizes"][2]["metrics"] for pool in ("eq", "eq_inv")}
    assert summary["delta"]["size"] == 3
    assert summary["delta"]["accuracy"] == pytest.approx(
        third["eq_inv"]["accuracy"]["value"] - third["eq"]["accuracy"]["value"])
    assert summary["delta"]["efficiency"] == pytest.approx(
        third["eq_inv"]["efficiency"]["value"] - third["eq"]["efficiency"]["value"])
    assert summary["dominance"]["eq_better"] == members["dominance"]["best_pair"]["eq_better"]


def test_delta_ci_is_the_paired_difference_per_resample(tmp_path):
    """Δ's CI is the percentile CI of (Eq+Inv − Eq) over the same resamples:
    the same differences as the two JSON CIs' resamples, paired."""
    from multisym.ensembles.metrics import percentile_ci
    from multisym.resamples import read_resamples

    paths = {}
    members, ensembles = dataset_results(tmp_path, 0, paths)
    resamples = {pool: read_resamples(path) for pool, path in paths.items()}
    spec = {"key": "k", "label": "K", "dataset": "cifar100", "delta_size": 3, "level": 0.95}
    summary = summarise_dataset(spec, members, ensembles, resamples)
    per_resample = {pool: resamples[pool].metric("accuracy", resamples[pool].rows(3))[1][0] for pool in paths}
    expected = percentile_ci(per_resample["eq_inv"].astype(float) - per_resample["eq"].astype(float), 0.95)
    assert summary["delta"]["accuracy_ci"] == pytest.approx(expected)
    assert "accuracy_ci" not in summarise_dataset(spec, members, ensembles)["delta"]


def test_delta_absent_without_the_size(tmp_path):
    members, ensembles = dataset_results(tmp_path, 0)
    summary = summarise_dataset({"key": "k", "label": "K", "dataset": "digits", "delta_size": 7}, members, ensembles)
    assert summary["delta"] is None and "digits" in summary["stand_in"]


def read_cells(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_tables_5_8_9(summaries, tmp_path):
    spec = {"name": "t", "dataset": "digits", "selection_split": "val", "diversity_size": 2}
    inputs = [str(tmp_path / f"{s['key']}-summary.json") for s in summaries]
    for table, files in (("table5", inputs[1:]), ("table8", inputs[1:]), ("table9", inputs)):
        tables.write(table, files, spec, str(tmp_path / f"{table}.csv"), str(tmp_path / f"{table}.md"))
    greedy = read_cells(tmp_path / "table5.csv")
    rows = list(dict.fromkeys(c["row"] for c in greedy))
    assert rows == ["Single Eq", "Single Inv", "Greedy M=2 Eq", "Greedy M=2 Eq+Inv",
                    "Greedy M=3 Eq", "Greedy M=3 Eq+Inv"]
    assert {c["column"] for c in greedy} == {"rotated top-1", "rotated efficiency", "c100 top-1", "c100 efficiency"}
    c100 = summaries[2]
    cell = next(c for c in greedy if c["row"] == "Greedy M=3 Eq+Inv" and c["column"] == "c100 efficiency")
    assert float(cell["value"]) == pytest.approx(c100["greedy"]["eq_inv"][2]["efficiency"])
    assert "stand-in" in (tmp_path / "table5.md").read_text()  # rotated digits is one
    random = read_cells(tmp_path / "table8.csv")
    assert {c["row"] for c in random} >= {"Random M=2 Eq", "Random M=2 Eq+Inv"}
    assert all(c["n"] == "3" for c in random if c["row"].startswith("Random"))
    dominance = read_cells(tmp_path / "table9.csv")
    assert list(dict.fromkeys(c["column"] for c in dominance)) == ["digits", "rotated", "c100"]
    delta = next(c for c in dominance if c["row"].startswith("Δ top-1") and c["column"] == "c100")
    assert float(delta["value"]) == pytest.approx(c100["delta"]["accuracy"])
    assert "M=3" in delta["row"]
    # each Δ with its paired bootstrap CI, around the Δ itself
    for cell in (c for c in dominance if c["row"].startswith("Δ")):
        assert float(cell["ci_low"]) <= float(cell["value"]) <= float(cell["ci_high"])
    assert [float(delta["ci_low"]), float(delta["ci_high"])] == pytest.approx(c100["delta"]["accuracy_ci"])
    deltas = [line for line in (tmp_path / "table9.md").read_text().splitlines() if line.startswith("| Δ")]
    assert len(deltas) == 2 and all(line.count("[") == 3 for line in deltas)


def test_figure4_draws_every_dataset(summaries, tmp_path):
    inputs = [str(tmp_path / f"{s['key']}-summary.json") for s in summaries]
    figures.write("figure4", inputs, {"name": "t"}, str(tmp_path / "f4.pdf"), str(tmp_path / "f4.png"))
    assert (tmp_path / "f4.png").stat().st_size > 5000 and (tmp_path / "f4.pdf").stat().st_size > 1000


def test_table4_is_greedy_and_table7_random_and_greedy_nll_auuqc(tmp_path):
    _, ensembles = dataset_results(tmp_path, 0)
    table4 = tables.table4(ensembles, {})
    table7 = tables.table7(ensembles, {})
    assert {c.row.split()[0] for c in table4} == {"Greedy"}
    assert {c.row.split()[1] for c in table4} == {"NLL", "ECE", "Brier", "AUUQC"}
    assert {tuple(c.row.split()[:2]) for c in table7} == {
        (s, m) for s in ("Random", "Greedy") for m in ("NLL", "AUUQC")}
    greedy = {(c.row, c.column): c.value for c in table4}
    assert all(greedy[(c.row, c.column)] == c.value for c in table7 if c.row.startswith("Greedy"))
