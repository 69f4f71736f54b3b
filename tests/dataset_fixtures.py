"""Small datasets written in each dataset's own on-disk release format.

Every writer puts a tiny copy of one dataset under ``root`` (the folder a
config's ``root`` key would name), laid out exactly as the release unpacks, so
the real torchvision class reads it. Images are deterministic (``seed``) and
carry a class pattern a classifier can learn: dim noise with one brighter
block whose grid cell and dominant channel encode the class
(:func:`class_image`); :func:`pattern_label` reads the class back, which lets a
test check the label of every sample against what was written into it.

The module does not import pytest; :func:`patch_integrity_checks` takes any
object with pytest's ``monkeypatch.setattr(target, name, value)`` signature.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.io import savemat

# ---------------------------------------------------------------- images
GRID = 4  # the block sits in one cell of a GRID x GRID grid
PATTERN_CODES = GRID * GRID * 3  # cell x dominant channel; labels repeat modulo this


def class_image(rng: np.random.Generator, label: int, size: int = 8) -> np.ndarray:
    """A size x size x 3 uint8 image of class ``label``: noise in 0..63 and a
    block (cell ``label % 16``) that is bright (224..255) in channel
    ``label // 16 % 3`` and mid-grey (96..127) in the other two."""
    if size < GRID:
        raise ValueError(f"size must be at least {GRID}")
    image = rng.integers(0, 64, size=(size, size, 3), dtype=np.uint8)
    block = size // GRID
    row, col = divmod(label % (GRID * GRID), GRID)
    channel = label // (GRID * GRID) % 3
    rows, cols = slice(row * block, (row + 1) * block), slice(col * block, (col + 1) * block)
    image[rows, cols, :] = rng.integers(96, 128, size=(block, block, 3), dtype=np.uint8)
    image[rows, cols, channel] = rng.integers(224, 256, size=(block, block), dtype=np.uint8)
    return image


def pattern_label(image) -> int:
    """The class code of an image made by :func:`class_image` (a PIL image or
    an H x W x 3 array), i.e. its label modulo :data:`PATTERN_CODES`."""
    if isinstance(image, Image.Image):
        image = image.convert("RGB")
    array = np.asarray(image, dtype=np.float64)
    block = array.shape[0] // GRID
    cells = array[: block * GRID, : block * GRID].reshape(GRID, block, GRID, block, 3).mean(axis=(1, 3))
    cell = int(np.argmax(cells.sum(axis=-1)))
    channel = int(np.argmax(cells[divmod(cell, GRID)]))
    return channel * GRID * GRID + cell


def _save(array: np.ndarray, path: Path, fmt: str = "JPEG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    if fmt == "JPEG":
        # 4:4:4 and high quality so an 8 x 8 image keeps its block and colour.
        image.save(path, format="JPEG", quality=95, subsampling=0)
    else:
        image.save(path, format=fmt)


def _hex(rng: np.random.Generator, n: int) -> str:
    return "".join(f"{v:x}" for v in rng.integers(0, 16, size=n))


def _unique_ints(rng: np.random.Generator, count: int, low: int, high: int) -> list[int]:
    return [int(v) for v in rng.choice(np.arange(low, high), size=count, replace=False)]


# ---------------------------------------------------------------- CIFAR
CIFAR10_NAMES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]
CIFAR100_NAMES = [
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
    "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket",
    "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table",
    "tank", "telephone", "television", "tiger", "tractor",
    "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
]
CIFAR100_COARSE_NAMES = [
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes", "large_omnivores_and_herbivores",
    "medium_mammals", "non-insect_invertebrates", "people", "reptiles", "small_mammals", "trees",
    "vehicles_1", "vehicles_2",
]
CIFAR_SIZE = 32  # the release stores 32 x 32 images as rows of 3072 bytes


def _cifar_split(rng: np.random.Generator, classes: int, per_class: int) -> tuple[np.ndarray, list[int]]:
    """Rows (n, 3072) in the release's channel-major order, and their labels, shuffled."""
    labels = [int(v) for v in rng.permutation(np.repeat(np.arange(classes), per_class))]
    rows = np.zeros((len(labels), 3 * CIFAR_SIZE * CIFAR_SIZE), dtype=np.uint8)
    for i, label in enumerate(labels):
        rows[i] = class_image(rng, label, CIFAR_SIZE).transpose(2, 0, 1).reshape(-1)  # R plane, G, B
    return rows, labels


