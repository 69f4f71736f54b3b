"""Every table and figure this workflow builds, in one registry: the result
files each reads, when a scale can feed it, its title and the function that
builds it (docs/workflow.md).

The workflow asks the registry which tables and figures a scale builds and
what each reads; the report builders (``multisym.report.tables`` and
``.figures``) take their titles and builders from it, the provenance page
the status of every target, and a failed run's report the targets each
failed job could not feed. Adding a table is one entry here and one builder
there. Reads results only: imports no training code and no torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from multisym import protocol
from multisym.plan import STRATEGIES, Plan

EXTENSIONS = {"table": ("csv", "md", "tex", "html"), "figure": ("pdf", "png"), "claims": ("csv", "md", "html")}
MODULES = {"table": "tables", "figure": "figures", "claims": "claims"}  # multisym.report.<module>


@dataclass(frozen=True)
class Target:
    name: str
    title: str  # tables: {m} and {axes_size} are filled in from the report spec
    reads: Callable[[Plan], list[str]]  # the result files it is built from
    fed: Callable[[Plan], bool]  # whether a scale provides what it needs...
    needs: str  # ...said in words
    builder: str = ""  # its function in multisym.report.<kind>s; the target's name by default

    @property
    def kind(self) -> str:
        if self.name == "claims":
            return "claims"
        return "figure" if self.name.startswith("figure") else "table"

    def build(self) -> Callable:
        """The builder: (results, report spec) -> cells (a table), a matplotlib
        figure, or the claims' rows."""
        module = importlib.import_module(f"multisym.report.{MODULES[self.kind]}")
        return getattr(module, self.builder or self.name)

    def outputs(self, plan: Plan) -> list[str]:
        where = plan.layout.figure if self.kind == "figure" else plan.layout.table
        return [where(self.name, ext) for ext in EXTENSIONS[self.kind]]


def _pools(plan: Plan) -> bool:
    return bool(plan.pools)


def _two_axes(plan: Plan) -> bool:
    return "eq_inv_all" in plan.axis_pools


def _transfer_eq(plan: Plan) -> bool:
    adapted = any(t["mode"] != "evaluate" for t in plan.transfer.values())
    return adapted and "eq" in plan.transfer_pools


def _transfer_both(plan: Plan) -> bool:
    return bool(plan.transfer) and {"eq", "eq_inv"} <= set(plan.transfer_pools)


def _eq_and_inv(plan: Plan) -> bool:
    axis = plan.config["ensembles"]["axis"]
    modes = [m.mode for m in plan.members if m.axis == axis]
    return modes.count("eq") >= 2 and "inv" in modes


def _audit(plan: Plan) -> bool:
    return plan.config["audit"]["enabled"] and bool(plan.members)


def _emergence(plan: Plan) -> bool:
    return plan.config["emergence"]["enabled"]


def _ising(plan: Plan) -> bool:
    return plan.ising_enabled


ISING = "emergence.enabled and emergence.ising.enabled"


def _so2(plan: Plan) -> bool:
    """The SO(2) fraction is measured for the cyclic rotation groups C_N (rot<N>) only."""
    settings = plan.config["emergence"]
    cyclic = [g for g in settings["groups"] if g.startswith("rot") and g != "rotation"]
    return settings["enabled"] and bool(cyclic) and settings["so2_angles"] > 0


def _members(plan: Plan) -> list[str]:
    return [plan.layout.member_metrics]


def _axes(plan: Plan) -> list[str]:
    """The ensemble of every Eq and Inv member of each axis, and the greedy one over all axes."""
    every = [plan.layout.ensemble(p, "all") for p in plan.axis_pools if p.startswith("eq_inv_") and p != "eq_inv_all"]
    return [*every, plan.layout.ensemble("eq_inv_all", "greedy")]


def _axis_deltas(plan: Plan) -> list[str]:
    pools = [p for p in plan.axis_pools if p != "eq_inv_all"]
    return [plan.layout.member_metrics, *(plan.layout.ensemble(p, "greedy") for p in pools),
            *(plan.layout.ensemble_resamples(p, "greedy") for p in pools)]


