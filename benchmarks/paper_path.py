"""The whole pretraining loop at paper scale: read, decode, augment, step
(issue 15, target 2; issue 12, item 6).

Writes synthetic ImageNet-sized JPEGs (ImageFolder layout, the common ImageNet
sizes such as 500 x 375 and 375 x 500) into a temporary root, prepares them
with ``config/paper.yaml``'s dataset settings and trains its first Eq member
(ResNet-50, 224-px views, four rotations of a 96-px crop, LARS, bf16 where the
GPU has it) through ``multisym.train.pretrain.train_member`` for two epochs at 128
images per step, the paper's per-GPU batch, three ways:

  memory  the split decoded once and held on the device (the embedded and
          CIFAR scales' path: no loader runs)
  cpu     streamed, each batch decoded by libjpeg-turbo (torchvision.io) in at
          most 8 worker processes, a share of it each, into shared memory
          (``gpu_jobs.decode: cpu``)
  device  streamed, the threads only read files; nvjpeg decodes on the GPU
          (``gpu_jobs.decode: device``)
  read-cpu, read-device
          the data path alone: the same streamed batches read, decoded and
          put on the device one after another, no views and no step

Since issue 37 ``config/paper.yaml`` cuts every view from the image as decoded
(``dataset.views_from: original``): ``memory`` then holds the decoded
originals on the host and cuts them in the training process's threads,
``cpu`` cuts them in the decoding processes, ``device`` on the GPU after
nvjpeg, and the ``read-`` variants cut the Eq member's three views of every image.

A training variant with the suffix ``-eager`` (``memory-eager``) runs with
``gpu_jobs.cuda_graphs: false``: every step queued kernel by kernel instead of
replayed from the CUDA graph (``multisym.train.graphs``), which train_member uses
unless nvjpeg decodes the split.
A training variant with the suffix ``-stream`` (``device-stream``) runs
train_member with a CUDA stream of its own as the current stream instead of
the legacy default stream. It tests a hypothesis, not yet measured: that the
decoder's work waits for the step because some of it goes to the legacy
default stream, which waits for everything queued there (``--timings`` at
7a2a877: the decode call took 82 ms per batch beside the graph, 10.5 ms
beside eager steps); torch creates its own streams non-blocking, so a step on
one of them would not hold that work back.

Each figure is the second epoch's (cuDNN's autotuning is in the first). The
target compares the whole loop with the step alone on the same views, timed
by ``benchmarks/pretrain_step.py`` ("ours") in the same run: at least 0.9x its
images/s with at most 8 CPU workers.

    python benchmarks/paper_path.py [--images 5120 --epochs 2 --variants memory,device,cpu --out FILE.json]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from multisym import config as config_module
from multisym.data import decoders, splits, streaming
from multisym.members import member_table
from multisym.train.pretrain import member_view_specs, train_member

ROOT = Path(__file__).resolve().parents[1]
# (width, height) of common ImageNet photographs, landscape ones most often
SIZES = ((500, 375), (500, 375), (500, 333), (375, 500), (500, 400), (500, 500), (333, 500), (640, 480))
TARGET = 0.9


def photograph(seed: int, sizes: tuple = SIZES, large: tuple[int, int] | None = None) -> Image.Image:
    """A smooth random colour field with noise, so its JPEG size resembles a
    photograph's (about 110 KB at quality 90 for 500 x 375); one in twenty
    is ``large`` (width, height) where given."""
    rng = np.random.default_rng(seed)
    width, height = large if large is not None and seed % 20 == 19 else sizes[seed % len(sizes)]
    coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((width, height), Image.BICUBIC)
    noisy = np.clip(np.asarray(image, dtype=np.int16) + rng.integers(-20, 21, (height, width, 3)), 0, 255)
    return Image.fromarray(noisy.astype(np.uint8))


def write_jpeg(job: tuple[Path, int, tuple, tuple[int, int] | None]) -> tuple[int, int, int]:
    """Write one photograph; its file bytes, width and height."""
    path, seed, sizes, large = job
    image = photograph(seed, sizes, large)
    image.save(path, quality=90)
    return path.stat().st_size, *image.size


def write_image_folder(root: Path, images: int, classes: int, sizes: tuple = SIZES,
                       large: tuple[int, int] | None = None) -> np.ndarray:
    """An ImageNet-style folder (train/<wnid>/, val/<wnid>/) of synthetic
    photographs; (file bytes, width, height) of each, as float64."""
    jobs = []
    for part, count in (("train", images), ("val", classes * 2)):
        for index in range(count):
            folder = root / part / f"n{index % classes:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            jobs.append((folder / f"img_{index:06d}.JPEG", len(jobs), sizes, large))
    with ProcessPoolExecutor(min(16, os.cpu_count() or 1)) as pool:
        return np.array(list(pool.map(write_jpeg, jobs, chunksize=32)), dtype=np.float64)


def write_jpegs(root: Path, images: int, classes: int) -> float:
    """Mean file size in bytes."""
    return float(write_image_folder(root, images, classes)[:, 0].mean())


def step_only(batch: int, given: str | None) -> dict:
    """pretrain_step.py's "ours" (the step on drawn views) from its JSON, run now unless given."""
    if given is None:
        given = tempfile.mktemp(suffix=".json")
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "pretrain_step.py"), "--variants", "ours",
                        "--batch", str(batch), "--out", given], check=True)
    return json.loads(Path(given).read_text())["results"]["ours"]


