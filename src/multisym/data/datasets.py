"""Image datasets read from local roots with the real torchvision classes.

Nothing is downloaded: every loader is built with ``download=False`` (or a
class without a download path) after its root's layout has been checked, and a
missing or malformed root raises :class:`DatasetRootError` naming the config
key and the expected layout. Loaders return :class:`Source` objects: the
torchvision dataset, every sample's label (read without decoding an image) and
the files it reads (for the manifest).

Primary datasets (``dataset.name``) and what their splits come from:

=============  ==========================================  ===================
name           torchvision class, split used               test split
=============  ==========================================  ===================
cifar10/100    CIFAR10 / CIFAR100, train=True              train=False
mnist,         MNIST / FashionMNIST (grey), train=True     train=False
fashion_mnist
flowers102     Flowers102 'train' (val: the official 'val')  'test'
food101        Food101 'train'                             'test'
inat2019       INaturalist version 2019, 1010 classes      seeded per-class 10 % of train
imagenet       ImageFolder <root>/train                    ImageFolder <root>/val
imagenet100    ImageFolder <root>/train, classes from the  <root>/val, same classes
               config (``dataset.classes``)
=============  ==========================================  ===================

Shift sets, evaluated with members trained on ImageNet: ImageNet-V2 (one
variant; folders named by class index, mapped explicitly, since ImageFolder
would sort "0", "1", "10", ... as text) and ImageNet-R (200 of the 1000
classes; :func:`imagenet_r` returns the indices of its classes in the
1000-way output, so logits can be masked to them).
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset
from torchvision import datasets as tv
from torchvision.datasets.folder import default_loader

from multisym.config import is_embedded
from multisym.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".JPEG", ".JPG", ".PNG")


class DatasetRootError(UserError, FileNotFoundError):
    """A configured dataset root that is missing or not in the expected layout."""


@dataclass
class Source:
    """One labelled image collection: the dataset, its labels, the files holding
    its images and the metadata files it reads besides (both for the manifest)."""

    dataset: Dataset
    labels: np.ndarray
    files: list[Path] = field(repr=False)
    num_classes: int
    metadata: list[Path] = field(default_factory=list, repr=False)
    # the classes an evaluation-only set covers, as indices of the 1000-way
    # logits to keep (ImageNet-R); None: all of them
    class_mask: np.ndarray | None = None


LAYOUTS = {
    "cifar10": "<root>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta} (the python release)",
    "cifar100": "<root>/cifar-100-python/{train, test, meta} (the python release)",
    "mnist": "<root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte (the idx files, unzipped)",
    "fashion_mnist": "<root>/FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte (the idx files, unzipped)",
    "flowers102": "<root>/flowers-102/{jpg/image_00001.jpg ..., imagelabels.mat, setid.mat}",
    "food101": "<root>/food-101/{images/<class>/<id>.jpg, meta/train.json, meta/test.json}",
    "inat2019": "<root>/2019/<super category>/<category id>/<image>.jpg (train_val2019 release)",
    "imagenet": "<root>/{train,val}/<wnid>/<image>.JPEG (val sorted into class folders)",
    "imagenet100": "<root>/{train,val}/<wnid>/<image>.JPEG with every wnid of dataset.classes present",
    "imagenet_v2": "<root>/<variant folder, e.g. imagenetv2-matched-frequency-format-val>/<class index 0..999>"
                   "/<image>.jpeg",
    "imagenet_r": "<root>/<wnid>/<image>.jpg for its 200 classes",
}


def _require(condition: bool, name: str, key: str, root: Path, problem: str) -> None:
    if not condition:
        raise DatasetRootError(
            f"config key '{key}': {root} {problem}; expected layout for {name}: {LAYOUTS[name]}. "
            "Point the key at a local copy in that layout (nothing is downloaded)"
        )


def _damaged(name: str, key: str, path: Path, problem: str) -> DatasetRootError:
    return DatasetRootError(
        f"config key '{key}': {path} {problem}; replace it with the file of the original {name} release "
        "(nothing is downloaded)"
    )


def _opened(name: str, key: str, root: Path, build, files: list[Path], problem_of):
    """``build()``, torchvision's dataset; when it cannot read the files it
    was given, the first file that ``problem_of`` finds damaged is named, so the
    error says which file to replace instead of torchvision's advice to download."""
    try:
        return build()
    except Exception as error:  # torchvision's own RuntimeError, or what pickle, numpy or scipy raise
        for path in files:
            problem = problem_of(path)
            if problem:
                raise _damaged(name, key, path, problem) from error
        raise DatasetRootError(
            f"config key '{key}': {name} under {root} could not be read ({type(error).__name__}: {error}); "
            f"expected layout: {LAYOUTS[name]}"
        ) from error


