"""The Ising study (Gerken & Kessel's Figure 1) and the finite-ensemble slope."""

from __future__ import annotations

import json

import numpy as np
import pytest

from multisym import config
from multisym.config import ConfigError
from multisym.data import ising
from multisym.evaluate import finite_ensemble, ising_ensembles


def brute_force_energy(spins: np.ndarray) -> float:
    """-sum over every bond, each once: right and down neighbours, periodic."""
    size, total = spins.shape[0], 0.0
    for i in range(size):
        for j in range(size):
            total -= spins[i, j] * spins[i, (j + 1) % size]
            total -= spins[i, j] * spins[(i + 1) % size, j]
    return total


def test_energy_equals_the_brute_force_sum_and_is_invariant():
    rng = np.random.default_rng(0)
    spins = ising.uniform(20, 6, rng)
    energies = ising.energy(spins)
    assert energies == pytest.approx([brute_force_energy(s) for s in spins])
    for rotated in ising.rotations(spins):
        assert np.array_equal(ising.energy(rotated), energies)
    for axis in (-1, -2):
        assert np.array_equal(ising.energy(np.flip(spins, axis)), energies)
    assert np.array_equal(ising.energy(np.roll(spins, (2, 3), axis=(-2, -1))), energies)
    assert ising.energy(np.ones((4, 4))) == -32.0  # 2 L^2 bonds, all aligned


def test_rotations_are_the_four_quarter_turns():
    spins = ising.uniform(3, 4, np.random.default_rng(1))
    orbit = ising.rotations(spins)
    assert np.array_equal(orbit[0], spins)
    assert np.array_equal(orbit[1], np.rot90(spins, 1, axes=(1, 2)))
    assert np.array_equal(ising.rotations(orbit[1])[3], spins)


def test_metropolis_is_seeded_and_orders_lattices_by_temperature():
    draw = lambda: ising.metropolis(np.array([1.0] * 16 + [5.0] * 16), 8, 30, np.random.default_rng(3))  # noqa: E731
    spins = draw()
    assert np.array_equal(spins, draw())
    assert spins.dtype == np.int8 and set(np.unique(spins)) <= {-1, 1}
    per_site = ising.energy(spins) / 64
    # near the ground state (-2 per site) when cold, near the disordered value when hot
    assert per_site[:16].mean() < -1.8
    assert -0.8 < per_site[16:].mean() < 0.0
    with pytest.raises(ValueError, match="even"):
        ising.metropolis(np.array([2.0]), 5, 1, np.random.default_rng(0))


def test_lattice_sets_follow_the_settings():
    settings = {**config.section_defaults("emergence")["ising"], "train_lattices": 8, "test_lattices": 6,
                "ood_lattices": 5, "size": 4, "sweeps": 5}
    sets = ising.lattice_sets(settings)
    assert {k: v.shape for k, v in sets.items()} == {"train": (8, 4, 4), "test": (6, 4, 4),
                                                     "ood_temperature": (5, 4, 4), "ood_uniform": (5, 4, 4)}
    assert all(np.array_equal(a, b) for a, b in zip(sets.values(), ising.lattice_sets(settings).values()))


def test_ood_temperatures_must_lie_outside_the_training_range():
    scale = {"name": "x", "dataset": {"name": "digits"}, "members": {"seeds": {"eq": [1, 2, 3, 4, 5]}}}
    assert config.resolve(scale)["emergence"]["ising"]["ood_temperatures"] == [4.5, 8.0]
    with pytest.raises(ConfigError, match="emergence.ising.ood_temperatures"):
        config.resolve({**scale, "emergence": {"ising": {"ood_temperatures": [2.0, 3.0]}}})
    with pytest.raises(ConfigError, match="low 3.0 exceeds high 2.6"):
        config.resolve({**scale, "emergence": {"ising": {"train_temperatures": [3.0, 2.6]}}})