def _claims(plan: Plan) -> list[str]:
    """Every ensemble's values on every resample that a claim can rest on
    (each pool's greedy and random ensembles on every dataset; with two axes,
    the axis pools' greedy and whole-pool ensembles), and the member metrics
    (Table 1's class dominance)."""
    layout = plan.layout
    paths = [layout.member_metrics, *(layout.ensemble_resamples(p, s) for p in plan.pools for s in STRATEGIES)]
    for key in plan.transfer:
        paths += [layout.transfer(key).ensemble_resamples(p, s) for p in plan.transfer_pools for s in STRATEGIES]
    if _two_axes(plan):
        paths += [layout.ensemble_resamples(p, "greedy") for p in plan.axis_pools]
        paths += [layout.ensemble_resamples(p, "all") for p in plan.axis_pools
                  if p.startswith("eq_inv_") and p != "eq_inv_all"]
    return paths


POOLS = "at least one ensemble pool (ensembles.pools)"
AUDIT = "audit.enabled and at least one member"
AXES = "Eq and Inv members of at least two members.axes"
TRANSFER_EQ = "a transfer dataset adapted to and the eq pool"
TRANSFER_BOTH = "a transfer dataset and the eq and eq_inv pools"

TABLES = (
    Target("table1", "Table 1: single members (test top-1 %) and class dominance of Eq vs Inv",
           _members, lambda plan: bool(plan.members), "at least one member"),
    Target("table2", "Table 2: ensemble test top-1 (%) vs ensemble size M, random (mean ± std over draws) "
                     "and greedy (value [95% CI])", lambda plan: plan.ensembles(), _pools, POOLS),
    Target("table3", "Table 3: diversity of random ensembles at M = {m} (mean ± std over draws)",
           lambda plan: plan.ensembles(["random"]), _pools, POOLS),
    Target("table4", "Table 4: NLL, ECE, Brier and AUUQC of greedy ensembles vs size M (value [95% CI])",
           lambda plan: plan.ensembles(["greedy"]), _pools, POOLS),
    Target("table6", "Table 6: test top-1 (%) of the ensemble of every Eq and Inv member of each symmetry axis, "
                     "and of the greedy Eq+Inv ensemble of M = {axes_size} over all axes", _axes, _two_axes, AXES),
    Target("table7", "Table 7: NLL and AUUQC of random (mean ± std over draws) and greedy (value [95% CI]) "
                     "ensembles vs size M", lambda plan: plan.ensembles(), _pools, POOLS),
    Target("table5", "Table 5: transfer, test top-1 (%) of single members and greedy ensembles, "
                     "with ensemble efficiency (points)",
           lambda plan: plan.dataset_summaries()[1:], _transfer_eq, TRANSFER_EQ),
    Target("table8", "Table 8: transfer, test top-1 (%) of random ensembles (mean ± std over draws), "
                     "with ensemble efficiency (points)",
           lambda plan: plan.dataset_summaries()[1:], _transfer_eq, TRANSFER_EQ),
    Target("table9", "Table 9: class dominance of Eq vs Inv (% classes, best-on-val members) "
                     "and greedy Eq+Inv minus Eq per dataset",
           lambda plan: plan.dataset_summaries(), _transfer_both, TRANSFER_BOTH),
    Target("table10", "Table 10: class dominance of Eq vs Inv per symmetry axis (% classes, best-on-val members) "
                      "and greedy Eq+Inv minus Eq at M = {axes_size}", _axis_deltas, _two_axes, AXES),
    Target("table_shift", "Shift table: members and greedy ensembles on locally corrupted test images "
                          "(mean over corruption types per severity)",
           lambda plan: [plan.layout.shift_metrics],
           lambda plan: plan.config["shift"]["enabled"] and bool(plan.pools),
           "shift.enabled and at least one ensemble pool"),
    Target("table_audit", "Symmetry audit: OSP (of |G|), orbit-consistent inputs (%), test accuracy over the orbit "
                          "(%), feature cosine cos(f(x), f(g·x)) and Eq-head accuracy (%), value [95% CI] over "
                          "inputs; mode rows: mean ± std over members",
           lambda plan: [plan.layout.audit_metrics], _audit, AUDIT),
)
FIGURES = (
    Target("figure2", "Figure 2: test top-1 of greedy ensembles vs their size, per pool, with 95% bootstrap CIs",
           lambda plan: plan.ensembles(["greedy"]), _pools, POOLS),
    Target("figure3", "Figure 3: random ensembles at the diversity size: diversity, efficiency and top-1 per "
                      "method (mean ± std over draws)",
           lambda plan: plan.ensembles(["random"]), _pools, POOLS),
    Target("figure4", "Figure 4: class dominance of Eq vs Inv and the Eq+Inv gain, per dataset",
           lambda plan: plan.dataset_summaries(), _transfer_both, TRANSFER_BOTH),
    Target("figure6", "Figure 6: per-class test accuracy of single members: Eq vs Inv and Eq vs Eq", _members,
           _eq_and_inv, "two Eq members and one Inv member of ensembles.axis"),
    Target("figure7", "Figure 7: uncertainty quantification: accuracy of the samples kept after removing the "
                      "most uncertain ones (BALD)",
           lambda plan: [plan.layout.ensemble(p, "greedy") for p in ("eq", "eq_inv") if p in plan.pools],
           lambda plan: "eq" in plan.pools or "eq_inv" in plan.pools, "the eq or eq_inv pool in ensembles.pools"),
    Target("figure_audit", "Symmetry audit: OSP of each pool's members and greedy ensemble per audit set, and "
                           "each mode's feature cosine", lambda plan: [plan.layout.audit_metrics], _audit, AUDIT),
    Target("figure_emergence", "Emergent invariance: OSP vs epoch of members (quantile bands) and of the "
                               "ensemble, augmented and control runs",
           lambda plan: [plan.layout.emergence_metrics], _emergence, "emergence.enabled"),
    Target("figure_emergence_size", "Emergent invariance: OSP of random sub-ensembles vs ensemble size at the "
                                    "last epoch",
           lambda plan: [plan.layout.emergence_metrics], _emergence, "emergence.enabled"),
    Target("figure_ising", "Ising model (Gerken & Kessel, Figure 1): invariance error of the predicted energy under "
                           "the four lattice rotations vs epoch, members (mean ± std) and ensemble means, "
                           "augmented and control", lambda plan: plan.ising_results(), _ising, ISING),
    Target("figure_finite_ensemble", "Finite ensembles: deviation of the ensemble mean from invariance vs the "
                                     "number of members, log-log, with fitted slopes and their 95% CIs against "
                                     "1/sqrt(M)",
           lambda plan: plan.ising_results(), _ising, ISING),
    Target("figure_emergence_orders", "Emergent invariance per group order (cf. Gerken & Kessel, Figure 2): "
                                      "orbit-consistent inputs vs epoch, ensemble and members' 25-75 % band, and "
                                      "vs ensemble size at the largest order",
           lambda plan: [plan.layout.emergence_metrics], _emergence, "emergence.enabled"),
    Target("figure_emergence_finite", "Finite image ensembles: deviation of the mean logits from invariance vs "
                                      "the number of members (untrained and trained, log-log, fitted slopes with "
                                      "95% CIs against 1/sqrt(M)) and orbit-consistent inputs vs members at "
                                      "initialisation",
           lambda plan: [plan.layout.emergence_metrics, plan.layout.emergence_init], _emergence,
           "emergence.enabled"),
    Target("figure_emergence_so2", "Emergent invariance under SO(2) (cf. Gerken & Kessel, Figure 3): share of "
                                   "uniformly drawn rotation angles keeping the prediction, per training order",
           lambda plan: [plan.layout.emergence_metrics], _so2,
           "emergence.enabled, a rot<N> group in emergence.groups and emergence.so2_angles > 0"),
)
# The paper's claims, each tested by paired bootstrap differences (multisym.report.claims)
CLAIMS = Target("claims", "The paper's claims, tested at this scale: paired bootstrap 95% CIs of each difference "
                          "and a verdict", _claims, _pools, POOLS)
