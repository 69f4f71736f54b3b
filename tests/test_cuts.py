"""Views cut from the original image (issue 37, docs/datasets.md#views-from-the-original-image):
crop boxes drawn on an image's own size follow torchvision's
``RandomResizedCrop.get_params``, a box is resampled as torchvision's
``resized_crop`` does, every path (in memory, streamed, CPU or device
decoder) cuts the same views from the same seeds, a split of JPEGs of mixed
sizes trains and resumes exactly, and the paper config resolves to these views."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats

import dataset_fixtures as fx
from conftest import ROOT, SMOKE
from multisym import config as config_module
from multisym.data import splits, streaming
from multisym.data.cuts import Cut, center_view, crop_box, cut_seeds, cut_views, resized_crop
from multisym.members import adaptation_candidates, member_table
from multisym.train.pretrain import member_view_specs, train_member

SIZES = [(500, 375), (375, 500), (1024, 683), (256, 256), (2000, 200)]  # (W, H)
DRAWS = 10_000


def _fallback(height: int, width: int, ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """torchvision's central fallback box (top, left, h, w)."""
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


@pytest.mark.parametrize("width,height,scale", [(*size, (0.08, 1.0)) for size in SIZES]
                         + [(500, 375, (0.05, 0.14))])  # the Eq member's small crop
def test_crop_boxes_follow_torchvision_get_params(width, height, scale):
    from torchvision.transforms import RandomResizedCrop

    cut = Cut(224, scale)
    generator = torch.Generator().manual_seed(width * height)
    ours = np.array([crop_box(height, width, cut, generator) for _ in range(DRAWS)], dtype=np.float64)
    torch.manual_seed(width + height)  # get_params draws from torch's global generator
    image = torch.empty(1, height, width)
    theirs = np.array([RandomResizedCrop.get_params(image, list(scale), [3 / 4, 4 / 3]) for _ in range(DRAWS)],
                      dtype=np.float64)
    for boxes in (ours, theirs):  # inside the image
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
        assert (boxes[:, 0] + boxes[:, 2] <= height).all() and (boxes[:, 1] + boxes[:, 3] <= width).all()
    area = lambda b: b[:, 2] * b[:, 3] / (height * width)  # noqa: E731
    aspect = lambda b: b[:, 3] / b[:, 2]  # noqa: E731
    centre = lambda b: ((b[:, 0] + b[:, 2] / 2) / height, (b[:, 1] + b[:, 3] / 2) / width)  # noqa: E731
    for name, statistic in (("area", area), ("aspect", aspect)):
        p = stats.ks_2samp(statistic(ours), statistic(theirs)).pvalue
        assert p > 0.01, f"{name} fractions differ from torchvision's (KS p = {p:.2g})"
    for ours_c, theirs_c in zip(centre(ours), centre(theirs)):
        assert stats.ks_2samp(ours_c, theirs_c).pvalue > 0.01
    fallback = np.array(_fallback(height, width), dtype=np.float64)
    k_ours = int((ours == fallback).all(axis=1).sum())
    k_theirs = int((theirs == fallback).all(axis=1).sum())
    if k_ours + k_theirs:  # equal draws: under equal rates k_ours ~ Binomial(k_ours + k_theirs, 1/2)
        assert stats.binomtest(k_ours, k_ours + k_theirs, 0.5).pvalue > 0.01, (k_ours, k_theirs)
    if (width, height) == (2000, 200) and scale == (0.08, 1.0):
        assert k_ours > DRAWS // 10  # the extreme ratio does reach the fallback


def _photo(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A uint8 (3, H, W) image with structure at every scale: smooth colour
    fields plus fine noise."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.random((1, 3, 6, 8), dtype=np.float32))
    smooth = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)[0]
    fine = torch.from_numpy(rng.random((3, height, width), dtype=np.float32)) * 0.3
    return ((smooth * 0.7 + fine).clamp(0, 1) * 255).round().to(torch.uint8)


@pytest.mark.parametrize("interpolation,size", [("bicubic", 224), ("bilinear", 96)])
def test_a_box_is_resampled_as_torchvision_resized_crop_does(interpolation, size):
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    image = _photo(375, 500)
    mode = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR}[interpolation]
    for box in ((0, 0, 375, 500), (10, 20, 300, 200), (100, 300, 40, 60), (200, 7, 175, 131)):
        ours = resized_crop(image, box, size, interpolation).float()
        reference = F.resized_crop(image, *box, [size, size], interpolation=mode, antialias=True).float()
        difference = (ours - reference).abs()
        assert difference.mean() <= 1.0 and difference.max() <= 8.0, box
    # and cut_views cuts exactly the boxes its seed draws, in the cuts' order
    cuts = (Cut(224), Cut(224), Cut(96, (0.05, 0.14), interpolation="bilinear"))
    views = cut_views(image, 1234, cuts)
    generator = torch.Generator().manual_seed(1234)
    for view, cut in zip(views, cuts):
        box = crop_box(375, 500, cut, generator)
        assert torch.equal(view, resized_crop(image, box, cut.size, cut.interpolation))
        assert view.shape == (3, cut.size, cut.size) and view.dtype == torch.uint8


