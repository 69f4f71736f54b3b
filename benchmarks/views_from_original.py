"""Decode-and-cut rate per worker of views cut from the original image
(issue 37; docs/datasets.md#views-from-the-original-image) beside the
centre-square path it replaces at paper scale.

Writes synthetic photographs as JPEGs (quality 90; mostly 300-500 px a side,
mean about 400 x 350 like ImageNet's, one in twenty 1600 x 1200), prepares
them as an ImageFolder twice and times batches of 128 through
``StreamedImages`` (the split streamed):

* ``original``: ``dataset.views_from: original``, the full view set of an Eq
  member, every view cut from the image as decoded in the worker: two 224-px
  bicubic views (scale 0.08-1) and one 96-px bilinear small crop (scale
  0.05-0.14), antialiased, handed over as uint8;
* ``square``: the path before issue 37, each image decoded, its shorter side
  resized to 256 and the centre square cropped in the worker (the views were
  then cut from it on the device).

Each with 1 worker process (images/s per worker) and with as many as this
process may use (one per CPU, at most 8). The target: 8 workers must feed
the 1,461 images/s of the pretraining step measured on an H200 at paper
scale, so at least 183 images/s per worker.

    python benchmarks/views_from_original.py [--images 1024 --batch 128 --out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from multisym.data import splits, streaming
from multisym.data.cuts import Cut

sys.path.insert(0, str(Path(__file__).parent))
from paper_path import write_image_folder  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
H200_STEP_RATE = 1461.0  # images/s of the step at paper scale on one H200 (issue 37)
WORKERS_PER_GPU = 8
TARGET = H200_STEP_RATE / WORKERS_PER_GPU
# (width, height): ImageNet-like photographs, mean about 400 x 350, and a large one in twenty
SIZES = ((500, 375), (375, 500), (400, 350), (320, 240), (500, 333), (300, 300), (450, 300), (333, 500),
         (400, 400), (360, 270)) * 2
LARGE = (1600, 1200)
EQ_CUTS = (Cut(224, (0.08, 1.0), interpolation="bicubic"), Cut(224, (0.08, 1.0), interpolation="bicubic"),
           Cut(96, (0.05, 0.14), interpolation="bilinear"))


def write_folder(root: Path, images: int, classes: int = 8) -> dict:
    sizes = write_image_folder(root, images, classes, SIZES, LARGE)
    return {"mean_width": float(sizes[:, 1].mean()), "mean_height": float(sizes[:, 2].mean())}


def rate(paths: tuple[Path, Path], cuts: tuple, workers: int, batch: int, seed: int = 0) -> float:
    """Images/s of the streamed train split through ``workers`` decoding processes."""
    streaming.set_in_memory_limit(0.0)
    images, _, _ = splits.load_split(*paths, "train", "cpu", "cpu", cuts)
    images = streaming.StreamedImages(images.decoder, "cpu", workers=workers)
    rng = np.random.default_rng(seed)
    keys = [rng.permutation(len(images))[:batch] for _ in range(len(images) // batch)]
    take = (lambda key, i: images.cut(key, np.arange(i * batch, (i + 1) * batch, dtype=np.uint64))) if cuts \
        else (lambda key, i: images[key])
    take(keys[0], 0)  # the workers start
    tick = time.perf_counter()
    for i, key in enumerate(keys[1:], 1):
        take(key, i)
    seconds = time.perf_counter() - tick
    images.close(wait=True)
    return (len(keys) - 1) * batch / seconds


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    workers = streaming.decoding_threads()
    figures: dict = {"commit": commit(), "machine": platform.node(), "cpus": os.cpu_count(),
                     "images": args.images, "batch": args.batch, "target_per_worker": TARGET}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        figures["images_written"] = write_folder(folder / "root", args.images)
        common = {"name": "imagenet", "root": str(folder / "root"), "channels": 3, "checksum": "listing",
                  "classes": None, "splits": {"val": 0.01, "test": None, "seed": 0}}
        variants = {
            "original": ({**common, "image_size": 224, "eval_resize": 256, "views_from": "original"}, EQ_CUTS),
            "square": ({**common, "image_size": 256}, ()),
        }
        for name, (section, cuts) in variants.items():
            paths = (folder / f"{name}.npz", folder / f"{name}.json")
            splits.prepare(section, *paths)
            one = rate(paths, cuts, 1, args.batch)
            many = rate(paths, cuts, workers, args.batch)
            figures[name] = {"per_worker": one, f"with_{workers}_workers": many}
            print(f"{name:>8}: {one:7.1f} images/s per worker, {many:7.1f} with {workers} workers")
    met = figures["original"]["per_worker"] >= TARGET
    print(f"target: {TARGET:.0f} images/s per worker (8 workers feed {H200_STEP_RATE:.0f} images/s); "
          f"views from the original image: {'met' if met else 'NOT met'}")
    figures["met"] = met
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