TARGETS = {target.name: target for target in (*TABLES, *FIGURES, CLAIMS)}
NOT_BUILT = {
    "figure1": "the method schematic, a drawing without data: omitted",
    "figure5": "qualitative examples without numbers: omitted",
}


def built(plan: Plan, kind: str | None = None) -> list[Target]:
    """The tables and figures this scale feeds, in registry order."""
    return [t for t in TARGETS.values() if t.fed(plan) and kind in (None, t.kind)]


def outputs(plan: Plan) -> list[str]:
    """Every file of the tables, figures and claims this scale builds, the
    paper comparison and the protocol record it reads first."""
    return [plan.layout.comparison(ext) for ext in ("csv", "md", "html")] + [plan.layout.protocol] + [
        path for target in built(plan) for path in target.outputs(plan)]


def comparison_inputs(plan: Plan) -> list[str]:
    """Every table this scale feeds (CSV), for the paper-vs-reproduction table."""
    return [plan.layout.table(t.name, "csv") for t in built(plan, "table")]


def statuses(plan: Plan) -> list[dict]:
    """Every table and figure of the paper (and of this workflow) with its
    status at this scale: built, or why not."""
    out = []
    for target in TARGETS.values():
        if target.fed(plan):
            out.append({"target": target.name, "status": "built", "reason": ""})
        else:
            reason = f"the config does not feed it: it needs {target.needs}"
            out.append({"target": target.name, "status": "unavailable", "reason": reason})
    return out + [{"target": name, "status": "not built", "reason": why} for name, why in NOT_BUILT.items()]