def test_a_box_is_the_square_paths_box_for_one_sample():
    """``crop_box`` is ``sample_crop_boxes`` (the device path's batched
    sampler) for a batch of one, the same draws in the same order."""
    from multisym.data.geometric import sample_crop_boxes

    for height, width in ((375, 500), (200, 2000), (256, 256)):
        for seed in range(200):
            cut = Cut(224, (0.05, 0.14) if seed % 2 else (0.08, 1.0))
            x1, y1, x2, y2 = (int(v) for v in sample_crop_boxes(1, height, width, cut.scale, cut.ratio,
                                                                  torch.Generator().manual_seed(seed))[0])
            assert crop_box(height, width, cut, torch.Generator().manual_seed(seed)) == (y1, x1, y2 - y1, x2 - x1)


def test_cut_seeds_differ_by_base_epoch_step_and_position():
    seeds = {int(s) for base in (0, 1) for epoch in (0, 1) for step in (0, 1) for s in cut_seeds(base, epoch, step, 8)}
    assert len(seeds) == 2 * 2 * 2 * 8
    assert np.array_equal(cut_seeds(7, 3, 5, 4), cut_seeds(7, 3, 5, 6)[:4])  # a prefix does not depend on the count


# ---------------------------------------------------------------- the data path
def _write_mixed_imagenet(root: Path, classes: int = 3, per_class: int = 8) -> Path:
    """An ImageFolder in ImageNet's layout whose JPEGs have mixed sizes and
    aspect ratios; each image's pattern (``fx.class_image``) encodes its class."""
    rng = np.random.default_rng(0)
    shapes = [(40, 30), (30, 40), (64, 20), (24, 24), (50, 36)]  # (W, H)
    for split in ("train", "val"):
        for label, wnid in enumerate(fx.fake_wnids(classes)):
            for n in range(per_class):
                folder = root / split / wnid
                folder.mkdir(parents=True, exist_ok=True)
                pattern = Image.fromarray(fx.class_image(rng, label, 8)).resize(shapes[n % len(shapes)],
                                                                                 Image.NEAREST)
                pattern.save(folder / f"{wnid}_{n}.JPEG", quality=95, subsampling=0)
    return root


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mixed")
    root = _write_mixed_imagenet(folder / "root")
    section = {"name": "imagenet", "root": str(root), "image_size": 16, "eval_resize": 18, "views_from": "original",
               "channels": 3, "checksum": "listing", "classes": None, "splits": {"val": 0.25, "test": None, "seed": 0}}
    paths = (folder / "d.npz", folder / "m.json")
    splits.prepare(section, *paths)
    return section, paths


CUTS = (Cut(16), Cut(16), Cut(8, (0.05, 0.14), interpolation="bilinear"))


def test_every_path_cuts_the_same_views_from_the_same_seeds(mixed, monkeypatch):
    _, paths = mixed
    rows, seeds = np.array([5, 0, 17, 5, 5]), cut_seeds(3, 0, 0, 5)
    seeds[3] = seeds[0]  # row 5 twice with one seed, then with another
    cut = {}
    for name, limit, decode in (("memory", 8.0, "cpu"), ("streamed", 0.0, "cpu"), ("device", 0.0, "device")):
        monkeypatch.setattr(streaming, "in_memory_gib", limit)
        images, _, info = splits.load_split(*paths, "train", decode, "cpu", CUTS)
        assert streaming.cuts_views(images)
        images.prefetch(rows, seeds) if name != "memory" else None
        cut[name] = images.cut(torch.from_numpy(rows), seeds)
        streaming.close(images)
    assert isinstance(cut, dict) and info.image_size == 16
    for name in ("streamed", "device"):
        for ours, reference in zip(cut[name], cut["memory"]):
            assert torch.equal(ours, reference), name
    assert [tuple(v.shape) for v in cut["memory"]] == [(5, 3, 16, 16), (5, 3, 16, 16), (5, 3, 8, 8)]
    views = cut["memory"][0]
    assert torch.equal(views[0], views[3]) and not torch.equal(views[0], views[4])  # the seed picks the boxes
    # the evaluation splits: Resize(eval_resize) + CenterCrop(image_size), not cut
    monkeypatch.setattr(streaming, "in_memory_gib", 8.0)
    val, _, _ = splits.load_split(*paths, "val", "cpu", "cpu", CUTS)
    assert isinstance(val, torch.Tensor) and val.shape[1:] == (3, 16, 16)
    source = splits.load_arrays(*paths)[0]["val_index"][0]
    manifest = splits.read_manifest(paths[1])
    from multisym.data.datasets import open_sources
    from multisym.data.decoders import as_float
    split_source = open_sources(manifest["settings"])[manifest["split_sources"]["val"]]
    original = split_source.dataset[int(source)][0]  # a PIL image
    reference = center_view(torch.from_numpy(np.array(original.convert("RGB"))).permute(2, 0, 1), 18, 16)
    assert (val[0] - as_float(reference)).abs().max() <= 1 / 255


