"""Symmetry audit (OSP, orbit consistency, ensembles) and the emergent-invariance experiment."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from multisym.evaluate import audit
from multisym import config
from multisym.data import splits
from multisym.evaluate import emergence
from multisym.evaluate import invariance
from multisym.symmetries import get_group

ROTATION = get_group("rotation")
BOOTSTRAP = {"samples": 50, "level": 0.95, "seed": 0}


def orbit_logits(model, images: torch.Tensor, group=ROTATION) -> np.ndarray:
    """(|G|, N, C) logits of ``model`` on every element applied to every image."""
    with torch.no_grad():
        return np.stack([model(group.act(images, torch.full((len(images),), g))).numpy()
                         for g in range(group.order)])


def quadrant_model(images: torch.Tensor) -> torch.Tensor:
    """Logit c = the mass of quadrant c, quadrants in the cyclic order that a
    quarter turn permutes: its prediction turns with the image."""
    h = images.shape[-1] // 2
    quadrants = [images[..., :h, :h], images[..., h:, :h], images[..., h:, h:], images[..., :h, h:]]
    return torch.stack([q.sum(dim=(1, 2, 3)) for q in quadrants], dim=1)


@pytest.fixture
def noise_images():
    return torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def test_osp_of_an_orbit_averaged_model_is_the_group_order_everywhere(noise_images):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))

    def invariant(x):
        return torch.stack([net(ROTATION.act(x, torch.full((len(x),), g))) for g in range(4)]).mean(0)

    logits = orbit_logits(invariant, noise_images)
    assert (invariance.osp(logits) == 4).all()
    assert invariance.orbit_consistent(logits).all()
    assert invariance.osp_histogram(invariance.osp(logits), 4) == [0.0, 0.0, 0.0, 1.0]
    # the bare network is not invariant on noise
    assert invariance.osp(orbit_logits(net, noise_images)).mean() < 4


def test_osp_is_one_when_the_prediction_follows_the_rotation(noise_images):
    logits = orbit_logits(quadrant_model, noise_images)
    predicted = invariance.predictions(logits)
    # a quarter turn moves the heaviest quadrant to the next one
    assert ((predicted[1] - predicted[0]) % 4 != 0).all()
    assert (invariance.osp(logits) == 1).all()
    assert not invariance.orbit_consistent(logits).any()


def test_an_ensembles_osp_comes_from_its_averaged_output():
    """Two members that each change their mind under the group, but whose
    average does not: the ensemble's OSP is |G|, not the members' mean OSP."""
    n = 5
    a = np.zeros((2, n, 3))
    b = np.zeros((2, n, 3))
    a[0, :, 0], a[1, :, 1] = 2.0, 2.0  # member a: class 0, then 1 after the flip
    b[0, :, 1], b[1, :, 0] = 2.0, 2.0  # member b: the reverse
    a[..., 2] = b[..., 2] = 1.5  # class 2 is every member's runner-up
    members = np.stack([a, b])
    assert invariance.mean_osp(members).tolist() == [1.0, 1.0]
    for how in invariance.COMBINATIONS:
        assert (invariance.osp(invariance.combine(members, how)) == 2).all()
    # logit and probability means are different ensembles and can disagree
    probs_argmax = invariance.predictions(invariance.combine(members, "prob"))
    logits_argmax = invariance.predictions(members.mean(axis=0))
    assert probs_argmax.shape == logits_argmax.shape == (2, n)
    with pytest.raises(ValueError, match="unknown combination"):
        invariance.combine(members, "median")


def write_outputs(path, logits: np.ndarray, labels: np.ndarray, cosine: float, eq_head=None):
    arrays = {"test_labels": labels, "test/rotation/logits": logits,
              "test/rotation/cosine": np.full(logits.shape[:2], cosine, dtype=np.float32)}
    if eq_head is not None:
        arrays["test/rotation/eq_head"] = eq_head
    np.savez(path, **arrays)
    return str(path)


def test_audit_metrics_of_members_and_ensembles(tmp_path):
    rng = np.random.default_rng(0)
    n, classes = 40, 5
    labels = rng.integers(0, classes, n)
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"dataset": "digits", "stand_in": True,
                                    "sets": {"test": {"kind": "in-distribution", "images": n}}}))
    member_logits = rng.normal(size=(3, 4, n, classes))
    # member c is exactly invariant: the same logits on the whole orbit
    member_logits[2] = member_logits[2, :1]
    eq_head = np.stack([np.full(n, g) for g in range(4)])
    eq_head[3, : n // 2] = 0  # half of the quarter-turn-3 images misread as the identity
    paths = {m: write_outputs(tmp_path / f"{m}.npz", member_logits[i], labels, 0.5 + 0.2 * i,
                              eq_head if m == "a" else None) for i, m in enumerate("abc")}
    greedy = tmp_path / "greedy.json"
    greedy.write_text(json.dumps({"pool": "p", "sizes": [{"size": 1, "members": ["c"]},
                                                         {"size": 2, "members": ["a", "a"]}]}))
    spec = {"members": list("abc"), "modes": {"a": "eq", "b": "inv", "c": "inv"}, "pools": {"p": list("abc")},
            "groups": ["rotation"], "ensemble_size": 2, "bootstrap": BOOTSTRAP}
    result = audit.evaluate(spec, paths, {"p": str(greedy)}, manifest)

    members = result["members"]
    assert members["c"]["sets"]["test"]["rotation"]["osp"]["value"] == 4
    assert members["c"]["sets"]["test"]["rotation"]["consistent"]["value"] == 100
    for i, m in enumerate("abc"):
        entry = members[m]["sets"]["test"]["rotation"]
        assert entry["osp"]["value"] == pytest.approx(invariance.osp(member_logits[i]).mean())
        low, high = entry["osp"]["ci"]
        assert low <= entry["osp"]["value"] <= high
        hits = invariance.predictions(member_logits[i]) == labels
        assert entry["orbit_accuracy"]["value"] == pytest.approx(100 * hits.mean())
        assert entry["feature_cosine"]["value"] == pytest.approx(0.5 + 0.2 * i)
    assert members["a"]["eq_head_accuracy"]["value"] == pytest.approx(100 * (1 - 0.5 / 4))
    assert members["b"]["eq_head_accuracy"] is None

    pool = result["ensembles"]["p"]
    assert pool["greedy_members"] == ["a", "a"]
    for how in invariance.COMBINATIONS:
        expected = invariance.osp(invariance.combine(member_logits, how)).mean()
        assert pool["pool"][how]["test"]["rotation"]["osp"]["value"] == pytest.approx(expected)
        # a greedy ensemble of one member repeated is that member
        assert pool["greedy"][how]["test"]["rotation"]["osp"]["value"] == pytest.approx(
            members["a"]["sets"]["test"]["rotation"]["osp"]["value"])


    # the mode rows of the table and figure average over the pools' members: one outside
    # every pool (another axis's, with several axes) keeps its own row but leaves the means
    import matplotlib.pyplot as plt
    from multisym.report.figures import figure_audit
    from multisym.report.tables import audit_pool_members, table_audit

    outside = {**result, "ensembles": {"p": {**pool, "pool_members": ["a", "b"]}}}
    assert audit_pool_members(result) == set("abc") and audit_pool_members(outside) == {"a", "b"}
    for audited, n in ((result, 2), (outside, 1)):
        cells = table_audit([audited], {})
        assert {c.n for c in cells if c.row == "Inv members (mean)"} == {n}
        assert {c.row for c in cells} >= set("abc")
        plt.close(figure_audit([audited], {"name": "x"}))


def test_photo_patches_are_natural_images_in_range():
    rng = np.random.default_rng(0)
    gray = audit.photo_patches(6, 12, 1, rng)
    colour = audit.photo_patches(4, 12, 3, rng)
    assert gray.shape == (6, 1, 12, 12) and colour.shape == (4, 3, 12, 12)
    for patches in (gray, colour):
        assert patches.min() >= 0 and patches.max() <= 1
        assert patches.std(axis=(1, 2, 3)).min() > 0  # not blank
    # natural images are smooth: neighbouring pixels correlate, unlike noise
    a, b = gray[:, 0, :, :-1].ravel(), gray[:, 0, :, 1:].ravel()
    assert np.corrcoef(a, b)[0, 1] > 0.5


@pytest.fixture(scope="module")
def digits_sets(tmp_path_factory):
    """The smoke scale's prepared digits and its audit sets, with the rotated
    digits as a configured OOD dataset."""
    root = tmp_path_factory.mktemp("audit")
    cfg = config.resolve({**_smoke(), "audit": {"max_images": 60, "noise": 20, "photos": 20,
                                                "ood_datasets": [{"key": "turned",
                                                                  "dataset": {"name": "digits_rotated"}}]}})
    splits.prepare(cfg["dataset"], root / "d.npz", root / "d.json")
    splits.prepare(cfg["audit"]["ood_datasets"][0]["dataset"], root / "o.npz", root / "o.json")
    settings = {k: v for k, v in cfg["audit"].items() if k != "ood_datasets"}
    audit.prepare_sets(settings, root / "d.npz", root / "d.json", {"turned": (root / "o.npz", root / "o.json")},
                       root / "s.npz", root / "s.json")
    return root, cfg


def _smoke() -> dict:
    import yaml

    from conftest import SMOKE

    return yaml.safe_load(SMOKE.read_text())


def test_audit_sets_hold_test_noise_photos_and_ood(digits_sets):
    root, cfg = digits_sets
    sets, labels, manifest = audit.load_sets(root / "s.npz", root / "s.json")
    assert list(sets) == ["test", "noise", "photos", "turned"]
    assert [manifest["sets"][k]["images"] for k in sets] == [60, 20, 20, 60]
    assert manifest["stand_in"] is True and len(labels) == 60
    size = cfg["dataset"]["image_size"]
    assert all(x.shape[1:] == (1, size, size) for x in sets.values())


def test_an_ood_key_may_not_shadow_a_built_in_set():
    bad = {**_smoke(), "audit": {"ood_datasets": [{"key": "noise", "dataset": {"name": "digits_rotated"}}]}}
    with pytest.raises(config.ConfigError, match=r"audit\.ood_datasets\[0\]\.key"):
        config.resolve(bad)


def run_emergence(root, members: int, epochs: int = 2, group: str = "rotation", run: str = "augmented",
                  so2_angles: int = 64) -> tuple[dict, str]:
    settings = {**config.section_defaults("emergence"), "members": members, "epochs": epochs, "widths": [4],
                "hidden": 8, "train_images": 200, "subensemble_draws": 4, "groups": [group],
                "so2_angles": so2_angles, "bootstrap_resamples": 20, "level": 0.95}
    out = root / f"{group}-{run}-{members}.npz"
    emergence.train(settings, group, run, root / "d.npz", root / "d.json", root / "s.npz", root / "s.json", out)
    return settings, str(out)


def test_emergence_members_train_independently_of_each_other(digits_sets):
    """Stacked training is M separate runs: a member's predictions and last
    logits do not depend on how many members are trained beside it."""
    root, _ = digits_sets
    _, two = run_emergence(root, 2, epochs=1)
    _, three = run_emergence(root, 3, epochs=1)
    with np.load(two) as a, np.load(three) as b:
        assert a["test_predictions"].shape[:3] == (2, 2, 4) and a["test_final_logits"].shape[:2] == (2, 4)
        np.testing.assert_array_equal(a["test_predictions"], b["test_predictions"][:, :2])
        np.testing.assert_allclose(a["test_final_logits"], b["test_final_logits"][:2], atol=1e-4)
        assert not np.allclose(b["test_final_logits"][1], b["test_final_logits"][2])


def test_emergence_evaluates_each_member_as_its_own_network(digits_sets):
    """Epoch 0's stored predictions are the argmax of each untrained member's
    plain forward pass (its seed's initialisation) on the normalised orbit,
    element by element, and the ensemble's stored outputs combine those passes."""
    import torch

    from multisym.symmetries import get_group

    root, _ = digits_sets
    settings, path = run_emergence(root, 3, epochs=1)
    info = splits.info(splits.read_manifest(root / "d.json"))
    test = torch.from_numpy(audit.load_sets(root / "s.npz", root / "s.json")[0]["test"])
    orbit = get_group(settings["groups"][0]).orbit(test)[0]
    orbit = (orbit - torch.tensor(info.mean).view(1, -1, 1, 1)) / torch.tensor(info.std).view(1, -1, 1, 1)
    with np.load(path) as stored:
        predicted = stored["test_predictions"][0]  # (members, |G|, N)
        ensemble = {how: stored[f"test_ensemble_{how}"][0] for how in invariance.COMBINATIONS}  # (|G|, N, C)
    assert predicted.dtype == np.uint8  # ten classes
    forwards = []
    for index in range(3):
        torch.manual_seed(settings["seed"] * 1000 + index)
        net = emergence.member_network(info.channels, info.image_size, info.num_classes, settings["widths"],
                                       settings["hidden"])
        with torch.no_grad():
            forwards.append(net(orbit).reshape(*predicted.shape[1:], -1).numpy())
        np.testing.assert_array_equal(predicted[index], forwards[index].argmax(-1))
    np.testing.assert_allclose(ensemble["logit"], np.mean(forwards, axis=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ensemble["prob"], invariance.combine(np.stack(forwards), "prob"), rtol=1e-5, atol=1e-5)


def test_emergence_stored_logits_reproduce_the_figure(digits_sets, tmp_path):
    root, _ = digits_sets
    settings, path = run_emergence(root, 4)
    result = emergence.write_metrics(settings, {("rotation", "augmented"): path}, root / "s.json",
                                     tmp_path / "m.json")
    assert json.loads((tmp_path / "m.json").read_text()) == json.loads(json.dumps(result))
    with np.load(path) as stored:
        arrays = {k: stored[k] for k in stored.files}
    labels = arrays["test_labels"]
    for name in ("test", "noise", "photos", "turned"):
        curve = result["groups"]["rotation"]["runs"]["augmented"][name]
        predicted = arrays[f"{name}_predictions"]  # (epochs + 1, members, |G|, N)
        z = arrays[f"{name}_final_logits"]  # (members, |G|, N, C), the last epoch
        assert curve["epochs"] == [0, 1, 2]
        for epoch in curve["epochs"]:
            members = [(p == p[0]).sum(axis=0).mean() for p in predicted[epoch]]
            assert curve["member_osp"][epoch] == pytest.approx(members)
            assert curve["member_quantiles"]["50"][epoch] == pytest.approx(np.median(members))
            for how in invariance.COMBINATIONS:
                combined = arrays[f"{name}_ensemble_{how}"][epoch]  # (|G|, N, C)
                assert curve["ensemble_osp"][how][epoch] == pytest.approx(invariance.osp(combined).mean())
                assert curve["ensemble_consistent"][how][epoch] == pytest.approx(
                    invariance.orbit_consistent(combined).mean())
            consistent = [(p == p[0]).all(axis=0).mean() for p in predicted[epoch]]
            assert curve["member_consistent"][epoch] == pytest.approx(consistent)
            assert curve["consistent_quantiles"]["50"][epoch] == pytest.approx(np.median(consistent))
            if name == "test":
                assert curve["member_accuracy"][epoch] == pytest.approx(
                    100.0 * (predicted[epoch, :, 0] == labels).mean())
                assert curve["ensemble_accuracy"][epoch] == pytest.approx(
                    100.0 * (arrays["test_ensemble_prob"][epoch, 0].argmax(-1) == labels).mean())
        # the last epoch's predictions are its logits' argmax; its ensemble is their combination
        np.testing.assert_array_equal(predicted[-1], z.argmax(-1))
        assert curve["ensemble_osp"]["logit"][-1] == pytest.approx(invariance.osp(z.mean(axis=0)).mean())
        full = curve["by_size"]
        assert full["sizes"] == [1, 2, 3, 4]
        assert full["logit"]["mean"][-1] == pytest.approx(curve["ensemble_osp"]["logit"][-1])
        assert full["consistent"]["logit"]["mean"][-1] == pytest.approx(curve["ensemble_consistent"]["logit"][-1])
        assert "so2" not in curve  # measured for the C_N groups only
        # the deviation of the last epoch's mean logits from invariance, by size
        finite = curve["finite"]
        assert finite["sizes"] == [1, 2, 4]
        last = z.astype(np.float64)
        whole = np.linalg.norm(last.mean(axis=0)[:1] - last.mean(axis=0)[1:], axis=-1).mean()
        assert finite["deviation"][-1] == pytest.approx(whole, rel=1e-5)
        single = np.mean([np.linalg.norm(m[:1] - m[1:], axis=-1).mean() for m in last])
        assert finite["deviation"][0] == pytest.approx(single, rel=1e-5)
        assert finite["slope_ci"][0] <= finite["slope"] <= finite["slope_ci"][1]
    figure = tmp_path / "f.png"
    from multisym.report import figures

    for name in ("figure_emergence", "figure_emergence_size", "figure_emergence_orders"):
        figures.write(name, [str(tmp_path / "m.json")], {"name": "test"}, str(tmp_path / f"{name}.pdf"),
                      str(figure))
        assert figure.stat().st_size > 1000


def test_emergence_stores_ensemble_combinations_and_only_the_last_epochs_member_logits(digits_sets):
    """The stored combinations at the last epoch are ``invariance.combine`` of
    the stored last logits (both ways, to float32 round-off); no array holds
    the members' logits of every epoch."""
    root, _ = digits_sets
    _, path = run_emergence(root, 3, epochs=2)
    with np.load(path) as stored:
        arrays = {k: stored[k] for k in stored.files}
    sets = ("test", "noise", "photos", "turned")
    assert set(arrays) == {"test_labels"} | {f"{name}_{key}" for name in sets for key in (
        "predictions", "ensemble_logit", "ensemble_prob", "final_logits")}
    for name in sets:
        final = arrays[f"{name}_final_logits"]
        assert final.dtype == np.float32 and final.shape[:2] == (3, 4)
        assert arrays[f"{name}_predictions"].shape == (3, *final.shape[:-1])
        assert arrays[f"{name}_predictions"].dtype == np.min_scalar_type(final.shape[-1] - 1)
        for how in invariance.COMBINATIONS:
            combined = arrays[f"{name}_ensemble_{how}"]
            assert combined.dtype == np.float32 and combined.shape == (3, *final.shape[1:])
            np.testing.assert_allclose(combined[-1], invariance.combine(final, how), rtol=1e-5, atol=1e-5)


def test_emergence_of_a_cyclic_group_trains_on_masked_images_and_measures_so2(digits_sets, tmp_path):
    """A C8 run stores its orbits of the masked inputs and, after the last
    epoch, each member's predictions and the ensemble's outputs on K rotated
    copies behind the unrotated one; the SO(2) fraction is the share of
    angles keeping the unrotated prediction."""
    root, _ = digits_sets
    settings, path = run_emergence(root, 2, epochs=1, group="rot8", so2_angles=5)
    _, control = run_emergence(root, 2, epochs=1, group="rot8", run="control", so2_angles=5)
    with np.load(path) as stored:
        predicted, so2 = stored["test_predictions"], stored["test_so2_predictions"]
        final, so2_mean = stored["test_final_logits"], stored["test_so2_ensemble_logit"]
        angles = stored["so2_angles"]
        assert "test_so2_logits" not in stored.files
    assert predicted.shape[:3] == (2, 2, 8) and so2.shape == (2, 6, predicted.shape[3])
    assert so2_mean.shape == (6, predicted.shape[3], final.shape[-1])
    np.testing.assert_allclose(angles, emergence.so2_angles(settings), rtol=1e-6)
    assert (0 <= angles).all() and (angles < 360).all()
    # the unrotated copy is the orbit's identity element at the last epoch
    np.testing.assert_array_equal(so2[:, 0], final[:, 0].argmax(-1))
    np.testing.assert_allclose(so2_mean[0], final[:, 0].mean(axis=0), rtol=1e-4, atol=1e-4)
    result = emergence.write_metrics(settings, {("rot8", "augmented"): path, ("rot8", "control"): control},
                                     root / "s.json", tmp_path / "m.json")
    entry = result["groups"]["rot8"]
    assert entry["order"] == 8 and set(entry["runs"]) == {"augmented", "control"}
    measured = entry["runs"]["augmented"]["test"]["so2"]
    by_hand = [(so2[m, 1:] == so2[m, 0]).mean() for m in range(2)]
    assert measured["angles"] == 5 and measured["member"] == pytest.approx(by_hand)
    mean_logit = so2_mean.argmax(-1)
    assert measured["ensemble"]["logit"] == pytest.approx((mean_logit[1:] == mean_logit[0]).mean())
    from multisym.report import figures

    for name in ("figure_emergence", "figure_emergence_size", "figure_emergence_orders", "figure_emergence_so2"):
        figure = tmp_path / f"{name}.png"
        figures.write(name, [str(tmp_path / "m.json")], {"name": "test"}, str(tmp_path / f"{name}.pdf"),
                      str(figure))
        assert figure.stat().st_size > 1000


def test_untrained_image_ensembles_measure_deviation_and_consistency_by_size(digits_sets, tmp_path):
    """The initialisation study: each untrained member is the emergence
    network with its own seed; D(M) at M = 1 is the members' mean deviation of
    their logits, at the largest size the whole ensemble's; the orbit-consistent
    fraction at M = 1 averages the members' own."""
    import torch

    from multisym.evaluate import emergence_init, finite_ensemble
    from multisym.symmetries import get_group

    root, _ = digits_sets
    settings = {**config.section_defaults("emergence"), "widths": [4], "hidden": 8, "init_members": 16,
                "init_inputs": 6, "bootstrap_resamples": 10, "subensemble_draws": 50, "level": 0.95}
    result = emergence_init.initialisation(settings, ["rot4", "rot8"], root / "d.json", root / "s.npz",
                                           root / "s.json", device="cpu")
    assert result["sizes"] == [1, 2, 4, 8, 16] and result["members"] == 16
    assert set(result["inputs"]) == {"test", "noise", "photos", "turned"} and set(result["inputs"].values()) == {6}
    info = splits.info(splits.read_manifest(root / "d.json"))
    test = torch.from_numpy(audit.load_sets(root / "s.npz", root / "s.json")[0]["test"][:6])
    for name, order in (("rot4", 4), ("rot8", 8)):
        entry = result["groups"][name]
        assert entry["order"] == order
        orbit = get_group(name).orbit(test)[0]
        orbit = (orbit - torch.tensor(info.mean).view(1, -1, 1, 1)) / torch.tensor(info.std).view(1, -1, 1, 1)
        logits = []
        for index in range(16):
            torch.manual_seed(finite_ensemble.member_seed(settings["seed"], index))
            net = emergence.member_network(info.channels, info.image_size, info.num_classes, [4], 8)
            with torch.no_grad():
                logits.append(net(orbit).reshape(order, 6, -1).numpy().astype(np.float64))
        logits = np.stack(logits)
        measured = entry["sets"]["test"]
        single = np.mean([np.linalg.norm(z[:1] - z[1:], axis=-1).mean() for z in logits])
        assert measured["deviation"]["deviation"][0] == pytest.approx(single, rel=1e-4)
        whole = logits.mean(axis=0)
        assert measured["deviation"]["deviation"][-1] == pytest.approx(
            np.linalg.norm(whole[:1] - whole[1:], axis=-1).mean(), rel=1e-4)
        consistent = measured["consistent"]
        each = [invariance.orbit_consistent(z).mean() for z in logits]
        assert consistent["logit"]["mean"][0] == pytest.approx(np.mean(each))
        assert consistent["member_quantiles"]["50"] == pytest.approx(np.median(each))
        assert consistent["logit"]["mean"][-1] == pytest.approx(invariance.orbit_consistent(whole).mean())
        assert len(measured["relative"]) == 5 and min(measured["relative"]) > 0
    # the figure reads the trained runs' metrics and the untrained study
    _, path = run_emergence(root, 4, epochs=1, group="rot4", so2_angles=0)
    metrics = tmp_path / "m.json"
    trained = {**settings, "groups": ["rot4"], "members": 4}
    emergence.write_metrics(trained, {("rot4", "augmented"): path}, root / "s.json", metrics)
    (tmp_path / "i.json").write_text(json.dumps(result))
    from multisym.report import figures

    figures.write("figure_emergence_finite", [str(metrics), str(tmp_path / "i.json")], {"name": "test"},
                  str(tmp_path / "f.pdf"), str(tmp_path / "f.png"))
    assert (tmp_path / "f.png").stat().st_size > 1000


def test_a_config_with_the_replaced_emergence_group_key_says_to_use_groups():
    with pytest.raises(config.ConfigError, match=r"emergence\.group.*emergence\.groups"):
        config.resolve({**_smoke(), "emergence": {"group": "rotation"}})
    resolved = config.resolve({**_smoke(), "emergence": {"groups": ["rot4", "rot8"]}})
    assert resolved["emergence"]["groups"] == ["rot4", "rot8"]


def test_each_emergence_group_has_its_own_runs_and_a_spec_without_the_list():
    """Adding a group adds its two runs and changes no other run's settings."""
    from multisym.plan import Plan

    one = Plan(config.resolve({**_smoke(), "emergence": {"groups": ["rot4"]}}))
    two = Plan(config.resolve({**_smoke(), "emergence": {"groups": ["rot4", "rot8"]}}))
    assert two.emergence_runs() == [("rot4", "augmented"), ("rot4", "control"), ("rot8", "augmented"),
                                    ("rot8", "control")]
    assert two.emergence_logits({})[2] == two.layout.emergence_logits("rot8", "augmented")
    assert one.emergence_run_spec({}) == two.emergence_run_spec({})
    assert "groups" not in two.emergence_run_spec({})
