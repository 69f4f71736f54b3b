"""The paper's claims tested at this scale (docs/method.md#claims), as CSV,
Markdown and HTML.

Each claim of ``claims.yaml`` names the ensembles it compares, the metric, the
direction the paper reports and the sizes M it holds at. A cell is one
comparison, A than B: the paired bootstrap 95 % CI of metric(A) − metric(B)
over the same test resamples (``multisym.resamples``), and its verdict:

- **supported**: the CI excludes 0 on the claimed side;
- **contradicted**: the CI excludes 0 on the other side;
- **inconclusive**: the CI holds 0.

A dominance claim (Table 1) compares each share of classes with a threshold
through the bootstrap CI of the share. A claim over several cells (every M,
every transfer dataset, every axis) is summarised by its rule: ``all``,
supported when every cell is and contradicted when any cell is; ``majority``,
supported when more than half the cells are and none is contradicted,
contradicted when more than half are and none is supported; otherwise
inconclusive. A claim none of whose ensembles this scale builds is "not
measured", with the reason. Reads the ensembles' resamples files and the
member metrics only (never logits).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from multisym.resamples import Side, paired_difference, verdict
from multisym.files import atomic_write_text
from multisym.report.tables import POOL_LABELS, load_results, to_csv

CLAIMS_PATH = Path(__file__).with_name("claims.yaml")
RULES = ("all", "majority")
SIZES = {"diversity": "diversity_size", "delta": "delta_size", "axes": "axes_size"}
METRIC_LABELS = {"accuracy": "top-1 (%)", "nll": "NLL", "auuqc": "AUUQC", "inconsistency": "inconsistency (%)",
                 "spread_logit": "spread of logits", "spread_prob": "spread of probabilities", "kl": "KL",
                 "eq_better": "% classes Eq>Inv", "inv_better": "% classes Eq<Inv"}
NOT_MEASURED = "not measured"


@dataclass
class ClaimRow:
    """One cell of a claim, or its summary (``cell`` "summary")."""

    claim: str
    statement: str
    source: str
    cell: str
    compared: str = ""
    metric: str = ""
    direction: str = ""
    reference: float | None = None
    estimate: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    verdict: str = ""
    note: str = ""


def load_claims(path: str | Path = CLAIMS_PATH) -> list[dict]:
    with open(path) as handle:
        claims = yaml.safe_load(handle)
    for claim in claims:
        if claim["summary"] not in RULES:
            raise ValueError(f"{path}: claim {claim['id']}: unknown summary rule {claim['summary']!r}; known: {RULES}")
    return claims


def summary_verdict(verdicts: list[str], rule: str) -> str:
    """The verdict of a claim from its cells' (see the module docstring)."""
    supported, contradicted = verdicts.count("supported"), verdicts.count("contradicted")
    if rule == "all":
        if contradicted:
            return "contradicted"
        return "supported" if supported == len(verdicts) else "inconclusive"
    if supported > len(verdicts) / 2 and not contradicted:
        return "supported"
    if contradicted > len(verdicts) / 2 and not supported:
        return "contradicted"
    return "inconclusive"


def _label(pool: str, strategy: str) -> str:
    name = POOL_LABELS.get(pool, pool)
    return f"{name} (every member)" if strategy == "all" else f"{strategy} {name}"


class Resolver:
    """The ensembles of this scale by (dataset, pool, strategy), and why one is missing."""

    def __init__(self, results: list[dict], spec: dict):
        self.spec = spec
        self.ensembles = {(r.dataset, r.pool, r.strategy): r for r in (x["resamples"] for x in results
                                                                      if "resamples" in x)}
        self.members = next((r for r in results if "dominance" in r), None)

    def dataset_label(self, dataset: str) -> str:
        return dataset or self.spec["dataset"]

    def missing(self, dataset: str, pool: str, strategy: str) -> str:
        if pool in self.spec["pools"] or pool in self.spec["axis_pools"]:
            return f"no {strategy} {pool} ensembles on {self.dataset_label(dataset)}"
        return f"pool {pool} is not built at this scale (ensembles.pools)"

    def sizes(self, selector: str, a, b) -> list[int]:
        if selector == "every":
            both = set(a.sizes()) & set(b.sizes()) if "all" not in (a.strategy, b.strategy) else set()
            return sorted(s for s in both if s >= 2)
        return [self.spec[SIZES[selector]]]


