"""Streamed splits (issue 11): a split above the in-memory limit is decoded
when indexed, and gives the tensors, and the trained weights, of the split
held in memory. The limit is lowered to 0 GiB here so that small JPEG files
written in Food-101's layout are streamed."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import dataset_fixtures as fx
from conftest import SMOKE
from multisym import config as config_module
from multisym.data import decoders, splits, streaming
from multisym.errors import UserError
from multisym.members import member_table
from multisym.train.pretrain import train_member


@pytest.fixture(scope="module")
def food(tmp_path_factory):
    folder = tmp_path_factory.mktemp("food")
    root = fx.write_food101(folder / "root", classes=3, per_class=20, size=20)
    section = {"name": "food101", "root": str(root), "image_size": 12, "channels": 3, "checksum": "listing",
               "classes": None, "splits": {"val": 0.25, "test": None, "seed": 0}}
    paths = (folder / "d.npz", folder / "m.json")
    splits.prepare(section, *paths)
    return section, paths


def streamed(monkeypatch, paths, split="train", decode="cpu"):
    monkeypatch.setattr(streaming, "in_memory_gib", 0.0)
    images, labels, _ = splits.load_split(*paths, split, decode)
    monkeypatch.setattr(streaming, "in_memory_gib", 8.0)
    return images, labels


def test_a_split_over_the_limit_is_streamed_and_decodes_the_same_tensors(food, monkeypatch):
    _, paths = food
    memory, memory_labels, _ = splits.load_split(*paths, "train")
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
    memory, _, _ = splits.load_split(*paths, "train")
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
    for name, limit, decode in (("memory", "8", "cpu"), ("streamed", "0", "cpu"), ("jpeg", "0", "device")):
        monkeypatch.setattr(streaming, "in_memory_gib", float(limit))
        run = tmp_path / name
        assert train_member(settings, *paths, run, run / "model.pt", run / "epochs.csv", device="cpu", threads=1,
                            decode=decode)
        weights[name] = torch.load(run / "model.pt", weights_only=True)
        assert json.loads((run / "run.json").read_text())["decoder"] == {
            "memory": None, "streamed": "SplitDecoder", "jpeg": "JpegDecoder"}[name]
        if name == "memory":
            assert decoded == [45]  # once, the whole split
            decoded.clear()
    assert len(decoded) == 2 * 2 * 2  # two steps in each of two epochs, for each decoder
    for name in ("streamed", "jpeg"):
        for part in ("backbone", "projector", "eq_head"):
            for key, tensor in weights["memory"][part].items():
                assert torch.equal(weights[name][part][key], tensor), f"{name} {part}.{key}"


def test_a_batch_is_one_task_per_worker_written_into_shared_memory(food, monkeypatch):
    """The training thread holds the GIL most of the time, so a batch costs it
    one result per worker, not one pickled image per row; a batch larger than
    the shared slot is decoded a slotful at a time."""
    _, paths = food
    memory, _, _ = splits.load_split(*paths, "train")
    monkeypatch.setattr(streaming, "in_memory_gib", 0.0)
    monkeypatch.setattr(decoders, "SLOT_BYTES", 10 * memory[0].numel())  # 10 images of uint8
    images = streaming.StreamedImages(splits.load_split(*paths, "train")[0].decoder, workers=2)
    submitted = []
    submit = images._pool.submit
    monkeypatch.setattr(images._pool, "submit", lambda *args: submitted.append(args) or submit(*args))
    rows = np.array([44, 0, 7, 7, 3, 30, 12])
    assert torch.equal(images[rows], memory[rows])
    assert [len(args[2]) for args in submitted] == [4, 3]
    assert all(args[0] is decoders._decode_held for args in submitted)
    submitted.clear()
    assert torch.equal(images[:], memory)
    assert [len(args[2]) for args in submitted] == [5, 5] * 4 + [3, 2]


@pytest.fixture
def food_copy(food, tmp_path):
    """The dataset files and manifest of a copy of ``food``'s root, for a test that damages a file."""
    import shutil

    section, _ = food
    root = tmp_path / "root"
    shutil.copytree(section["root"], root)
    paths = (tmp_path / "d.npz", tmp_path / "m.json")
    splits.prepare({**section, "root": str(root)}, *paths)
    return paths


@pytest.mark.parametrize("keep", [40, 0.5], ids=["header only", "half the scan"])
def test_a_damaged_file_fails_its_batch_by_name_and_the_next_batch_is_right(food_copy, monkeypatch, keep):
    paths = food_copy
    memory, _, _ = splits.load_split(*paths, "train")
    images, _ = streamed(monkeypatch, paths)
    damaged = images.decoder.files[int(images.decoder.index[5])]
    data = damaged.read_bytes()
    damaged.write_bytes(data[:keep if isinstance(keep, int) else int(len(data) * keep)])  # truncated mid-file
    with pytest.raises(UserError, match=f"{damaged.name} cannot be decoded .*replace it with an intact copy"):
        images[np.arange(10)]
    assert torch.equal(images[np.arange(10, 20)], memory[10:20])


