"""The paper's reported numbers as data (``paper_values.csv``).

One row per number: the table or figure it belongs to (``target``), its row
and column, the value, its unit, the source (the table or figure of Loh et al.)
and a note (the ± spread as printed, a known typo, or that the number comes
from the archived notebooks rather than the paper). Transcribed from the
paper (docs/method.md#paper-numbers); nothing here is computed.
"""

from __future__ import annotations

import csv
from pathlib import Path

VALUES_PATH = Path(__file__).with_name("paper_values.csv")
COLUMNS = ("target", "row", "column", "value", "unit", "source", "note")


def load_values(path: str | Path = VALUES_PATH) -> list[dict]:
    """Every paper number, ``value`` as a float."""
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise ValueError(f"{path}: columns {reader.fieldnames}, expected {list(COLUMNS)}")
        return [{**row, "value": float(row["value"])} for row in reader]
