"""Datasets, splits and manifests.

The embedded default is scikit-learn's handwritten digits (1,797 images of
8x8 pixels, 10 classes; it ships with scikit-learn), resized to the configured
size and split into seeded, stratified train / val / test parts. Pretraining
sees train images without labels; supervised members and probes use train
labels; every selection uses val; metrics are reported on test.

``prepare`` writes one ``.npz`` (images in [0, 1], labels, split indices) and a
manifest (counts, per-channel train mean/std, sha256 of every array), and every
reader checks the arrays against the manifest before use.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .files import atomic_write_bytes, atomic_write_text

SPLITS = ("train", "val", "test")


class DataError(RuntimeError):
    """Prepared data that is missing, corrupt or does not match its manifest."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


def _sha256(array: np.ndarray) -> str:
    """sha256 over dtype, shape and bytes, so a reshaped or recast array fails too."""
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _load_digits(image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Digits as (N, 1, S, S) float32 in [0, 1], resized with antialiased bilinear."""
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None]
    if image_size != images.shape[-1]:
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)
    return images.clamp(0, 1).numpy(), digits.target.astype(np.int64)


def stratified_split(labels: np.ndarray, fractions: dict, seed: int) -> dict[str, np.ndarray]:
    """Seeded stratified split into train / val / test index arrays (sorted)."""
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(labels))
    rest, test = train_test_split(indices, test_size=fractions["test"], stratify=labels, random_state=seed)
    val_share = fractions["val"] / (fractions["train"] + fractions["val"])
    train, val = train_test_split(rest, test_size=val_share, stratify=labels[rest], random_state=seed + 1)
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def prepare(dataset: dict, out_data: str | Path, out_manifest: str | Path) -> dict:
    """Build the dataset file and its manifest from the ``dataset`` config section."""
    if dataset["name"] != "digits":
        raise DataError(f"config key 'dataset.name': {dataset['name']!r} is not supported; allowed: ['digits']")
    images, labels = _load_digits(dataset["image_size"])
    splits = stratified_split(labels, dataset["splits"], dataset["splits"]["seed"])
    train = images[splits["train"]]
    arrays = {"images": images, "labels": labels, **{f"{s}_index": splits[s] for s in SPLITS}}
    manifest = {
        "dataset": dataset["name"],
        "source": "sklearn.datasets.load_digits",
        "settings": dataset,
        "num_classes": int(labels.max() + 1),
        "channels": int(images.shape[1]),
        "image_size": int(images.shape[-1]),
        "mean": [float(m) for m in train.mean(axis=(0, 2, 3))],
        "std": [float(s) for s in train.std(axis=(0, 2, 3))],
        "counts": {s: int(len(splits[s])) for s in SPLITS},
        "class_counts": {s: np.bincount(labels[splits[s]], minlength=int(labels.max() + 1)).tolist() for s in SPLITS},
        "sha256": {key: _sha256(value) for key, value in arrays.items()},
    }
    write_npz(out_data, **arrays)
    atomic_write_text(json.dumps(manifest, indent=2) + "\n", out_manifest)
    return manifest


def write_npz(path: str | Path, **arrays: np.ndarray) -> None:
    """Write arrays to one .npz atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(buffer.getvalue(), path)


def read_manifest(path: str | Path) -> dict:
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: cannot read the data manifest ({error}); rerun the prepare_data step") from error


def info(manifest: dict) -> DatasetInfo:
    return DatasetInfo(
        name=manifest["dataset"],
        num_classes=manifest["num_classes"],
        channels=manifest["channels"],
        image_size=manifest["image_size"],
        mean=tuple(manifest["mean"]),
        std=tuple(manifest["std"]),
    )


def load_arrays(data_path: str | Path, manifest_path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """Load every array and verify it against the manifest's sha256."""
    manifest = read_manifest(manifest_path)
    try:
        with np.load(data_path) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except Exception as error:
        raise DataError(f"{data_path}: cannot read the prepared data ({error}); rerun the prepare_data step") from error
    for key, expected in manifest["sha256"].items():
        if key not in arrays or _sha256(arrays[key]) != expected:
            raise DataError(
                f"{data_path}: array {key!r} does not match the sha256 in {manifest_path}; "
                "the file is corrupt or was changed. Delete both and rerun the prepare_data step"
            )
    return arrays, manifest


def load_split(data_path: str | Path, manifest_path: str | Path, split: str):
    """(images, labels) of one split as torch tensors, plus the DatasetInfo."""
    import torch

    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; known: {SPLITS}")
    arrays, manifest = load_arrays(data_path, manifest_path)
    index = arrays[f"{split}_index"]
    images = torch.from_numpy(arrays["images"][index])
    labels = torch.from_numpy(arrays["labels"][index])
    return images, labels, info(manifest)
