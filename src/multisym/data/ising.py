"""Square Ising lattices and their energies, generated on the fly: the data of
Gerken & Kessel's Ising experiment (ICML 2024, Figure 1;
docs/method.md#the-ising-model), which needs no downloaded dataset.

A lattice is an L x L array of spins s_i in {-1, +1} with periodic
boundaries. Its nearest-neighbour energy, each bond counted once, is

    E(s) = -J * sum_<ij> s_i s_j = -J * sum_i s_i (s_right(i) + s_down(i)),

with J = 1 here. E is invariant under the lattice's symmetries (the four
rotations by 90 degrees, the reflections, the periodic translations), so a
network that predicts it should be too.

Lattices are drawn by a Metropolis chain at temperature T (k_B = 1) with the
checkerboard update: the two sublattices of a bipartite lattice have no
neighbours in common, so each half is updated at once from the other half's
spins, and one sweep is two vectorised half-updates. A chain starts ordered
(all spins equal, sign drawn) below the critical temperature
T_c = 2 / ln(1 + sqrt 2) ~ 2.269 and disordered (uniform spins) above it, the
start nearer to equilibrium, so a short chain of ``sweeps`` sweeps gives
lattices close to the equilibrium distribution at T. Everything is drawn from
one seeded ``numpy`` generator: the same settings give the same lattices.
"""

from __future__ import annotations

import math

import numpy as np

CRITICAL_TEMPERATURE = 2.0 / math.log(1.0 + math.sqrt(2.0))


def energy(spins: np.ndarray, coupling: float = 1.0) -> np.ndarray:
    """E = -J sum over bonds s_i s_j of every lattice in ``spins`` (..., L, L),
    periodic boundaries, each bond once: shape (...)."""
    spins = np.asarray(spins, dtype=np.float64)
    bonds = spins * (np.roll(spins, -1, axis=-1) + np.roll(spins, -1, axis=-2))
    return -coupling * bonds.sum(axis=(-2, -1))


def rotations(spins: np.ndarray) -> np.ndarray:
    """The C4 orbit of every lattice: (..., L, L) -> (4, ..., L, L), element k
    the rotation by k * 90 degrees (a permutation of the sites, no interpolation)."""
    return np.stack([np.rot90(spins, k, axes=(-2, -1)) for k in range(4)])


def _neighbour_sum(spins: np.ndarray) -> np.ndarray:
    return (np.roll(spins, 1, axis=-1) + np.roll(spins, -1, axis=-1)
            + np.roll(spins, 1, axis=-2) + np.roll(spins, -1, axis=-2))


def metropolis(temperatures: np.ndarray, size: int, sweeps: int, rng: np.random.Generator) -> np.ndarray:
    """One lattice per temperature after ``sweeps`` checkerboard Metropolis
    sweeps: a spin flips with probability min(1, exp(-dE / T)), where
    dE = 2 J s_i sum_j s_j over its four neighbours. Returns int8 spins (n, L, L)."""
    if size % 2:
        raise ValueError(f"the checkerboard update needs an even lattice size, not {size}")
    temperatures = np.asarray(temperatures, dtype=np.float64)
    count = len(temperatures)
    hot = rng.choice((-1.0, 1.0), size=(count, size, size))
    cold = np.broadcast_to(rng.choice((-1.0, 1.0), size=(count, 1, 1)), hot.shape)
    spins = np.where((temperatures > CRITICAL_TEMPERATURE)[:, None, None], hot, cold).copy()
    rows, cols = np.indices((size, size))
    colours = [(rows + cols) % 2 == c for c in (0, 1)]
    beta = (1.0 / temperatures)[:, None, None]
    for _ in range(sweeps):
        for colour in colours:
            delta = 2.0 * spins * _neighbour_sum(spins)
            flip = colour & (rng.random(spins.shape) < np.exp(-beta * delta))
            spins = np.where(flip, -spins, spins)
    return spins.astype(np.int8)


def uniform(count: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Uniformly random spins (the infinite-temperature distribution): (n, L, L) int8."""
    return rng.choice(np.array([-1, 1], dtype=np.int8), size=(count, size, size))


def at_temperatures(count: int, size: int, low: float, high: float, sweeps: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``count`` lattices at temperatures drawn uniformly from [low, high]:
    (spins (n, L, L) int8, temperatures (n,))."""
    temperatures = rng.uniform(low, high, size=count)
    return metropolis(temperatures, size, sweeps, rng), temperatures


def lattice_sets(settings: dict) -> dict[str, np.ndarray]:
    """The study's lattice sets from ``emergence.ising``'s settings, all from
    one generator seeded with ``seed``: ``train`` and ``test`` at temperatures
    in ``train_temperatures``, ``ood_temperature`` at temperatures in
    ``ood_temperatures`` (outside the training range), ``ood_uniform`` uniform
    spins."""
    rng = np.random.default_rng(settings["seed"])
    size, sweeps = settings["size"], settings["sweeps"]
    low, high = settings["train_temperatures"]
    out = {"train": at_temperatures(settings["train_lattices"], size, low, high, sweeps, rng)[0],
           "test": at_temperatures(settings["test_lattices"], size, low, high, sweeps, rng)[0]}
    low, high = settings["ood_temperatures"]
    out["ood_temperature"] = at_temperatures(settings["ood_lattices"], size, low, high, sweeps, rng)[0]
    out["ood_uniform"] = uniform(settings["ood_lattices"], size, rng)
    return out
