"""Paper vs reproduction: every number of ``paper_values.csv`` beside the
value this run reproduced for it.

Each paper number is looked up in the long-form CSV of the matching table
(``tables.py``), with its row and column translated to this workflow's labels,
and the run's protocol record (``tables/protocol.json``, ``multisym.protocol``)
is checked against the paper's protocol for that number
(``paper_protocol.yaml``: its table, the dataset it was measured on, its
column). Its status is one of

- ``agrees``: |reproduced − paper| ≤ the tolerance of its unit (``TOLERANCE``),
  or the paper's value lies inside the reproduced bootstrap CI;
- ``differs``: reproduced under the paper's protocol, and outside both;
- ``protocol differs``: reproduced on the paper's dataset and backbone, but a
  key of the paper's protocol differs and no deviation of
  docs/deviations.md documents the run's value as one that keeps the
  comparison; the reason lists every such key as ``key = ours vs paper's``;
- ``not comparable``: reproduced, but on another dataset or backbone (the
  embedded default, a stand-in, a smaller scale): the reason says which;
- ``not reproduced``: no table of this run holds it (a target the config does
  not feed, an archived notebook number).

A compared row names the documented deviations it keeps (selection on held-out
val, the greedy start, ...) in its reason; the protocol column says, for every
located row, whether the run's protocol matches the paper's, differs only in
documented choices, or differs (and in which keys).
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from multisym.files import atomic_write_text
from multisym.protocol import MISSING_VALUE
from multisym.report import deviations as deviation_list
from multisym.report.paper import load_protocol, load_values, paper_protocol

TOLERANCE = {"%": 0.5, "pp": 0.5, "x1e-1": 0.1, "x1e-4": 0.1, "": 0.005}
METHODS = {"Eq": "Eq (DE)", "Inv": "Inv", "Eq+Inv": "Eq+Inv (MSE)", "Base": "Base (DE SimCLR)"}
PAPER_DATASETS = {"ImageNet": "imagenet", "iNat-1k": "inat2019", "Flowers-102": "flowers102",
                  "CIFAR-100": "cifar100", "Food-101": "food101", "ImageNet-V2": "imagenet_v2",
                  "ImageNet-R": "imagenet_r"}
PAPER_AXES = {"Rotate": "rotation", "Halfswap": "halfswap", "ColorInvert": "invert"}
PAPER_PRIMARY = {"table6": ("ImageNet-100", "imagenet100"), "table10": ("ImageNet-100", "imagenet100")}
DIVERSITY = {"inconsistency": "Incons. (%)", "KL": "KL", "logits distance": "Logits (std)",
             "prob distance x1e-4": "Prob (std, x1e-4)"}
UNCERTAINTY = {"NLL x1e-1": ("NLL", 10.0), "AUUQC": ("AUUQC", 1.0)}
NOT_COMPARABLE_KEYS = 4  # keys a not-comparable row's protocol column names (the dataset's differ anyway)
STATUSES = ("agrees", "differs", "protocol differs", "not comparable", "not reproduced")
ENSEMBLE_ROW = re.compile(r"^(Greedy|Random) M=(\d+) (Eq\+Inv|Eq|Inv|Base)$")


@dataclass
class Comparison:
    target: str
    row: str
    column: str
    paper: float
    unit: str
    reproduced: float | None = None
    difference: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    status: str = "not reproduced"
    reason: str = ""
    protocol: str = ""


@dataclass(frozen=True)
class Lookup:
    """Where a paper number lives in this run: table, row, column, the factor
    from our unit to the paper's, and the dataset it was measured on."""

    table: str
    row: str
    column: str
    dataset: str
    scale: float = 1.0


def _dataset_column(label: str, spec: dict) -> tuple[str, str] | None:
    """The column key of a paper dataset in the transfer tables, and its dataset."""
    name = PAPER_DATASETS.get(label)
    if name is None:
        return None
    if name == spec["dataset"]:
        return spec["dataset"], name
    for key, dataset in spec["transfer"].items():
        if dataset == name:
            return key, name
    return None


