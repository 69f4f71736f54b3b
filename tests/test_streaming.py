"""Streamed splits (issue 11): a split above the in-memory limit is decoded
when indexed, and gives the tensors, and the trained weights, of the split
held in memory. The limit is lowered to 0 GiB here so that small JPEG files
written in Food-101's layout are streamed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dataset_fixtures as fx
from conftest import SMOKE
from multisym import config as config_module
from multisym import data, streaming
from multisym.members import member_table
from multisym.pretrain import train_member


@pytest.fixture(scope="module")
def food(tmp_path_factory):
    folder = tmp_path_factory.mktemp("food")
    root = fx.write_food101(folder / "root", classes=3, per_class=20, size=20)
    section = {"name": "food101", "root": str(root), "image_size": 12, "channels": 3, "checksum": "listing",
               "classes": None, "splits": {"val": 0.25, "test": None, "seed": 0}}
    paths = (folder / "d.npz", folder / "m.json")
    data.prepare(section, *paths)
    return section, paths


def streamed(monkeypatch, paths, split="train"):
    monkeypatch.setenv(streaming.LIMIT_VARIABLE, "0")
    images, labels, _ = data.load_split(*paths, split)
    monkeypatch.delenv(streaming.LIMIT_VARIABLE)
    return images, labels


def test_a_split_over_the_limit_is_streamed_and_decodes_the_same_tensors(food, monkeypatch):
    _, paths = food
    memory, memory_labels, _ = data.load_split(*paths, "train")
    images, labels = streamed(monkeypatch, paths)
    assert isinstance(memory, torch.Tensor) and isinstance(images, streaming.StreamedImages)
    assert images.shape == tuple(memory.shape) and len(images) == len(memory) == 45
    assert torch.equal(labels, memory_labels)
    assert torch.equal(images[:], memory)
    rows = torch.tensor([44, 0, 7, 7, 3])
    assert torch.equal(images[rows], memory[rows])
    assert torch.equal(images[np.array([5, 1])], memory[[5, 1]])
    assert torch.equal(images[10:20:3], memory[10:20:3])
    assert images[torch.tensor([], dtype=torch.long)].shape == (0, 3, 12, 12)


def test_prefetched_rows_are_returned_and_a_different_request_is_decoded_afresh(food, monkeypatch):
    _, paths = food
    memory, _, _ = data.load_split(*paths, "train")
    images, _ = streamed(monkeypatch, paths)
    images.prefetch(torch.tensor([3, 4]))
    assert images._ahead is not None
    assert torch.equal(images[torch.tensor([3, 4])], memory[[3, 4]]) and images._ahead is None
    images.prefetch(torch.tensor([8, 9]))
    assert torch.equal(images[torch.tensor([1, 2])], memory[[1, 2]])  # not what was prefetched
    streaming.prefetch(memory, torch.tensor([1]))  # a tensor in memory: nothing to do
    with pytest.raises(IndexError, match="1-d index"):
        images[np.zeros((2, 2), dtype=np.int64)]


def test_training_on_a_streamed_split_gives_the_in_memory_weights(food, monkeypatch, tmp_path):
    section, paths = food
    cfg = config_module.load(SMOKE)
    cfg["dataset"] = section
    cfg["pretrain"] = {**cfg["pretrain"], "epochs": 2, "batch_size": 16}
    settings = next(m for m in member_table(config_module.resolve(cfg)) if m.mode == "eq").settings
    decoded = []  # batches decoded on demand
    original = streaming.StreamedImages.__getitem__
    monkeypatch.setattr(streaming.StreamedImages, "__getitem__",
                        lambda self, key: decoded.append(len(self)) or original(self, key))
    weights = {}
    for name, limit in (("memory", "8"), ("streamed", "0")):
        monkeypatch.setenv(streaming.LIMIT_VARIABLE, limit)
        run = tmp_path / name
        assert train_member(settings, *paths, run, run / "model.pt", run / "epochs.csv", device="cpu", threads=1)
        weights[name] = torch.load(run / "model.pt", weights_only=True)
        if name == "memory":
            assert decoded == [45]  # once, the whole split
            decoded.clear()
    assert len(decoded) == 2 * 2  # two steps in each of two epochs
    for part in ("backbone", "projector", "eq_head"):
        for key, tensor in weights["memory"][part].items():
            assert torch.equal(weights["streamed"][part][key], tensor), f"{part}.{key}"
