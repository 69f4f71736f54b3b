"""Ensemble strategies over a pool of members with stored logits
(docs/method.md#ensembles).

Greedy (docs/method.md#greedy-ensembles, Caruana-style): start from one member,
then repeatedly append the candidate (with replacement: members already chosen
stay candidates) whose addition gives the highest selection-split accuracy of
the probability-averaged ensemble. Ties go to the lower selection NLL, then to
the first candidate in pool order (the archived code took the first strict
maximum; on a small validation split accuracy ties are frequent, and NLL breaks
them by the better-calibrated ensemble).

Random (docs/method.md#random-ensembles): K draws of M members sampled without
replacement within each hypothesis class; for Eq+Inv the paper's alternating
composition E, I, E, I, ... (ceil(M/2) Eq and floor(M/2) Inv members).
"""

from __future__ import annotations

import numpy as np

from multisym.files import map_npz
from multisym.ensembles.metrics import dominance_of_hits, percentile_ci
from multisym.ensembles.outputs import SplitOutputs
from multisym.ensembles.resampling import resample_counts
from multisym.resamples import Recorder

START_RULES = ("best_val", "random", "fixed")


def best_member(outputs: SplitOutputs, candidates: list[int]) -> int:
    """Index (into the pool) of the candidate with the best selection score
    (accuracy, then −NLL; ties: the first of ``candidates``)."""
    scores = [outputs.member_score(c) for c in candidates]
    return candidates[max(range(len(candidates)), key=lambda i: (scores[i], -i))]


def greedy(outputs: SplitOutputs, size: int, start: int) -> tuple[list[int], list[tuple[float, float]]]:
    """Greedy selection with replacement from ``start`` up to ``size`` members,
    scored on ``outputs`` (the selection split); returns the chosen pool
    indices in order (the ensemble of size m is the first m of them) and the
    selection score (accuracy, −NLL) of each of those ensembles. Keeps the
    running sum of the chosen members' probabilities, so each candidate
    costs one addition."""
    chosen, scores = [start], [outputs.member_score(start)]
    outputs.prepare(range(len(outputs)), probs=True)
    total = outputs.probs[start].copy()
    while len(chosen) < size:
        candidates = outputs.candidate_scores(total, len(chosen) + 1)
        pick = max(range(len(outputs)), key=lambda k: (candidates[k], -k))
        chosen.append(pick)
        scores.append(candidates[pick])
        total += outputs.probs[pick]
    return chosen, scores


def start_member(
    rule: str,
    outputs: SplitOutputs,
    start_candidates: list[int],
    rng: np.random.Generator,
    fixed: int | None = None,
) -> int:
    """The first member: best on the selection split (default), a random one
    (the paper's text) or a fixed one (the archived notebook's eq69)."""
    if rule == "best_val":
        return best_member(outputs, start_candidates)
    if rule == "random":
        return int(rng.choice(start_candidates))
    if rule == "fixed":
        if fixed is None:
            raise ValueError("greedy start 'fixed' needs a member")
        return fixed
    raise ValueError(f"unknown greedy start {rule!r}; known: {START_RULES}")