def locate(value: dict, spec: dict) -> Lookup | str:
    """Where this run holds a paper number, or why it holds none."""
    target, row, column = value["target"], value["row"], value["column"]
    primary = spec["dataset"]
    if (target == "table1" and "(" in row) or target in ("nb1", "essl"):
        return "archived notebook or E-SSL number, not a paper table cell"
    match = ENSEMBLE_ROW.match(row)
    if target == "table1" and row.startswith("Single ") and column == "top-1":
        return Lookup("table1", "Mean over members", row.split()[1], primary)
    if target == "table1" and row == "Single Eq vs Single Inv":
        kind = column.replace("% classes ", "")
        return Lookup("table1", "Best member on val", f"{kind} (% classes)", primary)
    if target == "table2" and match:
        strategy, size, method = match.groups()
        return Lookup("table2", f"{strategy} {METHODS[method]}", f"M={size}", primary)
    if target == "table3" and match:
        if column not in DIVERSITY:
            return f"{column!r} has no counterpart here"
        if int(match.group(2)) != spec["diversity_size"]:
            return f"diversity is measured at M = {spec['diversity_size']} here (ensembles.diversity_size)"
        return Lookup("table3", METHODS[match.group(3)], DIVERSITY[column], primary)
    if target in ("table4", "table7") and match and column in UNCERTAINTY:
        strategy, size, method = match.groups()
        label, scale = UNCERTAINTY[column]
        return Lookup(target, f"{strategy} {label} {METHODS[method]}", f"M={size}", primary, scale)
    if target in ("table5", "table8"):
        dataset_label, _, metric = column.rpartition(" ")
        found = _dataset_column(dataset_label, spec)
        if found is None:
            return f"no transfer dataset of this run is {dataset_label}"
        key, name = found
        return Lookup(target, row, f"{key} {metric}", name)
    if target in ("table6", "table10"):
        axis_label, _, measure = column.partition(" ")
        if axis_label == "all":
            if column != "all three top-1":
                return "defined here against the best single axis, not against Halfswap"
            return Lookup("table6", f"Greedy M={spec['axes_size']} Eq+Inv over all axes", "all axes top-1", primary)
        if axis_label not in PAPER_AXES or row.startswith("Greedy M=6 Eq+Inv minus"):
            return f"{column!r} has no counterpart here"
        axis, size = PAPER_AXES[axis_label], spec["axes_size"]
        if size != 6:
            return f"Tables 6 and 10 use M = {size} here (ensembles.axes_size), 6 in the paper"
        if target == "table6":
            return Lookup("table6", "Eq+Inv, every member of the axis", f"{axis} top-1", primary)
        if measure.startswith("% classes"):
            return Lookup("table10", f"{measure.replace('% classes ', '')} (% classes)", axis, primary)
        metric = "top-1" if measure == "delta top-1" else "efficiency"
        return Lookup("table10", f"Δ {metric} (EI−EE, greedy M=6)", axis, primary)
    if target == "table9":
        for label in sorted(PAPER_DATASETS, key=len, reverse=True):
            if column.startswith(label + " "):
                found = _dataset_column(label, spec)
                if found is None:
                    return f"no dataset of this run is {label}"
                key, name = found
                rest = column[len(label) + 1:]
                if rest.startswith("% classes"):
                    return Lookup("table9", f"{rest.replace('% classes ', '')} (% classes)", key, name)
                if spec["delta_size"] != 3:
                    return (f"Δ is taken at greedy M = {spec['delta_size']} here (transfer.ensemble_size), "
                            "3 in the paper")
                metric = "top-1" if rest == "delta top-1" else "efficiency"
                return Lookup("table9", f"Δ {metric} (EI−EE, greedy M=3)", key, name)
    return f"{target} has no target in this workflow yet"


