"""Symmetry audit: which symmetry each member and each ensemble really holds.

MSE's premise (docs/method.md#eq-members, docs/method.md#inv-members) is that an
Inv member's representation is invariant to its group and an Eq member's is not
(its head predicts the group element instead). This module measures that, for
every configured group, on the audit sets: a seeded subset of the test split,
and inputs from outside the training distribution (uniform noise, patches of the
photographs that ship with scikit-learn, and the test split of any dataset named
under ``audit.ood_datasets``).

Per member (``member_outputs``), for each set and group G, from the network it
is evaluated with (frozen backbone + fitted probe, or its own classifier):
logits on the whole orbit, shape (|G|, N, C); the cosine similarity
cos(f(x), f(g·x)) of backbone features; for Eq members, the prediction of
their group head on every g·x of the test subset.

Then (``evaluate``): OSP and orbit-consistent fraction (``invariance``) per
member and per ensemble (each pool's greedy ensemble and the whole pool, from
averaged logits and from averaged probabilities), the OSP distribution over
inputs, mean feature cosine over g ≠ e, the Eq head's accuracy and accuracy
on the test orbit, each with a bootstrap CI over inputs.
"""

from __future__ import annotations

import json

import numpy as np

from multisym.data import splits
from multisym.evaluate import invariance
from multisym.config import is_embedded
from multisym.files import atomic_write_text, read_npz
from multisym.ensembles.metrics import bootstrap_indices, percentile_ci
from multisym.files import write_npz

TEST = "test"
BUILT_IN_OOD = ("noise", "photos")
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601, as PIL's "L" mode