# ------------------------------------------------ JPEG files decoded on the device


def _bytes(image: Image.Image, **options) -> torch.Tensor:
    buffer = io.BytesIO()
    image.save(buffer, **options)
    return torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)


def test_the_frame_header_gives_a_jpegs_colour_components():
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (9, 11, 3), dtype=np.uint8))
    assert decoders.jpeg_components(_bytes(rgb, format="JPEG")) == 3
    assert decoders.jpeg_components(_bytes(rgb, format="JPEG", progressive=True)) == 3
    assert decoders.jpeg_components(_bytes(rgb.convert("L"), format="JPEG")) == 1
    assert decoders.jpeg_components(_bytes(rgb.convert("CMYK"), format="JPEG")) == 4
    assert decoders.jpeg_components(_bytes(rgb, format="PNG")) is None
    assert decoders.jpeg_components(torch.tensor([0xFF, 0xD8, 0x00, 0x01], dtype=torch.uint8)) is None


@pytest.fixture(scope="module")
def odd_food(tmp_path_factory):
    """Food-101 files where one .jpg holds a PNG and one a CMYK JPEG, as in
    ImageNet's train set, and images of several sizes."""
    folder = tmp_path_factory.mktemp("odd")
    root = fx.write_food101(folder / "root", classes=2, per_class=6, size=20)
    files = sorted((root / "food-101" / "images").rglob("*.jpg"))
    rng = np.random.default_rng(1)
    for number, path in enumerate(files):
        height, width = (20 + 3 * (number % 4), 31 - 2 * (number % 3))
        picture = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        if number % 5 == 1:
            picture.save(path, format="PNG")
        elif number % 5 == 2:
            picture.convert("CMYK").save(path, format="JPEG")
        else:
            picture.save(path, format="JPEG", quality=90)
    section = {"name": "food101", "root": str(root), "image_size": 12, "channels": 3, "checksum": "listing",
               "classes": None, "splits": {"val": 0.25, "test": None, "seed": 0}}
    paths = (folder / "d.npz", folder / "m.json")
    splits.prepare(section, *paths)
    return paths


@pytest.mark.parametrize("limit", ["8", "0"])
def test_decoding_on_the_device_gives_the_cpu_paths_images(odd_food, monkeypatch, limit):
    """On the CPU both paths run libjpeg-turbo and torchvision's resize: equal.
    The PNG and the CMYK file take the CPU path inside the device decoder."""
    memory, _, _ = splits.load_split(*odd_food, "train")
    on_cpu = []
    read = decoders.SplitDecoder.read
    monkeypatch.setattr(decoders.SplitDecoder, "read", lambda self, row: on_cpu.append(row) or read(self, row))
    monkeypatch.setattr(streaming, "in_memory_gib", float(limit))
    images, _, _ = splits.load_split(*odd_food, "train", "device")
    if limit == "0":
        assert isinstance(images, streaming.StreamedImages)
        assert isinstance(images.decoder, decoders.JpegDecoder)
        decoder = images.decoder
        odd = [row for row in range(len(memory))
               if decoders.jpeg_bytes(decoder.files[int(decoder.fallback.index[row])]) is None]
        assert odd and torch.equal(images[odd], memory[odd])  # a batch without a JPEG
        on_cpu.clear()
        images = images[:]
    assert torch.equal(images, memory)
    assert 0 < len(on_cpu) < len(memory)  # the PNG and CMYK files only


def test_jpeg_files_decode_to_the_pixels_of_the_datasets_own_loader(odd_food):
    """The CPU path decodes JPEG files with torchvision.io (libjpeg-turbo, as
    Pillow does): the same tensors as through the dataset class, for every
    size, the PNG and CMYK files (which go to the dataset class) included."""
    from multisym.data.datasets import open_sources

    source = open_sources(json.loads(odd_food[1].read_text())["settings"])["train"]
    rows = np.arange(len(source.labels))
    by_files = decoders.SplitDecoder(source, rows, 12, 3, list(source.files))
    by_class = decoders.SplitDecoder(source, rows, 12, 3)
    for row in rows:
        assert torch.equal(by_files.read(row), by_class.read(row)), source.files[row]


def test_a_source_without_one_file_per_image_keeps_the_cpu_decoder(food):
    from multisym.data.datasets import open_sources

    section, _ = food
    source = open_sources(section)["train"]
    assert isinstance(decoders.decoder_for(source, np.arange(4), 12, 3, "device"), decoders.JpegDecoder)
    assert isinstance(decoders.decoder_for(source, np.arange(4), 12, 3, "cpu"), decoders.SplitDecoder)
    source.files = source.files[:1]  # e.g. CIFAR: a few batch files for every image
    assert isinstance(decoders.decoder_for(source, np.arange(4), 12, 3, "device"), decoders.SplitDecoder)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