def _eq_settings(section: dict) -> dict:
    cfg = config_module.load(SMOKE)
    cfg["dataset"] = section
    cfg["views"] = {**cfg["views"], "size": 16}
    cfg["small_crop"] = {**cfg["small_crop"], "size": 8}
    cfg["pretrain"] = {**cfg["pretrain"], "epochs": 2, "batch_size": 8}
    return next(m for m in member_table(config_module.resolve(cfg)) if m.mode == "eq").settings


def test_a_split_of_mixed_sizes_trains_on_its_originals_streamed_or_not_and_resumes_exactly(mixed, monkeypatch,
                                                                                              tmp_path):
    section, paths = mixed
    settings = _eq_settings(section)
    assert settings["views"]["interpolation"] == "bicubic" and settings["small_crop"]["interpolation"] == "bilinear"
    weights = {}
    for name, limit in (("memory", 8.0), ("streamed", 0.0)):
        monkeypatch.setattr(streaming, "in_memory_gib", limit)
        run = tmp_path / name
        assert train_member(settings, *paths, run, run / "model.pt", run / "epochs.csv", device="cpu", threads=1)
        weights[name] = torch.load(run / "model.pt", weights_only=True)
    monkeypatch.setattr(streaming, "in_memory_gib", 8.0)
    run = tmp_path / "resumed"
    assert not train_member(settings, *paths, run, run / "model.pt", run / "epochs.csv", device="cpu", threads=1,
                            stop_after_epochs=1)
    assert train_member(settings, *paths, run, run / "model.pt", run / "epochs.csv", device="cpu", threads=1)
    weights["resumed"] = torch.load(run / "model.pt", weights_only=True)
    for name in ("streamed", "resumed"):
        for part in ("backbone", "projector", "eq_head"):
            for key, tensor in weights["memory"][part].items():
                assert torch.equal(weights[name][part][key], tensor), f"{name} {part}.{key}"
    assert all(torch.isfinite(t).all() for t in weights["memory"]["backbone"].values() if t.is_floating_point())


# ------------------------------------------------------------------ the configs
def test_the_paper_config_cuts_its_views_and_fine_tuning_crops_from_the_original_image():
    cfg = config_module.load(ROOT / "config" / "paper.yaml")
    dataset = cfg["dataset"]
    assert (dataset["views_from"], dataset["image_size"], dataset["eval_resize"]) == ("original", 224, 256)
    eq = next(m for m in member_table(cfg) if m.mode == "eq")
    cuts = [spec.cut for spec in member_view_specs(eq.settings, dataset["image_size"])]
    assert cuts == [Cut(224, (0.08, 1.0), (3 / 4, 4 / 3), "bicubic")] * 2 + [Cut(96, (0.05, 0.14), (3 / 4, 4 / 3),
                                                                                 "bilinear")]
    sup = next(m for m in member_table(cfg) if m.mode == "sup")
    sup_cuts = [s.cut for s in member_view_specs(sup.settings, dataset["image_size"])]
    assert sup_cuts == [Cut(224, interpolation="bilinear")]
    candidate = adaptation_candidates(cfg, eq)[0]
    assert candidate["crop_size"] == 224 and candidate["train_augment"]
    assert cfg["finetune"]["crop_size"] == 224
    transfer = {entry["key"]: entry for entry in cfg["transfer"]["datasets"]}
    for key in ("food", "flowers"):
        assert transfer[key]["dataset"]["views_from"] == "original" and transfer[key]["finetune"]["crop_size"] == 224
    for key in ("inat", "food", "flowers", "in_v2", "in_r"):
        assert (transfer[key]["dataset"]["image_size"], transfer[key]["dataset"]["eval_resize"]) == (224, 256)
    c100 = transfer["c100"]  # the official recipe: resized to 224, no augmentation
    assert "views_from" not in c100["dataset"] and "eval_resize" not in c100["dataset"]
    assert c100["dataset"]["image_size"] == 224 and c100["finetune"]["train_augment"] is False


