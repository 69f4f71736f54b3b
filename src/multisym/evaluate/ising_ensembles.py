"""Gerken & Kessel's Ising experiment (ICML 2024, Figure 1;
docs/method.md#the-ising-model): ensembles of small networks trained to
predict the energy of spin lattices, and how invariant their predictions are
under the four lattice rotations, for members and for the ensemble mean.

Members: an MLP on the flattened lattice (two hidden layers of ``width``
units) and a CNN (two 3x3 convolutions of ``width`` channels with circular
padding, then flatten and a linear layer: the flattened head keeps it from
being rotation invariant by construction). Both have PyTorch's default
initialisation with the member's own seed; its distribution is unchanged by
permuting the lattice sites (MLP) or rotating the kernels (CNN), which is what
Gerken & Kessel's argument needs of the first layer. Targets are energies per
site, E / L^2 (``multisym.data.ising``).

Runs, as in the image experiment (``evaluate/emergence.py``): ``augmented``
trains on the C4 orbit of every training lattice each epoch, ``control`` on
every lattice repeated four times unrotated, so both take the same steps.
Members train together (stacked parameters, ``vmap``), each with its own data
order, by mean-squared error and Adam: exactly M independent runs.

The invariance error of a predictor f on an input x is

    I_f(x) = mean over the three rotations g != e of |f(x) - f(g.x)|,

averaged over the inputs of a set. It is reported at initialisation and after
every epoch for every member (mean, std and quartiles over members) and for
the ensemble mean f_bar of disjoint sub-ensembles of each size (mean and std
over sub-ensembles), with the mean-squared errors of both; at the last epoch
the finite-ensemble slope of I_f_bar against M (``finite_ensemble``). The
initialisation study does the same for ensembles of thousands of untrained
members, where nothing needs training.
"""

from __future__ import annotations

import copy

import numpy as np

from multisym.data import ising
from multisym.evaluate import finite_ensemble

RUNS = ("augmented", "control")
ARCHITECTURES = ("mlp", "cnn")
CHUNK = 256  # members built and evaluated at once in the initialisation study: bounds its memory


def network(architecture: str, size: int, width: int):
    """One member for L x L lattices given as (n, L, L) float spins; output (n, 1)."""
    import torch.nn as nn

    if architecture == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(size * size, width), nn.ReLU(), nn.Linear(width, width),
                             nn.ReLU(), nn.Linear(width, 1))
    if architecture == "cnn":
        return nn.Sequential(nn.Unflatten(1, (1, size)),
                             nn.Conv2d(1, width, 3, padding=1, padding_mode="circular"), nn.ReLU(),
                             nn.Conv2d(width, width, 3, padding=1, padding_mode="circular"), nn.ReLU(),
                             nn.Flatten(), nn.Linear(width * size * size, 1))
    raise ValueError(f"unknown architecture {architecture!r}; known: {ARCHITECTURES}")


class Stack:
    """Members with stacked parameters, evaluated together with ``vmap``."""

    def __init__(self, nets: list, device):
        from torch.func import functional_call, stack_module_state, vmap

        self.params, self.buffers = stack_module_state(nets)
        skeleton = copy.deepcopy(nets[0]).to("meta")

        def forward(p, b, x):
            return functional_call(skeleton, (p, b), (x,)).squeeze(-1)

        self.forward = forward
        self.each = vmap(forward)  # every member on its own batch
        self.count, self.device = len(nets), device

    def outputs(self, x, chunk: int = 1024) -> np.ndarray:
        """Every member's output on every row of ``x`` (n, L, L): (M, n). One
        member at a time: on the CPU a vmapped convolution on a shared batch
        is several times slower than the members' plain ones in turn."""
        import torch

        with torch.no_grad():
            rows = []
            for m in range(self.count):
                params = {k: v[m] for k, v in self.params.items()}
                buffers = {k: v[m] for k, v in self.buffers.items()}
                rows.append(torch.cat([self.forward(params, buffers, part) for part in x.split(chunk)]))
            return torch.stack(rows).cpu().numpy()


