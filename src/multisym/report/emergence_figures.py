"""Figures of the emergence experiment (docs/method.md#emergent-equivariance;
Gerken & Kessel, ICML 2024): OSP vs epoch (members' quantile bands and median,
the ensemble) and OSP vs ensemble size (random sub-ensembles), for the
augmented and the control run of each group, one panel per audit set; the
orbit-consistent inputs per group order vs epoch and vs ensemble size (their
Figure 2) and the SO(2) fraction per training order (their Figure 3).
``figures`` draws them with the registry's other figures.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import seaborn as sns

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


MIN_GROUPS = 4  # disjoint sub-ensembles below which a mean is not drawn


def slope_label(fit: dict) -> str:
    """A finite-ensemble fit's slope with its CI, for a legend."""
    low, high = fit["slope_ci"]
    return f"slope {fit['slope']:.2f} [{low:.2f}, {high:.2f}]"


def figure_emergence_finite(results: list[dict], spec: dict):
    """The finite-ensemble rate on the image task, one column per audit set.
    Top: D(M), the mean over inputs and g != e of ||f_bar(x) - f_bar(g.x)||
    for the ensemble's mean logits f_bar, against the number of members M,
    log-log: untrained ensembles per group (points and fitted line, slope and
    bootstrap CI in the legend), trained ones at the last epoch (augmented
    filled squares, control open), and 1/sqrt(M) through the first untrained
    point. Middle: untrained D(M) relative to the spread of f_bar between
    inputs. Bottom: orbit-consistent inputs of untrained ensembles (logit
    mean) against M, every disjoint sub-ensemble a dot, their mean a line
    where there are at least MIN_GROUPS of them, the members' median
    dashed."""
    import numpy as np

    trained, init = results
    sets, groups = list(init["inputs"]), list(init["groups"])
    colours = group_colours(groups)
    fig, axes = plt.subplots(3, len(sets), figsize=(3.8 * len(sets), 11.0), squeeze=False,
                             gridspec_kw={"height_ratios": (1.0, 0.7, 0.9)})
    sizes = np.asarray(init["sizes"], dtype=float)
    for col, name in enumerate(sets):
        top, middle, bottom = axes[0][col], axes[1][col], axes[2][col]
        for group in groups:
            entry, colour = init["groups"][group]["sets"][name], colours[group]
            fit, order = entry["deviation"], init["groups"][group]["order"]
            top.plot(sizes, fit["deviation"], "o", ms=3, color=colour)
            top.plot(sizes, np.exp(fit["intercept"]) * sizes ** fit["slope"], color=colour,
                     label=f"C{order} untrained: {slope_label(fit)}")
            runs = trained["groups"].get(group, {}).get("runs", {})
            for run, face in (("augmented", colour), ("control", "white")):
                if run in runs and "finite" in runs[run].get(name, {}):
                    done = runs[run][name]["finite"]
                    top.plot(done["sizes"], done["deviation"], "s-", ms=4, lw=1, color=colour, mfc=face,
                             label=f"C{order} trained, {run}: {slope_label(done)}")
            middle.plot(sizes, entry["relative"], color=colour, label=f"C{order}")
            consistent = entry["consistent"]
            for size, values in zip(sizes, consistent["logit"]["values"]):
                bottom.plot([size] * len(values), [100 * v for v in values], ".", ms=3, alpha=0.35, color=colour)
            # a mean only where there are several disjoint sub-ensembles
            several = [i for i, n in enumerate(consistent["groups"]) if n >= MIN_GROUPS]
            bottom.plot(sizes[several], [100 * consistent["logit"]["mean"][i] for i in several], color=colour,
                        lw=2, label=f"C{order} ensembles, mean (dots: each)")
            bottom.axhline(100 * entry["consistent"]["member_quantiles"]["50"], ls="--", lw=1, color=colour,
                           label=f"C{order} member median")
        first = init["groups"][groups[0]]["sets"][name]["deviation"]["deviation"][0]
        top.plot(sizes, first / np.sqrt(sizes), ":", color="0.4", label="1/√M")
        top.set_yscale("log")
        top.set_title(f"{name}: D(M)", fontsize=9)
        # each set's slopes under its own panel
        top.legend(fontsize=5.5, loc="upper center", bbox_to_anchor=(0.5, -0.2))
        middle.set_ylim(0.0, None)
        middle.set_title(f"{name}: untrained, D(M) / spread", fontsize=9)
        bottom.set_ylim(-2, 102)
        bottom.set_title(f"{name}: untrained, orbit-consistent", fontsize=9)
        for ax in (top, middle, bottom):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("members M")
    axes[0][0].set_ylabel("deviation D(M)")
    axes[1][0].set_ylabel("D(M) / spread")
    axes[2][0].set_ylabel("orbit-consistent inputs (%)")
    for row in axes[1:]:
        row[-1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1.02, 0.5))
    inputs = ", ".join(f"{n} {k}" for k, n in init["inputs"].items())
    fig.suptitle(f"Finite image ensembles ({spec['name']}): {init['members']} untrained CNNs on {inputs} inputs; "
                 f"trained: {trained['settings']['members']} per run", fontsize=10)
    fig.tight_layout()
    return fig
