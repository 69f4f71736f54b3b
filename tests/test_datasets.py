"""Tests for multisym.data.datasets: each loader reads a small copy of its dataset,
written in the release's own layout (tests/dataset_fixtures.py), with the
real torchvision class; bad roots raise DatasetRootError naming the config
key and the expected layout, and nothing is ever downloaded."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import dataset_fixtures as fx
from multisym.data import datasets
from multisym.data.datasets import DatasetRootError, imagenet_classes, imagenet_r, imagenet_v2, open_sources
from multisym.errors import UserError

PRIMARY = ("cifar10", "cifar100", "mnist", "fashion_mnist", "flowers102", "food101", "inat2019", "imagenet",
           "imagenet100")
SHIFT = ("imagenet_v2", "imagenet_r")
V2_KEY, R_KEY = "shift.imagenet_v2", "shift.imagenet_r"

# Hard-coded pieces of each expected layout, independent of datasets.LAYOUTS.
LAYOUT_TEXT = {
    "cifar10": "cifar-10-batches-py",
    "cifar100": "cifar-100-python",
    "mnist": "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte",
    "fashion_mnist": "FashionMNIST/raw/{train,t10k}",
    "flowers102": "flowers-102/{jpg/image_00001.jpg",
    "food101": "food-101/{images/<class>/<id>.jpg",
    "inat2019": "2019/<super category>/<category id>",
    "imagenet": "{train,val}/<wnid>/<image>.JPEG",
    "imagenet100": "{train,val}/<wnid>/<image>.JPEG",
    "imagenet_v2": "<class index 0..999>/<image>.jpeg",
    "imagenet_r": "<root>/<wnid>/<image>.jpg",
}


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch):
    """Any download path torchvision could take fails the test outright."""
    from torchvision.datasets import cifar, flowers102, food101, inaturalist, utils

    def refuse(*args, **kwargs):
        raise AssertionError(f"a download was attempted: {args} {kwargs}")

    for module in (cifar, flowers102, food101, inaturalist, utils):
        for name in ("download_and_extract_archive", "download_url", "download_file_from_google_drive"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, refuse)


@pytest.fixture
def integrity(monkeypatch):
    fx.patch_integrity_checks(monkeypatch)


# ------------------------------------------------------------- helpers
def check_source(source, length: int, num_classes: int) -> None:
    assert isinstance(source, datasets.Source)
    assert len(source.dataset) == length
    assert source.labels.shape == (length,)
    assert np.issubdtype(source.labels.dtype, np.integer)
    assert source.num_classes == num_classes
    assert source.labels.min() >= 0 and source.labels.max() < num_classes
    assert source.files and all(Path(f).is_file() for f in source.files)


def check_items(source, indices=None, pattern: bool = True) -> None:
    """dataset[i] is (PIL image, int label) with label == labels[i]; with
    ``pattern``, the image's written class pattern agrees with the label."""
    n = len(source.dataset)
    for i in indices if indices is not None else sorted({0, 1, n // 2, n - 1}):
        image, label = source.dataset[i]
        assert isinstance(image, Image.Image)
        assert isinstance(label, int) and not isinstance(label, bool)
        assert label == source.labels[i]
        if pattern:
            assert fx.pattern_label(image) == label % fx.PATTERN_CODES


def file_patterns(files) -> list[int]:
    out = []
    for f in files:
        with Image.open(f) as image:
            out.append(fx.pattern_label(image))
    return out


def counts(labels, values) -> dict[int, int]:
    return {int(v): int(np.sum(labels == v)) for v in values}


# --------------------------------------------------------------- CIFAR
@pytest.mark.parametrize(
    "name, writer, classes, per_class, total_classes, files",
    [
        ("cifar10", fx.write_cifar10, 3, 5, 10,
         {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}),
        ("cifar100", fx.write_cifar100, 4, 3, 100, {"train": ["train"], "test": ["test"]}),
    ],
)
def test_cifar(tmp_path, integrity, name, writer, classes, per_class, total_classes, files):
    root = writer(tmp_path, classes=classes, per_class=per_class, seed=1)
    sources = open_sources({"name": name, "root": str(root)})
    assert set(sources) == {"train", "test"}
    for split, source in sources.items():
        check_source(source, classes * per_class, total_classes)
        assert [Path(f).name for f in source.files] == files[split]
        assert counts(source.labels, range(classes)) == {c: per_class for c in range(classes)}
        # Every sample's stored pixels carry the class written with them.
        decoded = [fx.pattern_label(row) for row in source.dataset.data]
        assert decoded == source.labels.tolist()
        check_items(source)
    assert len(sources["train"].dataset.classes) == total_classes


def test_cifar10_label_names_all_present(tmp_path, integrity):
    source = open_sources({"name": "cifar10", "root": str(fx.write_cifar10(tmp_path, classes=2, per_class=3))})["train"]
    assert source.dataset.classes == fx.CIFAR10_NAMES


def test_cifar100_uses_fine_labels(tmp_path, integrity):
    # Classes 5..9 share coarse label 1, so fine and coarse labels differ.
    source = open_sources(
        {"name": "cifar100", "root": str(fx.write_cifar100(tmp_path, classes=8, per_class=2))})["test"]
    assert sorted(set(source.labels.tolist())) == list(range(8))
    assert source.dataset.classes == fx.CIFAR100_NAMES


def test_a_cifar_batch_with_another_md5_names_the_file(tmp_path):
    """With torchvision's md5 check on (no ``integrity`` patch here), a batch
    file that is not the release's (re-packed, as every fixture file is) is
    named with the key to fix, not torchvision's advice to download."""
    root = fx.write_cifar10(tmp_path)
    with pytest.raises(DatasetRootError) as error:
        open_sources({"name": "cifar10", "root": str(root)})
    message = str(error.value)
    assert "'dataset.root'" in message and "data_batch_1" in message and "md5" in message
    assert "download=True" not in message


def test_a_truncated_cifar_batch_names_the_file(tmp_path, integrity):
    root = fx.write_cifar100(tmp_path)
    train = root / "cifar-100-python" / "train"
    train.write_bytes(train.read_bytes()[: train.stat().st_size // 2])
    with pytest.raises(DatasetRootError) as error:
        open_sources({"name": "cifar100", "root": str(root)}, key="transfer.datasets[1].dataset")
    message = str(error.value)
    assert "'transfer.datasets[1].dataset.root'" in message and str(train) in message and "pickle" in message


def test_cifar_missing_batch(tmp_path, integrity):
    root = fx.write_cifar10(tmp_path)
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DatasetRootError) as error:
        open_sources({"name": "cifar10", "root": str(root)})
    assert "'dataset.root'" in str(error.value) and "data_batch_3" in str(error.value)


# ------------------------------------------------------ MNIST, FashionMNIST
@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_idx_files(tmp_path, name, folder):
    root = fx.write_mnist(tmp_path, folder=folder, classes=3, per_class=4, seed=2)
    sources = open_sources({"name": name, "root": str(root)})
    assert set(sources) == {"train", "test"}
    for split, source in sources.items():
        check_source(source, 12, 10)
        prefix = "train" if split == "train" else "t10k"
        assert [Path(f).name for f in source.files] == [f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"]
        assert counts(source.labels, range(3)) == {c: 4 for c in range(3)}
        image, label = source.dataset[0]
        assert image.mode == "L" and image.size == (8, 8)
        # the bright block sits in the cell of the class written with the image
        cells = np.asarray(image, dtype=float).reshape(4, 2, 4, 2).mean(axis=(1, 3))
        assert int(np.argmax(cells)) == label


def test_mnist_missing_labels_file(tmp_path):
    root = fx.write_mnist(tmp_path)
    (root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetRootError, match="t10k-labels-idx1-ubyte"):
        open_sources({"name": "mnist", "root": str(root)})


@pytest.mark.parametrize("damage", ["magic", "length"])
@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_a_damaged_idx_file_names_the_file(tmp_path, name, folder, damage):
    root = fx.write_mnist(tmp_path, folder=folder)
    images = root / folder / "raw" / "t10k-images-idx3-ubyte"
    data = images.read_bytes()
    images.write_bytes(b"\x00\x00\x07\x03" + data[4:] if damage == "magic" else data[:-5])
    with pytest.raises(DatasetRootError) as error:
        open_sources({"name": name, "root": str(root)})
    message = str(error.value)
    assert "'dataset.root'" in message and str(images) in message and "not a valid idx file (" in message
    assert "AssertionError: )" not in message


def test_a_grey_dataset_is_prepared_with_one_channel(tmp_path):
    import yaml

    from conftest import SMOKE
    from multisym.config import resolve
    from multisym.data.splits import load_split, prepare

    root = fx.write_mnist(tmp_path / "fm", folder="FashionMNIST", classes=3, per_class=6)
    scale = yaml.safe_load(SMOKE.read_text())
    scale["dataset"] = {"name": "fashion_mnist", "root": str(root), "image_size": 8,
                        "splits": {"val": 0.2, "test": None}}
    manifest = prepare(resolve(scale)["dataset"], tmp_path / "d.npz", tmp_path / "d.json")
    assert manifest["channels"] == 1 and manifest["counts"]["test"] == 18
    images, labels, info = load_split(tmp_path / "d.npz", tmp_path / "d.json", "test")
    assert tuple(images.shape) == (18, 1, 8, 8) and info.num_classes == 10


# ------------------------------------------------------------- Flowers
def test_flowers102(tmp_path, integrity):
    classes, per_class = 3, 2
    kinds = fx.flowers_labels(classes)
    assert kinds[0] == 0 and kinds[-1] == 101  # both ends of the 1-based 1..102 range are written
    root = fx.write_flowers102(tmp_path, classes=classes, per_class=per_class, seed=2)
    sources = open_sources({"name": "flowers102", "root": str(root)})
    assert set(sources) == {"train", "val", "test"}
    seen: set[str] = set()
    for source in sources.values():
        check_source(source, len(kinds) * per_class, 102)
        assert counts(source.labels, kinds) == {k: per_class for k in kinds}
        assert all(Path(f).parent == root / "flowers-102" / "jpg" for f in source.files)
        # The label of each file is the class drawn into it (labels were stored 1-based).
        assert file_patterns(source.files) == [int(v) % fx.PATTERN_CODES for v in source.labels]
        names = {Path(f).name for f in source.files}
        assert not names & seen
        seen |= names
        check_items(source)
    assert seen == {f"image_{i:05d}.jpg" for i in range(1, 3 * len(kinds) * per_class + 1)}


def test_flowers102_missing_setid(tmp_path, integrity):
    root = fx.write_flowers102(tmp_path)
    (root / "flowers-102" / "setid.mat").unlink()
    with pytest.raises(DatasetRootError) as error:
        open_sources({"name": "flowers102", "root": str(root)})
    assert "'dataset.root'" in str(error.value) and "setid.mat" in str(error.value)


def test_a_malformed_flowers_label_file_names_the_file(tmp_path, integrity):
    root = fx.write_flowers102(tmp_path)
    labels = root / "flowers-102" / "imagelabels.mat"
    labels.write_bytes(b"MATLAB 5.0 MAT-file, not really" + bytes(40))
    with pytest.raises(DatasetRootError) as error:
        open_sources({"name": "flowers102", "root": str(root)})
    message = str(error.value)
    assert "'dataset.root'" in message and str(labels) in message and "MATLAB" in message


# ---------------------------------------------------------------- Food
def test_food101(tmp_path):
    classes, per_class = 3, 2
    root = fx.write_food101(tmp_path, classes=classes, per_class=per_class, seed=3)
    names = fx.food_names(classes)
    sources = open_sources({"name": "food101", "root": str(root)})
    assert set(sources) == {"train", "test"}
    assert not {str(f) for f in sources["train"].files} & {str(f) for f in sources["test"].files}
    for source in sources.values():
        check_source(source, classes * per_class, classes)
        assert source.dataset.classes == names
        assert [names.index(Path(f).parent.name) for f in source.files] == source.labels.tolist()
        assert all(Path(f).parent.parent == root / "food-101" / "images" for f in source.files)
        assert file_patterns(source.files) == source.labels.tolist()
        check_items(source)


def test_food101_missing_test_split(tmp_path):
    root = fx.write_food101(tmp_path)
    (root / "food-101" / "meta" / "test.json").unlink()
    with pytest.raises(DatasetRootError) as error:
        open_sources({"name": "food101", "root": str(root)})
    assert "'dataset.root'" in str(error.value) and "meta/test.json" in str(error.value)


@pytest.mark.parametrize("content", ["{\"apple_pie\": [\"apple_pie/1\"", "[1, 2, 3]"])
def test_a_malformed_food_meta_file_names_the_file(tmp_path, content):
    root = fx.write_food101(tmp_path)
    meta = root / "food-101" / "meta" / "train.json"
    meta.write_text(content)
    with pytest.raises(DatasetRootError) as error:
        open_sources({"name": "food101", "root": str(root)})
    assert "'dataset.root'" in str(error.value) and str(meta) in str(error.value)


# --------------------------------------------------------- iNaturalist
def test_inat2019(tmp_path, monkeypatch):
    classes, per_class = 12, 2  # ids 10 and 11 sort before 2 as text
    root = fx.write_inat2019(tmp_path, classes=classes, per_class=per_class, seed=4)
    sources = open_sources({"name": "inat2019", "root": str(root)})
    assert set(sources) == {"train"}
    source = sources["train"]
    check_source(source, classes * per_class, classes)
    # Labels are the numeric category ids of the folders ...
    assert [int(Path(f).parent.name) for f in source.files] == source.labels.tolist()
    assert [Path(f).parent.parent.name for f in source.files] == [
        fx.inat_super_category(int(c), classes) for c in source.labels
    ]
    assert counts(source.labels, range(classes)) == {c: per_class for c in range(classes)}
    assert file_patterns(source.files) == source.labels.tolist()
    # ... and the sample order is sorted, not the file system's.
    assert source.dataset.index == sorted(source.dataset.index)
    assert np.all(np.diff(source.labels) >= 0)
    check_items(source, range(len(source.dataset)))

    real_listdir = os.listdir
    with monkeypatch.context() as patch:
        patch.setattr(os, "listdir", lambda path=".": list(reversed(real_listdir(path))))
        again = open_sources({"name": "inat2019", "root": str(root)})["train"]
    assert again.files == source.files
    assert again.labels.tolist() == source.labels.tolist()


def test_inat2019_without_2019_folder(tmp_path):
    root = fx.write_inat2019(tmp_path / "data")
    (root / "2019").rename(root / "2018")
    with pytest.raises(DatasetRootError) as error:
        open_sources({"name": "inat2019", "root": str(root)})
    assert "'dataset.root'" in str(error.value) and "2019" in str(error.value)


def test_a_file_where_an_inat_category_belongs_is_named(tmp_path):
    root = fx.write_inat2019(tmp_path)
    stray = next((root / "2019").iterdir()) / "notes.txt"
    stray.write_text("not a category")
    with pytest.raises(DatasetRootError) as error:
        open_sources({"name": "inat2019", "root": str(root)})
    assert "'dataset.root'" in str(error.value) and "notes.txt" in str(error.value)


# ------------------------------------------------------------ ImageNet
def test_imagenet(tmp_path):
    wnids = fx.fake_wnids(4)
    written = [wnids[2], wnids[0], wnids[3], wnids[1]]  # any order; indices follow sorted wnids
    root = fx.write_imagenet(tmp_path, written, per_class=2, seed=5)
    sources = open_sources({"name": "imagenet", "root": str(root)})
    assert set(sources) == {"train", "test"}
    for part, source in (("train", sources["train"]), ("val", sources["test"])):
        check_source(source, 4 * 2, 4)
        assert all(Path(f).parent.parent == root / part for f in source.files)
        assert [wnids.index(Path(f).parent.name) for f in source.files] == source.labels.tolist()
        assert file_patterns(source.files) == source.labels.tolist()
        check_items(source)


def test_imagenet100_keeps_configured_classes(tmp_path):
    wnids = fx.fake_wnids(7)
    root = fx.write_imagenet(tmp_path, wnids, per_class=2, seed=6)
    configured = [wnids[5], wnids[1], wnids[3]]  # the config's order is not the index order
    order = sorted(configured)
    sources = open_sources({"name": "imagenet100", "root": str(root), "classes": configured})
    assert set(sources) == {"train", "test"}
    for source in sources.values():
        check_source(source, 3 * 2, 3)
        assert source.dataset.classes == order
        parents = [Path(f).parent.name for f in source.files]
        assert set(parents) == set(configured)  # the four extra class folders are ignored
        assert [order.index(p) for p in parents] == source.labels.tolist()
        assert counts(source.labels, range(3)) == {0: 2, 1: 2, 2: 2}
        check_items(source, pattern=False)  # patterns encode the index among all 7 written


def test_imagenet100_needs_classes(tmp_path):
    root = fx.write_imagenet(tmp_path, fx.fake_wnids(2), per_class=1)
    for spec in ({"name": "imagenet100", "root": str(root)},
                 {"name": "imagenet100", "root": str(root), "classes": []}):
        with pytest.raises(DatasetRootError) as error:
            open_sources(spec)
        assert "'dataset.classes'" in str(error.value)
        assert datasets.LAYOUTS["imagenet100"] in str(error.value)


def test_imagenet100_missing_class_folder(tmp_path):
    wnids = fx.fake_wnids(3)
    root = fx.write_imagenet(tmp_path, wnids[:2], per_class=1)
    with pytest.raises(DatasetRootError) as error:
        open_sources({"name": "imagenet100", "root": str(root), "classes": wnids})
    assert "'dataset.root'" in str(error.value) and wnids[2] in str(error.value)


def test_an_empty_imagenet_class_folder_is_named(tmp_path):
    wnids = fx.fake_wnids(3)
    root = fx.write_imagenet(tmp_path, wnids, per_class=1)
    for image in (root / "val" / wnids[1]).iterdir():
        image.unlink()
    with pytest.raises(DatasetRootError) as error:
        open_sources({"name": "imagenet", "root": str(root)}, key="transfer.datasets[0].dataset")
    message = str(error.value)
    assert "'transfer.datasets[0].dataset.root'" in message and wnids[1] in message


def test_a_damaged_release_stops_prepare_data_without_a_traceback(tmp_path):
    """The command a workflow job runs: exit status 2, one message naming the
    key and the file, no Python traceback (torchvision's md5 check is on)."""
    import json
    import subprocess
    import sys

    root = fx.write_cifar10(tmp_path / "cifar")
    spec = {"name": "cifar10", "root": str(root), "image_size": 32, "seed": 0,
            "splits": {"val_fraction": 0.1}}
    done = subprocess.run(
        [sys.executable, "-c", "from multisym.cli import main; main()", "prepare-data",
         "--dataset-json", json.dumps(spec), "--key", "transfer.datasets[2].dataset",
         "--out-data", str(tmp_path / "d.npz"), "--out-manifest", str(tmp_path / "m.json")],
        capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "data_batch_1" in done.stderr
    assert "config key 'transfer.datasets[2].dataset.root'" in done.stderr
    assert not (tmp_path / "d.npz").exists()


def test_imagenet_classes(tmp_path):
    wnids = fx.fake_wnids(5)
    root = fx.write_imagenet(tmp_path, [wnids[4], wnids[0], wnids[2], wnids[1], wnids[3]], per_class=1)
    (root / "train" / "LOC_synset_mapping.txt").write_text("not a class folder\n")
    assert imagenet_classes(root) == wnids
    assert imagenet_classes(str(root)) == wnids


# ----------------------------------------------------------- shift sets
def test_imagenet_v2_maps_folders_to_class_indices(tmp_path):
    indices = (0, 1, 2, 10, 100, 999)
    root = fx.write_imagenet_v2(tmp_path, "matched-frequency", indices, per_class=2, seed=7)
    source = imagenet_v2({"name": "imagenet_v2", "root": str(root), "variant": "matched-frequency"}, V2_KEY)
    check_source(source, len(indices) * 2, 1000)
    assert [int(Path(f).parent.name) for f in source.files] == source.labels.tolist()
    assert counts(source.labels, indices) == {k: 2 for k in indices}
    for folder in ("10", "100"):  # text order would make these 3 and 4
        labels = {int(label) for f, label in zip(source.files, source.labels) if Path(f).parent.name == folder}
        assert labels == {int(folder)}
    assert file_patterns(source.files) == [int(v) % fx.PATTERN_CODES for v in source.labels]
    check_items(source, range(len(source.dataset)))


def test_imagenet_v2_wrong_variant(tmp_path):
    root = fx.write_imagenet_v2(tmp_path, "matched-frequency", (0, 1), per_class=1)
    with pytest.raises(DatasetRootError) as error:
        imagenet_v2({"name": "imagenet_v2", "root": str(root), "variant": "threshold-0.7"}, V2_KEY)
    message = str(error.value)
    assert f"'{V2_KEY}.variant'" in message and "threshold-0.7" in message
    assert datasets.LAYOUTS["imagenet_v2"] in message


@pytest.mark.parametrize("stray", ["1000", "extra", "-1"])
def test_imagenet_v2_rejects_non_index_folders(tmp_path, stray):
    root = fx.write_imagenet_v2(tmp_path, "v", (0, 5), per_class=1)
    (root / "v" / stray).mkdir()
    with pytest.raises(DatasetRootError) as error:
        imagenet_v2({"name": "imagenet_v2", "root": str(root), "variant": "v"}, V2_KEY)
    assert f"'{V2_KEY}.root'" in str(error.value) and stray in str(error.value)


@pytest.mark.parametrize("shuffle", [False, True])
def test_imagenet_r_labels_in_1000_way_order(tmp_path, shuffle):
    wnids = fx.fake_wnids(1000)
    if shuffle:  # labels must be positions in the order given, whatever it is
        wnids = [wnids[i] for i in np.random.default_rng(8).permutation(1000)]
    subset = [wnids[700], wnids[3], wnids[999], wnids[0], wnids[41]]
    root = fx.write_imagenet_r(tmp_path, subset, per_class=2, seed=8)
    source, mask = imagenet_r({"name": "imagenet_r", "root": str(root)}, R_KEY, wnids)
    check_source(source, len(subset) * 2, 1000)
    assert [wnids.index(Path(f).parent.name) for f in source.files] == source.labels.tolist()
    assert mask.tolist() == [0, 3, 41, 700, 999]
    assert set(source.labels.tolist()) == set(mask.tolist())
    check_items(source, pattern=False)  # patterns encode the position in subset
    by_position = {w: i for i, w in enumerate(subset)}
    assert file_patterns(source.files) == [by_position[Path(f).parent.name] for f in source.files]


def test_imagenet_r_unknown_wnid(tmp_path):
    wnids = fx.fake_wnids(1000)
    root = fx.write_imagenet_r(tmp_path, [wnids[1], "n99999999"], per_class=1)
    with pytest.raises(DatasetRootError) as error:
        imagenet_r({"name": "imagenet_r", "root": str(root)}, R_KEY, wnids)
    assert f"'{R_KEY}.root'" in str(error.value) and "n99999999" in str(error.value)


# -------------------------------------------------------------- errors
def open_dataset(name: str, root):
    """Open ``name`` from ``root`` the way the workflow would; returns the root key."""
    if name in SHIFT:
        key = V2_KEY if name == "imagenet_v2" else R_KEY
        spec = {"name": name, "root": root}
        if name == "imagenet_v2":
            imagenet_v2({**spec, "variant": "matched-frequency"}, key)
        else:
            imagenet_r(spec, key, fx.fake_wnids(1000))
        return
    spec = {"name": name, "root": root}
    if name == "imagenet100":
        spec["classes"] = fx.fake_wnids(3)
    open_sources(spec)


def root_key(name: str) -> str:
    return {"imagenet_v2": f"{V2_KEY}.root", "imagenet_r": f"{R_KEY}.root"}.get(name, "dataset.root")


def check_error(error, name: str, keys: tuple[str, ...]) -> None:
    message = str(error.value)
    assert any(f"'{key}'" in message for key in keys), message
    assert LAYOUT_TEXT[name] in message, message
    assert datasets.LAYOUTS[name] in message, message


@pytest.mark.parametrize("name", PRIMARY + SHIFT)
@pytest.mark.parametrize("root", [None, ""])
def test_unset_root(name, root):
    with pytest.raises(DatasetRootError) as error:
        open_dataset(name, root)
    check_error(error, name, (root_key(name),))


@pytest.mark.parametrize("name", PRIMARY + SHIFT)
def test_missing_root(tmp_path, name):
    root = tmp_path / "absent"
    with pytest.raises(DatasetRootError) as error:
        open_dataset(name, str(root))
    check_error(error, name, (root_key(name),))
    assert str(root) in str(error.value)
    assert not root.exists()  # not created (INaturalist would makedirs it)


@pytest.mark.parametrize("name", PRIMARY + SHIFT)
def test_root_is_a_file(tmp_path, name):
    root = tmp_path / "file"
    root.write_text("")
    with pytest.raises(DatasetRootError) as error:
        open_dataset(name, str(root))
    check_error(error, name, (root_key(name),))


@pytest.mark.parametrize("name", PRIMARY + SHIFT)
def test_empty_root_is_rejected_and_left_empty(tmp_path, name):
    root = tmp_path / "empty"
    root.mkdir()
    with pytest.raises(DatasetRootError) as error:
        open_dataset(name, str(root))
    # An empty ImageNet-V2 root lacks the variant folder: either key is a fair pointer.
    keys = (root_key(name), f"{V2_KEY}.variant") if name == "imagenet_v2" else (root_key(name),)
    check_error(error, name, keys)
    assert str(root) in str(error.value)
    assert list(root.iterdir()) == []  # nothing downloaded or created


def test_dataset_root_error_is_a_file_not_found_error():
    assert issubclass(DatasetRootError, FileNotFoundError)


def test_unknown_dataset_name(tmp_path):
    """A name no validated config would pass (rules hand settings over as
    JSON) still gets the CLI's plain message, naming the names that work."""
    with pytest.raises(UserError,
                       match=r"'dataset.name': 'svhn' has no torchvision loader; set it to one of \[.*'mnist'"):
        open_sources({"name": "svhn", "root": str(tmp_path)})


def test_expanduser(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    fx.write_food101(tmp_path / "food", classes=2, per_class=1)
    sources = open_sources({"name": "food101", "root": "~/food"})
    assert len(sources["train"].dataset) == 2


def test_imagenet_val_labels_follow_train_classes(tmp_path):
    """A val folder missing one class must not shift the other classes' labels."""
    wnids = fx.fake_wnids(3)
    root = fx.write_imagenet(tmp_path / "in", wnids, per_class=2)
    import shutil

    shutil.rmtree(root / "val" / wnids[0])
    with pytest.raises(DatasetRootError, match="val lacks class folders"):
        open_sources({"name": "imagenet", "root": str(root)})


def test_inat_images_are_rgb(tmp_path):
    from PIL import Image

    root = fx.write_inat2019(tmp_path / "inat")
    first = sorted((root / "2019").rglob("*.jpg"))[0]
    Image.open(first).convert("L").save(first)
    source = open_sources({"name": "inat2019", "root": str(root)})["train"]
    assert all(source.dataset[i][0].mode == "RGB" for i in range(len(source.labels)))


def test_imagenet100_draws_its_classes_with_a_seed(tmp_path):
    """classes {sample: K, seed: S}: K of the root's train folders, the same for
    the same seed, and the split's labels index the sorted draw."""
    wnids = fx.fake_wnids(7)
    root = fx.write_imagenet(tmp_path, wnids, per_class=1, seed=2)
    spec = {"name": "imagenet100", "root": str(root), "classes": {"sample": 3, "seed": 4}}
    drawn = datasets.imagenet100_classes(spec)
    assert len(drawn) == 3 and drawn == sorted(drawn) and set(drawn) <= set(wnids)
    assert datasets.imagenet100_classes(spec) == drawn
    others = {tuple(datasets.imagenet100_classes({**spec, "classes": {"sample": 3, "seed": s}})) for s in range(8)}
    assert len(others) > 1  # the seed matters
    assert open_sources(spec)["train"].dataset.classes == drawn
    with pytest.raises(DatasetRootError, match="fewer than the 8 to draw"):
        datasets.imagenet100_classes({**spec, "classes": {"sample": 8, "seed": 0}})