# -------------------------------------------------------------------- sets
def photo_patches(count: int, size: int, channels: int, rng: np.random.Generator) -> np.ndarray:
    """Square patches cut at random places and scales (a sixth to a half of the
    shorter side) from scikit-learn's sample photographs, resized to ``size``:
    natural images that are no class of any dataset here. (N, C, S, S) in [0, 1]."""
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_sample_images

    photos = [np.asarray(image, dtype=np.float32) / 255.0 for image in load_sample_images().images]
    patches = np.empty((count, channels, size, size), dtype=np.float32)
    for index in range(count):
        photo = photos[rng.integers(len(photos))]
        height, width = photo.shape[:2]
        side = int(rng.integers(min(height, width) // 6, min(height, width) // 2 + 1))
        top, left = rng.integers(height - side + 1), rng.integers(width - side + 1)
        patch = photo[top:top + side, left:left + side]
        if channels == 1:
            patch = (patch @ LUMA)[..., None]
        tensor = torch.from_numpy(np.ascontiguousarray(patch.transpose(2, 0, 1)))[None]
        patches[index] = F.interpolate(tensor, size=(size, size), mode="bilinear", antialias=True,
                                       align_corners=False)[0].clamp(0, 1).numpy()
    return patches


def prepare_sets(settings: dict, data_path, manifest_path, ood: dict[str, tuple[str, str]],
                 out_data, out_manifest) -> dict:
    """Write the audit sets as uint8 with a manifest: the test subset (with
    labels), noise, photo patches and each OOD dataset's test subset
    (``ood``: key -> its prepared data and manifest)."""
    from multisym.evaluate.shift import to_uint8

    images, labels, info = splits.load_split(data_path, manifest_path, TEST)
    rng = np.random.default_rng(settings["seed"])

    def subset(count: int) -> np.ndarray:
        return np.sort(rng.choice(count, size=min(settings["max_images"], count), replace=False))

    keep = subset(len(labels))
    shape = (info.channels, info.image_size, info.image_size)
    arrays = {TEST: to_uint8(images[keep].numpy()), "test_labels": labels.numpy()[keep], "test_index": keep}
    sources = {TEST: f"{info.name} test split (seeded subset)"}
    if settings["noise"]:
        arrays["noise"] = to_uint8(rng.random((settings["noise"], *shape), dtype=np.float32))
        sources["noise"] = "uniform noise in [0, 1]"
    if settings["photos"]:
        arrays["photos"] = to_uint8(photo_patches(settings["photos"], info.image_size, info.channels, rng))
        sources["photos"] = "patches of scikit-learn's sample photographs (china.jpg, flower.jpg)"
    for key, (ood_data, ood_manifest) in ood.items():
        ood_images, _, ood_info = splits.load_split(ood_data, ood_manifest, TEST)
        if tuple(ood_images.shape[1:]) != shape:
            raise splits.DataError(f"audit.ood_datasets {key!r}: images of shape {tuple(ood_images.shape[1:])}, "
                                 f"but the members take {shape}; set its image_size and channels to match")
        arrays[key] = to_uint8(ood_images[subset(len(ood_images))].numpy())
        sources[key] = f"{ood_info.name} test split (seeded subset)"
    sets = [name for name in sources]
    manifest = {
        "dataset": info.name,
        "stand_in": is_embedded(info.name),
        "settings": settings,
        "sets": {name: {"kind": "in-distribution" if name == TEST else "out-of-distribution",
                        "images": int(len(arrays[name])), "source": sources[name]} for name in sets},
        "sha256": {key: splits._sha256(value) for key, value in arrays.items()},
    }
    write_npz(out_data, **arrays)
    atomic_write_text(json.dumps(manifest, indent=2) + "\n", out_manifest)
    return manifest


def load_sets(sets_path, sets_manifest) -> tuple[dict[str, np.ndarray], np.ndarray, dict]:
    """Every audit set as float32 in [0, 1], the test labels, the manifest."""
    manifest = splits.read_manifest(sets_manifest)
    arrays = splits.read_verified(sets_path, manifest, sets_manifest, "prepare_audit")
    sets = {name: arrays[name].astype(np.float32) / 255.0 for name in manifest["sets"]}
    return sets, arrays["test_labels"], manifest


# ---------------------------------------------------------- member outputs
def member_outputs(model_path, probe_params, member_path, sets_path, sets_manifest, data_manifest,
                   groups: list[str], out_path, device="auto", threads=None) -> None:
    """One member's orbit logits, feature cosines and (Eq members) group-head
    predictions on every audit set; ``member_path`` is the pretrained member,
    whose Eq head is audited even when ``model_path`` is its fine-tuned network."""
    import torch

    from multisym.train.adapt import forward_in_batches, load_member, load_network
    from multisym.train.models import build_backbone, equivariance_head
    from multisym.runtime import make_runtime, select_device, set_threads
    from multisym.evaluate.probe import probe_logits
    from multisym.symmetries import get_group

    set_threads(threads)
    target = select_device(device)
    info = splits.info(splits.read_manifest(data_manifest))
    classifier = probe_params is None
    network, settings = load_network(model_path, info, classifier=classifier)
    runtime = make_runtime(target, "auto", info, network)
    network = runtime.place(network).eval()
    backbone = network.backbone if classifier else network
    size = settings.get("views", {}).get("size", info.image_size)
    if not classifier:
        params = read_npz(probe_params)

    def head(features: torch.Tensor) -> np.ndarray:
        if classifier:
            with torch.no_grad():
                return network.classifier(features.to(target)).float().cpu().numpy()
        # the probe was fit on float16 features
        return probe_logits(params, features.numpy().astype(np.float16).astype(np.float32))

    sets, labels, _ = load_sets(sets_path, sets_manifest)
    outputs: dict[str, np.ndarray] = {"test_labels": labels}
    for name, images in sets.items():
        images = torch.from_numpy(images)
        for group_name in groups:
            group = get_group(group_name)
            features = [forward_in_batches(backbone, group.act(images, torch.full((len(images),), g)), runtime, size)
                        for g in range(group.order)]
            outputs[f"{name}/{group_name}/logits"] = np.stack([head(f) for f in features]).astype(np.float32)
            outputs[f"{name}/{group_name}/cosine"] = np.stack(
                [torch.nn.functional.cosine_similarity(f, features[0], dim=1).numpy() for f in features])

    exported, member_settings = load_member(member_path)
    axis = member_settings.get("axis")
    if member_settings["mode"] == "eq" and "eq_head" in exported and axis in groups:
        group = get_group(axis)
        eq_backbone = build_backbone(member_settings["backbone"], info.channels)
        eq_backbone.load_state_dict(exported["backbone"], strict=True)
        eq_head = equivariance_head(eq_backbone.out_dim, member_settings["pretrain"]["eq_head"], group.order)
        eq_head.load_state_dict(exported["eq_head"], strict=True)
        model = runtime.place(torch.nn.Sequential(eq_backbone, eq_head))
        eq_size = member_settings["views"]["size"]
        test = torch.from_numpy(sets[TEST])
        outputs[f"{TEST}/{axis}/eq_head"] = np.stack([
            forward_in_batches(model, group.act(test, torch.full((len(test),), g)), runtime, eq_size).argmax(1).numpy()
            for g in range(group.order)])
    write_npz(out_path, **outputs)


# ----------------------------------------------------------------- metrics
def _mean_ci(values: np.ndarray, draws: np.ndarray, level: float) -> dict:
    values = np.asarray(values, dtype=np.float64)
    return {"value": float(values.mean()), "ci": percentile_ci(values[draws].mean(axis=1), level)}


def orbit_summary(orbit_logits: np.ndarray, bootstrap: dict, labels: np.ndarray | None = None) -> dict:
    """OSP (mean, CI, distribution over inputs), orbit-consistent fraction and,
    where labels exist, accuracy over the whole orbit."""
    order, count = orbit_logits.shape[:2]
    draws = bootstrap_indices(count, bootstrap["samples"], bootstrap["seed"])
    values = invariance.osp(orbit_logits)
    summary = {
        "order": order,
        "osp": _mean_ci(values, draws, bootstrap["level"]),
        "consistent": _mean_ci(100.0 * (values == order), draws, bootstrap["level"]),
        "histogram": invariance.osp_histogram(values, order),
    }
    if labels is not None:
        hits = 100.0 * (invariance.predictions(orbit_logits) == labels[None]).mean(axis=0)
        summary["orbit_accuracy"] = _mean_ci(hits, draws, bootstrap["level"])
    return summary


def _member_entry(stored: dict, sets: list[str], groups: list[str], bootstrap: dict) -> dict:
    labels = stored["test_labels"]
    entry: dict = {"sets": {}, "eq_head_accuracy": None}
    for name in sets:
        entry["sets"][name] = {}
        for group in groups:
            summary = orbit_summary(stored[f"{name}/{group}/logits"], bootstrap, labels if name == TEST else None)
            cosine = stored[f"{name}/{group}/cosine"][1:].mean(axis=0)
            draws = bootstrap_indices(len(cosine), bootstrap["samples"], bootstrap["seed"])
            summary["feature_cosine"] = _mean_ci(cosine, draws, bootstrap["level"])
            entry["sets"][name][group] = summary
    for key in stored:
        if key.endswith("/eq_head"):
            predicted = stored[key]
            truth = np.arange(len(predicted))[:, None]
            hits = 100.0 * (predicted == truth).mean(axis=0)
            draws = bootstrap_indices(len(hits), bootstrap["samples"], bootstrap["seed"])
            entry["eq_head_accuracy"] = {"group": key.split("/")[1], **_mean_ci(hits, draws, bootstrap["level"])}
    return entry


def _ensemble_entry(stored: dict, members: list[str], sets: list[str], groups: list[str],
                    bootstrap: dict) -> dict:
    labels = next(iter(stored.values()))["test_labels"]
    out = {}
    for how in invariance.COMBINATIONS:
        out[how] = {name: {group: orbit_summary(
            invariance.combine(np.stack([stored[m][f"{name}/{group}/logits"] for m in members]), how),
            bootstrap, labels if name == TEST else None) for group in groups} for name in sets}
    return out


def evaluate(spec: dict, outputs_paths: dict[str, str], greedy_paths: dict[str, str], sets_manifest) -> dict:
    """Every member's and every ensemble's audit (see the module docstring).
    ``spec``: members, modes, pools, groups, ensemble_size, bootstrap."""
    manifest = splits.read_manifest(sets_manifest)
    sets, groups, bootstrap = list(manifest["sets"]), spec["groups"], spec["bootstrap"]
    stored = {}
    for member, path in outputs_paths.items():
        stored[member] = read_npz(path)
    result = {"dataset": manifest["dataset"], "stand_in": manifest["stand_in"], "sets": manifest["sets"],
              "groups": groups, "ensemble_size": spec["ensemble_size"], "members": {}, "ensembles": {}}
    for member in spec["members"]:
        result["members"][member] = {"mode": spec["modes"][member],
                                     **_member_entry(stored[member], sets, groups, bootstrap)}
    for pool, members in spec["pools"].items():
        with open(greedy_paths[pool]) as handle:
            greedy = json.load(handle)
        size = min(spec["ensemble_size"], len(greedy["sizes"]))
        chosen = next(e for e in greedy["sizes"] if e["size"] == size)["members"]
        result["ensembles"][pool] = {
            "greedy_members": chosen, "pool_members": members,
            "greedy": _ensemble_entry(stored, chosen, sets, groups, bootstrap),
            "pool": _ensemble_entry(stored, members, sets, groups, bootstrap),
        }
    return result