def test_nvjpeg_on_the_gpu_is_close_to_the_cpu_path(odd_food, monkeypatch):
    """nvjpeg's IDCT and upsampling are not libjpeg-turbo's: after the resize the
    images differ by mean |d| < 2/255 and max |d| < 48/255 on these pure-noise pictures,
    JPEG's worst case (measured on an H200: 1.3/255 and 30/255)."""
    memory, _, _ = splits.load_split(*odd_food, "train")
    monkeypatch.setattr(streaming, "in_memory_gib", 0.0)
    images, _, _ = splits.load_split(*odd_food, "train", "device")
    try:
        gpu = images.to("cuda")[:]
        again = images.to("cuda")[np.arange(len(memory))[::-1].copy()]
    finally:
        images.close()
    assert gpu.device.type == "cuda" and torch.equal(again, gpu.flip(0))
    difference = (gpu.cpu() - memory).abs()
    print(f"nvjpeg vs CPU path: mean |d| {difference.mean() * 255:.3f}/255, "
          f"max {difference.max() * 255:.1f}/255")
    assert difference.mean() < 2 / 255 and difference.max() < 48 / 255


def exit_script_children(script: str, paths, how: str, tmp_path, timeout: float) -> list[int]:
    """Run ``script`` on the split at ``paths`` in a process of its own, which
    prints the pids of its decoding processes and then exits as ``how`` says
    (``killed``: by SIGKILL, else normally); those pids."""
    import subprocess
    import sys

    path = tmp_path / "exits.py"
    path.write_text(script)
    done = subprocess.run([sys.executable, str(path), *map(str, paths), how], capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert done.returncode == (-9 if how == "killed" else 0), done.stderr
    pids = [int(pid) for pid in done.stdout.split()]
    assert pids
    return pids


def wait_until_gone(pid: int, seconds: float = 20) -> None:
    """Fail unless process ``pid`` ends (or is a zombie) within ``seconds``."""
    import time
    from pathlib import Path

    status = Path(f"/proc/{pid}/status")

    def gone() -> bool:
        try:
            return "zombie" in status.read_text()
        except FileNotFoundError:
            return True

    deadline = time.monotonic() + seconds
    while not gone() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert gone(), f"process {pid} is still running"


OPEN_AT_EXIT = """
import os, sys, numpy as np
from multisym import cli
from multisym.data import splits
from multisym.data import streaming
if __name__ == "__main__":
    streaming.set_in_memory_limit(0)
    images, _, _ = splits.load_split(sys.argv[1], sys.argv[2], "train")
    images[np.arange(3)]
    print(*(process.pid for process in images._pool._processes.values()), flush=True)
    if sys.argv[3] == "killed":
        os.kill(os.getpid(), 9)
    cli.release()
    os._exit(0)  # as a warm worker, a forked child, ends
"""


@pytest.mark.parametrize("how", ["finish", "killed"])
def test_cpu_decoding_workers_end_with_a_command_that_holds_its_split(food, tmp_path, how):
    """A warm worker releases what its command left open, then leaves at once
    (``os._exit``): a split still referenced then must not keep it waiting
    for its workers. Killed outright, it leaves its workers to notice on their
    own."""
    for pid in exit_script_children(OPEN_AT_EXIT, food[1], how, tmp_path, timeout=60):
        wait_until_gone(pid)


def test_a_damaged_file_met_mid_training_stops_naming_it_and_keeps_the_last_checkpoint(
        food_copy, monkeypatch, tmp_path):
    """An epoch of a streamed split saved; a file damaged since: the next
    epoch stops at the batch holding it, naming the file, and the saved
    state is the one of the epoch before, untouched."""
    paths = food_copy
    cfg = config_module.load(SMOKE)
    cfg["dataset"] = json.loads(Path(paths[1]).read_text())["settings"]
    cfg["pretrain"] = {**cfg["pretrain"], "epochs": 3, "batch_size": 16}
    settings = next(m for m in member_table(config_module.resolve(cfg)) if m.mode == "inv").settings
    monkeypatch.setattr(streaming, "in_memory_gib", 0.0)
    run = tmp_path / "run"
    assert not train_member(settings, *paths, run, run / "model.pt", run / "epochs.csv", device="cpu", threads=1,
                            stop_after_epochs=1)
    saved = (run / "state.pt").read_bytes()
    images, _ = streamed(monkeypatch, paths)
    damaged = images.decoder.files[int(images.decoder.index[20])]
    data = damaged.read_bytes()
    damaged.write_bytes(data[: len(data) // 2])
    monkeypatch.setattr(streaming, "in_memory_gib", 0.0)
    with pytest.raises(UserError, match=f"{damaged.name} cannot be decoded .*replace it with an intact copy"):
        train_member(settings, *paths, run, run / "model.pt", run / "epochs.csv", device="cpu", threads=1)
    assert (run / "state.pt").read_bytes() == saved and not (run / "model.pt").exists()