def _pickle(obj: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump(obj, handle, protocol=2)


def write_cifar10(root: Path, classes: int = 3, per_class: int = 5, seed: int = 0) -> Path:
    """``root/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``.

    ``per_class`` images of each of the first ``classes`` classes in train
    (spread, shuffled, over the five batches in order) and in test_batch; the
    meta file names all 10 classes. Images are 32 x 32 (the format's size)."""
    if not 1 <= classes <= 10:
        raise ValueError("CIFAR-10 has 10 classes")
    root = Path(root)
    folder = root / "cifar-10-batches-py"
    rng = np.random.default_rng(seed)
    rows, labels = _cifar_split(rng, classes, per_class)
    for b, part in enumerate(np.array_split(np.arange(len(labels)), 5), start=1):
        _pickle({
            "batch_label": f"training batch {b} of 5",
            "labels": [labels[i] for i in part],
            "data": rows[part],
            "filenames": [f"train_{i:05d}.png" for i in part],
        }, folder / f"data_batch_{b}")
    rows, labels = _cifar_split(rng, classes, per_class)
    _pickle({
        "batch_label": "testing batch 1 of 1",
        "labels": labels,
        "data": rows,
        "filenames": [f"test_{i:05d}.png" for i in range(len(labels))],
    }, folder / "test_batch")
    _pickle({"num_cases_per_batch": 10000, "label_names": list(CIFAR10_NAMES), "num_vis": 3072},
            folder / "batches.meta")
    return root


def write_cifar100(root: Path, classes: int = 4, per_class: int = 3, seed: int = 0) -> Path:
    """``root/cifar-100-python/{train, test, meta}`` with ``fine_labels`` and
    ``coarse_labels`` (fixture coarse label: fine // 5, not the real mapping);
    the meta file names all 100 fine and 20 coarse classes."""
    if not 1 <= classes <= 100:
        raise ValueError("CIFAR-100 has 100 classes")
    root = Path(root)
    folder = root / "cifar-100-python"
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        rows, labels = _cifar_split(rng, classes, per_class)
        _pickle({
            "filenames": [f"{split}_{i:05d}.png" for i in range(len(labels))],
            "batch_label": f"{split}ing batch 1 of 1",
            "fine_labels": labels,
            "coarse_labels": [label // 5 for label in labels],
            "data": rows,
        }, folder / split)
    _pickle({"fine_label_names": list(CIFAR100_NAMES), "coarse_label_names": list(CIFAR100_COARSE_NAMES)},
            folder / "meta")
    return root


# ------------------------------------------------------ MNIST, FashionMNIST
def _write_idx(path: Path, array: np.ndarray) -> None:
    """The idx format of the MNIST releases: a big-endian magic (0, 0, type
    0x08 = uint8, number of dimensions), each dimension as a big-endian int32,
    then the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_mnist(root: Path, folder: str = "MNIST", classes: int = 3, per_class: int = 4, size: int = 8,
                seed: int = 0) -> Path:
    """<root>/<folder>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte, grey
    images whose class pattern is :func:`class_image`'s bright channel-0 block."""
    rng = np.random.default_rng(seed)
    for prefix in ("train", "t10k"):
        labels = np.repeat(np.arange(classes), per_class)
        rng.shuffle(labels)
        images = np.stack([class_image(rng, int(label) % (GRID * GRID), size)[..., 0] for label in labels])
        _write_idx(root / folder / "raw" / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(root / folder / "raw" / f"{prefix}-labels-idx1-ubyte", labels.astype(np.uint8))
    return root


# ------------------------------------------------------------- Flowers
FLOWERS_CLASSES = 102


def flowers_labels(classes: int) -> list[int]:
    """The 0-based Flowers-102 classes the fixture uses: ``classes`` of them
    spread over 0..101 (so both ends of the 1-based range 1..102 occur)."""
    if not 1 <= classes <= FLOWERS_CLASSES:
        raise ValueError("Flowers-102 has 102 classes")
    return sorted({int(round(v)) for v in np.linspace(0, FLOWERS_CLASSES - 1, classes)})


def write_flowers102(root: Path, classes: int = 3, per_class: int = 2, size: int = 8, seed: int = 0) -> Path:
    """``root/flowers-102/{jpg/image_00001.jpg ..., imagelabels.mat, setid.mat}``.

    ``per_class`` images of each class (:func:`flowers_labels`) in each of
    train, val and test; image ids 1..N are dealt out at random; labels are
    stored 1-based, ids 1-based, as in the release."""
    root = Path(root)
    base = root / "flowers-102"
    rng = np.random.default_rng(seed)
    kinds = flowers_labels(classes)
    if len(kinds) * per_class < 2:
        raise ValueError("each split needs at least 2 images (loadmat's squeeze_me turns 1 into a scalar)")
    slots = [(split, label) for split in ("trnid", "valid", "tstid") for label in kinds for _ in range(per_class)]
    ids = rng.permutation(len(slots)) + 1
    label_of = np.zeros(len(slots), dtype=np.uint8)
    setid: dict[str, list[int]] = {"trnid": [], "valid": [], "tstid": []}
    for (split, label), image_id in zip(slots, ids):
        label_of[image_id - 1] = label + 1
        setid[split].append(int(image_id))
        _save(class_image(rng, label, size), base / "jpg" / f"image_{image_id:05d}.jpg")
    savemat(base / "imagelabels.mat", {"labels": label_of[None, :]})
    savemat(base / "setid.mat", {k: np.asarray(sorted(v), dtype=np.uint16)[None, :] for k, v in setid.items()})
    return root


# ---------------------------------------------------------------- Food
FOOD_NAMES = [
    "apple_pie", "baby_back_ribs", "baklava", "beef_carpaccio", "beef_tartare", "beet_salad",
    "beignets", "bibimbap", "bread_pudding", "breakfast_burrito", "bruschetta", "caesar_salad",
]


def food_names(classes: int) -> list[str]:
    """The class folder names the fixture uses (sorted, as torchvision indexes them)."""
    names = FOOD_NAMES[:classes] + [f"food_{i:03d}" for i in range(len(FOOD_NAMES), classes)]
    return sorted(names)


def write_food101(root: Path, classes: int = 3, per_class: int = 2, size: int = 8, seed: int = 0) -> Path:
    """``root/food-101/images/<class>/<id>.jpg`` and ``meta/{train,test}.json``
    (class -> ["class/id", ...]), ``meta/{train,test}.txt``, ``meta/classes.txt``.

    ``per_class`` images of every class in each split. The json files list the
    classes in reverse order, so a reader must sort them, as torchvision does;
    the pattern of each image encodes the index of its class in sorted order."""
    root = Path(root)
    base = root / "food-101"
    rng = np.random.default_rng(seed)
    names = food_names(classes)
    ids = iter(_unique_ints(rng, 2 * classes * per_class, 100000, 4000000))
    for split in ("train", "test"):
        listing: dict[str, list[str]] = {}
        for label, name in reversed(list(enumerate(names))):
            listing[name] = []
            for _ in range(per_class):
                rel = f"{name}/{next(ids)}"
                listing[name].append(rel)
                _save(class_image(rng, label, size), base / "images" / f"{rel}.jpg")
        (base / "meta").mkdir(parents=True, exist_ok=True)
        (base / "meta" / f"{split}.json").write_text(json.dumps(listing))
        (base / "meta" / f"{split}.txt").write_text("".join(f"{r}\n" for v in listing.values() for r in v))
    (base / "meta" / "classes.txt").write_text("".join(f"{n}\n" for n in names))
    (base / "meta" / "labels.txt").write_text("".join(f"{n.replace('_', ' ').capitalize()}\n" for n in names))
    return root


# --------------------------------------------------------- iNaturalist
INAT_SUPER = ("Plants", "Amphibians")  # the second sorts first: enumeration order != id order


def inat_super_category(category: int, classes: int) -> str:
    """Ids below classes // 2 (at least 1) are Plants, the rest Amphibians."""
    return INAT_SUPER[0] if category < max(1, classes // 2) else INAT_SUPER[1]


def write_inat2019(root: Path, classes: int = 4, per_class: int = 2, size: int = 8, seed: int = 0) -> Path:
    """``root/2019/<super category>/<category id>/<32 hex>.jpg`` (the
    train_val2019 release), category ids 0..classes-1 over two super categories."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for category in range(classes):
        folder = root / "2019" / inat_super_category(category, classes) / str(category)
        folder.mkdir(parents=True, exist_ok=True)
        for _ in range(per_class):
            _save(class_image(rng, category, size), folder / f"{_hex(rng, 32)}.jpg")
    return root


# ------------------------------------------------------------ ImageNet
def fake_wnids(k: int) -> list[str]:
    """k sorted WordNet-like ids: n00000001, n00000002, ..."""
    return [f"n{i:08d}" for i in range(1, k + 1)]


def write_imagenet(root: Path, wnids: list[str], per_class: int = 2, size: int = 8, seed: int = 0) -> Path:
    """``root/train/<wnid>/<wnid>_<n>.JPEG`` and ``root/val/<wnid>/ILSVRC2012_val_<8 digits>.JPEG``
    (val sorted into class folders), ``per_class`` images per class and split;
    each image's pattern encodes its class's index in ``sorted(wnids)``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    val_ids = iter(_unique_ints(rng, len(wnids) * per_class, 1, 50001))
    for label, wnid in enumerate(sorted(wnids)):
        for n in _unique_ints(rng, per_class, 1, 100000):
            _save(class_image(rng, label, size), root / "train" / wnid / f"{wnid}_{n}.JPEG")
        for _ in range(per_class):
            _save(class_image(rng, label, size), root / "val" / wnid / f"ILSVRC2012_val_{next(val_ids):08d}.JPEG")
    return root


def write_imagenet_v2(
    root: Path,
    variant: str = "matched-frequency",
    class_indices: tuple[int, ...] = (0, 1, 2, 10, 100, 999),
    per_class: int = 2,
    size: int = 8,
    seed: int = 0,
) -> Path:
    """``root/<variant>/<class index>/<40 hex>.jpeg`` (folders named by the
    ImageNet class index; the default includes 0, 1, 2, 10 and 100, whose text
    order differs from their numeric order)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for k in class_indices:
        for _ in range(per_class):
            _save(class_image(rng, k, size), root / variant / str(k) / f"{_hex(rng, 40)}.jpeg")
    return root


IMAGENET_R_STYLES = ("art", "cartoon", "graffiti", "origami", "sketch", "toy")


def write_imagenet_r(root: Path, wnids_subset: list[str], per_class: int = 2, size: int = 8, seed: int = 0) -> Path:
    """``root/<wnid>/<style>_<n>.jpg``; each image's pattern encodes its class's
    position in ``wnids_subset``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for label, wnid in enumerate(wnids_subset):
        for n in range(per_class):
            style = IMAGENET_R_STYLES[int(rng.integers(len(IMAGENET_R_STYLES)))]
            _save(class_image(rng, label, size), root / wnid / f"{style}_{n}.jpg")
    return root


# ------------------------------------------------------ integrity checks
def patch_integrity_checks(monkeypatch) -> None:
    """Skip the md5 comparison of the release files that CIFAR10/CIFAR100 and
    Flowers102 make before reading.

    The fixture files are not the release files, so their md5 can never match
    the digests torchvision hard-codes; torchvision's own dataset tests
    likewise patch ``check_integrity`` in the dataset's module to pass. What
    each class really checks, and why the module function is the thing patched:

    * CIFAR10/CIFAR100 ``_check_integrity`` compares the md5 of every batch
      file, and ``_load_meta`` separately compares the md5 of the meta file;
      both call ``torchvision.datasets.cifar.check_integrity``.
    * Flowers102 ``_check_integrity`` requires the ``jpg`` folder, then compares
      the md5 of imagelabels.mat and setid.mat through
      ``torchvision.datasets.flowers102.check_integrity``.

    The replacement is torchvision's own ``check_integrity`` with the md5
    dropped: a missing file still fails, only the digest is not compared.
    Nothing else is patched (Food101 and INaturalist check only that folders
    exist; ImageFolder checks nothing).
    """
    from torchvision.datasets import cifar, flowers102
    from torchvision.datasets.utils import check_integrity

    def exists_only(fpath, md5=None):
        return check_integrity(os.fspath(fpath), None)

    monkeypatch.setattr(cifar, "check_integrity", exists_only)
    monkeypatch.setattr(flowers102, "check_integrity", exists_only)
