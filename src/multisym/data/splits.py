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
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from multisym.config import is_embedded, own_channels
from multisym.errors import UserError
from multisym.files import CorruptFileError, atomic_write_text, read_npz, write_npz

SPLITS = ("train", "val", "test")
EVAL_SPLITS = ("val", "test")  # the splits a classifier's logits are written for


class DataError(UserError, RuntimeError):
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


def channels_of(dataset: dict) -> int:
    """Channels a dataset section's images are given in (``dataset.channels``,
    else the dataset's own)."""
    return dataset.get("channels") or own_channels(dataset)


def _load_digits(image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Digits as (N, 1, S, S) float32 in [0, 1], resized with antialiased bilinear."""
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None]
    if image_size != images.shape[-1]:
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", antialias=True,
                               align_corners=False)
    return images.clamp(0, 1).numpy(), digits.target.astype(np.int64)


def hold_out(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded per-class split of ``range(len(labels))`` into (kept, held out)."""
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(labels))
    try:
        kept, held = train_test_split(indices, test_size=fraction, stratify=labels, random_state=seed)
    except ValueError as error:
        raise DataError(
            f"cannot hold out {fraction:g} of every class ({error}); every class needs at least two "
            "images, and the held-out part at least one per class: lower or raise dataset.splits"
        ) from error
    return np.sort(kept), np.sort(held)


def stratified_split(labels: np.ndarray, fractions: dict, seed: int) -> dict[str, np.ndarray]:
    """Seeded stratified train / val / test index arrays (sorted) of one labelled
    collection: ``test`` of all of it, then ``val`` of all of it from the rest."""
    rest, test = hold_out(labels, fractions["test"], seed)
    kept, val = hold_out(labels[rest], fractions["val"] / (1.0 - fractions["test"]), seed + 1)
    return {"train": rest[kept], "val": rest[val], "test": test}


def source_splits(sources: dict, splits: dict) -> dict[str, tuple[str, np.ndarray]]:
    """Each split as (source name, indices into that source): official splits
    where the dataset has them, seeded per-class held-out parts of train otherwise.
    An evaluation-only set (no train) is all test."""
    if "train" not in sources:
        nothing = np.zeros(0, dtype=np.int64)
        return {"train": ("test", nothing), "val": ("test", nothing),
                "test": ("test", np.arange(len(sources["test"].labels)))}
    labels = sources["train"].labels
    if "test" not in sources:
        parts = stratified_split(labels, splits, splits["seed"])
        return {name: ("train", index) for name, index in parts.items()}
    everything = {"test": ("test", np.arange(len(sources["test"].labels)))}
    if "val" in sources:
        everything["val"] = ("val", np.arange(len(sources["val"].labels)))
        everything["train"] = ("train", np.arange(len(labels)))
    else:
        kept, held = hold_out(labels, splits["val"], splits["seed"])
        everything.update(train=("train", kept), val=("train", held))
    return everything


def files_digest(files: list[Path], full: bool) -> dict:
    """Hash of the file listing (relative path and size of every file; fast) and,
    with ``full``, of every file's content too."""
    listing, content = hashlib.sha256(), hashlib.sha256()
    common = Path(os.path.commonpath([str(f) for f in files])) if files else Path(".")
    total = 0
    for path in sorted(files):
        size = path.stat().st_size
        total += size
        listing.update(f"{path.relative_to(common)}\t{size}\n".encode())
        if full:
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    content.update(block)
    digest = {"count": len(files), "bytes": total, "listing_sha256": listing.hexdigest()}
    if full:
        digest["content_sha256"] = content.hexdigest()
    return digest