def _root(spec: dict, key: str = "dataset.root") -> Path:
    root = spec.get("root")
    if not root:
        raise DatasetRootError(
            f"config key '{key}': dataset {spec['name']!r} is read from a local copy; set its root "
            f"(expected layout: {LAYOUTS[spec['name']]})"
        )
    path = Path(root).expanduser()
    _require(path.is_dir(), spec["name"], key, path, "is not a folder")
    return path


# --------------------------------------------------------------- CIFAR
def _cifar_problem(cls):
    """What is wrong with one file of a CIFAR release, if anything: a digest
    that is not the release's, or a pickle that does not load."""
    digests = dict(cls.train_list + cls.test_list + [(cls.meta["filename"], cls.meta["md5"])])

    def problem(path: Path) -> str | None:
        # the cifar module's own check, so a test that skips the md5 comparison skips it here too
        if not tv.cifar.check_integrity(str(path), digests[path.name]):
            return "does not have the release's md5 digest (truncated, re-packed or another file)"
        try:
            with open(path, "rb") as handle:
                pickle.load(handle, encoding="latin1")
        except Exception as error:  # truncated: EOFError, UnpicklingError, ValueError
            return f"is not a readable pickle ({type(error).__name__}: {error})"
        return None

    return problem


def _cifar(spec: dict, train: bool, key: str) -> Source:
    root = _root(spec, f"{key}.root")
    cls = tv.CIFAR10 if spec["name"] == "cifar10" else tv.CIFAR100
    folder = root / cls.base_folder
    expected = [name for name, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    missing = [name for name in expected if not (folder / name).is_file()]
    _require(not missing, spec["name"], f"{key}.root", root, f"lacks {missing}")
    dataset = _opened(spec["name"], f"{key}.root", root, lambda: cls(str(root), train=train, download=False),
                      [folder / name for name in expected], _cifar_problem(cls))
    names = [name for name, _ in (cls.train_list if train else cls.test_list)]
    return Source(dataset, np.asarray(dataset.targets), [folder / n for n in names], len(dataset.classes),
                  [folder / cls.meta["filename"]])


# ------------------------------------------------------ MNIST, FashionMNIST
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _idx_problem(path: Path) -> str | None:
    """What is wrong with one idx file, if anything: its magic number (data type
    and rank) or a length that does not match the sizes in its header."""
    try:
        tensor = tv.mnist.read_sn3_pascalvincent_tensor(str(path), strict=True)
    except Exception as error:  # torchvision asserts the magic number and, strictly read, the length
        detail = str(error) or "its magic number or its length does not match its header"
        return f"is not a valid idx file ({detail})"
    rank = 3 if "images" in path.name else 1
    if tensor.dim() != rank:
        return f"holds a tensor of rank {tensor.dim()} where an idx file of rank {rank} belongs"
    return None


def _mnist(spec: dict, train: bool, key: str) -> Source:
    root = _root(spec, f"{key}.root")
    cls = tv.MNIST if spec["name"] == "mnist" else tv.FashionMNIST
    raw = root / cls.__name__ / "raw"
    missing = [name for name in IDX_FILES if not (raw / name).is_file()]
    _require(not missing, spec["name"], f"{key}.root", root, f"lacks {cls.__name__}/raw/{missing}")
    prefix = "train" if train else "t10k"
    files = [raw / f"{prefix}-images-idx3-ubyte", raw / f"{prefix}-labels-idx1-ubyte"]
    dataset = _opened(spec["name"], f"{key}.root", root, lambda: cls(str(root), train=train, download=False),
                      files, _idx_problem)
    return Source(dataset, dataset.targets.numpy(), files, len(cls.classes))


# ------------------------------------------------------------- Flowers
def _mat_problem(path: Path) -> str | None:
    """What is wrong with one of Flowers-102's .mat files, if anything."""
    digests = dict(tv.Flowers102._file_dict.values())
    if not tv.flowers102.check_integrity(str(path), digests[path.name]):
        return "does not have the release's md5 digest"
    from scipy.io import loadmat

    try:
        loadmat(path, squeeze_me=True)
    except Exception as error:  # scipy's MatReadError, ValueError, TypeError
        return f"is not a readable MATLAB file ({type(error).__name__}: {error})"
    return None


def _flowers(spec: dict, split: str, key: str) -> Source:
    root = _root(spec, f"{key}.root")
    base = root / "flowers-102"
    for name in ("imagelabels.mat", "setid.mat", "jpg"):
        _require((base / name).exists(), "flowers102", f"{key}.root", root, f"lacks flowers-102/{name}")
    metadata = [base / "imagelabels.mat", base / "setid.mat"]
    dataset = _opened("flowers102", f"{key}.root", root,
                      lambda: tv.Flowers102(str(root), split=split, download=False), metadata, _mat_problem)
    return Source(dataset, np.asarray(dataset._labels), list(dataset._image_files), 102, metadata)


# ---------------------------------------------------------------- Food
def _json_problem(path: Path) -> str | None:
    """What is wrong with one of Food-101's meta files, if anything: it must be
    JSON mapping each class to its image ids."""
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        return f"is not readable JSON ({type(error).__name__}: {error})"
    if not isinstance(meta, dict) or not all(isinstance(ids, list) for ids in meta.values()):
        return "does not map each class name to a list of image ids"
    return None


def _food(spec: dict, split: str, key: str) -> Source:
    root = _root(spec, f"{key}.root")
    base = root / "food-101"
    for name in ("images", f"meta/{split}.json"):
        _require((base / name).exists(), "food101", f"{key}.root", root, f"lacks food-101/{name}")
    meta = base / "meta" / f"{split}.json"
    problem = _json_problem(meta)  # torchvision would fail with a bare JSONDecodeError or TypeError
    if problem:
        raise _damaged("food101", f"{key}.root", meta, problem)
    dataset = _opened("food101", f"{key}.root", root, lambda: tv.Food101(str(root), split=split, download=False),
                      [meta], _json_problem)
    return Source(dataset, np.asarray(dataset._labels), list(dataset._image_files), len(dataset.classes),
                  [base / "meta" / f"{split}.json"])


# ---------------------------------------------------------- iNaturalist
def _inat(spec: dict, key: str) -> Source:
    root = _root(spec, f"{key}.root")
    # INaturalist creates a missing root itself, so check before constructing it.
    _require((root / "2019").is_dir() and any((root / "2019").iterdir()), "inat2019", f"{key}.root", root,
             "lacks a non-empty 2019 folder")
    # torchvision lists <super category>/<category> folders; a file in their place fails it with a bare OSError
    stray = [p for p in (root / "2019").glob("*") if not p.is_dir()] + [
        p for p in (root / "2019").glob("*/*") if not p.is_dir()]
    _require(not stray, "inat2019", f"{key}.root", root, f"has files where category folders belong: {stray[:3]}")
    # default_loader converts to RGB like every other source (Image.open would not).
    dataset = _opened("inat2019", f"{key}.root", root,
                      lambda: tv.INaturalist(str(root), version="2019", target_type="full", download=False,
                                             loader=default_loader), [], lambda path: None)
    # os.listdir order differs between file systems; sort so splits are reproducible.
    dataset.index.sort()
    labels = np.asarray([category for category, _ in dataset.index])
    files = [Path(dataset.root) / dataset.all_categories[c] / name for c, name in dataset.index]
    return Source(dataset, labels, files, len(dataset.all_categories))


# ------------------------------------------------------------ ImageNet
class _FixedClassFolder(tv.ImageFolder):
    """ImageFolder whose class list and indices are given, not read from the
    folder names (ImageNet-100's configured classes, ImageNet-V2's indices)."""

    def __init__(self, root: str, class_to_idx: dict[str, int]):
        self._given = dict(class_to_idx)
        super().__init__(root)

    def find_classes(self, directory):
        return sorted(self._given, key=self._given.get), self._given


def _folder_files(dataset: tv.ImageFolder) -> list[Path]:
    return [Path(path) for path, _ in dataset.samples]


def _imagenet(spec: dict, part: str, key: str) -> Source:
    root = _root(spec, f"{key}.root")
    name = spec["name"]
    folder = root / part
    _require(folder.is_dir(), name, f"{key}.root", root, f"lacks the {part} folder")
    if name == "imagenet100":
        classes = imagenet100_classes(spec, key)
    else:
        # Both parts index classes by train's folders, so val labels match train's
        # even if a val class folder were missing.
        classes = imagenet_classes(root, f"{key}.root")
    missing = [c for c in classes if not (folder / c).is_dir()]
    _require(not missing, name, f"{key}.root", root, f"{part} lacks class folders {missing[:5]}")
    dataset = _image_folder(folder, {c: i for i, c in enumerate(classes)}, name, f"{key}.root")
    return Source(dataset, np.asarray(dataset.targets), _folder_files(dataset), len(classes))


def imagenet100_classes(spec: dict, key: str = "dataset") -> list[str]:
    """ImageNet-100's wnids, sorted: the configured list, or a seeded draw of
    ``classes.sample`` of the root's train folders."""
    root, chosen = _root(spec, f"{key}.root"), spec.get("classes") or []
    if isinstance(chosen, dict):
        every = imagenet_classes(root, f"{key}.root")
        _require(chosen["sample"] <= len(every), "imagenet100", f"{key}.classes.sample", root,
                 f"has {len(every)} class folders in train, fewer than the {chosen['sample']} to draw")
        picked = np.random.default_rng(chosen["seed"]).choice(len(every), chosen["sample"], replace=False)
        chosen = [every[i] for i in picked]
    _require(len(chosen) > 0, "imagenet100", f"{key}.classes", root,
             "needs the list of its class wnids, or {sample: K, seed: S}, in the config")
    return sorted(chosen)


def imagenet_classes(imagenet_root: str | Path, key: str = "dataset.root") -> list[str]:
    """The wnids in ImageNet's class-index order (sorted folder names of train)."""
    train = Path(imagenet_root) / "train"
    _require(train.is_dir(), "imagenet", key, Path(imagenet_root), "lacks the train folder")
    classes = sorted(p.name for p in train.iterdir() if p.is_dir())
    _require(bool(classes), "imagenet", key, Path(imagenet_root), "has no class folders in train")
    return classes


def _image_folder(folder: Path, class_to_idx: dict[str, int], name: str, key: str) -> tv.ImageFolder:
    try:
        return _FixedClassFolder(str(folder), class_to_idx)
    except FileNotFoundError as error:  # a class folder without images
        raise DatasetRootError(
            f"config key '{key}': {folder}: {error}; every class folder needs its images (expected layout for "
            f"{name}: {LAYOUTS[name]})"
        ) from error


def imagenet_v2(spec: dict, key: str) -> Source:
    """ImageNet-V2, one variant: folder "k" holds class k (mapped explicitly)."""
    root = _root(spec, f"{key}.root")
    _require(bool(spec.get("variant")), "imagenet_v2", f"{key}.variant", root,
             "needs the variant folder name (e.g. imagenetv2-matched-frequency-format-val)")
    folder = root / spec["variant"]
    _require(folder.is_dir(), "imagenet_v2", f"{key}.variant", root, f"lacks the variant folder {spec['variant']!r}")
    present = [p.name for p in folder.iterdir() if p.is_dir()]
    bad = [p for p in present if not p.isdigit() or not 0 <= int(p) < 1000]
    _require(not bad, "imagenet_v2", f"{key}.root", folder, f"has folders that are not class indices: {bad[:5]}")
    dataset = _image_folder(folder, {p: int(p) for p in present}, "imagenet_v2", f"{key}.root")
    return Source(dataset, np.asarray(dataset.targets), _folder_files(dataset), 1000)


def imagenet_r(spec: dict, key: str, wnids: list[str]) -> tuple[Source, np.ndarray]:
    """ImageNet-R with labels in the 1000-way index space of ``wnids`` (ImageNet's
    order), and the sorted indices of its classes, to mask 1000-way logits."""
    root = _root(spec, f"{key}.root")
    present = sorted(p.name for p in root.iterdir() if p.is_dir())
    index = {w: i for i, w in enumerate(wnids)}
    unknown = [w for w in present if w not in index]
    _require(present and not unknown, "imagenet_r", f"{key}.root", root,
             f"has class folders that are not ImageNet wnids: {unknown[:5]}" if unknown else "has no class folders")
    dataset = _image_folder(root, {w: index[w] for w in present}, "imagenet_r", f"{key}.root")
    mask = np.asarray(sorted(index[w] for w in present))
    return Source(dataset, np.asarray(dataset.targets), _folder_files(dataset), len(wnids)), mask


# ------------------------------------------------------------ registry
def open_sources(spec: dict, key: str = "dataset") -> dict[str, Source]:
    """The labelled sources of a dataset: ``train`` (except for the
    evaluation-only ImageNet-V2 and ImageNet-R); ``test`` where the dataset has
    a labelled test split; ``val`` where it has an official validation split
    (Flowers-102). ``key`` is where ``spec`` sits in the config
    (``transfer.datasets[0].dataset`` for a transfer set): every error names
    its keys from there."""
    name = spec["name"]
    if name in ("cifar10", "cifar100"):
        return {"train": _cifar(spec, True, key), "test": _cifar(spec, False, key)}
    if name in ("mnist", "fashion_mnist"):
        return {"train": _mnist(spec, True, key), "test": _mnist(spec, False, key)}
    if name == "flowers102":
        return {split: _flowers(spec, split, key) for split in ("train", "val", "test")}
    if name == "food101":
        return {"train": _food(spec, "train", key), "test": _food(spec, "test", key)}
    if name == "inat2019":
        return {"train": _inat(spec, key)}
    if name in ("imagenet", "imagenet100"):
        return {"train": _imagenet(spec, "train", key), "test": _imagenet(spec, "val", key)}
    # evaluation-only sets: a test split in ImageNet-1k's class index
    if name == "imagenet_v2":
        return {"test": imagenet_v2(spec, key)}
    if name == "imagenet_r":
        _require(bool(spec.get("imagenet_root")), name, f"{key}.imagenet_root", _root(spec, f"{key}.root"),
                 "needs the ImageNet root whose train class folders give the 1000-way class index")
        source, mask = imagenet_r(spec, key, imagenet_classes(spec["imagenet_root"], f"{key}.imagenet_root"))
        source.class_mask = mask
        return {"test": source}
    raise UserError(f"config key '{key}.name': {name!r} has no torchvision loader; set it to one of "
                    f"{sorted(LAYOUTS)}, or to digits for the embedded default")


def has_official_test(name: str) -> bool:
    return not is_embedded(name) and name != "inat2019"
