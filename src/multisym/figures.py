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
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

from .tables import POOL_LABELS, ensembles_by, load_results  # noqa: E402

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
    two best-on-val Eq members (the paper's Figure 6, Appendix)."""
    import numpy as np

    members = next(r for r in results if "members" in r and "dominance" in r)["members"]
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
    """Uncertainty-quantification curves (§4.4): accuracy of the samples kept after
    removing the most uncertain ones (BALD), for greedy Eq ensembles of 2 to 4
    members (Eq+Inv dashed where it exists); AUUQC in the legend."""
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


BUILDERS = {"figure2": figure2, "figure3": figure3, "figure4": figure4, "figure6": figure6, "figure7": figure7}


def write(figure: str, inputs: list[str], spec: dict, out_pdf: str, out_png: str) -> None:
    if figure not in BUILDERS:
        raise ValueError(f"unknown figure {figure!r}; known: {sorted(BUILDERS)}")
    style()
    fig = BUILDERS[figure](load_results(inputs), spec)
    fig.savefig(out_pdf, bbox_inches="tight")
    fig.savefig(out_png, dpi=150, bbox_inches="tight")
    plt.close(fig)