def train(settings: dict, paths: tuple[Path, Path], run: Path, decode: str, limit_gib: str, graphed: bool,
          own_stream: bool) -> dict:
    streaming.set_in_memory_limit(float(limit_gib))
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    elif own_stream:
        raise RuntimeError("a -stream variant needs CUDA")
    tick = time.perf_counter()
    with torch.cuda.stream(torch.cuda.Stream()) if own_stream else contextlib.nullcontext():
        train_member(settings, *paths, run, run / "model.pt", run / "epochs.csv", decode=decode,
                     cuda_graphs=graphed)
    total = time.perf_counter() - tick
    with open(run / "epochs.csv") as handle:
        last = list(csv.DictReader(handle))[-1]
    return {"epoch_s": float(last["seconds"]), "train_member_s": total, "last_epoch": last,
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None}


def read_only(paths: tuple[Path, Path], decode: str, batch: int, device: torch.device, cuts: tuple = ()) -> dict:
    """Images/s of the streamed batches alone, the next prefetched as in
    training; with ``cuts`` (a dataset whose views are cut from the original
    image), every view of each image cut, as the member's step takes them."""
    streaming.set_in_memory_limit(0)
    images, _, _ = splits.load_split(*paths, "train", decode, device, cuts)
    images = images.to(device)
    cutting = streaming.cuts_views(images)
    seeds = np.arange(batch, dtype=np.uint64)
    starts = range(0, len(images) - batch + 1, batch)
    tick = None
    for number, start in enumerate(starts):
        if number == 1:  # the first batch pays for thread and nvjpeg start-up
            if device.type == "cuda":
                torch.cuda.synchronize()
            tick = time.perf_counter()
        if cutting:
            images.cut(slice(start, start + batch), seeds)
            streaming.prefetch(images, slice(start + batch, start + 2 * batch), seeds)
        else:
            images[start:start + batch]
            streaming.prefetch(images, slice(start + batch, start + 2 * batch))
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - tick
    images.close()
    return {"images_per_s": (len(starts) - 1) * batch / seconds, "step_ms": 1000 * seconds / (len(starts) - 1),
            "peak_gib": None}


class DataPathTimings:
    """With ``--timings``: the wall time of each part of the streamed data path,
    per batch, in the thread that runs it: the whole assembly of a batch (the
    wait for its file reads, the decode, the resize), nvjpeg's decode call (it
    returns once its stream is done), the resize and crop; the training
    thread's wait for a prefetched batch. (Files of 7a2a877 name the assembly
    "reads".) A context: the functions are timed inside it."""

    PARTS = {"assembly": (streaming.StreamedImages, "_batch"), "decode": (decoders.JpegDecoder, "_decode"),
             "resize": (decoders.JpegDecoder, "_resized"), "wait": (streaming.StreamedImages, "__getitem__"),
             # views cut from the original image (paper.yaml since issue 37)
             "cut": (decoders.JpegDecoder, "cut_batch"), "cut_wait": (streaming.StreamedImages, "cut")}

    def __init__(self):
        self.seconds: dict[str, list[float]] = {part: [] for part in self.PARTS}
        self.originals = {part: getattr(owner, name) for part, (owner, name) in self.PARTS.items()}

    def __enter__(self) -> "DataPathTimings":
        for part, (owner, name) in self.PARTS.items():
            setattr(owner, name, self._timed(part, self.originals[part]))
        return self

    def __exit__(self, *exc) -> None:
        for part, (owner, name) in self.PARTS.items():
            setattr(owner, name, self.originals[part])

    def _timed(self, part: str, function):
        def timed(*args, **kwargs):
            tick = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[part].append(time.perf_counter() - tick)
        return timed

    def summary(self, last: int) -> dict[str, float]:
        """Mean milliseconds per batch over the last ``last`` batches."""
        return {part: 1000 * float(np.mean(values[-last:])) if values else float("nan")
                for part, values in self.seconds.items()}