def _pairs(claim: dict, spec: dict) -> list[tuple[str, str, str, str]]:
    """(pool A, strategy A, pool B, strategy B) of every pair, {axis} expanded over members.axes."""
    out = []
    for first, second in claim["pairs"]:
        axes = spec["axes"] if "{axis}" in first + second else [None]
        for axis in axes:
            a, b = (side.format(axis=axis).split("/") for side in (first, second))
            out.append((*a, *b))
    return out


def _pair_cells(claim: dict, resolver: Resolver, base: dict) -> tuple[list[ClaimRow], list[str]]:
    spec = resolver.spec
    datasets = [""] if claim["datasets"] == "pretraining" else list(spec["transfer"])
    cells, missing = [], []
    if not datasets:
        return [], ["the config has no transfer dataset (transfer.datasets)"]
    if any("{axis}" in side for pair in claim["pairs"] for side in pair) and len(spec["axes"]) < 2:
        return [], ["needs Eq and Inv members of at least two symmetry axes (members.axes)"]
    for pool_a, strategy_a, pool_b, strategy_b in _pairs(claim, spec):
        for dataset in datasets:
            a = resolver.ensembles.get((dataset, pool_a, strategy_a))
            b = resolver.ensembles.get((dataset, pool_b, strategy_b))
            if a is None or b is None:
                missing.append("; ".join(resolver.missing(dataset, *pair) for pair, r in
                                         (((pool_a, strategy_a), a), ((pool_b, strategy_b), b)) if r is None))
                continue
            compared = f"{_label(pool_a, strategy_a)} − {_label(pool_b, strategy_b)}"
            for size in resolver.sizes(claim["sizes"], a, b):
                rows_a, rows_b = a.rows(size), b.rows(size)
                where = f"M={size} on {resolver.dataset_label(dataset)}"
                if not len(rows_a) or not len(rows_b):
                    missing.append(f"{compared} has no ensembles of M={size} on {resolver.dataset_label(dataset)}")
                    continue
                for metric in claim["metrics"]:
                    if not (a.has(metric, rows_a) and b.has(metric, rows_b)):
                        missing.append(f"{compared} has no {metric} at {where}")
                        continue
                    difference = paired_difference(Side(a, rows_a, metric), Side(b, rows_b, metric),
                                                   spec["level"], spec["seed"])
                    draws = max(len(rows_a), len(rows_b))
                    note = f"mean over {draws} random draws, redrawn on each resample" if draws > 1 else ""
                    cells.append(ClaimRow(**base, cell=where, compared=compared, metric=metric,
                                          direction=claim["direction"], reference=0.0, estimate=difference.estimate,
                                          ci_low=difference.ci_low, ci_high=difference.ci_high,
                                          verdict=verdict(difference.ci_low, difference.ci_high, claim["direction"]),
                                          note=note))
    return cells, list(dict.fromkeys(missing))


def _dominance_cells(claim: dict, resolver: Resolver, base: dict) -> tuple[list[ClaimRow], list[str]]:
    dominance = (resolver.members or {}).get("dominance")
    if not dominance:
        return [], ["needs Eq and Inv members of ensembles.axis"]
    cells = []
    for key in claim["dominance"]:
        low, high = dominance["best_pair_ci"][key]
        cells.append(ClaimRow(**base, cell=f"best-on-val members on {resolver.spec['dataset']}",
                              compared=f"{dominance['eq']} vs {dominance['inv']}", metric=key, direction="higher",
                              reference=float(claim["threshold"]), estimate=dominance["best_pair"][key],
                              ci_low=low, ci_high=high, verdict=verdict(low, high, "higher", claim["threshold"]),
                              note=f"share of classes against {claim['threshold']} %"))
    return cells, []


