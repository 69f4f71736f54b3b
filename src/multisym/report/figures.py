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


# the colour-blind palette's colours not taken by the pools (pink, sky blue)
RUN_COLOURS = dict(zip(("augmented", "control"), [sns.color_palette("colorblind", 10)[i] for i in (6, 9)]))


def _emergence_title(result: dict, what: str, spec: dict) -> str:
    settings = result["settings"]
    stand_in = " (inputs: embedded digits, a stand-in for FashionMNIST/MNIST)" if result["stand_in"] else ""
    groups = ", ".join(result["groups"])
    return f"{what} ({spec['name']}): {settings['members']} CNNs, groups {groups}{stand_in}"


def _emergence_rows(result: dict) -> list[tuple[str, str, dict]]:
    """(group, run, its curves) of every run, group by group, augmented first."""
    return [(group, run, entry["runs"][run]) for group, entry in result["groups"].items()
            for run in ("augmented", "control") if run in entry["runs"]]


def figure_emergence(results: list[dict], spec: dict):
    """OSP (mean over inputs, out of |G|) vs epoch, epoch 0 = initialisation:
    members' 5-95 % and 25-75 % quantile bands and median, and the ensemble
    (logit mean solid, probability mean dashed); one row per group and run."""
    result = results[0]
    rows = _emergence_rows(result)
    sets = list(result["sets"])
    fig, axes = plt.subplots(len(rows), len(sets), figsize=(3.4 * len(sets), 2.8 * len(rows)),
                             sharex=True, squeeze=False)
    for row, (group, run, curves) in enumerate(rows):
        for col, name in enumerate(sets):
            ax, entry = axes[row][col], curves[name]
            quantiles, epochs = entry["member_quantiles"], entry["epochs"]
            colour = RUN_COLOURS[run]
            ax.fill_between(epochs, quantiles["5"], quantiles["95"], color="0.85", label="members 5-95 %")
            ax.fill_between(epochs, quantiles["25"], quantiles["75"], color="0.65", label="members 25-75 %")
            ax.plot(epochs, quantiles["50"], color="0.3", lw=1, label="member median")
            ax.plot(epochs, entry["ensemble_osp"]["logit"], color=colour, lw=2, label="ensemble, logit mean")
            ax.plot(epochs, entry["ensemble_osp"]["prob"], "--", color=colour, lw=1.5, label="ensemble, prob. mean")
            ax.set_ylim(0.9, entry["order"] + 0.1)
            ax.set_title(f"{group} {run}: {name}", fontsize=9)
            if col == 0:
                ax.set_ylabel(f"OSP (of {entry['order']})")
            if row == len(rows) - 1:
                ax.set_xlabel("epoch (0 = initialisation)")
            ax.xaxis.get_major_locator().set_params(integer=True)
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle(_emergence_title(result, "OSP vs epoch", spec), fontsize=10)
    fig.tight_layout()
    return fig


def figure_emergence_size(results: list[dict], spec: dict):
    """OSP / |G| of random sub-ensembles vs their size at the last epoch: mean
    over draws with the 5-95 % band (logit mean), per group and run; colour:
    the run, one row per group."""
    result = results[0]
    sets, groups = list(result["sets"]), list(result["groups"])
    fig, axes = plt.subplots(len(groups), len(sets), figsize=(3.4 * len(sets), 3.0 * len(groups)), sharey=True,
                             squeeze=False)
    for row, group in enumerate(groups):
        entry = result["groups"][group]
        for ax, name in zip(axes[row], sets):
            for run, curves in entry["runs"].items():
                curve, colour = curves[name]["by_size"], RUN_COLOURS[run]
                scaled = {how: {k: [v / entry["order"] for v in curve[how][k]] for k in ("mean", "low", "high")}
                          for how in ("logit", "prob")}
                ax.fill_between(curve["sizes"], scaled["logit"]["low"], scaled["logit"]["high"], color=colour,
                                alpha=0.2)
                ax.plot(curve["sizes"], scaled["logit"]["mean"], color=colour, lw=2, label=f"{run}, logit mean")
                ax.plot(curve["sizes"], scaled["prob"]["mean"], "--", color=colour, lw=1.5,
                        label=f"{run}, prob. mean")
            ax.set_ylim(0.0, 1.02)
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.set_title(f"{group}: {name}", fontsize=9)
            if row == len(groups) - 1:
                ax.set_xlabel("ensemble size (random sub-ensembles)")
        axes[row][0].set_ylabel(f"OSP / {entry['order']}, last epoch")
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle(_emergence_title(result, "OSP vs ensemble size", spec), fontsize=10)
    fig.tight_layout()
    return fig


