"""Tests for multisym.data.splits: the digits dataset, its stratified splits, manifests."""

import hashlib
import json

import numpy as np
import pytest
import torch

from multisym.data.splits import (
    SPLITS,
    DataError,
    DatasetInfo,
    load_arrays,
    load_split,
    prepare,
    read_manifest,
)
from multisym.logits import logits_of, write_logits

N_DIGITS = 1797
FRACTIONS = {"val": 0.15, "test": 0.15}
SHARES = {"train": 0.7, **FRACTIONS}


def dataset_section(seed=0, image_size=16):
    return {"name": "digits", "image_size": image_size, "splits": {**FRACTIONS, "seed": seed}}


def sha256(array):
    """The manifest's documented digest: sha256 over dtype, shape, then the bytes."""
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    folder = tmp_path_factory.mktemp("digits")
    data, manifest_path = folder / "data.npz", folder / "manifest.json"
    manifest = prepare(dataset_section(), data, manifest_path)
    with np.load(data) as archive:
        arrays = {key: archive[key] for key in archive.files}
    return data, manifest_path, manifest, arrays


def test_counts(prepared):
    _, manifest_path, manifest, arrays = prepared
    counts = {s: len(arrays[f"{s}_index"]) for s in SPLITS}
    assert counts == {"train": 1257, "val": 270, "test": 270}
    assert manifest["counts"] == counts
    assert read_manifest(manifest_path) == manifest  # what was written is what was returned


def test_splits_disjoint_and_cover_everything(prepared):
    arrays = prepared[3]
    index = {s: arrays[f"{s}_index"] for s in SPLITS}
    sets = {s: set(index[s].tolist()) for s in SPLITS}
    for s in SPLITS:
        assert len(sets[s]) == len(index[s])  # no duplicates
        assert np.all(np.diff(index[s]) > 0)  # sorted
        assert index[s].dtype.kind == "i"
    assert not sets["train"] & sets["val"]
    assert not sets["train"] & sets["test"]
    assert not sets["val"] & sets["test"]
    assert sets["train"] | sets["val"] | sets["test"] == set(range(N_DIGITS))


def test_splits_are_stratified(prepared):
    _, _, manifest, arrays = prepared
    labels = arrays["labels"]
    totals = np.bincount(labels, minlength=10)
    assert len(totals) == 10 and totals.sum() == N_DIGITS
    for split in SPLITS:
        counts = np.bincount(labels[arrays[f"{split}_index"]], minlength=10)
        assert np.all(counts > 0), split
        expected = totals * SHARES[split]
        assert np.all(np.abs(counts - expected) <= 2), (split, counts, expected)
        assert manifest["class_counts"][split] == counts.tolist()


def test_images_and_labels(prepared):
    _, _, manifest, arrays = prepared
    images, labels = arrays["images"], arrays["labels"]
    assert images.dtype == np.float32
    assert images.shape == (N_DIGITS, 1, 16, 16)
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert images.max() > 0.5  # not all dark: values were scaled from 0..16, not clipped away
    assert labels.dtype == np.int64 and labels.shape == (N_DIGITS,)
    assert set(np.unique(labels).tolist()) == set(range(10))
    assert manifest["num_classes"] == 10
    assert manifest["channels"] == 1
    assert manifest["image_size"] == 16
    train = images[arrays["train_index"]]
    assert manifest["mean"][0] == pytest.approx(float(train.mean()), rel=1e-5)
    assert manifest["std"][0] == pytest.approx(float(train.std()), rel=1e-5)


def test_manifest_sha256_matches_arrays(prepared):
    data, manifest_path, manifest, arrays = prepared
    on_disk = json.loads(manifest_path.read_text())
    assert set(on_disk["sha256"]) == {"images", "labels", "train_index", "val_index", "test_index"}
    for key, digest in on_disk["sha256"].items():
        assert digest == sha256(arrays[key]), key
    assert on_disk["settings"] == dataset_section()
    # and the checked reader accepts them
    loaded, manifest_again = load_arrays(data, manifest_path)
    assert manifest_again == on_disk
    for key in arrays:
        assert np.array_equal(loaded[key], arrays[key])


def test_same_seed_same_splits_other_seed_different(prepared, tmp_path):
    arrays = prepared[3]
    prepare(dataset_section(seed=0), tmp_path / "a.npz", tmp_path / "a.json")
    prepare(dataset_section(seed=1), tmp_path / "b.npz", tmp_path / "b.json")
    with np.load(tmp_path / "a.npz") as same, np.load(tmp_path / "b.npz") as other:
        for split in SPLITS:
            key = f"{split}_index"
            assert np.array_equal(same[key], arrays[key])
        assert not np.array_equal(other["train_index"], arrays["train_index"])
        assert not np.array_equal(other["test_index"], arrays["test_index"])
        # the images themselves do not depend on the split seed
        assert np.array_equal(other["images"], arrays["images"])
    assert (tmp_path / "a.npz").read_bytes() == prepared[0].read_bytes()