def protocol_spec(plan: Plan) -> dict:
    """The protocol records (``multisym.protocol``): the run's, each member's,
    and the tables this scale builds (each table's keys are the paper's
    protocol's, added by ``multisym protocol``)."""
    config = plan.config
    members = {m.id: protocol.member_record(m.settings, config["adapt"]) for m in plan.members}
    members.update({m.id: protocol.finetuned_record(m) for m in plan.finetuned})
    return {"run": protocol.record(config), "members": members,
            "tables": [t.name for t in built(plan, "table")]}


def provenance_spec(plan: Plan) -> dict:
    return {"name": plan.config["name"], "targets": statuses(plan)}


# ------------------------------------------------------------- failed jobs
@dataclass(frozen=True)
class Result:
    """A result file: the files gathered into it, the members it is computed
    from, and its transfer dataset (None: the pretraining dataset)."""

    gathers: tuple[str, ...]
    members: frozenset[str]
    dataset: str | None = None


def results(plan: Plan) -> dict[str, Result]:
    """Every result a table or figure reads, and the results gathered into them."""
    layout, evaluated = plan.layout, {m.folder for m in plan.evaluated_members()}
    out, greedy = {}, tuple(plan.ensembles(["greedy"]))

    def ensembles(layout, pools, dataset):
        for pool in pools:
            members = frozenset(m.folder for _, m in plan.pool_members(pool))
            for strategy in (*STRATEGIES, "all"):
                out[layout.ensemble(pool, strategy)] = Result((), members, dataset)
                out[layout.ensemble_resamples(pool, strategy)] = Result((), members, dataset)

    ensembles(layout, plan.all_pools, None)
    out[layout.member_metrics] = Result((), frozenset(evaluated))
    summary = plan.summary_inputs({})
    out[layout.dataset_summary] = Result((summary["members"], *summary["ensembles"], *summary["resamples"]),
                                         frozenset(evaluated))
    shift = tuple(plan.shift_member_logits({}))
    shifted = frozenset(m.folder for m in plan.shift_members())
    out[layout.shift_metrics] = Result((*shift, *greedy, layout.shift_manifest), shifted)
    out[layout.audit_manifest] = Result(tuple(plan.audit_sets_inputs({}).values()), frozenset())
    audit = tuple(plan.member_audit_outputs({}))
    out[layout.audit_metrics] = Result((*audit, *greedy, layout.audit_manifest), frozenset(evaluated))
    runs = tuple(plan.emergence_logits({}))
    out[layout.emergence_metrics] = Result((*runs, layout.audit_manifest), frozenset())
    for path in plan.ising_results():
        out[path] = Result((), frozenset())
    transfer_members = frozenset(m.folder for m in plan.transfer_members)
    for key in plan.transfer:
        tlayout = layout.transfer(key)
        ensembles(tlayout, plan.transfer_pools, key)
        out[tlayout.member_metrics] = Result((), transfer_members, key)
        summary = plan.summary_inputs({"tdata": key})
        out[tlayout.dataset_summary] = Result((summary["members"], *summary["ensembles"], *summary["resamples"]),
                                              transfer_members, key)
    return out


