"""One small summary per dataset for the transfer tables
(docs/method.md#transfer-and-distribution-shift; Loh et al. Tables 5, 8, 9, Fig. 4).

For the pretraining dataset and each transfer dataset, from its member metrics
and its Eq / Inv / Eq+Inv ensembles:

* single members: mean ± std (ddof 0) of the Eq and of the Inv members' test top-1;
* greedy ensembles per size M: test top-1 with its bootstrap CI and the
  ensemble efficiency (ensemble top-1 minus the mean top-1 of its members, in
  points, docs/method.md#ensemble-efficiency);
* random ensembles per size: mean ± std over draws of the same two numbers;
* class dominance of the best-on-val Eq member vs the best-on-val Inv member
  (% of classes where each is more accurate, Table 1's definition);
* Δ at greedy M (Table 9, Figure 4): Eq+Inv minus Eq, for top-1 and efficiency,
  with the paired bootstrap CI of each difference when the two ensembles'
  values on every resample are given (docs/method.md#paired-differences).

Tables 5, 8, 9 and Figure 4 read only these summaries; Tables 5 and 8 (transfer
by adaptation) leave out the evaluation-only sets, which Table 9 and Figure 4
show beside the transfer datasets, as the paper's IN-V2 and IN-R columns.
"""

from __future__ import annotations

import json

import numpy as np

from multisym.resamples import Side, paired_difference, read_resamples
from multisym.files import atomic_write_text

STAND_INS = {
    "digits": "the embedded digits, not ImageNet",
    "digits_rotated": "digits each turned by a random multiple of 90 degrees, not a real transfer set",
}


def _singles(members: list[dict]) -> dict:
    singles = {}
    for mode in ("eq", "inv"):
        values = np.array([m["metrics"]["accuracy"]["value"] for m in members if m["mode"] == mode])
        if len(values):
            singles[mode] = {"mean": float(values.mean()), "std": float(values.std()), "n": int(len(values))}
    return singles


def _greedy(result: dict) -> list[dict]:
    return [
        {"size": entry["size"], "accuracy": entry["metrics"]["accuracy"]["value"],
         "accuracy_ci": entry["metrics"]["accuracy"]["ci"], "efficiency": entry["metrics"]["efficiency"]["value"]}
        for entry in result["sizes"]
    ]


def _random(result: dict) -> list[dict]:
    return [
        {"size": entry["size"], "accuracy": entry["mean"]["accuracy"], "accuracy_std": entry["std"]["accuracy"],
         "efficiency": entry["mean"]["efficiency"], "efficiency_std": entry["std"]["efficiency"],
         "draws": len(entry["draws"])}
        for entry in result["sizes"]
    ]


def _delta(greedy: dict, size: int, resamples: dict | None = None, level: float = 0.95) -> dict | None:
    """Greedy Eq+Inv minus greedy Eq at ensemble size ``size``; with both
    pools' ``resamples`` (pool -> ``resamples.Resamples``), each difference's
    paired bootstrap CI as ``<metric>_ci``."""
    if "eq" not in greedy or "eq_inv" not in greedy:
        return None
    at = {pool: next((e for e in greedy[pool] if e["size"] == size), None) for pool in ("eq", "eq_inv")}
    if None in at.values():
        return None
    delta = {"size": size, **{key: at["eq_inv"][key] - at["eq"][key] for key in ("accuracy", "efficiency")}}
    if resamples and {"eq", "eq_inv"} <= set(resamples):
        sides = {pool: (resamples[pool], resamples[pool].rows(size)) for pool in ("eq", "eq_inv")}
        for key in ("accuracy", "efficiency"):
            difference = paired_difference(Side(*sides["eq_inv"], key), Side(*sides["eq"], key), level)
            delta[f"{key}_ci"] = [difference.ci_low, difference.ci_high]
    return delta


def summarise_dataset(spec: dict, member_metrics: dict, ensembles: list[dict],
                      resamples: dict | None = None) -> dict:
    """``spec``: key, label, dataset (its name), delta_size, evaluation_only
    (a set the members are evaluated on without adaptation: ImageNet-V2, -R)
    and level (of Δ's CIs); ``resamples``: the greedy Eq and Eq+Inv
    ensembles' values on every resample, by pool."""
    greedy = {r["pool"]: _greedy(r) for r in ensembles if r["strategy"] == "greedy"}
    random = {r["pool"]: _random(r) for r in ensembles if r["strategy"] == "random"}
    dominance = member_metrics.get("dominance") or None
    if dominance:
        dominance = {**dominance["best_pair"], "ci": dominance["best_pair_ci"],
                     "eq": dominance["eq"], "inv": dominance["inv"]}
    return {
        "key": spec["key"],
        "label": spec["label"],
        "dataset": spec["dataset"],
        "stand_in": STAND_INS.get(spec["dataset"]),
        "evaluation_only": bool(spec.get("evaluation_only")),
        "singles": _singles(member_metrics["members"]),
        "greedy": greedy,
        "random": random,
        "dominance": dominance,
        "delta": _delta(greedy, spec["delta_size"], resamples, spec.get("level", 0.95)),
    }


def write_summary(spec: dict, members_path: str, ensemble_paths: list[str], out: str,
                  resample_paths: list[str] = ()) -> dict:
    with open(members_path) as handle:
        member_metrics = json.load(handle)
    ensembles = []
    for path in ensemble_paths:
        with open(path) as handle:
            ensembles.append(json.load(handle))
    resamples = {r.pool: r for r in map(read_resamples, resample_paths)}
    summary = summarise_dataset(spec, member_metrics, ensembles, resamples)
    atomic_write_text(json.dumps(summary, indent=2) + "\n", out)
    return summary
