"""The paper's reported numbers as data (``paper_values.csv``).

One row per number: the table or figure it belongs to (``target``), its row
and column, the value, its unit, the source (the table or figure of Loh et al.)
and a note (the ± spread as printed, a known typo, or that the number comes
from the archived notebooks rather than the paper). Transcribed from the
paper (docs/method.md#paper-numbers); nothing here is computed.

Beside it, the paper's protocol per table (``paper_protocol.yaml``): the value
each key of a run's protocol record (``multisym.protocol``) had when the paper
measured a table's numbers, which the comparison checks a run against.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import yaml

VALUES_PATH = Path(__file__).with_name("paper_values.csv")
COLUMNS = ("target", "row", "column", "value", "unit", "source", "note")


def load_values(path: str | Path = VALUES_PATH) -> list[dict]:
    """Every paper number, ``value`` as a float."""
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise ValueError(f"{path}: columns {reader.fieldnames}, expected {list(COLUMNS)}")
        return [{**row, "value": float(row["value"])} for row in reader]


PROTOCOL_PATH = Path(__file__).with_name("paper_protocol.yaml")


@dataclass(frozen=True)
class ProtocolGroup:
    """Keys of the paper's protocol shared by some tables (and datasets, and columns)."""

    name: str
    source: str
    tables: tuple[str, ...]
    keys: dict
    datasets: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()

    def applies(self, table: str, dataset: str, column: str) -> bool:
        return (table in self.tables and (not self.datasets or dataset in self.datasets)
                and (not self.columns or column in self.columns))


def load_protocol(path: str | Path = PROTOCOL_PATH) -> list[ProtocolGroup]:
    """The paper's protocol (``paper_protocol.yaml``), one group per entry."""
    groups = yaml.safe_load(Path(path).read_text())["groups"]
    return [ProtocolGroup(g["name"], g["source"], tuple(g["tables"]), dict(g["keys"]), tuple(g.get("datasets", ())),
                          tuple(g.get("columns", ()))) for g in groups]


def paper_protocol(groups: list[ProtocolGroup], table: str, dataset: str, column: str = "") -> dict:
    """Every protocol key a paper number of ``table`` measured on ``dataset``
    (in ``column``) depends on, with the paper's value; two groups that name
    one key must agree on it."""
    keys: dict = {}
    for group in groups:
        if not group.applies(table, dataset, column):
            continue
        for key, value in group.keys.items():
            if key in keys and keys[key] != value:
                raise ValueError(f"paper_protocol.yaml: {key} is {keys[key]!r} and {value!r} for {table} on {dataset}")
            keys[key] = value
    return keys