def load_cells(paths: list[str]) -> dict[tuple[str, str, str], dict]:
    """Every cell of the given table CSVs, keyed by (table, row, column)."""
    cells = {}
    for path in paths:
        with open(path, newline="") as handle:
            for cell in csv.DictReader(handle):
                cells[(cell["table"], cell["row"], cell["column"])] = cell
    return cells


def _number(text: str) -> float | None:
    return float(text) if text not in ("", None) else None


MISSING = object()


def _same(ours, paper) -> bool:
    """Equal as data: numbers by value (100 and 100.0 match), lists item by item."""
    if isinstance(ours, bool) or isinstance(paper, bool):
        return ours is paper
    if isinstance(ours, (int, float)) and isinstance(paper, (int, float)):
        return ours == paper
    if isinstance(ours, (list, tuple)) and isinstance(paper, (list, tuple)):
        return len(ours) == len(paper) and all(_same(a, b) for a, b in zip(ours, paper))
    if isinstance(ours, dict) and isinstance(paper, dict):
        return ours.keys() == paper.keys() and all(_same(ours[k], paper[k]) for k in ours)
    return ours == paper


def _shown(value) -> str:
    if value is MISSING:
        return MISSING_VALUE
    return value if isinstance(value, str) else json.dumps(value, separators=(", ", ": "))


@dataclass(frozen=True)
class ProtocolCheck:
    """A run's protocol against the paper's for one number: the keys that
    differ undocumented (as ``key = ours vs paper's``) and the documented
    deviations the run keeps."""

    differences: tuple[str, ...]
    documented: tuple[deviation_list.Deviation, ...]

    def summary(self, limit: int | None = None) -> str:
        """matches, the documented deviations kept, or the keys that differ
        (the first ``limit`` of them, and how many more)."""
        if self.differences:
            keys = [d.split(" = ")[0] for d in self.differences]
            more = f" and {len(keys) - limit} more" if limit is not None and len(keys) > limit else ""
            return "differs: " + ", ".join(keys[:limit]) + more
        if self.documented:
            return "documented: " + ", ".join(d.id for d in self.documented)
        return "matches"


def check_protocol(paper: dict, ours: dict, deviations: list) -> ProtocolCheck:
    differences, documented = [], {}
    for key, expected in paper.items():
        value = ours.get(key, MISSING)
        if _same(value, expected):
            continue
        deviation = deviation_list.documenting(deviations, key, value) if value is not MISSING else None
        if deviation is not None and deviation.compared:
            documented[deviation.id] = deviation
            continue
        note = f" (documented, not compared: {deviation.id})" if deviation is not None else ""
        differences.append(f"{key} = {_shown(value)} vs {_shown(expected)}{note}")
    return ProtocolCheck(tuple(differences), tuple(documented.values()))