# ImageNet statistics, the normalisation of the official code for every dataset
# read from a root (computing them would decode the whole training set).
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _prepare_digits(dataset: dict) -> tuple[dict, dict]:
    images, labels = _load_digits(dataset["image_size"])
    if dataset["name"] == "digits_rotated":
        # The stand-in transfer set: a domain where rotation is a symmetry of the data.
        turns = np.random.default_rng(dataset["splits"]["seed"]).integers(0, 4, len(images))
        images = np.stack([np.rot90(image, k, axes=(1, 2)) for image, k in zip(images, turns)])
    if channels_of(dataset) == 3:
        images = np.repeat(images, 3, axis=1)
    splits = stratified_split(labels, dataset["splits"], dataset["splits"]["seed"])
    train = images[splits["train"]]
    arrays = {"images": images, "labels": labels, **{f"{s}_index": splits[s] for s in SPLITS}}
    facts = {
        "source": "sklearn.datasets.load_digits" + (
            ", each image turned by a seeded random multiple of 90 degrees"
            if dataset["name"] == "digits_rotated" else ""),
        "num_classes": int(labels.max() + 1),
        "channels": int(images.shape[1]),
        "mean": [float(m) for m in train.mean(axis=(0, 2, 3))],
        "std": [float(s) for s in train.std(axis=(0, 2, 3))],
        "class_counts": {s: np.bincount(labels[splits[s]], minlength=10).tolist() for s in SPLITS},
    }
    return arrays, facts


def _prepare_root(dataset: dict, key: str) -> tuple[dict, dict]:
    from multisym.data.datasets import open_sources

    sources = open_sources(dataset, key)
    parts = source_splits(sources, dataset["splits"])
    num_classes = sources["test" if "train" not in sources else "train"].num_classes
    arrays = {}
    for split, (source, index) in parts.items():
        arrays[f"{split}_index"] = index
        arrays[f"{split}_labels"] = sources[source].labels[index].astype(np.int64)
    if sources[parts["test"][0]].class_mask is not None:
        arrays["class_mask"] = sources[parts["test"][0]].class_mask.astype(np.int64)
    files = sorted({Path(f) for src in sources.values() for f in [*src.files, *src.metadata]})
    facts = {
        "source": f"torchvision ({', '.join(f'{k}: {type(v.dataset).__name__}' for k, v in sources.items())})",
        "root": dataset["root"],
        "split_sources": {split: source for split, (source, _) in parts.items()},
        "num_classes": int(num_classes),
        "channels": channels_of(dataset),
        "mean": list(IMAGENET_MEAN) if channels_of(dataset) == 3 else [float(np.mean(IMAGENET_MEAN))],
        "std": list(IMAGENET_STD) if channels_of(dataset) == 3 else [float(np.mean(IMAGENET_STD))],
        "class_counts": {s: np.bincount(arrays[f"{s}_labels"], minlength=num_classes).tolist() for s in SPLITS},
        "files": files_digest(files, dataset["checksum"] == "full"),
    }
    if dataset["name"] == "imagenet100":
        facts["classes"] = sources["train"].dataset.classes  # the drawn list, when the config gave a sample
    return arrays, facts


def prepare(dataset: dict, out_data: str | Path, out_manifest: str | Path, key: str = "dataset") -> dict:
    """Build the split file and its manifest from the ``dataset`` config section.

    digits: the images themselves, resized, plus split indices. A dataset read
    from a root: its root and layout are checked here (before any training can
    start), then split indices and labels are written; images stay in the root.
    ``key`` is where the section sits in the config (``transfer.datasets[0].dataset``
    for a transfer set), for the errors to name.
    """
    arrays, facts = _prepare_digits(dataset) if is_embedded(dataset["name"]) else _prepare_root(dataset, key)
    manifest = {
        "dataset": dataset["name"],
        "settings": dataset,
        "image_size": dataset["image_size"],
        **facts,
        "counts": {s: int(len(arrays[f"{s}_index"])) for s in SPLITS},
        "sha256": {key: _sha256(value) for key, value in arrays.items()},
    }
    write_npz(out_data, **arrays)
    atomic_write_text(json.dumps(manifest, indent=2) + "\n", out_manifest)
    return manifest


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