# ------------------------------------------------------------ finite ensembles
def test_slope_of_independent_random_functions_is_minus_one_half():
    """Members: independent Gaussian functions with an invariant mean
    (zero): D(M) = c / sqrt(M), and the fit's CI covers -1/2."""
    rng = np.random.default_rng(0)
    outputs = rng.normal(size=(1024, 4, 64))
    sizes = finite_ensemble.sizes_up_to(1024)
    fit = finite_ensemble.fit(finite_ensemble.differences(outputs), sizes, resamples=100, level=0.95, seed=1)
    low, high = fit["slope_ci"]
    assert low <= -0.5 <= high
    assert high - low < 0.2
    assert fit["slope"] == pytest.approx(-0.5, abs=0.05)
    # vector outputs (logits): the Euclidean norm over classes, same rate
    vectors = rng.normal(size=(256, 4, 32, 3))
    fit = finite_ensemble.fit(finite_ensemble.differences(vectors), [1, 4, 16, 64, 256], 50, 0.95, 2)
    assert fit["slope_ci"][0] <= -0.5 <= fit["slope_ci"][1]


def test_a_mean_that_is_not_invariant_levels_off():
    """Members = a fixed non-invariant function plus independent noise: the
    ensemble mean approaches the fixed function, so D(M) levels off."""
    rng = np.random.default_rng(0)
    fixed = rng.normal(size=(1, 4, 64))
    outputs = fixed + rng.normal(size=(512, 4, 64))
    fit = finite_ensemble.fit(finite_ensemble.differences(outputs), finite_ensemble.sizes_up_to(512), 50, 0.95, 0)
    assert fit["slope_ci"][0] > -0.4  # excludes -1/2
    assert fit["deviation"][-1] > 0.9 * np.abs(fixed[:, :1] - fixed[:, 1:]).mean()


def test_group_deviations_partition_the_members():
    diffs = np.arange(12, dtype=float).reshape(6, 1, 2)
    values = finite_ensemble.group_deviations(diffs, 2, np.random.default_rng(0))
    assert len(values) == 3
    assert finite_ensemble.group_deviations(diffs, 6, np.random.default_rng(0)) == pytest.approx([5.5])
    assert finite_ensemble.sizes_up_to(12) == [1, 2, 4, 8, 12]
    with pytest.raises(ValueError, match="no sub-ensemble"):
        finite_ensemble.group_deviations(diffs, 7, np.random.default_rng(0))


def test_curve_averages_consecutive_blocks_of_one_random_order():
    """Every size's sub-ensembles are consecutive blocks of the same random
    order of the members; sizes that do not divide M leave the rest out."""
    rng = np.random.default_rng(3)
    diffs = rng.normal(size=(12, 3, 5, 2))
    values = finite_ensemble.curve(diffs, [1, 2, 4, 5, 12], np.random.default_rng(7))
    order = np.random.default_rng(7).permutation(12)
    for value, size in zip(values, [1, 2, 4, 5, 12]):
        groups = 12 // size
        means = diffs[order[: groups * size]].reshape(groups, size, 3, 5, 2).mean(axis=1)
        assert value == pytest.approx(np.linalg.norm(means, axis=-1).mean())
    limited = finite_ensemble.curve(diffs, [2], np.random.default_rng(7), draws=2)
    blocks = diffs[order[:4]].reshape(2, 2, 3, 5, 2).mean(axis=1)
    assert limited[0] == pytest.approx(np.linalg.norm(blocks, axis=-1).mean())
    with pytest.raises(ValueError, match="no sub-ensemble"):
        finite_ensemble.curve(diffs, [13], np.random.default_rng(0))


# ------------------------------------------------------------------- networks
def tiny_settings(**changes) -> dict:
    base = {**config.section_defaults("emergence")["ising"], "size": 4, "sweeps": 5, "train_lattices": 16,
            "test_lattices": 8, "ood_lattices": 8, "widths": {"mlp": [4], "cnn": [4]}, "members": 4, "epochs": 2,
            "batch_size": 8,
            "init_members": 16, "init_inputs": 8, "bootstrap_resamples": 10, "level": 0.95}
    return {**base, **changes}