def save(figures: dict, out: str | None) -> None:
    """The figures so far as JSON, after every variant: what has run survives a time limit."""
    if out:
        Path(out).write_text(json.dumps(figures, indent=2, default=str) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=5120,
                        help="JPEGs to write; 90 %% train (36 steps per epoch: the first batch of an epoch is "
                             "decoded before its first step, a smaller share of a longer epoch)")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=128, help="images per step (the paper's per-GPU batch)")
    parser.add_argument("--variants", default="memory,device,memory-eager,read-device,cpu,read-cpu")
    parser.add_argument("--step-json", default=None, help="pretrain_step.py's JSON of this machine (else run it)")
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    parser.add_argument("--timings", action="store_true",
                        help="also time the parts of the streamed data path per batch (DataPathTimings)")
    args = parser.parse_args()

    cfg = config_module.load(ROOT / "config" / "paper.yaml")
    figures: dict = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU",
                     "torch": torch.__version__, "batch": args.batch, "decoding_threads": streaming.decoding_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tick = time.perf_counter()
        figures["mean_jpeg_bytes"] = write_jpegs(tmp / "imagenet", args.images, args.classes)
        figures["write_jpegs_s"] = time.perf_counter() - tick
        cfg["dataset"]["root"] = str(tmp / "imagenet")
        cfg["dataset"]["splits"]["val"] = 0.1  # 1 % of a few thousand images leaves classes without val
        cfg["pretrain"]["epochs"], cfg["pretrain"]["batch_size"] = args.epochs, args.batch
        settings = next(m for m in member_table(config_module.resolve(cfg)) if m.mode == "eq").settings
        paths = (tmp / "dataset.npz", tmp / "manifest.json")
        splits.prepare(settings["dataset"], *paths)
        train_images = int(np.load(paths[0])["train_index"].size)
        steps = train_images // args.batch
        figures.update(train_images=train_images, steps_per_epoch=steps, variants={})
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        for variant in args.variants.split(","):
            path, flags = variant, set()
            for flag in ("stream", "eager"):
                if path.endswith(f"-{flag}"):
                    path, flags = path.removesuffix(f"-{flag}"), flags | {flag}
            decode, limit = {"memory": ("cpu", "1000"), "cpu": ("cpu", "0"), "device": ("device", "0"),
                             "read-cpu": ("cpu", "0"), "read-device": ("device", "0")}[path]
            try:
                if variant.startswith("read-"):
                    cuts = tuple(spec.cut for spec in member_view_specs(settings, settings["dataset"]["image_size"]))
                    figures["variants"][variant] = read_only(paths, decode, args.batch, device, cuts)
                    save(figures, args.out)
                    continue
                timings = DataPathTimings() if args.timings and limit == "0" else None
                with timings or contextlib.nullcontext():
                    result = train(settings, paths, tmp / f"run-{variant}", decode, limit, "eager" not in flags,
                                   "stream" in flags)
                if timings is not None:
                    result["data_path_ms"] = spent = timings.summary(last=steps)
                    print(f"{variant} data path, ms per batch of the last epoch: "
                          + ", ".join(f"{k} {v:.1f}" for k, v in spent.items()), flush=True)
            except Exception as error:  # one failing path must not lose the others' figures
                print(f"{variant}: {type(error).__name__}: {error}", file=sys.stderr)
                continue
            result["images_per_s"] = steps * args.batch / result["epoch_s"]
            result["step_ms"] = 1000 * result["epoch_s"] / steps
            result["streamed"] = limit == "0"
            figures["variants"][variant] = result
            save(figures, args.out)
    figures["step_only"] = step_only(args.batch, args.step_json)
    step_rate = figures["step_only"]["images_per_s"]

    print(f"device: {figures['device']}; torch {figures['torch']}; ResNet-50 Eq member of config/paper.yaml, "
          f"batch {args.batch}, {steps} steps per epoch, epoch {args.epochs} timed; {train_images} JPEGs of "
          f"{figures['mean_jpeg_bytes'] / 1e3:.0f} KB on average; {figures['decoding_threads']} decoding threads")
    print(f"{'loop':<20} {'step ms':>8} {'img/s':>7} {'peak GiB':>9} {'/ step only':>12}")
    print(f"{'step':<20} {figures['step_only']['step_ms']:8.1f} {step_rate:7.0f} "
          f"{figures['step_only']['peak_gib']:9.2f} {1.0:12.3f}")
    for variant, result in figures["variants"].items():
        ratio = result["images_per_s"] / step_rate
        result["ratio_to_step_only"] = ratio
        print(f"{variant:<20} {result['step_ms']:8.1f} {result['images_per_s']:7.0f} "
              f"{result['peak_gib'] or float('nan'):9.2f} {ratio:12.3f}"
              + (f"  target >= {TARGET}: {'met' if ratio >= TARGET else 'MISSED'}" if result.get("streamed") else ""))
    print("(a split nvjpeg decodes in the training process trains without the CUDA graph, -eager variants without "
          "it whatever the path; the step alone is timed as train_member runs a split in memory, with the graph)")
    save(figures, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
