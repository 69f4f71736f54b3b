"""The paper's numbers as data: parseable, unique, sourced (transcribed from Loh et al.,
docs/method.md#paper-numbers)."""

from __future__ import annotations

from multisym.report.paper import load_values


def test_every_number_is_unique_and_sourced():
    values = load_values()
    keys = [(v["target"], v["row"], v["column"]) for v in values]
    assert len(keys) == len(set(keys))
    assert all(v["source"] and v["unit"] in ("%", "pp", "x1e-1", "x1e-4", "") for v in values)
    targets = {v["target"] for v in values}
    assert {f"table{i}" for i in range(1, 11)} <= targets


def test_headline_numbers_of_tables_1_and_2():
    values = {(v["target"], v["row"], v["column"]): v["value"] for v in load_values()}
    assert values[("table1", "Single Eq", "top-1")] == 76.9
    assert values[("table1", "Single Inv", "top-1")] == 76.0
    assert values[("table2", "Greedy M=5 Eq+Inv", "top-1")] == 79.43
    assert values[("table2", "Random M=3 Eq", "top-1")] == 78.7



def test_table7_greedy_block_holds_only_eq_and_eq_inv():
    """The appendix's Table 7 lists greedy ensembles of Eq and Eq+Inv only;
    the greedy Inv numbers belong to Table 4 and are compared there once."""
    rows = {(v["target"], v["row"]) for v in load_values() if v["row"].startswith("Greedy")}
    table7 = {row for target, row in rows if target == "table7"}
    assert table7 and all(row.endswith((" Eq", " Eq+Inv")) for row in table7)
    assert any(target == "table4" and row.endswith(" Inv") and "Eq+" not in row for target, row in rows)