def build(settings: dict, architecture: str, width: int, first: int, count: int, device) -> Stack:
    import torch

    nets = []
    for index in range(first, first + count):
        torch.manual_seed(finite_ensemble.member_seed(settings["seed"], index))
        nets.append(network(architecture, settings["size"], width).to(device))
    return Stack(nets, device)


def orbit_tensor(spins: np.ndarray, device):
    """The C4 orbit of every lattice as one float tensor (4 n, L, L), rotation-major."""
    import torch

    orbit = ising.rotations(spins)
    return torch.from_numpy(orbit.reshape(-1, *orbit.shape[-2:]).astype(np.float32)).to(device)


def targets(spins: np.ndarray) -> np.ndarray:
    """Energy per site, the networks' target."""
    return ising.energy(spins) / float(spins.shape[-1] * spins.shape[-2])


# ------------------------------------------------------------------ metrics
def invariance_errors(outputs: np.ndarray) -> np.ndarray:
    """Each member's mean over inputs and rotations g != e of |f(x) - f(g.x)|,
    from orbit outputs (M, 4, N): shape (M,)."""
    return np.abs(finite_ensemble.differences(outputs)).mean(axis=(1, 2))


def epoch_metrics(outputs: np.ndarray, energies: np.ndarray, sizes: list[int], rng: np.random.Generator) -> dict:
    """One set at one epoch: members' and sub-ensembles' invariance errors and MSEs."""
    errors = invariance_errors(outputs)
    diffs = finite_ensemble.differences(outputs)
    ensemble = {}
    for size in sizes:
        values = finite_ensemble.group_deviations(diffs, size, rng)
        ensemble[str(size)] = {"mean": float(values.mean()), "std": float(values.std()), "groups": len(values)}
    member_mse = ((outputs[:, 0] - energies[None]) ** 2).mean(axis=1)
    return {"member_error": {"mean": float(errors.mean()), "std": float(errors.std()),
                             "q25": float(np.percentile(errors, 25)), "q75": float(np.percentile(errors, 75))},
            "ensemble_error": ensemble,
            "member_mse": float(member_mse.mean()),
            "ensemble_mse": float(((outputs[:, 0].mean(axis=0) - energies) ** 2).mean())}


# ----------------------------------------------------------------- training
def train(settings: dict, architecture: str, device="auto", threads=None) -> dict:
    """Train ``members`` networks of ``architecture`` at each of its
    ``widths``, augmented and control: every set's invariance errors at every
    epoch and the finite-ensemble slopes at the last; and the initialisation
    study of the architecture (``initialisation``)."""
    from multisym.runtime import select_device, set_threads

    set_threads(threads)
    target = select_device(device)
    sets = ising.lattice_sets(settings)
    energies = {name: targets(spins) for name, spins in sets.items()}
    orbits = {name: orbit_tensor(spins, target) for name, spins in sets.items()}
    sizes = finite_ensemble.sizes_up_to(settings["members"])
    result = {"architecture": architecture, "sizes": sizes, "sets": list(sets),
              "energy_std": {name: float(e.std()) for name, e in energies.items()}, "widths": {}}
    for width in settings["widths"][architecture]:
        result["widths"][str(width)] = {run: _train_run(settings, architecture, width, run, sets["train"], orbits,
                                                        energies, sizes, target) for run in RUNS}
    result["initialisation"] = initialisation(settings, architecture, target)
    return result


