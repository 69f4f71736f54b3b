"""Run the paper-scale pretraining code path for a few steps (issue 12, item 6).

Writes synthetic ImageNet-shaped JPEGs (500 x 375, ImageFolder layout) into a
temporary root, prepares them with ``config/paper.yaml``'s dataset settings and
trains its first Eq member (ResNet-50, 224-px views, four rotations of a 96-px
crop, LARS, bf16 where the GPU has it) through ``multisym.pretrain.train_member``
for two epochs at 128 images per step, the paper's per-GPU batch. Prints the
steady-state step time and images/s (the second epoch, so cuDNN's autotuning
is out of it), peak GPU memory and the time spent decoding.

    python benchmarks/paper_path.py [--images 2560 --epochs 2 --out FILE.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from multisym import config as config_module
from multisym import data
from multisym.members import member_table
from multisym.pretrain import train_member

ROOT = Path(__file__).resolve().parents[1]


def write_jpegs(root: Path, images: int, classes: int, seed: int = 0) -> None:
    """Smooth random colour fields with noise, so JPEG sizes resemble photographs'."""
    rng = np.random.default_rng(seed)
    for part, count in (("train", images), ("val", classes * 2)):
        for index in range(count):
            folder = root / part / f"n{index % classes:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
            image = Image.fromarray(coarse).resize((500, 375), Image.BICUBIC)
            noisy = np.clip(np.asarray(image, dtype=np.int16) + rng.integers(-20, 21, (375, 500, 3)), 0, 255)
            Image.fromarray(noisy.astype(np.uint8)).save(folder / f"img_{index:06d}.JPEG", quality=90)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=2560, help="training JPEGs to write")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=128, help="images per step (the paper's per-GPU batch)")
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args()

    cfg = config_module.load(ROOT / "config" / "paper.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tick = time.perf_counter()
        write_jpegs(tmp / "imagenet", args.images, args.classes)
        written = time.perf_counter() - tick
        cfg["dataset"]["root"] = str(tmp / "imagenet")
        cfg["dataset"]["splits"]["val"] = 0.1  # 1 % of a few thousand images leaves classes without val
        cfg["pretrain"]["epochs"], cfg["pretrain"]["batch_size"] = args.epochs, args.batch
        resolved = config_module.resolve(cfg)
        settings = next(m for m in member_table(resolved) if m.mode == "eq").settings
        tick = time.perf_counter()
        data.prepare(resolved["dataset"], tmp / "dataset.npz", tmp / "manifest.json")
        prepared = time.perf_counter() - tick
        tick = time.perf_counter()
        images, _, _ = data.load_split(tmp / "dataset.npz", tmp / "manifest.json", "train")
        decoded = time.perf_counter() - tick
        train_images = len(images)
        del images
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        tick = time.perf_counter()
        run = tmp / "run"
        train_member(settings, tmp / "dataset.npz", tmp / "manifest.json", run, run / "model.pt", run / "epochs.csv")
        total = time.perf_counter() - tick
        with open(run / "epochs.csv") as handle:
            rows = list(csv.DictReader(handle))
    steps = train_images // args.batch
    seconds = float(rows[-1]["seconds"])
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    figures = {
        "device": device, "torch": torch.__version__, "train_images": train_images, "steps_per_epoch": steps,
        "step_ms": 1000 * seconds / steps, "images_per_s": steps * args.batch / seconds,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
        "write_jpegs_s": written, "prepare_s": prepared, "decode_train_s": decoded,
        "decode_images_per_s": train_images / decoded, "train_member_s": total,
        "last_epoch": rows[-1],
    }
    print(f"device: {device}; torch {torch.__version__}; ResNet-50 Eq member of config/paper.yaml, "
          f"batch {args.batch}, {steps} steps per epoch, {args.epochs} epochs")
    print(f"steady-state step {figures['step_ms']:.1f} ms = {figures['images_per_s']:.0f} img/s "
          f"(epoch {rows[-1]['epoch']}); peak GPU memory {figures['peak_gib'] or float('nan'):.2f} GiB")
    print(f"decode {train_images} JPEGs in-process: {decoded:.1f} s = {figures['decode_images_per_s']:.0f} img/s; "
          f"prepare {prepared:.1f} s; train_member {total:.1f} s in all")
    print("epoch log:", json.dumps(rows[-1]))
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
