"""Distribution-shift sets generated locally, and the members' logits on them.

The test split (or a seeded subset of ``shift.max_images`` of it) is corrupted
with every configured corruption at every configured severity
(``corruptions.py``, ImageNet-C style) and stored as uint8 arrays, one per
(corruption, severity), beside the clean subset. Each member then gets logits
on every set from its own network: the frozen backbone plus its fitted probe
(SSL members), or its classifier (supervised and fine-tuned members), with the
evaluation transform. Where the dataset is the embedded default, the sets stand
in for ImageNet-C-style shift and every output says so.
"""

from __future__ import annotations

import json

import numpy as np

from multisym.data import splits
from multisym.config import is_embedded
from multisym.files import atomic_write_text, read_npz
from multisym.logits import logits_of, write_logits
from multisym.files import write_npz

CLEAN = "clean"


def set_name(corruption: str, severity: int) -> str:
    return f"{corruption}-{severity}"


def prepare(settings: dict, data_path, manifest_path, out_data, out_manifest) -> dict:
    """Write the clean test subset and its corrupted copies (uint8) with a manifest."""
    from multisym.data.corruptions import corrupt

    images, labels, info = splits.load_split(data_path, manifest_path, "test")
    rng = np.random.default_rng(settings["seed"])
    count = min(settings["max_images"], len(labels))
    keep = np.sort(rng.choice(len(labels), size=count, replace=False))
    clean = images[keep].numpy()  # decodes only these when the split is streamed
    arrays = {CLEAN: to_uint8(clean), "labels": labels.numpy()[keep], "test_index": keep}
    for index, corruption in enumerate(settings["corruptions"]):
        for severity in settings["severities"]:
            seed = settings["seed"] * 1000 + index * 10 + severity
            arrays[set_name(corruption, severity)] = to_uint8(corrupt(clean, corruption, severity, seed))
    manifest = {
        "dataset": info.name,
        "stand_in": is_embedded(info.name),
        "settings": settings,
        "images": int(count),
        "sets": [CLEAN] + [set_name(c, s) for c in settings["corruptions"] for s in settings["severities"]],
        "sha256": {key: splits._sha256(value) for key, value in arrays.items()},
    }
    write_npz(out_data, **arrays)
    atomic_write_text(json.dumps(manifest, indent=2) + "\n", out_manifest)
    return manifest


def to_uint8(images: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(images * 255.0), 0, 255).astype(np.uint8)


def load_sets(shift_path, shift_manifest) -> tuple[dict[str, np.ndarray], np.ndarray, dict]:
    """Every shift set as float32 images in [0, 1], the labels, the manifest
    (arrays checked against its sha256 first)."""
    manifest = splits.read_manifest(shift_manifest)
    arrays = splits.read_verified(shift_path, manifest, shift_manifest, "prepare_shift")
    sets = {name: arrays[name].astype(np.float32) / 255.0 for name in manifest["sets"]}
    return sets, arrays["labels"], manifest


def member_logits(model_path, probe_params, shift_path, shift_manifest, data_manifest, out_path,
                  device="auto", threads=None) -> None:
    """One member's logits on every shift set (SSL members need ``probe_params``)."""
    import torch

    from multisym.evaluate.classifier import AdaptedClassifier
    from multisym.runtime import select_device, set_threads

    set_threads(threads)
    info = splits.info(splits.read_manifest(data_manifest))
    classify = AdaptedClassifier(model_path, probe_params, info, select_device(device))
    sets, labels, _ = load_sets(shift_path, shift_manifest)
    outputs = {"labels": labels}
    for name, images in sets.items():
        outputs[f"{name}_logits"] = classify(torch.from_numpy(images))
    write_logits(out_path, **outputs)


def evaluate(pools: dict, logits_paths: dict[str, str], greedy_paths: dict[str, str], shift_manifest,
             size: int, bootstrap: dict) -> dict:
    """Accuracy, NLL and ECE on every shift set for each pool's members (mean over
    members) and for its greedy ensemble of ``size`` members (chosen on clean val),
    then the mean over corruptions per severity."""
    from multisym.ensembles.metrics import correct, ece, ensemble_probs, nll_terms

    manifest = splits.read_manifest(shift_manifest)
    stored = {}
    for member, path in logits_paths.items():
        stored[member] = read_npz(path)
    labels = next(iter(stored.values()))["labels"]

    def scores(members: list[str], name: str) -> dict[str, float]:
        probs = ensemble_probs(np.stack([logits_of(stored[m], name) for m in members]))
        return {"accuracy": 100.0 * float(correct(probs, labels).mean()),
                "nll": float(nll_terms(probs, labels).mean()), "ece": ece(probs, labels)}

    result = {"stand_in": manifest["stand_in"], "dataset": manifest["dataset"], "images": manifest["images"],
              "settings": manifest["settings"], "ensemble_size": size, "pools": {}}
    for pool, members in pools.items():
        with open(greedy_paths[pool]) as handle:
            greedy = json.load(handle)
        entry = next(e for e in greedy["sizes"] if e["size"] == min(size, len(greedy["sizes"])))
        per_set = {}
        for name in manifest["sets"]:
            singles = [scores([m], name) for m in members]
            per_set[name] = {
                "members_mean": {k: float(np.mean([s[k] for s in singles])) for k in singles[0]},
                "greedy": scores(entry["members"], name),
            }
        result["pools"][pool] = {"greedy_members": entry["members"], "sets": per_set,
                                 "severities": by_severity(per_set, manifest["settings"])}
    return result


def by_severity(per_set: dict, settings: dict) -> dict:
    """Mean over corruption types at each severity, and over everything corrupted."""
    out = {CLEAN: per_set[CLEAN]}
    for severity in [*settings["severities"], "all"]:
        names = [set_name(c, s) for c in settings["corruptions"] for s in settings["severities"]
                 if severity == "all" or s == severity]
        out[str(severity)] = {
            kind: {metric: float(np.mean([per_set[n][kind][metric] for n in names]))
                   for metric in per_set[names[0]][kind]}
            for kind in ("members_mean", "greedy")
        }
    return out