def test_load_split_returns_tensors(prepared):
    data, manifest_path, _, arrays = prepared
    for split in SPLITS:
        images, labels, info = load_split(data, manifest_path, split)
        index = arrays[f"{split}_index"]
        assert isinstance(images, torch.Tensor) and isinstance(labels, torch.Tensor)
        assert images.dtype == torch.float32 and labels.dtype == torch.int64
        assert images.shape == (len(index), 1, 16, 16)
        assert labels.shape == (len(index),)
        assert torch.equal(labels, torch.from_numpy(arrays["labels"][index]))
        assert torch.equal(images, torch.from_numpy(arrays["images"][index]))
        assert isinstance(info, DatasetInfo)
        assert info.name == "digits" and info.num_classes == 10
        assert info.channels == 1 and info.image_size == 16
        assert len(info.mean) == 1 and len(info.std) == 1


def test_load_split_unknown_split(prepared):
    data, manifest_path, _, _ = prepared
    with pytest.raises(ValueError, match="nope"):
        load_split(data, manifest_path, "nope")


def test_changed_image_is_detected(prepared, tmp_path):
    _, manifest_path, _, arrays = prepared
    changed = {key: value.copy() for key, value in arrays.items()}
    flat = changed["images"].view(np.uint8).reshape(-1)
    flat[12345] ^= 0x01  # one byte of one image
    assert not np.array_equal(changed["images"], arrays["images"])
    bad = tmp_path / "data.npz"
    np.savez(bad, **changed)
    with pytest.raises(DataError) as info:
        load_arrays(bad, manifest_path)
    assert str(bad) in str(info.value)
    assert "images" in str(info.value)
    with pytest.raises(DataError):
        load_split(bad, manifest_path, "train")


def test_changed_split_index_is_detected(prepared, tmp_path):
    _, manifest_path, _, arrays = prepared
    changed = dict(arrays)
    changed["val_index"] = arrays["val_index"][::-1].copy()
    bad = tmp_path / "data.npz"
    np.savez(bad, **changed)
    with pytest.raises(DataError, match="val_index"):
        load_arrays(bad, manifest_path)


def test_missing_array_is_detected(prepared, tmp_path):
    _, manifest_path, _, arrays = prepared
    partial = {k: v for k, v in arrays.items() if k != "labels"}
    bad = tmp_path / "data.npz"
    np.savez(bad, **partial)
    with pytest.raises(DataError, match="labels"):
        load_arrays(bad, manifest_path)


def test_unreadable_data_and_manifest(prepared, tmp_path):
    data, manifest_path, _, _ = prepared
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not an npz file")
    with pytest.raises(DataError) as info:
        load_arrays(garbage, manifest_path)
    assert str(garbage) in str(info.value)
    broken = tmp_path / "manifest.json"
    broken.write_text("{ not json")
    with pytest.raises(DataError) as info:
        load_arrays(data, broken)
    assert str(broken) in str(info.value)
    with pytest.raises(DataError):
        read_manifest(tmp_path / "absent.json")


def test_dataset_without_root_fails_naming_the_key(tmp_path):
    from multisym.data.datasets import DatasetRootError

    section = {**dataset_section(), "name": "cifar10", "root": None, "checksum": "listing"}
    with pytest.raises(DatasetRootError) as info:
        prepare(section, tmp_path / "d.npz", tmp_path / "m.json")
    assert "dataset.root" in str(info.value)
    assert "cifar-10-batches-py" in str(info.value)
    assert not (tmp_path / "d.npz").exists()


def test_native_size_keeps_original_pixels(tmp_path):
    from sklearn.datasets import load_digits

    prepare(dataset_section(image_size=8), tmp_path / "d.npz", tmp_path / "m.json")
    with np.load(tmp_path / "d.npz") as archive:
        images = archive["images"]
    assert images.shape == (N_DIGITS, 1, 8, 8)
    expected = load_digits().images.astype(np.float32) / 16.0
    assert np.allclose(images[:, 0], expected)


def test_reshaped_array_fails_the_manifest_check(prepared, tmp_path):
    data_path, manifest_path, _, arrays = prepared
    changed = dict(arrays)
    changed["images"] = arrays["images"].reshape(arrays["images"].shape[0], 16, 16, 1)
    bad = tmp_path / "reshaped.npz"
    np.savez(bad, **changed)
    with pytest.raises(DataError, match="reshaped.npz"):
        load_arrays(bad, manifest_path)


