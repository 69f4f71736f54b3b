"""Figures of the Ising study (docs/method.md#the-ising-model): the
invariance error of the predicted energies vs epoch (Gerken & Kessel's
Figure 1), and the finite-ensemble rate of the ensemble mean's deviation vs
the number of members (docs/method.md#the-finite-ensemble-rate).
``figures`` draws them with the registry's other figures.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import seaborn as sns

from multisym.report.emergence_figures import RUN_COLOURS, slope_label

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
                    label=f"width {width}: {slope_label(fit)}")
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
                        label=f"{result['architecture'].upper()} {width} {run}, {name}: {slope_label(fit)}")
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