def _train_run(settings, architecture, width, run, lattices, orbits, energies, sizes, target) -> dict:
    import torch
    import torch.nn.functional as F

    from multisym.train.trainer import Task, Trainer

    count, batch = settings["members"], settings["batch_size"]
    rng = np.random.default_rng(settings["seed"])
    if run == "augmented":
        spins = ising.rotations(lattices).reshape(-1, *lattices.shape[1:])
    else:
        spins = np.concatenate([lattices] * 4)
    train_x = torch.from_numpy(spins.astype(np.float32)).to(target)
    train_y = torch.from_numpy(targets(spins).astype(np.float32)).to(target)
    stack = build(settings, architecture, width, 0, count, target)
    optimizer = torch.optim.Adam(list(stack.params.values()), lr=settings["lr"])
    curves: dict[str, list] = {name: [] for name in orbits}
    losses: list[float] = []

    def evaluate() -> dict[str, np.ndarray]:
        out = {}
        for name, orbit in orbits.items():
            outputs = stack.outputs(orbit).reshape(count, 4, -1)
            curves[name].append(epoch_metrics(outputs, energies[name], sizes, rng))
            out[name] = outputs
        return out

    generators = [torch.Generator().manual_seed(finite_ensemble.member_seed(settings["seed"], index))
                  for index in range(count)]
    last = [evaluate()]

    class Members(Task):
        """Each member's own order of the training lattices; every set's metrics after each epoch."""

        def order(self):
            return torch.stack([torch.randperm(len(train_y), generator=g) for g in generators])

        def step(self, order, index):
            picked = order[:, index * batch:(index + 1) * batch].to(target)
            predicted = stack.each(stack.params, stack.buffers, train_x[picked])
            # each member's mean squared error, summed: members' gradients stay separate
            loss = F.mse_loss(predicted, train_y[picked]) * count
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            return {"loss": loss.detach()}

        def columns(self, epoch, means, lr):
            losses.append(means["loss"] / count)
            last[0] = evaluate()
            return {"member_loss": means["loss"] / count}

    scaler = torch.amp.GradScaler(target.type, enabled=False)
    Trainer(f"ising {architecture} width {width} {run}", None, optimizer, scaler, settings["epochs"],
            -(-len(train_y) // batch), target).run(Members())
    slopes = {name: finite_ensemble.fit(finite_ensemble.differences(outputs), sizes,
                                        settings["bootstrap_resamples"], settings["level"], settings["seed"])
              for name, outputs in last[0].items()}
    return {"epochs": list(range(settings["epochs"] + 1)), "member_loss": losses, "curves": curves,
            "slopes": slopes}


# ----------------------------------------------------------- initialisation
def initialisation(settings: dict, architecture: str, device) -> dict:
    """Untrained ensembles of up to ``init_members`` members of
    ``architecture`` at each of its widths on ``init_inputs`` test lattices:
    the deviation D(M) of the ensemble mean and its slope against M, absolute
    and relative to the ensemble mean's spread between different lattices,
    D_x(M) = mean over neighbouring pairs (x, x') of the set of
    |f_bar(x) - f_bar(x')| (at initialisation f_bar shrinks towards a constant
    as a whole, so D alone falls even when the ensemble is no more invariant
    relative to its own variation)."""
    rng = np.random.default_rng(settings["seed"] + 1)
    low, high = settings["train_temperatures"]
    spins, _ = ising.at_temperatures(settings["init_inputs"], settings["size"], low, high, settings["sweeps"], rng)
    orbit = orbit_tensor(spins, device)
    count = settings["init_members"]
    sizes = finite_ensemble.sizes_up_to(count)
    widths = {}
    for width in settings["widths"][architecture]:
        outputs = np.concatenate([build(settings, architecture, width, first, min(CHUNK, count - first),
                                        device).outputs(orbit)
                                  for first in range(0, count, CHUNK)]).reshape(count, 4, -1)
        fits = finite_ensemble.initialisation_fits(outputs, sizes, settings["bootstrap_resamples"],
                                                   settings["level"], settings["seed"])
        widths[str(width)] = {**fits, "member_error": float(invariance_errors(outputs).mean())}
    return {"members": count, "inputs": len(spins), "sizes": sizes, "widths": widths}