def claims(results: list[dict], spec: dict, claim_list: list[dict] | None = None) -> list[ClaimRow]:
    """Every claim's summary row, then its cells, from the result files
    (``tables.load_results``: resamples files and the member metrics)."""
    resolver, rows = Resolver(results, spec), []
    for claim in claim_list or load_claims():
        base = {"claim": claim["id"], "statement": " ".join(claim["claim"].split()), "source": claim["source"]}
        build = _dominance_cells if "dominance" in claim else _pair_cells
        cells, missing = build(claim, resolver, base)
        if not cells:
            rows.append(ClaimRow(**base, cell="summary", verdict=NOT_MEASURED, note="; ".join(missing)))
            continue
        verdicts = [c.verdict for c in cells]
        counts = ", ".join(f"{verdicts.count(v)} {v}" for v in ("supported", "contradicted", "inconclusive"))
        note = f"{counts} of {len(cells)} cells (rule: {claim['summary']})"
        if missing:
            note += "; not measured: " + "; ".join(missing)
        rows.append(ClaimRow(**base, cell="summary", verdict=summary_verdict(verdicts, claim["summary"]), note=note))
        rows += cells
    return rows


# ----------------------------------------------------------------- writers
def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


def _interval(row: ClaimRow) -> str:
    return "–" if row.ci_low is None else f"[{_number(row.ci_low)}, {_number(row.ci_high)}]"


def _summary_table(rows: list[ClaimRow]) -> tuple[list[str], list[list[str]]]:
    header = ["claim", "source", "verdict", "cells"]
    return header, [[r.statement, r.source, r.verdict, r.note] for r in rows if r.cell == "summary"]


def _cell_table(rows: list[ClaimRow]) -> tuple[list[str], list[list[str]]]:
    header = ["claim", "cell", "compared (A − B)", "metric", "claimed", "estimate", "95% CI", "verdict"]
    body = []
    for r in rows:
        if r.cell == "summary":
            continue
        claimed = f"{'>' if r.direction == 'higher' else '<'} {_number(r.reference)}"
        body.append([r.claim, r.cell, r.compared, METRIC_LABELS.get(r.metric, r.metric), claimed,
                     _number(r.estimate), _interval(r), r.verdict])
    return header, body


def _markdown_table(header: list[str], body: list[list[str]]) -> list[str]:
    def escape(text):
        return str(text).replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    return lines + ["| " + " | ".join(escape(v) for v in row) + " |" for row in body]


def to_markdown(rows: list[ClaimRow], title: str) -> str:
    verdicts = [r.verdict for r in rows if r.cell == "summary"]
    counts = ", ".join(f"{verdicts.count(v)} {v}" for v in ("supported", "contradicted", "inconclusive",
                                                                NOT_MEASURED))
    lines = [f"**{title}**", "", counts, "", *_markdown_table(*_summary_table(rows)), "",
             "Each cell: the paired bootstrap 95% CI of A − B over the same test resamples; supported when it "
             "excludes the claimed reference on the claimed side, contradicted when it excludes it on the other "
             "side (docs/method.md#claims).", "", *_markdown_table(*_cell_table(rows))]
    return "\n".join(lines) + "\n"


def to_html(rows: list[ClaimRow], title: str) -> str:
    from multisym.report import pages

    return pages.page(title, pages.heading("Claims"), pages.table(*_summary_table(rows)),
                      pages.heading("Cells: paired bootstrap 95% CIs of A − B"), pages.table(*_cell_table(rows)),
                      pages.paragraph("Supported: the CI excludes the reference on the claimed side; contradicted: "
                                      "on the other side; inconclusive: it holds it."))


def write(inputs: list[str], spec: dict, out_csv: str, out_md: str, out_html: str | None = None) -> list[ClaimRow]:
    """The claims table from its result files (the target registry's ``claims``)."""
    from multisym.targets import CLAIMS

    rows = claims(load_results(inputs), spec)
    title = f"{CLAIMS.title} — scale {spec['name']} ({spec['dataset']})"
    atomic_write_text(to_csv(rows, ClaimRow), out_csv)
    atomic_write_text(to_markdown(rows, title), out_md)
    if out_html is not None:
        atomic_write_text(to_html(rows, title), out_html)
    return rows