def test_digits_rotated_turns_every_image_by_quarter_turns(prepared, tmp_path):
    """The stand-in transfer set: each image is one of the four rotations of the
    same digit, with a seeded spread of turns, and the same labels and splits."""
    _, _, manifest, arrays = prepared
    rotated = {**dataset_section(), "name": "digits_rotated"}
    rotated_manifest = prepare(rotated, tmp_path / "r.npz", tmp_path / "r.json")
    with np.load(tmp_path / "r.npz") as archive:
        turned = {key: archive[key] for key in archive.files}
    assert np.array_equal(turned["labels"], arrays["labels"])
    assert np.array_equal(turned["test_index"], arrays["test_index"])
    turns = []
    for original, image in zip(arrays["images"], turned["images"]):
        matches = [k for k in range(4) if np.array_equal(np.rot90(original, k, axes=(1, 2)), image)]
        assert matches, "an image is not a quarter-turn of its digit"
        turns.append(matches[0])
    counts = np.bincount(turns, minlength=4)
    assert counts.min() > 0.2 * len(turns)  # all four turns, roughly uniform
    assert "turned" in rotated_manifest["source"] and rotated_manifest["channels"] == 1


def test_channels_three_repeats_grey_digits(tmp_path):
    manifest = prepare({**dataset_section(), "channels": 3}, tmp_path / "c.npz", tmp_path / "c.json")
    images, _, info = load_split(tmp_path / "c.npz", tmp_path / "c.json", "train")
    assert manifest["channels"] == info.channels == 3 and images.shape[1] == 3
    assert torch.equal(images[:, 0], images[:, 1]) and torch.equal(images[:, 0], images[:, 2])
    assert len(info.mean) == 3


def test_root_dataset_in_one_channel_is_its_luma(tmp_path):
    """A transfer set read from a root, given to grey members: ITU-R 601 luma of
    its RGB decode (within uint8 rounding)."""
    import dataset_fixtures as fx

    root = fx.write_food101(tmp_path / "food", classes=2, per_class=4)
    section = {"name": "food101", "root": str(root), "image_size": 12, "checksum": "listing",
               "classes": None, "splits": {"val": 0.25, "test": None, "seed": 0}}
    decoded = {}
    for channels in (3, 1):
        folder = tmp_path / f"c{channels}"
        prepare({**section, "channels": channels}, folder / "d.npz", folder / "m.json")
        decoded[channels], _, info = load_split(folder / "d.npz", folder / "m.json", "train")
        assert info.channels == channels and len(info.mean) == channels
    luma = (torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1) * decoded[3]).sum(1, keepdim=True)
    assert decoded[1].shape == luma.shape
    assert (decoded[1] - luma).abs().max() <= 1.5 / 255


def test_logits_are_stored_as_float16_gaps_to_the_row_maximum(tmp_path):
    rng = np.random.default_rng(0)
    logits = (10 * rng.standard_normal((50, 7)) + 30).astype(np.float32)
    logits[0, :2] = [100.0, 99.999]  # a near tie at the top: float16 of the raw logits would make it one
    labels = rng.integers(0, 7, 50)
    write_logits(tmp_path / "small.npz", test_logits=logits, test_labels=labels)
    stored = dict(np.load(tmp_path / "small.npz"))
    assert stored["test_logits"].dtype == np.float16 and stored["test_logit_max"].dtype == np.float32
    np.testing.assert_array_equal(stored["test_logits"].max(axis=1), 0.0)  # the top class exactly
    np.testing.assert_array_equal(stored["test_labels"], labels)
    back = logits_of(stored, "test")
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back.argmax(axis=1), logits.argmax(axis=1))
    assert back[0, 0] - back[0, 1] == pytest.approx(0.001, rel=1e-2)
    # each gap within 2^-11 of itself: a logit of 30 stored raw would move by up to 0.016
    np.testing.assert_allclose(back - back.max(1, keepdims=True), logits - logits.max(1, keepdims=True),
                               rtol=2.0**-11, atol=1e-6)
    # a gap beyond ±65,504 would become inf: that array keeps float32
    large = logits.copy()
    large[3, 2] = -7e4
    write_logits(tmp_path / "large.npz", test_logits=large, val_logits=logits)
    stored = dict(np.load(tmp_path / "large.npz"))
    assert stored["test_logits"].dtype == np.float32 and stored["val_logits"].dtype == np.float16
    np.testing.assert_allclose(logits_of(stored, "test"), large, rtol=1e-6, atol=1e-5)
    # a diverged model's NaN rows stay NaN
    logits[0] = np.nan
    write_logits(tmp_path / "nan.npz", test_logits=logits)
    assert np.isnan(logits_of(dict(np.load(tmp_path / "nan.npz")), "test")[0]).all()