SET_LABELS = {"train": "train", "test": "test", "ood_temperature": "OOD: temperatures outside training",
              "ood_uniform": "OOD: uniform spins"}
RUN_STYLES = {"augmented": "-", "control": "--"}


def _width_colours(widths: list[str]) -> dict[str, tuple]:
    return dict(zip(widths, sns.color_palette("colorblind", 10)[:len(widths)]))


def figure_ising(results: list[dict], spec: dict):
    """Gerken & Kessel's Figure 1 on this scale: the invariance error of the
    predicted energy per site, mean over inputs and the three rotations
    g != e of |f(x) - f(g.x)|, against epoch (0 = initialisation); one row
    per architecture and run, one column per lattice set; per width (a colour
    per architecture's width, in its order), the members' mean with a ± std
    band (thin) and the mean of all members (thick, dots)."""
    rows = [(r, run) for r in results for run in ("augmented", "control")]
    sets = results[0]["sets"]
    fig, axes = plt.subplots(len(rows), len(sets), figsize=(3.2 * len(sets), 2.5 * len(rows)),
                             sharex=True, sharey=True, squeeze=False)
    for row, (result, run) in enumerate(rows):
        size = str(result["sizes"][-1])
        colours = _width_colours(list(result["widths"]))
        for col, name in enumerate(sets):
            ax = axes[row][col]
            for width in result["widths"]:
                entry = result["widths"][width][run]
                curve, epochs = entry["curves"][name], entry["epochs"]
                mean = [c["member_error"]["mean"] for c in curve]
                std = [c["member_error"]["std"] for c in curve]
                ax.fill_between(epochs, [max(m - s, 1e-6) for m, s in zip(mean, std)],
                                [m + s for m, s in zip(mean, std)], color=colours[width], alpha=0.15)
                ax.plot(epochs, mean, color=colours[width], lw=1, label=f"members, width {width}")
                ax.plot(epochs, [c["ensemble_error"][size]["mean"] for c in curve], "o-", ms=3,
                        color=colours[width], lw=2, label=f"ensemble of {size}, width {width}")
            ax.set_yscale("log")
            ax.set_title(f"{result['architecture'].upper()} {run}: {SET_LABELS.get(name, name)}", fontsize=9)
            if col == 0:
                ax.set_ylabel("invariance error")
            if row == len(rows) - 1:
                ax.set_xlabel("epoch (0 = initialisation)")
            ax.xaxis.get_major_locator().set_params(integer=True)
    for row in range(0, len(rows), 2):
        axes[row][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle(f"Ising model ({spec['name']}), as Gerken & Kessel's Figure 1: |E(x) - E(g·x)| of the predicted "
                 "energy per site under the lattice rotations", fontsize=10)
    fig.tight_layout()
    return fig


def group_colours(groups) -> dict[str, tuple]:
    """One colour per group, by group order for the cyclic rotations (darker:
    larger order, from one sequential palette), the palette's remaining
    colours for the paper's axes."""
    ordered = sorted(groups, key=lambda g: (not g.startswith("rot") or g == "rotation", _order_of(g)))
    sequence = sns.color_palette("crest", max(1, len(ordered)))
    return dict(zip(ordered, sequence))


def _order_of(group: str) -> int:
    digits = group[3:] if group.startswith("rot") else ""
    return int(digits) if digits.isdigit() else 4 if group == "rotation" else 2


def figure_emergence_orders(results: list[dict], spec: dict):
    """Gerken & Kessel's Figure 2: orbit-consistent inputs (%, all |G|
    elements give the same prediction) vs epoch for every group of the
    augmented runs: ensemble (logit mean) as a line, the members' 25-75 %
    band shaded, the control run's ensemble dotted; bottom row: the same at the
    last epoch vs ensemble size (random sub-ensembles, 5-95 % band) at the
    largest order."""
    result = results[0]
    sets, groups = list(result["sets"]), list(result["groups"])
    colours = group_colours(groups)
    largest = max(groups, key=lambda g: result["groups"][g]["order"])
    fig, axes = plt.subplots(2, len(sets), figsize=(3.4 * len(sets), 5.8), squeeze=False)
    for col, name in enumerate(sets):
        ax = axes[0][col]
        for group in groups:
            entry, colour = result["groups"][group], colours[group]
            if "augmented" in entry["runs"]:
                curve = entry["runs"]["augmented"][name]
                quantiles = {q: [100 * v for v in values] for q, values in curve["consistent_quantiles"].items()}
                ax.fill_between(curve["epochs"], quantiles["25"], quantiles["75"], color=colour, alpha=0.25)
                ax.plot(curve["epochs"], [100 * v for v in curve["ensemble_consistent"]["logit"]], color=colour,
                        lw=2, label=f"{group} (|G| = {entry['order']}), ensemble; band: members 25-75 %")
            if "control" in entry["runs"]:
                curve = entry["runs"]["control"][name]
                ax.plot(curve["epochs"], [100 * v for v in curve["ensemble_consistent"]["logit"]], ":",
                        color=colour, lw=1.5, label=f"{group} control, ensemble")
        ax.set_ylim(-2, 102)
        ax.set_title(f"{name}: vs epoch", fontsize=9)
        ax.set_xlabel("epoch (0 = initialisation)")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax = axes[1][col]
        for run, style in (("augmented", "-"), ("control", ":")):
            if run not in result["groups"][largest]["runs"]:
                continue
            curve = result["groups"][largest]["runs"][run][name]["by_size"]
            consistent = {k: [100 * v for v in curve["consistent"]["logit"][k]] for k in ("mean", "low", "high")}
            ax.fill_between(curve["sizes"], consistent["low"], consistent["high"], color=colours[largest], alpha=0.2)
            ax.plot(curve["sizes"], consistent["mean"], style, color=colours[largest], lw=2,
                    label=f"{largest} {run}")
        ax.set_ylim(-2, 102)
        ax.set_title(f"{name}: {largest}, last epoch", fontsize=9)
        ax.set_xlabel("ensemble size (random draws)")
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[0][0].set_ylabel("orbit-consistent inputs (%)")
    axes[1][0].set_ylabel("orbit-consistent inputs (%)")
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    axes[1][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle(_emergence_title(result, "Orbit-consistent inputs per group order (cf. Gerken & Kessel, "
                                          "Figure 2)", spec), fontsize=10)
    fig.tight_layout()
    return fig


def _slope_label(fit: dict) -> str:
    low, high = fit["slope_ci"]
    return f"slope {fit['slope']:.2f} [{low:.2f}, {high:.2f}]"


def figure_finite_ensemble(results: list[dict], spec: dict):
    """The finite-ensemble rate, log-log: the deviation D(M) of the ensemble
    mean from invariance (mean over inputs and rotations g != e of
    |f_bar(x) - f_bar(g.x)|) against the number of members M, with each
    fitted slope and its bootstrap CI, and the 1/sqrt(M) line through the
    first point. Panels: untrained ensembles of each architecture; the same
    relative to the ensemble mean's spread between lattices; trained
    ensembles (widest) at the last epoch on test and on uniform spins,
    augmented and control."""
    import numpy as np

    fig, axes = plt.subplots(1, len(results) + 2, figsize=(3.8 * (len(results) + 2), 4.2), squeeze=False)
    axes = axes[0]
    for ax, result in zip(axes, results):
        init = result["initialisation"]
        sizes = np.asarray(init["sizes"], dtype=float)
        colours = _width_colours(list(init["widths"]))
        for width, entry in init["widths"].items():
            fit = entry["deviation"]
            ax.plot(sizes, fit["deviation"], "o", ms=3, color=colours[width])
            ax.plot(sizes, np.exp(fit["intercept"]) * sizes ** fit["slope"], color=colours[width],
                    label=f"width {width}: {_slope_label(fit)}")
        first = next(iter(init["widths"].values()))["deviation"]["deviation"][0]
        ax.plot(sizes, first / np.sqrt(sizes), ":", color="0.4", label="1/√M")
        ax.set_title(f"{result['architecture'].upper()} at initialisation", fontsize=9)
        ax.set_ylabel("deviation D(M) of the ensemble mean")
    ax = axes[len(results)]
    for result, style in zip(results, ("-", "--")):
        init = result["initialisation"]
        colours = _width_colours(list(init["widths"]))
        for width, entry in init["widths"].items():
            ax.plot(init["sizes"], entry["relative"], style, color=colours[width],
                    label=f"{result['architecture'].upper()} width {width}")
    ax.set_title("at initialisation: D(M) / spread between lattices", fontsize=9)
    ax = axes[-1]
    for result, marker in zip(results, ("o", "s")):
        width = list(result["widths"])[-1]
        sizes = np.asarray(result["sizes"], dtype=float)
        for run in ("augmented", "control"):
            for name, colour in (("test", RUN_COLOURS[run]), ("ood_uniform", sns.desaturate(RUN_COLOURS[run], 0.4))):
                fit = result["widths"][width][run]["slopes"][name]
                ax.plot(sizes, fit["deviation"], marker + RUN_STYLES[run], ms=3, color=colour,
                        label=f"{result['architecture'].upper()} {width} {run}, {name}: {_slope_label(fit)}")
    ax.set_title("trained, last epoch", fontsize=9)
    for index, ax in enumerate(axes):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("members M")
        if index == len(results):  # a ratio near 1 that does not fall: a linear axis from 0 shows it best
            ax.set_ylim(0.0, 1.3)
            ax.legend(fontsize=6)
        elif index < len(results):
            ax.set_yscale("log")
            ax.legend(fontsize=6, loc="lower left")
        else:
            ax.set_yscale("log")
            ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.3))
    fig.suptitle(f"Finite ensembles ({spec['name']}, Ising model): invariance of the ensemble mean vs the number of "
                 "members", fontsize=10)
    fig.tight_layout()
    return fig


