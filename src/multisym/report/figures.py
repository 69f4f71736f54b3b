"""The paper's figures from small result files (JSON), as PDF and PNG.

One seaborn style and one colour-blind-safe palette for every figure; each
pool keeps its colour everywhere. Figures never open checkpoints or logits.

Figure 2: test accuracy of greedy ensembles vs ensemble size, per pool, with
bootstrap 95% CIs as error bars.
Figure 3: at M = diversity_size, random ensembles of each method: diversity
(pairwise error inconsistency), ensemble efficiency and accuracy; bars are
the mean over draws, error bars the std over draws.
Figure 4: class dominance of Eq vs Inv and the Eq+Inv gain per dataset.
Figure 6: per-class accuracy of single members, Eq vs Inv and Eq vs Eq.
Figure 7: accuracy vs fraction removed by uncertainty, greedy Eq ensembles.
Audit figure: OSP of each pool's members and greedy ensemble per audit set,
and feature invariance per mode.
Emergence figures (docs/method.md#emergent-equivariance; Gerken & Kessel,
ICML 2024): OSP vs epoch (members' quantile bands and median, the ensemble)
and OSP vs ensemble size (random sub-ensembles), for the augmented and the
control run of each group, one panel per audit set; the orbit-consistent
inputs per group order vs epoch and vs ensemble size (their Figure 2) and the
SO(2) fraction per training order (their Figure 3).
Ising figures (docs/method.md#the-ising-model): the invariance error of the
predicted energies vs epoch (Gerken & Kessel's Figure 1), and the
finite-ensemble rate of the ensemble mean's deviation vs the number of members.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

from multisym.report.tables import (  # noqa: E402
    MODE_LABELS, POOL_LABELS, audit_pool_members, ensembles_axis_members, ensembles_by, load_results)
from multisym.report.emergence_figures import (  # noqa: E402, F401 (builders the registry finds here)
    figure_emergence, figure_emergence_finite, figure_emergence_orders, figure_emergence_size, figure_emergence_so2)
from multisym.report.ising_figures import figure_finite_ensemble, figure_ising  # noqa: E402, F401
from multisym.targets import FIGURES  # noqa: E402

POOL_ORDER = ("sup", "ssl_ft", "base", "inv", "eq", "eq_inv")
PALETTE = dict(zip(("eq", "inv", "eq_inv", "base", "sup", "ssl_ft"), sns.color_palette("colorblind", 6)))
MARKERS = {"eq": "o", "inv": "s", "eq_inv": "D", "base": "^", "sup": "v", "ssl_ft": "P"}


def style() -> None:
    sns.set_theme(context="paper", style="whitegrid", font_scale=1.1)


def figure2(results: list[dict], spec: dict):
    ensembles = ensembles_by(results)
    pools = [p for p in POOL_ORDER if (p, "greedy") in ensembles]
    fig, ax = plt.subplots(figsize=(7, 4))
    for index, pool in enumerate(pools):
        entries = ensembles[(pool, "greedy")]["sizes"]
        # a small horizontal offset per pool keeps coinciding curves visible
        sizes = [e["size"] + 0.06 * (index - (len(pools) - 1) / 2) for e in entries]
        acc = [e["metrics"]["accuracy"] for e in entries]
        ax.errorbar(
            sizes, [a["value"] for a in acc],
            yerr=[[a["value"] - a["ci"][0] for a in acc], [a["ci"][1] - a["value"] for a in acc]],
            marker=MARKERS[pool], color=PALETTE[pool], label=POOL_LABELS[pool], capsize=2, elinewidth=0.8,
        )
    ax.set_xlabel("number of models in the ensemble (greedy, selected on val)")
    ax.set_ylabel("test top-1 accuracy (%)")
    ax.set_title(f"Figure 2 ({spec['name']}): greedy ensembles with 95% bootstrap CIs")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return fig


FIGURE3_PANELS = (
    ("inconsistency", "diversity: error inconsistency (%)"),
    ("efficiency", "ensemble efficiency (points)"),
    ("accuracy", "ensemble top-1 accuracy (%)"),
)


def figure3(results: list[dict], spec: dict):
    ensembles = ensembles_by(results)
    size = spec["diversity_size"]
    pools = [p for p in ("sup", "ssl_ft", "base", "eq", "eq_inv") if (p, "random") in ensembles]
    entries = {p: next(e for e in ensembles[(p, "random")]["sizes"] if e["size"] == size) for p in pools}
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.8))
    labels = [POOL_LABELS[p] for p in pools]
    for ax, (metric, title) in zip(axes, FIGURE3_PANELS):
        means = [entries[p]["mean"][metric] for p in pools]
        stds = [entries[p]["std"][metric] for p in pools]
        ax.bar(range(len(pools)), means, yerr=stds, color=[PALETTE[p] for p in pools], capsize=3)
        ax.set_xticks(range(len(pools)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(title)
        if metric == "accuracy":
            low = min(m - s for m, s in zip(means, stds))
            ax.set_ylim(max(0.0, low - 2.0), min(100.0, max(m + s for m, s in zip(means, stds)) + 1.0))
    fig.suptitle(f"Figure 3 ({spec['name']}): random ensembles of {size} members, mean ± std over draws")
    fig.tight_layout()
    return fig


def figure6(results: list[dict], spec: dict):
    """Per-class test accuracy of two members on up to 10 classes drawn at random
    (seeded): top, the best-on-val Eq vs the best-on-val Inv member; bottom, the
    two best-on-val Eq members (the paper's Figure 6, Appendix), of the
    ensembles axis."""
    import numpy as np

    members = ensembles_axis_members(next(r for r in results if "members" in r and "dominance" in r))
    ranked = {mode: sorted((m for m in members if m["mode"] == mode), key=lambda m: -m["val_accuracy"])
              for mode in ("eq", "inv")}
    pairs = [(ranked["eq"][0], ranked["inv"][0], "Eq", "Inv"), (ranked["eq"][0], ranked["eq"][1], "Eq 1", "Eq 2")]
    classes = len(members[0]["per_class_accuracy"])
    shown = np.sort(np.random.default_rng(spec.get("seed", 0)).choice(classes, size=min(10, classes), replace=False))
    fig, axes = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True)
    for ax, (a, b, label_a, label_b) in zip(axes, pairs):
        acc_a = np.asarray(a["per_class_accuracy"])[shown]
        acc_b = np.asarray(b["per_class_accuracy"])[shown]
        x = np.arange(len(shown))
        ax.bar(x - 0.2, acc_a, width=0.4, color=PALETTE["eq"], label=f"{label_a}: {a['member']}")
        other = PALETTE["inv"] if label_b == "Inv" else sns.desaturate(PALETTE["eq"], 0.4)
        ax.bar(x + 0.2, acc_b, width=0.4, color=other, label=f"{label_b}: {b['member']}")
        ax.set_ylabel("test accuracy (%)")
        ax.set_ylim(max(0.0, min(acc_a.min(), acc_b.min()) - 10.0), 101.0)
        ax.set_title(f"{label_a} vs {label_b}: mean |difference| {np.abs(acc_a - acc_b).mean():.1f} points", fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
    axes[-1].set_xticks(np.arange(len(shown)), [str(c) for c in shown])
    axes[-1].set_xlabel("class")
    fig.suptitle(f"Figure 6 ({spec['name']}): per-class accuracy of single members")
    fig.tight_layout()
    return fig


def figure7(results: list[dict], spec: dict):
    """Uncertainty-quantification curves (docs/method.md#auuqc, Loh et al.
    Fig. 7): accuracy of the samples kept after removing the most uncertain ones
    (BALD), for greedy Eq ensembles of 2 to 4 members (Eq+Inv dashed where it
    exists); AUUQC in the legend."""
    ensembles = ensembles_by(results)
    fig, ax = plt.subplots(figsize=(6, 4))
    shades = sns.light_palette(PALETTE["eq"], n_colors=5)[2:]
    for pool, style in (("eq", "-"), ("eq_inv", "--")):
        result = ensembles.get((pool, "greedy"))
        if result is None:
            continue
        entries = [e for e in result["sizes"] if 2 <= e["size"] <= 4]
        for shade, entry in zip(shades if pool == "eq" else sns.light_palette(PALETTE["eq_inv"], 5)[2:], entries):
            curve = entry["uq_curve"]
            ax.plot(curve["fraction_removed"], curve["accuracy"], style, color=shade,
                    label=f"{POOL_LABELS[pool]} M={entry['size']} (AUUQC {entry['metrics']['auuqc']['value']:.3f})")
    ax.set_xlabel("fraction of test samples removed (most uncertain first, BALD)")
    ax.set_ylabel("accuracy on the rest")
    ax.set_title(f"Figure 7 ({spec['name']}): uncertainty quantification of greedy ensembles")
    ax.legend(fontsize=7)
    return fig


def figure4(results: list[dict], spec: dict):
    """Per dataset (pretraining dataset first): % of classes where the best-on-val
    Eq member beats the best-on-val Inv member and the reverse, with bootstrap
    95% CIs; above each pair, Δ top-1 / Δ efficiency of greedy Eq+Inv minus Eq."""
    import numpy as np

    summaries = [r for r in results if r["dominance"]]
    fig, ax = plt.subplots(figsize=(1.6 * len(summaries) + 2.5, 4))
    x = np.arange(len(summaries))
    for offset, key, pool, label in ((-0.2, "eq_better", "eq", "Eq > Inv"), (0.2, "inv_better", "inv", "Inv > Eq")):
        values = np.array([s["dominance"][key] for s in summaries])
        low = values - np.array([s["dominance"]["ci"][key][0] for s in summaries])
        high = np.array([s["dominance"]["ci"][key][1] for s in summaries]) - values
        ax.bar(x + offset, values, width=0.4, yerr=[low, high], capsize=3, color=PALETTE[pool], label=label)
    top = max(s["dominance"]["ci"][k][1] for s in summaries for k in ("eq_better", "inv_better"))
    for index, summary in enumerate(summaries):
        delta = summary["delta"]
        if delta:
            ax.text(index, top + 3, f"Δacc {delta['accuracy']:+.1f}\nΔeff {delta['efficiency']:+.1f}",
                    ha="center", va="bottom", fontsize=7)
    labels = [s["label"] + (" (stand-in)" if s["stand_in"] else "") for s in summaries]
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylim(0, min(110.0, top + 18))
    ax.set_ylabel("% of classes")
    size = next((s["delta"]["size"] for s in summaries if s["delta"]), None)
    ax.set_title(f"Figure 4 ({spec['name']}): class dominance of Eq vs Inv; Δ = greedy Eq+Inv − Eq at M={size}",
                 fontsize=9)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)
    return fig


def figure_audit(results: list[dict], spec: dict):
    """The symmetry audit (first group): per audit set, the OSP of every pool's
    members (dots) and of its greedy ensemble (diamonds: filled, logit mean;
    open, probability mean); last panel, the feature cosine cos(f(x), f(g·x))
    of each mode's members in the pools on test (``audit_pool_members``)."""
    import numpy as np

    audit = results[0]
    group, sets = audit["groups"][0], list(audit["sets"])
    members, pooled = audit["members"], audit_pool_members(audit)
    pools = [p for p in POOL_ORDER if p in audit["ensembles"]]
    modes = [m for m in ("sup", "ssl_ft", "base", "inv", "eq") if any(members[k]["mode"] == m for k in pooled)]
    fig, axes = plt.subplots(1, len(sets) + 1, figsize=(3.3 * (len(sets) + 1), 3.6))
    rng = np.random.default_rng(0)
    for ax, name in zip(axes, sets):
        for x, pool in enumerate(pools):
            ensemble = audit["ensembles"][pool]
            values = [members[m]["sets"][name][group]["osp"]["value"] for m in dict.fromkeys(ensemble["pool_members"])]
            ax.scatter(x + rng.uniform(-0.15, 0.15, len(values)), values, s=14, color=PALETTE[pool], alpha=0.7)
            for how, face in (("logit", PALETTE[pool]), ("prob", "white")):
                ax.scatter([x + 0.3], [ensemble["greedy"][how][name][group]["osp"]["value"]], marker="D", s=40,
                           facecolor=face, edgecolor=PALETTE[pool], linewidth=1.2, zorder=3)
        order = next(iter(members.values()))["sets"][name][group]["order"]
        ax.set_ylim(0.9, order + 0.1)
        ax.set_xticks(range(len(pools)), [POOL_LABELS[p] for p in pools], rotation=35, ha="right", fontsize=7)
        ax.set_title(f"OSP on {name}", fontsize=9)
    axes[0].set_ylabel(f"OSP (of {order}); dots: members, diamonds: greedy M={audit['ensemble_size']}", fontsize=8)
    ax = axes[-1]
    for x, mode in enumerate(modes):
        values = [e["sets"]["test"][group]["feature_cosine"]["value"] for m, e in members.items()
                  if e["mode"] == mode and m in pooled]
        ax.scatter(x + rng.uniform(-0.15, 0.15, len(values)), values, s=14, color=PALETTE[mode], alpha=0.8)
        ax.hlines(np.mean(values), x - 0.25, x + 0.25, color=PALETTE[mode])
    ax.set_xticks(range(len(modes)), [MODE_LABELS[m] for m in modes], fontsize=8)
    ax.set_title("feature cosine f(x)·f(g·x) on test", fontsize=9)
    stand_in = "; embedded digits, a stand-in" if audit["stand_in"] else ""
    fig.suptitle(f"Symmetry audit (scale {spec['name']}, group {group}{stand_in})", fontsize=10)
    fig.tight_layout()
    return fig


def write(figure: str, inputs: list[str], spec: dict, out_pdf: str, out_png: str) -> None:
    """Figure ``figure`` of the target registry (its builder) from its result files."""
    target = next((t for t in FIGURES if t.name == figure), None)
    if target is None:
        raise ValueError(f"unknown figure {figure!r}; known: {sorted(t.name for t in FIGURES)}")
    style()
    fig = target.build()(load_results(inputs), spec)
    fig.savefig(out_pdf, bbox_inches="tight")
    fig.savefig(out_png, dpi=150, bbox_inches="tight")
    plt.close(fig)