def composition(size: int, classes: list[str]) -> dict[str, int]:
    """Members per class in a random ensemble of ``size``: one class takes all;
    two classes alternate starting with the first (E, I, E, I, ...)."""
    if len(classes) == 1:
        return {classes[0]: size}
    first, second = classes
    return {first: (size + 1) // 2, second: size // 2}


def random_draws(
    pool: dict[str, list[int]],
    size: int,
    draws: int,
    rng: np.random.Generator,
) -> list[list[int]]:
    """K random ensembles: within each class members are drawn without
    replacement; two draws may coincide. ``pool`` maps class -> pool indices."""
    counts = composition(size, list(pool))
    for name, count in counts.items():
        if count > len(pool[name]):
            raise ValueError(
                f"a random ensemble of size {size} needs {count} {name} members, the pool has {len(pool[name])}"
            )
    result = []
    for _ in range(draws):
        picked = {name: list(rng.choice(pool[name], size=count, replace=False)) for name, count in counts.items()}
        order = []
        for position in range(size):
            name = list(pool)[position % len(pool)] if len(pool) > 1 else list(pool)[0]
            order.append(int(picked[name].pop(0)))
        result.append(order)
    return result


# ----------------------------------------------------------------- runners
PAPER_VARIANT_NOTE = {
    "start": "paper variant: greedy start {start} instead of the best member on the selection split",
    "selection_split": "paper protocol: members selected on the reported (test) split",
}


# What each job reads, and what it prepares of each split at once (see
# SplitOutputs): member metrics take every member alone (no probabilities);
# greedy scores every member on val but reports only the chosen ones on test
# (prepared when first used); random and whole-pool ensembles use test only.
JOB_INPUTS = {
    "members": {"val": "values", "test": "values"},
    "greedy": {"val": "probs", "test": "later"},
    "random": {"test": "probs"},
    "all": {"test": "probs"},
}


def load_logits(paths: list[str], prepare: dict[str, str] | None = None) -> dict:
    """Each member's file mapped into memory, not copied (``files.map_npz``):
    for every split of ``prepare`` (default: val and test, all prepared at
    once), ``{split}_logits``: the members' (N, C) arrays as stored (gaps to
    each row's maximum from ``logits.write_logits``: argmax and softmax are
    those of the logits), ``{split}_labels``, and ``{split}``: the split's
    SplitOutputs, prepared as ``prepare`` says, whose values every ensemble
    shares. All files must share the labels."""
    prepare = prepare or {"val": "probs", "test": "probs"}
    keys = [f"{split}_{kind}" for split in prepare for kind in ("logits", "logit_max", "labels")]
    stored = [map_npz(path, keys) for path in paths]
    out = {}
    for split, how in prepare.items():
        labels = stored[0][f"{split}_labels"]
        for path, arrays in zip(paths, stored):
            if not np.array_equal(labels, arrays[f"{split}_labels"]):
                raise ValueError(f"{path}: {split} labels differ from the other members'; rebuild its logits")
        out[f"{split}_labels"] = labels
        out[f"{split}_logits"] = [arrays[f"{split}_logits"] for arrays in stored]
        row_max = [arrays[f"{split}_logit_max"] for arrays in stored]
        out[split] = SplitOutputs(out[f"{split}_logits"], row_max, labels, prepare=how)
    return out


def protocol_notes(greedy_settings: dict) -> list[str]:
    notes = []
    if greedy_settings["start"] != "best_val":
        notes.append(PAPER_VARIANT_NOTE["start"].format(start=greedy_settings["start"]))
    if greedy_settings["selection_split"] != "val":
        notes.append(PAPER_VARIANT_NOTE["selection_split"])
    return notes


def _summary(test: SplitOutputs, chosen: list[int], settings: dict, terms: dict, record: Recorder | None,
             size: int, draw: int = 0, ci: bool = True) -> dict:
    """``test.summary`` of one ensemble; with ``record``, its values on every
    resample are recorded too (``multisym.resamples``)."""
    kept = {} if record is not None else None
    summary = test.summary(chosen, settings["bootstrap"], terms, ci=ci, resampled=kept)
    if record is not None:
        record.add(size, draw, len(set(chosen)), summary, kept)
    return summary


def greedy_results(ids: list[str], classes: list[str], stacks: dict, settings: dict,
                   record: Recorder | None = None) -> dict:
    """The greedy sequence and the test metrics of each of its prefixes
    (with ``record``, each prefix's values on every resample too)."""
    greedy_settings = settings["greedy"]
    split = greedy_settings["selection_split"]
    select, test = stacks[split], stacks["test"]
    first_class = [i for i, c in enumerate(classes) if c == classes[0]]
    fixed = ids.index(greedy_settings["start_member"]) if greedy_settings["start"] == "fixed" else None
    rng = np.random.default_rng(greedy_settings["seed"])
    start = start_member(greedy_settings["start"], select, first_class, rng, fixed)
    order, selection_scores = greedy(select, greedy_settings["max_size"], start)
    prefixes = [order[:size] for size in range(1, len(order) + 1)]
    sizes = []
    for size, chosen, terms in zip(range(1, len(order) + 1), prefixes,
                                   test.terms_of(prefixes, [False] * len(prefixes))):
        sizes.append({
            "size": size,
            "members": [ids[i] for i in chosen],
            "distinct": len(set(chosen)),
            "selection_accuracy": 100.0 * selection_scores[size - 1][0],
            "metrics": _summary(test, chosen, settings, terms, record, size),
            "uq_curve": dict(zip(("fraction_removed", "accuracy"),
                                 (v.tolist() for v in test.uq_curve(chosen, terms)))),
        })
    return {"order": [ids[i] for i in order], "protocol": protocol_notes(greedy_settings), "sizes": sizes}


def random_results(ids: list[str], classes: list[str], stacks: dict, settings: dict,
                   record: Recorder | None = None) -> dict:
    """K random draws per size; each draw's test metrics, and mean ± std (ddof 0)
    over draws, which is how random ensembles are reported (Tables 2, 3, 7, 8),
    so a draw has no bootstrap CI. The diversity metrics (Table 3, Figure 3)
    are computed at ``diversity_size`` only."""
    random_settings = settings["random"]
    rng = np.random.default_rng(random_settings["seed"])
    by_class = {c: [i for i, k in enumerate(classes) if k == c] for c in dict.fromkeys(classes)}
    drawn = {size: random_draws(by_class, size, random_settings["draws"], rng) for size in random_settings["sizes"]}
    ensembles = [(size, chosen) for size, draws in drawn.items() for chosen in draws]
    all_terms = iter(stacks["test"].terms_of([chosen for _, chosen in ensembles],
                                             [size == settings["diversity_size"] for size, _ in ensembles]))
    sizes = []
    for size in random_settings["sizes"]:
        draws = []
        for draw, chosen in enumerate(drawn[size]):
            draws.append({
                "members": [ids[i] for i in chosen],
                "metrics": _summary(stacks["test"], chosen, settings, next(all_terms), record, size, draw, ci=False),
            })
        names = draws[0]["metrics"].keys()
        values = {n: np.array([d["metrics"][n]["value"] for d in draws]) for n in names}
        sizes.append({
            "size": size,
            "draws": draws,
            "mean": {n: float(v.mean()) for n, v in values.items()},
            "std": {n: float(v.std()) for n, v in values.items()},
        })
    return {"protocol": [], "sizes": sizes}


def whole_pool_results(ids: list[str], classes: list[str], stacks: dict, settings: dict,
                       record: Recorder | None = None) -> dict:
    """The ensemble of every member of the pool, each once (Table 6's single-axis
    rows: all six models of an axis)."""
    everyone, test = list(range(len(ids))), stacks["test"]
    return {"protocol": [], "sizes": [{
        "size": len(ids), "members": list(ids), "distinct": len(set(ids)),
        "metrics": _summary(test, everyone, settings, test.terms(everyone, diversity=False), record, len(ids)),
    }]}


def member_results(ids: list[str], modes: list[str], stacks: dict, settings: dict, num_classes: int,
                   axes: list[str | None] | None = None, axis: str | None = None) -> dict:
    """Every member alone (an ensemble of one) plus class dominance of Eq vs Inv
    members of ``axis`` (every Eq and Inv member when no axes are given), and
    of every axis that has both (Table 10). With ``axes``, each member's row
    and the result name their axis, so that Table 1 and Figure 6 keep to the
    ensembles axis."""
    rows = []
    val, test = stacks["val"], stacks["test"]
    for i, (member, mode) in enumerate(zip(ids, modes)):
        rows.append({"member": member, "mode": mode, "val_accuracy": 100.0 * val.member_score(i)[0],
                     "metrics": test.summary([i], settings["bootstrap"]),
                     "per_class_accuracy": (100.0 * test.per_class_accuracy(i, num_classes)).tolist(),
                     **({"axis": axes[i]} if axes is not None else {})})
    def of_axis(name):
        return [m if axes is None or axes[i] == name else "other" for i, m in enumerate(modes)]

    by_axis = {name: dominance(ids, of_axis(name), stacks, num_classes, settings["bootstrap"])
               for name in dict.fromkeys(a for a in (axes or []) if a)}
    return {"members": rows, "dominance": dominance(ids, of_axis(axis), stacks, num_classes, settings["bootstrap"]),
            "dominance_by_axis": {name: d for name, d in by_axis.items() if d},
            **({"axis": axis} if axes is not None else {})}


def dominance(ids: list[str], modes: list[str], stacks: dict, num_classes: int, bootstrap: dict) -> dict:
    """Class dominance on test of the best-on-val Eq member vs the best-on-val
    Inv member (Table 1) with bootstrap CIs over test samples, and its mean
    over every Eq x Inv pair."""
    eq = [i for i, m in enumerate(modes) if m == "eq"]
    inv = [i for i, m in enumerate(modes) if m == "inv"]
    if not eq or not inv:
        return {}
    best_eq, best_inv = best_member(stacks["val"], eq), best_member(stacks["val"], inv)
    test = stacks["test"]
    test.prepare(eq + inv)

    def shares(e, v, weights=None):
        return dominance_of_hits(test.hits[e], test.hits[v], test.labels, num_classes, weights)

    pairs = [shares(e, v) for e in eq for v in inv]
    keys = ("a_better", "b_better", "tie")
    best = shares(best_eq, best_inv)
    counts = resample_counts(len(test.labels), bootstrap["samples"], bootstrap["seed"])
    draws = [shares(best_eq, best_inv, row) for row in counts]

    def ci(key):
        return percentile_ci(np.array([d[key] for d in draws]), bootstrap["level"])

    names = ("eq_better", "inv_better", "tie")
    return {
        "eq": ids[best_eq], "inv": ids[best_inv],
        "best_pair": dict(zip(names, (best[k] for k in keys))),
        "best_pair_ci": dict(zip(names, (ci(k) for k in keys))),
        "all_pairs_mean": dict(zip(names, (float(np.mean([p[k] for p in pairs])) for k in keys))),
        "pairs": len(pairs),
    }