def figure_emergence_so2(results: list[dict], spec: dict):
    """Gerken & Kessel's Figure 3: the SO(2) fraction (per input, the share of
    K uniformly drawn angles whose rotation keeps the unrotated input's
    prediction; mean over inputs) at the last epoch against the training
    order: ensemble (logit mean) as a diamond, members' median and 25-75 %
    range as a bar; filled: augmented run, open: control."""
    result = results[0]
    sets = list(result["sets"])
    groups = [g for g, e in result["groups"].items()
              if any("so2" in curves[name] for curves in e["runs"].values() for name in sets)]
    colours = group_colours(groups)
    fig, axes = plt.subplots(1, len(sets), figsize=(3.0 * len(sets), 3.2), sharey=True, squeeze=False)
    for ax, name in zip(axes[0], sets):
        for x, group in enumerate(groups):
            for shift, run in ((-0.15, "augmented"), (0.15, "control")):
                curves = result["groups"][group]["runs"].get(run)
                if curves is None or "so2" not in curves[name]:
                    continue
                so2, colour = curves[name]["so2"], colours[group]
                quantiles = so2["member_quantiles"]
                ax.errorbar([x + shift], [quantiles["50"]], yerr=[[quantiles["50"] - quantiles["25"]],
                                                                  [quantiles["75"] - quantiles["50"]]],
                            fmt="_", color=colour, capsize=2)
                ax.scatter([x + shift], [so2["ensemble"]["logit"]], marker="D", s=36, zorder=3, edgecolor=colour,
                           facecolor=colour if run == "augmented" else "white",
                           label=f"ensemble (logit mean), {run}; bar: members 25-75 %" if x == 0 else None)
        ax.set_xticks(range(len(groups)), [f"C{result['groups'][g]['order']}" for g in groups])
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("training augmentation")
        ax.set_title(name, fontsize=9)
    angles = next((curves[name]["so2"]["angles"] for g in groups for curves in result["groups"][g]["runs"].values()
                   for name in sets if "so2" in curves[name]), 0)
    axes[0][0].set_ylabel(f"SO(2) fraction ({angles} angles)")
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle(_emergence_title(result, "SO(2) invariance vs training order (cf. Gerken & Kessel, Figure 3)",
                                  spec), fontsize=10)
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