def compare(cells: dict, spec: dict, protocol: dict) -> list[Comparison]:
    """One comparison per paper number (see the module docstring); ``protocol``
    is the run's protocol record (``multisym.protocol.record``)."""
    groups, deviations = load_protocol(), deviation_list.load()
    out = []
    for value in load_values():
        row = Comparison(value["target"], value["row"], value["column"], value["value"], value["unit"])
        where = locate(value, spec)
        if isinstance(where, str):
            row.reason = where
            out.append(row)
            continue
        cell = cells.get((where.table, where.row, where.column))
        if cell is None:
            row.reason = f"{where.table} of this run has no cell {where.row!r} / {where.column!r}"
            out.append(row)
            continue
        row.reproduced = float(cell["value"]) * where.scale
        low, high = _number(cell["ci_low"]), _number(cell["ci_high"])
        if low is not None:
            row.ci_low, row.ci_high = low * where.scale, high * where.scale
        row.difference = row.reproduced - row.paper
        paper_dataset, paper_name = PAPER_PRIMARY.get(value["target"], (None, None))
        if paper_dataset is None:
            paper_dataset = _paper_dataset(value)
            paper_name = PAPER_DATASETS[paper_dataset]
        primary = "imagenet100" if value["target"] in PAPER_PRIMARY else "imagenet"
        check = check_protocol(paper_protocol(groups, value["target"], paper_name, value["column"]), protocol,
                               deviations)
        row.protocol = check.summary()
        if (spec["dataset"], spec["arch"], where.dataset) != (primary, "resnet50", paper_name):
            row.status = "not comparable"
            row.protocol = check.summary(limit=NOT_COMPARABLE_KEYS)
            row.reason = (f"members pretrained on {spec['dataset']} with a {spec['arch']} backbone (scale "
                          f"{spec['name']}), measured on {where.dataset}; the paper: {primary}, ResNet-50, "
                          f"measured on {paper_dataset}")
        elif check.differences:
            row.status = "protocol differs"
            row.reason = "; ".join(check.differences)
        else:
            within_ci = row.ci_low is not None and row.ci_low <= row.paper <= row.ci_high
            row.status = "agrees" if abs(row.difference) <= TOLERANCE[row.unit] or within_ci else "differs"
            row.reason = ("documented deviations: " + "; ".join(d.title for d in check.documented)
                          if check.documented else "the paper's protocol")
        out.append(row)
    return out


def _paper_dataset(value: dict) -> str:
    """The dataset a paper number was measured on."""
    for label in sorted(PAPER_DATASETS, key=len, reverse=True):
        if value["column"].startswith(label + " "):
            return label
    return "ImageNet"


def to_csv(rows: list[Comparison]) -> str:
    from multisym.report.tables import to_csv as records_csv

    return records_csv(rows, Comparison)


def to_markdown(rows: list[Comparison], title: str) -> str:
    def number(v):
        return "–" if v is None else f"{v:.4g}"

    counts = {s: sum(r.status == s for r in rows) for s in STATUSES}
    lines = [f"**{title}**", "", ", ".join(f"{n} {s}" for s, n in counts.items()), "",
             "| target | row | column | paper | reproduced | difference | 95% CI | status | protocol | reason |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ci = "–" if r.ci_low is None else f"[{r.ci_low:.4g}, {r.ci_high:.4g}]"
        lines.append(f"| {r.target} | {r.row} | {r.column} | {number(r.paper)} | {number(r.reproduced)} | "
                     f"{number(r.difference)} | {ci} | {r.status} | {r.protocol or '–'} | {r.reason} |")
    tolerances = ", ".join(f"{unit or 'unitless'} ±{tol:g}" for unit, tol in TOLERANCE.items())
    lines += ["", f"Agreement: within the tolerance of the unit ({tolerances}) or the paper's value inside "
                  "the reproduced 95% bootstrap CI, for rows whose protocol matches the paper's or differs only in "
                  "choices docs/deviations.md documents; the protocol column names them."]
    return "\n".join(lines) + "\n"


def to_html(rows: list[Comparison], title: str) -> str:
    from multisym.report import pages

    header = [f.name for f in fields(Comparison)]
    return pages.page(title, pages.table(header, [list(asdict(row).values()) for row in rows]))


def write(table_paths: list[str], spec: dict, protocol_path: str, out_csv: str, out_md: str,
          out_html: str | None = None) -> list[Comparison]:
    """The comparison of this run's tables, under the protocol record at ``protocol_path``."""
    protocol = json.loads(Path(protocol_path).read_text())["run"]
    rows = compare(load_cells(table_paths), spec, protocol)
    title = f"Paper vs reproduction — scale {spec['name']} ({spec['dataset']}, {spec['arch']})"
    atomic_write_text(to_csv(rows), out_csv)
    atomic_write_text(to_markdown(rows, title), out_md)
    if out_html is not None:
        atomic_write_text(to_html(rows, title), out_html)
    return rows
