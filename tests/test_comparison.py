"""Paper vs reproduction: lookup of every paper number in this run's tables,
and the check of the run's protocol against the paper's (docs/deviations.md)."""

from __future__ import annotations

import csv
import json

import pytest

from multisym.report import comparison
from multisym.report.paper import load_protocol, paper_protocol
from multisym.report.tables import Cell, to_csv


def papers_protocol(*where: tuple[str, str]) -> dict:
    """A record that holds the paper's protocol for these (table, dataset) pairs."""
    groups, record = load_protocol(), {}
    for table, dataset in where:
        record.update(paper_protocol(groups, table, dataset, "KL"))
    return record


# the paper's protocol of the tables below, with this workflow's default selection on held-out val
PAPER = {**papers_protocol(*((t, "imagenet") for t in ("table1", "table2", "table3", "table4", "table7", "table9")),
                           ("table5", "inat2019")),
         "ensembles.greedy.selection_split": "val", "adapt.selection_split": "val", "dataset.splits.val": 0.01}

IMAGENET = {"name": "paper", "dataset": "imagenet", "arch": "resnet50", "transfer": {"inat": "inat2019"},
            "selection_split": "val", "diversity_size": 3, "delta_size": 3, "axes_size": 6}


def table_files(tmp_path) -> list[str]:
    cells = {
        "table2": [Cell("table2", "Greedy Eq (DE)", "M=3", 78.9, ci_low=78.5, ci_high=79.3),
                   Cell("table2", "Random Eq (DE)", "M=2", 70.0, std=0.1, n=5)],
        "table4": [Cell("table4", "Greedy NLL Eq (DE)", "M=3", 0.9, ci_low=0.815, ci_high=0.95)],
        "table7": [Cell("table7", "Greedy NLL Eq (DE)", "M=3", 0.9, ci_low=0.815, ci_high=0.95)],
        "table5": [Cell("table5", "Greedy M=2 Eq+Inv", "inat top-1", 59.7, ci_low=59.0, ci_high=60.5)],
        "table9": [Cell("table9", "Eq>Inv (% classes)", "imagenet", 47.5)],
    }
    paths = []
    for table, rows in cells.items():
        path = tmp_path / f"{table}.csv"
        path.write_text(to_csv(rows))
        paths.append(str(path))
    return paths


def by_key(rows):
    return {(r.target, r.row, r.column): r for r in rows}


def test_paper_numbers_are_found_and_judged(tmp_path):
    rows = by_key(comparison.compare(comparison.load_cells(table_files(tmp_path)), IMAGENET, PAPER))
    close = rows[("table2", "Greedy M=3 Eq", "top-1")]
    assert close.paper == 78.87 and close.reproduced == 78.9 and close.status == "agrees"
    assert close.difference == pytest.approx(0.03)
    assert "held-out val" in close.reason
    assert rows[("table2", "Random M=2 Eq", "top-1")].status == "differs"
    # NLL is reported raw here and x1e-1 in the paper; 8.18 lies inside the scaled CI
    nll = rows[("table4", "Greedy M=3 Eq", "NLL x1e-1")]
    assert nll.reproduced == pytest.approx(9.0) and nll.status == "agrees"
    assert rows[("table7", "Greedy M=3 Eq", "NLL x1e-1")].reproduced == pytest.approx(9.0)
    transfer = rows[("table5", "Greedy M=2 Eq+Inv", "iNat-1k top-1")]
    assert transfer.reproduced == 59.7 and transfer.status == "agrees"
    assert rows[("table9", "Single Eq vs Single Inv", "ImageNet % classes Eq>Inv")].status == "agrees"


def test_other_scales_are_not_comparable_and_missing_cells_are_named(tmp_path):
    digits = {**IMAGENET, "name": "digits", "dataset": "digits", "arch": "small_resnet", "transfer": {}}
    rows = comparison.compare(comparison.load_cells(table_files(tmp_path)), digits, PAPER)
    keyed = by_key(rows)
    cell = keyed[("table2", "Greedy M=3 Eq", "top-1")]
    assert cell.status == "not comparable" and "digits" in cell.reason and cell.reproduced == 78.9
    assert (keyed[("table5", "Greedy M=2 Eq+Inv", "iNat-1k top-1")].reason
            == "no transfer dataset of this run is iNat-1k")
    assert "table6 of this run has no cell" in keyed[("table6", "M=6 Eq+Inv", "Rotate top-1")].reason
    assert "M = 3 here" in by_key(comparison.compare({}, {**digits, "axes_size": 3}, PAPER))[
        ("table10", "M=6 Eq+Inv minus Eq", "Rotate delta top-1")].reason
    assert "notebook" in keyed[("table1", "Single Eq (eq69)", "top-1")].reason
    assert "no cell" in keyed[("table2", "Greedy M=5 Inv", "top-1")].reason
    assert {r.status for r in rows} == {"not comparable", "not reproduced"}
    assert all(r.reason for r in rows)


def test_written_files(tmp_path):
    (tmp_path / "protocol.json").write_text(json.dumps({"run": PAPER}))
    rows = comparison.write(table_files(tmp_path), IMAGENET, tmp_path / "protocol.json", tmp_path / "c.csv",
                            tmp_path / "c.md")
    written = list(csv.DictReader(open(tmp_path / "c.csv")))
    assert len(written) == len(rows) and written[0].keys() >= {"paper", "reproduced", "status", "protocol", "reason"}
    text = (tmp_path / "c.md").read_text()
    assert "agrees" in text and "Agreement: within the tolerance" in text
    assert "| status | protocol | reason |" in text and "documented: held-out-selection" in text