@pytest.mark.parametrize("architecture", ising_ensembles.ARCHITECTURES)
def test_members_are_not_invariant_by_construction(architecture):
    import torch

    torch.manual_seed(0)
    net = ising_ensembles.network(architecture, 4, 8)
    spins = ising.uniform(16, 4, np.random.default_rng(0))
    with torch.no_grad():
        out = net(ising_ensembles.orbit_tensor(spins, "cpu")).reshape(1, 4, -1).numpy()
    assert ising_ensembles.invariance_errors(out)[0] > 1e-4
    # ... while the invariance error of an invariant predictor (the true energy) is zero
    exact = ising_ensembles.targets(ising.rotations(spins))[None]
    assert ising_ensembles.invariance_errors(exact)[0] == 0.0


def test_training_stores_curves_and_members_train_independently(tmp_path):
    settings = tiny_settings()
    result = ising_ensembles.train(settings, "mlp", device="cpu", threads=1)
    entry = result["widths"]["4"]["augmented"]
    assert result["sizes"] == [1, 2, 4]
    assert entry["epochs"] == [0, 1, 2] and len(entry["member_loss"]) == 2
    assert set(entry["curves"]) == {"train", "test", "ood_temperature", "ood_uniform"}
    first = entry["curves"]["test"][0]
    assert first["ensemble_error"]["1"]["groups"] == 4
    # a sub-ensemble of one member is a member: the same errors
    assert first["ensemble_error"]["1"]["mean"] == pytest.approx(first["member_error"]["mean"], rel=1e-5)
    assert entry["slopes"]["test"]["sizes"] == [1, 2, 4]
    # a member's run does not depend on how many train beside it
    fewer = ising_ensembles.train(tiny_settings(members=2), "mlp", device="cpu", threads=1)
    assert fewer["widths"]["4"]["control"]["curves"]["test"][-1]["ensemble_error"]["1"]["groups"] == 2
    two = ising_ensembles.build(settings, "mlp", 4, 0, 2, "cpu")
    four = ising_ensembles.build(settings, "mlp", 4, 0, 4, "cpu")
    x = ising_ensembles.orbit_tensor(ising.uniform(3, 4, np.random.default_rng(0)), "cpu")
    assert np.array_equal(two.outputs(x), four.outputs(x)[:2])


def test_initialisation_study_and_figures(tmp_path):
    import torch

    from multisym.report import figures

    settings = tiny_settings(widths={"mlp": [4], "cnn": [2, 4]})
    init = ising_ensembles.initialisation(settings, "cnn", torch.device("cpu"))
    fit = init["widths"]["4"]["deviation"]
    assert init["sizes"] == [1, 2, 4, 8, 16] and len(fit["deviation"]) == 5
    assert fit["slope_ci"][0] <= fit["slope"] <= fit["slope_ci"][1]
    assert len(init["widths"]["2"]["relative"]) == 5
    paths = []
    for architecture in ("mlp", "cnn"):
        path = tmp_path / f"{architecture}.json"
        result = ising_ensembles.train({**settings, "epochs": 1}, architecture, "cpu", 1)
        path.write_text(json.dumps(result))
        paths.append(str(path))
    assert list(result["initialisation"]["widths"]) == ["2", "4"]
    assert result["initialisation"]["widths"]["4"] == init["widths"]["4"]  # its own seeds: the same members
    for name in ("figure_ising", "figure_finite_ensemble"):
        png = tmp_path / f"{name}.png"
        figures.write(name, paths, {"name": "test"}, str(tmp_path / f"{name}.pdf"), str(png))
        assert png.stat().st_size > 1000


def test_a_run_by_hand_writes_where_the_workflow_would(tmp_path):
    from pathlib import Path

    from multisym.cli import main
    from multisym.layout import Layout

    smoke = Path(__file__).resolve().parents[1] / "config" / "smoke.yaml"
    main(["ising", "--config", str(smoke), "--results", str(tmp_path), "--architecture", "cnn", "--threads", "1"])
    result = json.loads(Path(Layout("smoke", str(tmp_path)).ising("cnn")).read_text())
    assert list(result["widths"]) == ["2"] and result["initialisation"]["members"] == 16
    with pytest.raises(SystemExit, match="--out"):
        main(["ising", "--settings-json", "{}", "--architecture", "mlp"])
