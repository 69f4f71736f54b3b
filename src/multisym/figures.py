"""The paper's figures from small result files (JSON), as PDF and PNG.

One seaborn style and one colour-blind-safe palette for every figure; each
pool keeps its colour everywhere. Figures never open checkpoints or logits.

Figure 2: test accuracy of greedy ensembles vs ensemble size, per pool, with
bootstrap 95% CIs as error bars.
Figure 3: at M = diversity_size, random ensembles of each method: diversity
(pairwise error inconsistency), ensemble efficiency and accuracy; bars are
the mean over draws, error bars the std over draws.
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


BUILDERS = {"figure2": figure2, "figure3": figure3}


def write(figure: str, inputs: list[str], spec: dict, out_pdf: str, out_png: str) -> None:
    if figure not in BUILDERS:
        raise ValueError(f"unknown figure {figure!r}; known: {sorted(BUILDERS)}")
    style()
    fig = BUILDERS[figure](load_results(inputs), spec)
    fig.savefig(out_pdf, bbox_inches="tight")
    fig.savefig(out_png, dpi=150, bbox_inches="tight")
    plt.close(fig)
