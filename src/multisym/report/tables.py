"""The paper's tables from small result files (JSON), as CSV, Markdown, LaTeX and HTML.

Every table's CSV has the same long form, one cell per line:
``table, row, column, value, std, ci_low, ci_high, n, note`` — ``std`` is the
spread over random draws or members (ddof 0), ``ci_*`` a bootstrap 95% CI
over test samples, ``n`` how many draws or members the value averages. The
Markdown file renders the same cells as the paper's grid, the LaTeX file the
same grid as a booktabs table. Tables never open checkpoints or logits. Each
table's title and the result files it reads are its entry in the target
registry (``multisym.targets``).
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from multisym.files import atomic_write_text
from multisym.resamples import Side, paired_difference, read_resamples
from multisym.targets import TABLES

POOL_LABELS = {"eq": "Eq (DE)", "inv": "Inv", "eq_inv": "Eq+Inv (MSE)", "base": "Base (DE SimCLR)",
               "sup": "Sup (DE supervised)", "ssl_ft": "SSL-FT"}
MODE_LABELS = {"base": "Base", "eq": "Eq", "inv": "Inv", "sup": "Sup", "ssl_ft": "SSL-FT"}


@dataclass
class Cell:
    table: str
    row: str
    column: str
    value: float
    std: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    n: int | None = None
    note: str = ""


def load_results(paths: list[str]) -> list[dict]:
    """Each result file: a JSON as it is; an ensemble job's values on every
    resample (``.resamples.npz``) as {"resamples": ``resamples.Resamples``}."""
    return [{"resamples": read_resamples(path)} if str(path).endswith(".npz") else json.loads(Path(path).read_text())
            for path in paths]


def ensembles_by(results: list[dict]) -> dict[tuple[str, str], dict]:
    return {(r["pool"], r["strategy"]): r for r in results if "pool" in r}


def _metric_cell(table, row, column, metric: dict, scale: float = 1.0, note: str = "") -> Cell:
    ci = metric.get("ci") or [None, None]
    low, high = (None if v is None else v * scale for v in ci)
    return Cell(table, row, column, metric["value"] * scale, ci_low=low, ci_high=high, note=note)


def _draws_cell(table, row, column, entry: dict, metric: str, scale: float = 1.0) -> Cell:
    return Cell(table, row, column, entry["mean"][metric] * scale, std=entry["std"][metric] * scale,
                n=len(entry["draws"]))


def _ordered_pools(results: dict) -> list[str]:
    present = {pool for pool, _ in results}
    return [pool for pool in POOL_LABELS if pool in present]


# ------------------------------------------------------------------ tables
def ensembles_axis_members(members: dict) -> list[dict]:
    """The member rows of Table 1 and Figure 6: the Eq and Inv members of the
    ensembles axis (with several axes the others feed Tables 6 and 10), and
    every member of another mode."""
    axis = members.get("axis")
    return [m for m in members["members"] if axis is None or m["mode"] not in ("eq", "inv") or m["axis"] == axis]


def table1(results: list[dict], spec: dict) -> list[Cell]:
    members = next(r for r in results if "members" in r and "dominance" in r)
    cells = []
    for mode, label in MODE_LABELS.items():
        rows = [m for m in ensembles_axis_members(members) if m["mode"] == mode]
        if not rows:
            continue
        values = [m["metrics"]["accuracy"]["value"] for m in rows]
        cells.append(Cell("table1", "Mean over members", label, sum(values) / len(values), std=_std(values),
                          n=len(values)))
        best = max(rows, key=lambda m: m["val_accuracy"])
        cells.append(_metric_cell("table1", "Best member on val", label, best["metrics"]["accuracy"],
                                  note=best["member"]))
    dominance = members["dominance"]
    if dominance:
        note = f"{dominance['eq']} vs {dominance['inv']} (best on val)"
        for key, column in (("eq_better", "Eq>Inv (% classes)"), ("inv_better", "Eq<Inv (% classes)"),
                            ("tie", "Eq==Inv (% classes)")):
            low, high = dominance["best_pair_ci"][key]
            cells.append(Cell("table1", "Best member on val", column, dominance["best_pair"][key],
                              ci_low=low, ci_high=high, note=note))
            cells.append(Cell("table1", "Mean over members", column, dominance["all_pairs_mean"][key],
                              n=dominance["pairs"], note="mean over every Eq x Inv pair"))
    return cells


def _size_cells(table: str, ensembles: dict, strategies: tuple[str, ...], metric: str, label: str) -> list[Cell]:
    """One row per strategy and pool, one column per ensemble size M: random as
    mean ± std over draws, greedy as value [95% CI] (with its protocol note)."""
    cells = []
    for strategy in strategies:
        for pool in _ordered_pools(ensembles):
            result = ensembles.get((pool, strategy))
            if result is None:
                continue
            row = " ".join(part for part in (strategy.capitalize(), label, POOL_LABELS[pool]) if part)
            for entry in result["sizes"]:
                column = f"M={entry['size']}"
                if strategy == "random":
                    cells.append(_draws_cell(table, row, column, entry, metric))
                else:
                    cells.append(_metric_cell(table, row, column, entry["metrics"][metric],
                                              note="; ".join(result["protocol"])))
    return cells


def table2(results: list[dict], spec: dict) -> list[Cell]:
    return _size_cells("table2", ensembles_by(results), ("random", "greedy"), "accuracy", "")


DIVERSITY_COLUMNS = (("inconsistency", "Incons. (%)", 1.0), ("spread_logit", "Logits (std)", 1.0),
                     ("spread_prob", "Prob (std, x1e-4)", 1e4), ("kl", "KL", 1.0),
                     ("efficiency", "Efficiency (points)", 1.0), ("accuracy", "Top-1 (%)", 1.0))


def table3(results: list[dict], spec: dict) -> list[Cell]:
    ensembles = ensembles_by(results)
    cells = []
    for pool in _ordered_pools(ensembles):
        result = ensembles.get((pool, "random"))
        if result is None:
            continue
        entry = next(e for e in result["sizes"] if e["size"] == spec["diversity_size"])
        for metric, column, scale in DIVERSITY_COLUMNS:
            cells.append(_draws_cell("table3", POOL_LABELS[pool], column, entry, metric, scale))
    return cells


UNCERTAINTY_METRICS = (("nll", "NLL"), ("ece", "ECE"), ("brier", "Brier"), ("auuqc", "AUUQC"))


def table4(results: list[dict], spec: dict) -> list[Cell]:
    """Greedy ensembles: every uncertainty metric (the paper's Table 4)."""
    ensembles = ensembles_by(results)
    return [cell for metric, label in UNCERTAINTY_METRICS
            for cell in _size_cells("table4", ensembles, ("greedy",), metric, label)]


def table7(results: list[dict], spec: dict) -> list[Cell]:
    """Random and greedy ensembles: NLL and AUUQC (the paper's Table 7, appendix)."""
    ensembles = ensembles_by(results)
    return [cell for metric, label in UNCERTAINTY_METRICS if metric in ("nll", "auuqc")
            for cell in _size_cells("table7", ensembles, ("random", "greedy"), metric, label)]


def table_shift(results: list[dict], spec: dict) -> list[Cell]:
    """Members (mean over the pool) and the pool's greedy ensemble under shift:
    clean test subset, each severity (mean over corruption types), all corrupted."""
    shift = next(r for r in results if "severities" in next(iter(r.get("pools", {}).values()), {}))
    note = "stand-in: corruptions of the embedded digits, not ImageNet-C" if shift["stand_in"] else ""
    cells = []
    for metric, label in (("accuracy", "top-1 (%)"), ("nll", "NLL"), ("ece", "ECE")):
        for pool in POOL_LABELS:
            if pool not in shift["pools"]:
                continue
            severities = shift["pools"][pool]["severities"]
            for kind, kind_label in (("members_mean", "members (mean)"),
                                     ("greedy", f"greedy M={shift['ensemble_size']}")):
                row = f"{label} {POOL_LABELS[pool]} {kind_label}"
                for key, values in severities.items():
                    column = {"clean": "clean", "all": "all corrupted"}.get(key, f"severity {key}")
                    cells.append(Cell("table_shift", row, column, values[kind][metric], note=note))
    return cells


def _stand_in_note(summary: dict) -> str:
    return f"stand-in: {summary['label']} is {summary['stand_in']}" if summary["stand_in"] else ""


TRANSFER_POOLS = (("eq", "Eq"), ("eq_inv", "Eq+Inv"))


def _transfer_cells(table: str, summaries: list[dict], strategy: str) -> list[Cell]:
    """Rows as the paper's Tables 5 and 8: single Eq and Inv, then each size
    for Eq and Eq+Inv; one top-1 and one efficiency column per dataset adapted
    to (the evaluation-only sets are Table 9's and Figure 4's)."""
    cells = []
    for summary in (s for s in summaries if not s.get("evaluation_only")):
        column, note = summary["label"], _stand_in_note(summary)
        for mode, label in (("eq", "Eq"), ("inv", "Inv")):
            single = summary["singles"].get(mode)
            if single:
                cells.append(Cell(table, f"Single {label}", f"{column} top-1", single["mean"], std=single["std"],
                                  n=single["n"], note=note))
        sizes = sorted({e["size"] for pool, _ in TRANSFER_POOLS for e in summary[strategy].get(pool, [])
                        if e["size"] >= 2})
        for size in sizes:
            for pool, label in TRANSFER_POOLS:
                entry = next((e for e in summary[strategy].get(pool, []) if e["size"] == size), None)
                if entry is None:
                    continue
                row = f"{strategy.capitalize()} M={size} {label}"
                if strategy == "greedy":
                    low, high = entry["accuracy_ci"]
                    cells.append(Cell(table, row, f"{column} top-1", entry["accuracy"], ci_low=low, ci_high=high,
                                      note=note))
                    cells.append(Cell(table, row, f"{column} efficiency", entry["efficiency"], note=note))
                else:
                    cells.append(Cell(table, row, f"{column} top-1", entry["accuracy"], std=entry["accuracy_std"],
                                      n=entry["draws"], note=note))
                    cells.append(Cell(table, row, f"{column} efficiency", entry["efficiency"],
                                      std=entry["efficiency_std"], n=entry["draws"], note=note))
    return cells


def table5(results: list[dict], spec: dict) -> list[Cell]:
    return _transfer_cells("table5", results, "greedy")


def table8(results: list[dict], spec: dict) -> list[Cell]:
    return _transfer_cells("table8", results, "random")


def table9(results: list[dict], spec: dict) -> list[Cell]:
    """Per dataset (the pretraining dataset first): % classes Eq > Inv and
    Eq < Inv (best-on-val members, with bootstrap CIs), and Δ top-1 and Δ
    efficiency of greedy Eq+Inv minus greedy Eq at M = transfer.ensemble_size,
    with paired bootstrap CIs (docs/method.md#paired-differences)."""
    cells = []
    for summary in results:
        column, note = summary["label"], _stand_in_note(summary)
        dominance = summary["dominance"]
        if dominance:
            pair = f"{dominance['eq']} vs {dominance['inv']}"
            for key, row in (("eq_better", "Eq>Inv (% classes)"), ("inv_better", "Eq<Inv (% classes)")):
                low, high = dominance["ci"][key]
                cells.append(Cell("table9", row, column, dominance[key], ci_low=low, ci_high=high,
                                  note="; ".join(n for n in (pair, note) if n)))
        delta = summary["delta"]
        if delta:
            for key, label in (("accuracy", "top-1"), ("efficiency", "efficiency")):
                low, high = delta.get(f"{key}_ci") or (None, None)
                cells.append(Cell("table9", f"Δ {label} (EI−EE, greedy M={delta['size']})", column,
                                  delta[key], ci_low=low, ci_high=high, note=note))
    return cells


def _greedy_entry(result: dict, size: int) -> dict:
    """The greedy ensemble of ``size`` members (the largest there is when the sequence is shorter)."""
    return result["sizes"][min(size, len(result["sizes"])) - 1]


def table6(results: list[dict], spec: dict) -> list[Cell]:
    """Per axis, the ensemble of all its Eq and Inv members (the paper's M = 6:
    3 Eq + 3 Inv); over every axis, the greedy Eq+Inv ensemble of axes_size
    members; and the gain of the latter over the best single axis."""
    cells, singles = [], {}
    for result in results:
        if result["pool"] == "eq_inv_all":
            continue
        entry, axis = result["sizes"][0], result["pool"].rsplit("_", 1)[1]
        cells.append(_metric_cell("table6", "Eq+Inv, every member of the axis", f"{axis} top-1",
                                  entry["metrics"]["accuracy"], note=f"M={entry['size']}"))
        singles[axis] = entry["metrics"]["accuracy"]["value"]
    combined = next((r for r in results if r["pool"] == "eq_inv_all"), None)
    if combined is not None:
        entry = _greedy_entry(combined, spec["axes_size"])
        row = f"Greedy M={entry['size']} Eq+Inv over all axes"
        cells.append(_metric_cell("table6", row, "all axes top-1", entry["metrics"]["accuracy"]))
        if singles:
            best = max(singles, key=singles.get)
            cells.append(Cell("table6", row, f"gain over the best axis ({best})",
                              entry["metrics"]["accuracy"]["value"] - singles[best]))
    return cells


def _ensemble_note(name: str, pool: str, entry: dict) -> str:
    """Which members an ensemble holds: its distinct members, how many of its
    M places repeat one, and each member's count."""
    counts = Counter(entry["members"])
    listed = ", ".join(f"{member} x{count}" for member, count in counts.items())
    return (f"{name} = greedy {pool} at M={entry['size']}: {len(counts)} distinct members, "
            f"{entry['size'] - len(counts)} repeats ({listed})")


def table10(results: list[dict], spec: dict) -> list[Cell]:
    """Per axis: class dominance of its best-on-val Eq vs Inv member (with
    bootstrap CIs), and greedy eq_inv_<axis> minus eq_<axis> at M = axes_size
    with paired bootstrap CIs (docs/method.md#paired-differences). An axis's
    Eq pool may hold fewer than M members (the paper's: 3 of M = 6), so
    greedy selection with replacement repeats them; each Δ's note names the
    distinct members and repeats of both ensembles."""
    size, cells = spec["axes_size"], []
    members = next(r for r in results if "dominance_by_axis" in r)
    greedy = {r["pool"]: _greedy_entry(r, size) for r in results if "pool" in r}
    resamples = {r["resamples"].pool: r["resamples"] for r in results if "resamples" in r}
    for axis, dominance in members["dominance_by_axis"].items():
        pair = f"{dominance['eq']} vs {dominance['inv']}"
        for key, row in (("eq_better", "Eq>Inv (% classes)"), ("inv_better", "Eq<Inv (% classes)"),
                         ("tie", "Eq==Inv (% classes)")):
            low, high = dominance["best_pair_ci"][key]
            cells.append(Cell("table10", row, axis, dominance["best_pair"][key], ci_low=low, ci_high=high, note=pair))
        pools = (f"eq_inv_{axis}", f"eq_{axis}")
        both, eq = (greedy.get(pool) for pool in pools)
        if both and eq:
            note = "; ".join(_ensemble_note(name, pool, entry) for name, pool, entry in zip(("EI", "EE"), pools,
                                                                                            (both, eq)))
            paired = all(pool in resamples for pool in pools)
            for metric, label in (("accuracy", "top-1"), ("efficiency", "efficiency")):
                delta = both["metrics"][metric]["value"] - eq["metrics"][metric]["value"]
                low = high = None
                if paired:
                    sides = [Side(resamples[pool], resamples[pool].rows(size), metric) for pool in pools]
                    difference = paired_difference(*sides, spec.get("level", 0.95))
                    low, high = difference.ci_low, difference.ci_high
                cells.append(Cell("table10", f"Δ {label} (EI−EE, greedy M={size})", axis, delta,
                                  ci_low=low, ci_high=high, note=note))
    return cells


AUDIT_MODES = ("eq", "inv", "base", "sup", "ssl_ft")


def _audit_columns(sets: dict, group: str, prefix: str) -> list[tuple[str, str, str]]:
    """(set, metric, column label) of one group, test set first."""
    columns = []
    for name in sets:
        columns.append((name, "osp", f"{prefix}OSP {name}"))
        columns.append((name, "consistent", f"{prefix}consistent % {name}"))
        if name == "test":
            columns.append((name, "orbit_accuracy", f"{prefix}orbit top-1 % test"))
    return columns


def audit_pool_members(audit: dict) -> set[str]:
    """The audited members the mode summaries of the audit table and figure
    average over: those of the ensemble pools (with several axes, the Eq and
    Inv members of the ensembles axis and every other member), or every
    member where no pool was audited."""
    pooled = {m for ensemble in audit["ensembles"].values() for m in ensemble["pool_members"]}
    return pooled or set(audit["members"])


def table_audit(results: list[dict], spec: dict) -> list[Cell]:
    """One row per member, per mode (mean ± std over its members in the pools,
    ``audit_pool_members``) and per ensemble (each pool's greedy ensemble and
    whole pool, logit and probability mean); OSP columns per group and audit
    set, feature cosine on test, and the Eq head's accuracy on the test orbit."""
    audit = results[0]
    note = "stand-in: audit of members trained on the embedded digits" if audit["stand_in"] else ""
    multi = len(audit["groups"]) > 1
    cells: list[Cell] = []

    def member_cells(row: str, entry: dict) -> list[Cell]:
        out = []
        for group in audit["groups"]:
            prefix = f"{group}: " if multi else ""
            for name, metric, column in _audit_columns(audit["sets"], group, prefix):
                if metric in entry["sets"][name][group]:
                    out.append(_metric_cell("table_audit", row, column, entry["sets"][name][group][metric], note=note))
            if "feature_cosine" in entry["sets"]["test"][group]:
                out.append(_metric_cell("table_audit", row, f"{prefix}feature cosine test",
                                        entry["sets"]["test"][group]["feature_cosine"], note=note))
        if entry.get("eq_head_accuracy"):
            out.append(_metric_cell("table_audit", row, "Eq-head top-1 % test", entry["eq_head_accuracy"], note=note))
        return out

    members, pooled = audit["members"], audit_pool_members(audit)
    for member, entry in members.items():
        cells += member_cells(member, entry)
    for mode in AUDIT_MODES:
        rows = [c for m, e in members.items() if e["mode"] == mode and m in pooled for c in member_cells(m, e)]
        for column in dict.fromkeys(c.column for c in rows):
            values = [c.value for c in rows if c.column == column]
            cells.append(Cell("table_audit", f"{MODE_LABELS[mode]} members (mean)", column,
                              sum(values) / len(values), std=_std(values), n=len(values), note=note))
    for pool in POOL_LABELS:
        if pool not in audit["ensembles"]:
            continue
        ensemble = audit["ensembles"][pool]
        for kind, label in (("greedy", f"greedy M={audit['ensemble_size']}"), ("pool", "whole pool")):
            for how in ("logit", "prob"):
                row = f"{POOL_LABELS[pool]} {label}, {how} mean"
                cells += member_cells(row, {"sets": ensemble[kind][how]})
    return cells


def _std(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5


# ----------------------------------------------------------------- writers
def to_csv(records: list, kind: type = Cell) -> str:
    """Dataclass records (cells by default) as CSV, one column per field; None is empty."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[f.name for f in fields(kind)], lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({k: ("" if v is None else v) for k, v in asdict(record).items()})
    return buffer.getvalue()


def _fixed(value: float, digits: int) -> str:
    """``value`` to ``digits`` decimals, without the sign of a value that
    rounds to zero (a paired CI's bound of -1e-9 reads 0.0000, not -0.0000)."""
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def format_cell(cell: Cell) -> str:
    digits = 4 if abs(cell.value) < 10 else 2
    text = _fixed(cell.value, digits)
    if cell.std is not None:
        text += f" ± {_fixed(cell.std, digits)}"
    elif cell.ci_low is not None:
        text += f" [{_fixed(cell.ci_low, digits)}, {_fixed(cell.ci_high, digits)}]"
    return text


def _grid(cells: list[Cell]) -> tuple[list[str], list[str], dict[tuple[str, str], str]]:
    """Rows and columns in first-seen order (ensemble sizes sorted), and each cell's text."""
    rows = list(dict.fromkeys(c.row for c in cells))
    columns = list(dict.fromkeys(c.column for c in cells))
    if all(c.startswith("M=") for c in columns):
        columns.sort(key=lambda c: int(c[2:]))
    return rows, columns, {(c.row, c.column): format_cell(c) for c in cells}


def _notes(cells: list[Cell]) -> list[str]:
    """The notes shown under a table: protocol variants, stand-ins and the
    members of ensembles compared (Table 10)."""
    shown = ("paper", "stand-in", "repeats")
    return sorted({part for c in cells for part in c.note.split("; ") if any(word in part for word in shown)})


def to_markdown(cells: list[Cell], title: str) -> str:
    rows, columns, grid = _grid(cells)
    lines = [f"**{title}**", "", "| | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for row in rows:
        lines.append(f"| {row} | " + " | ".join(grid.get((row, c), "–") for c in columns) + " |")
    lines += [""] + [f"Note: {n}" for n in _notes(cells)]
    return "\n".join(lines).rstrip() + "\n"


LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "±": r"$\pm$", "Δ": r"$\Delta$", "−": "-", "·": r"$\cdot$", "≥": r"$\geq$", "≤": r"$\leq$",
                  "×": r"$\times$", "—": "---", "–": "--", "λ": r"$\lambda$", "|": r"$|$", "<": r"$<$", ">": r"$>$"}


def latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIALS.get(ch, ch) for ch in str(text))


def to_latex(cells: list[Cell], title: str) -> str:
    """The Markdown grid as a booktabs table (needs \\usepackage{booktabs})."""
    rows, columns, grid = _grid(cells)
    lines = [r"\begin{table}[ht]", r"\centering", r"\small", f"\\caption{{{latex_escape(title)}}}",
             r"\begin{tabular}{l" + "r" * len(columns) + "}", r"\toprule",
             " & ".join([""] + [latex_escape(c) for c in columns]) + r" \\", r"\midrule"]
    for row in rows:
        values = [latex_escape(grid.get((row, c), "--")) for c in columns]
        lines.append(" & ".join([latex_escape(row)] + values) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def to_html(cells: list[Cell], title: str) -> str:
    """The grid as a self-contained HTML page (the report shows it)."""
    from multisym.report import pages

    rows, columns, grid = _grid(cells)
    body = [[row, *(grid.get((row, c), "–") for c in columns)] for row in rows]
    return pages.page(title, pages.table(["", *columns], body, row_headers=True),
                      *(pages.paragraph(f"Note: {n}") for n in _notes(cells)))


def write(table: str, inputs: list[str], spec: dict, out_csv: str, out_md: str, out_tex: str | None = None,
          out_html: str | None = None) -> None:
    """Table ``table`` of the target registry (its builder and title) from its result files."""
    target = next((t for t in TABLES if t.name == table), None)
    if target is None:
        raise ValueError(f"unknown table {table!r}; known: {sorted(t.name for t in TABLES)}")
    cells = target.build()(load_results(inputs), spec)
    title = target.title.format(m=spec.get("diversity_size"), axes_size=spec.get("axes_size"))
    title += f" — scale {spec['name']} ({spec['dataset']}; selection on {spec['selection_split']})"
    atomic_write_text(to_csv(cells), out_csv)
    atomic_write_text(to_markdown(cells, title), out_md)
    if out_tex is not None:
        atomic_write_text(to_latex(cells, title), out_tex)
    if out_html is not None:
        atomic_write_text(to_html(cells, title), out_html)