def _lost(plan: Plan, produced: set[str], wildcards: dict) -> set[str]:
    """The results a job that failed to produce ``produced`` could not feed:

    - those it would have written or gathered into (an ensemble into a
      dataset summary, audit sets into the audit metrics);
    - those computed from the member it works on (and the fine-tuned members
      built on it, when it trains it), on its transfer dataset if it has one;
      a member's network adapted to the pretraining dataset reaches a
      transfer dataset only where that is evaluated with it; a member's
      shift logits and audit outputs reach only the results gathering them;
    - every result of a dataset it prepares."""
    table = results(plan)

    def gathered(path: str) -> set[str]:
        entry = table.get(path)
        return {path} | ({f for g in entry.gathers for f in gathered(g)} if entry else set())

    member, key = plan.member_of(wildcards), wildcards.get("tdata") or next(
        (wildcards[w] for w in ("tprobe", "tfine", "teval") if wildcards.get(w)), None)
    lost = {path for path in table if produced & gathered(path)}
    if member is not None:
        layout, trained = plan.layout, plan.layout.member_model(member.folder) in produced
        built_on = {f.folder for f in plan.finetuned if f.base.folder == member.folder}
        scope = {member.folder} | (built_on if trained else set())
        evaluation = {layout.shift_logits(member.folder), layout.audit_outputs(member.folder)}
        if not produced & evaluation:
            for path, entry in table.items():
                reaches = entry.dataset == key or (key is None and (trained or entry.dataset is None or
                                                                   plan.transfer[entry.dataset]["mode"] == "evaluate"))
                if reaches and scope & entry.members:
                    lost.add(path)
    datasets = {None: plan.layout.dataset, **{k: plan.layout.transfer(k).dataset for k in plan.transfer}}
    for dataset, path in datasets.items():
        if path in produced:
            lost |= {p for p, entry in table.items() if dataset is None or entry.dataset == dataset}
    return lost


def unfed(plan: Plan, produced: list[str], wildcards: dict) -> list[str]:
    """The tables and figures (then the paper comparison, the provenance page
    and the checksums, which read them all) that a failed job could not feed,
    from the files it would have written and its wildcards."""
    produced = set(produced)
    lost = _lost(plan, produced, wildcards)
    names = {t.name for t in built(plan) if lost & set(t.reads(plan))}
    tables = {plan.layout.table(t.name, "csv") for t in built(plan, "table")}
    if names & {t.name for t in TABLES} or produced & (tables | {plan.layout.protocol}):
        names.add("paper_comparison")
    models = set(plan.member_models({}))
    before = set(outputs(plan)) | models
    if names or produced & before:
        names.add("provenance")
    if names or plan.layout.provenance_page in produced:
        names.add("checksums")
    return sorted(names)