def test_the_embedded_default_carries_none_of_the_new_keys():
    cfg = config_module.load(ROOT / "config.yaml")
    for member in member_table(cfg):
        settings = member.settings
        assert "views_from" not in settings["dataset"] and "eval_resize" not in settings["dataset"]
        assert "interpolation" not in settings.get("views", {}) and "interpolation" not in settings.get(
            "small_crop", {})
    assert "crop_size" not in adaptation_candidates(cfg, member_table(cfg)[0])[0]


FOOD_SPLITS = {"splits": {"test": None}}


@pytest.mark.parametrize("change,message", [
    ({"views": {"interpolation": "bicubic"}}, "views.interpolation"),
    ({"dataset": {"name": "digits", "views_from": "original"}}, "dataset.views_from"),
    ({"dataset": {"name": "food101", "root": "x", "image_size": 32, "eval_resize": 16, **FOOD_SPLITS}},
     "dataset.eval_resize"),
])
def test_the_geometry_keys_are_refused_where_they_do_not_apply(change, message):
    cfg = {"name": "t", "dataset": {"name": "digits"}, "members": {"seeds": {"base": [1, 2, 3, 4, 5]}}}
    for section, values in change.items():
        cfg[section] = values
    with pytest.raises(config_module.ConfigError, match=message.replace(".", r"\.")):
        config_module.resolve(cfg)


def test_interpolation_is_only_filled_in_for_views_from_the_original_image():
    cfg = {"name": "t", "dataset": {"name": "food101", "root": "x", "views_from": "original", "image_size": 32,
                       **FOOD_SPLITS},
           "members": {"seeds": {"base": [1, 2, 3, 4, 5]}}}
    resolved = config_module.resolve(cfg)
    assert resolved["views"]["interpolation"] == "bicubic" and resolved["small_crop"]["interpolation"] == "bilinear"
    assert math.isclose(resolved["small_crop"]["crop_scale"][0], 0.05)


def test_fine_tuning_cuts_its_training_crops_from_the_originals_and_resumes_exactly(mixed, tmp_path, monkeypatch):
    """RandomResizedCrop(crop_size) + flip cut from the original image
    (bilinear), the evaluation splits at Resize(eval_resize) + CenterCrop(image_size)."""
    from multisym.train.finetune import finetune

    section, paths = mixed
    settings = _eq_settings(section)
    base = tmp_path / "base"
    assert train_member(settings, *paths, base, base / "model.pt", base / "epochs.csv", device="cpu", threads=1)
    cfg = config_module.load(SMOKE)
    cfg["dataset"] = section
    cfg["adapt"] = {"mode": "finetune", "finetune": {"epochs": 2, "batch_size": 8, "crop_size": 12}}
    member = next(m for m in member_table(config_module.resolve(cfg)) if m.mode == "eq")
    candidate = adaptation_candidates(config_module.resolve(cfg), member)[0]
    assert candidate["crop_size"] == 12
    cut_sizes = []
    original_cut = streaming.OriginalsInMemory.cut
    monkeypatch.setattr(streaming.OriginalsInMemory, "cut", lambda self, key, seeds: cut_sizes.append(
        [c.size for c in self.cuts]) or original_cut(self, key, seeds))
    outputs = {}
    for name in ("whole", "resumed"):
        run = tmp_path / name
        args = (base / "model.pt", candidate, *paths, run / "model.pt", run / "logits.npz", run / "epochs.csv")
        if name == "resumed":
            from multisym.train import trainer

            calls = []
            real_step = trainer.Trainer._save

            def stop_after_first(self, task, **partial):  # an interruption after the first epoch's save
                real_step(self, task, **partial)
                calls.append(1)
                if len(calls) == 1:
                    raise KeyboardInterrupt

            monkeypatch.setattr(trainer.Trainer, "_save", stop_after_first)
            with pytest.raises(KeyboardInterrupt):
                finetune(*args, device="cpu", threads=1)
            monkeypatch.setattr(trainer.Trainer, "_save", real_step)
        finetune(*args, device="cpu", threads=1)
        outputs[name] = np.load(run / "logits.npz")
    assert cut_sizes and all(sizes == [12] for sizes in cut_sizes)
    for key in ("val_logits", "test_logits"):
        assert np.array_equal(outputs["whole"][key], outputs["resumed"][key]), key