def read_verified(path: str | Path, manifest: dict, manifest_path: str | Path, step: str) -> dict[str, np.ndarray]:
    """Every array of an .npz, each checked against the manifest's sha256
    (``step`` is the rule that rebuilds the file, named in the error)."""
    try:
        arrays = read_npz(path)
    except (CorruptFileError, FileNotFoundError) as error:
        cause = error.__cause__ or error
        raise DataError(f"{path}: cannot read it ({cause}); rerun the {step} step") from cause
    for key, expected in manifest["sha256"].items():
        if key not in arrays or _sha256(arrays[key]) != expected:
            raise DataError(
                f"{path}: array {key!r} does not match the sha256 in {manifest_path}; "
                f"the file is corrupt or was changed. Delete both and rerun the {step} step"
            )
    return arrays


def load_arrays(data_path: str | Path, manifest_path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """Load every array and verify it against the manifest's sha256."""
    manifest = read_manifest(manifest_path)
    return read_verified(data_path, manifest, manifest_path, "prepare_data"), manifest


def views_from(dataset: dict) -> str:
    """Where a dataset's training views are cut from (``dataset.views_from``):
    ``square``, the decoded square (the default), or ``original``, the image
    as decoded (docs/datasets.md#views-from-the-original-image)."""
    return dataset.get("views_from") or "square"


def eval_resize(dataset: dict) -> int:
    """The shorter side every image is resized to before its centre
    ``image_size`` square is cropped (``dataset.eval_resize``, default ``image_size``)."""
    return dataset.get("eval_resize") or dataset["image_size"]


def load_splits(data_path: str | Path, manifest_path: str | Path, splits=SPLITS, decode: str = "cpu",
                device="cpu", cuts: tuple = ()):
    """{split: (images, labels)} as torch tensors from one verified read, plus
    the DatasetInfo.

    Images are float32 (N, C, S, S) in [0, 1]. For a dataset read from a root,
    each image's shorter side is resized to ``dataset.eval_resize`` (default
    S; bilinear, antialiased) and the centre S x S cropped, decoded through
    its torchvision class; a split above the in-memory limit (``streaming``)
    comes as ``StreamedImages``, decoded when indexed. ``decode`` says where
    JPEG files are decoded (``cpu``, or ``device``: on ``device``;
    ``streaming``). ``cuts`` (``cuts.Cut``), for a dataset whose views are
    cut from the original image, makes the train split a split of originals
    indexed by ``cut(rows, seeds)`` (``streaming.cut_split``); elsewhere
    they are ignored and the views are cut from the square on the device.
    """
    import torch

    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise ValueError(f"unknown split(s) {unknown}; known: {SPLITS}")
    arrays, manifest = load_arrays(data_path, manifest_path)
    loaded = {}
    for split in splits:
        index = arrays[f"{split}_index"]
        if is_embedded(manifest["dataset"]):
            loaded[split] = torch.from_numpy(arrays["images"][index]), torch.from_numpy(arrays["labels"][index])
        else:
            images = _decode_split(manifest, split, index, decode, device,
                                   cuts if split == "train" and views_from(manifest["settings"]) == "original" else ())
            loaded[split] = images, torch.from_numpy(arrays[f"{split}_labels"])
    return loaded, info(manifest)


def load_split(data_path: str | Path, manifest_path: str | Path, split: str, decode: str = "cpu", device="cpu",
               cuts: tuple = ()):
    """(images, labels) of one split as torch tensors, plus the DatasetInfo."""
    loaded, dataset_info = load_splits(data_path, manifest_path, (split,), decode, device, cuts)
    return (*loaded[split], dataset_info)


def _decode_split(manifest: dict, split: str, index: np.ndarray, decode: str, device, cuts: tuple):
    from multisym.data.datasets import open_sources
    from multisym.data.decoders import decoder_for
    from multisym.data.streaming import cut_split, decode_split

    source = open_sources(manifest["settings"])[manifest["split_sources"][split]]
    decoder = decoder_for(source, index, manifest["image_size"], manifest["channels"], decode,
                          eval_resize(manifest["settings"]), tuple(cuts))
    return cut_split(decoder, device) if cuts else decode_split(decoder, device)
