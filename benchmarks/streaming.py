"""Decode rate of a streamed split (issue 11; issue 15, target 2 on the CPU side).

Writes synthetic ImageNet-sized JPEGs (``paper_path.write_jpegs``: 500 x 375 and other common sizes),
prepares them with ``config/paper.yaml``'s dataset settings (256-px short side,
centre crop) and, with the in-memory limit at 0 so that the split is streamed,
times batches of 128 read through ``StreamedImages``:

* decode rate with 1 worker process and with as many as this process may use
  (one per CPU, at most 8; ``streaming.decoding_threads``);
* the wait for a batch that was prefetched while the caller worked for as long
  as one batch takes to decode in one worker (what the training loop sees
  when the step is at least as long as the decode);
* the decode rate with every batch prefetched while the caller's thread
  launches small torch operations without a pause, as an eager training step
  launches its kernels (a GPU's host-bound step holds the GIL most of the
  time), and how many operations that thread launched per second meanwhile.

It prints images/s per figure, and how many decoding cores would keep up with
the step rate measured on one H200 (1,529 images/s, benchmarks/README.md).

    python benchmarks/streaming.py [--images 1024 --batch 128]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from multisym import config as config_module
from multisym.data import splits
from multisym.data import streaming

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from paper_path import write_jpegs  # noqa: E402

H200_STEP_RATE = 1529.0  # images/s, ours, benchmarks/README.md


def batches_per_second(images, batch: int, rng) -> float:
    rows = [rng.permutation(len(images))[:batch] for _ in range(len(images) // batch)]
    tick = time.perf_counter()
    for key in rows:
        images[key]
    return len(rows) * batch / (time.perf_counter() - tick)


def with_busy_caller(images, batch: int, rng, batches: int = 6) -> tuple[float, float]:
    """(images/s, the caller's torch operations/s) with each batch prefetched
    while the caller's thread launches operations."""
    keys = [rng.permutation(len(images))[:batch] for _ in range(batches)]
    images[keys[0]]
    done, launched = threading.Event(), [0]

    def launch():
        x = torch.zeros(8)
        while not done.is_set():
            for _ in range(100):
                x = x + 1
            launched[0] += 100

    thread = threading.Thread(target=launch)
    thread.start()
    tick = time.perf_counter()
    images.prefetch(keys[1])
    for index in range(1, batches):
        images[keys[index]]
        if index + 1 < batches:
            images.prefetch(keys[index + 1])
    seconds = time.perf_counter() - tick
    done.set()
    thread.join()
    return (batches - 1) * batch / seconds, launched[0] / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()
    cfg = config_module.load(ROOT / "config" / "paper.yaml")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_jpegs(tmp / "imagenet", args.images, classes=8)
        cfg["dataset"]["root"] = str(tmp / "imagenet")
        cfg["dataset"]["splits"]["val"] = 0.05
        resolved = config_module.resolve(cfg)
        splits.prepare(resolved["dataset"], tmp / "d.npz", tmp / "m.json")
        streaming.set_in_memory_limit(0)
        images, _, _ = splits.load_split(tmp / "d.npz", tmp / "m.json", "train")
        assert isinstance(images, streaming.StreamedImages)
        threads = streaming.decoding_threads()
        figures = {"images": len(images), "batch": args.batch, "threads": threads, "cpus": os.cpu_count()}
        single = streaming.StreamedImages(images.decoder, workers=1)
        figures["decode_1_thread"] = batches_per_second(single, args.batch, rng)
        figures[f"decode_{threads}_threads"] = batches_per_second(images, args.batch, rng)
        # prefetch while "training" for one single-thread batch time
        work = args.batch / figures["decode_1_thread"]
        waits = []
        for _ in range(3):
            key = rng.permutation(len(images))[:args.batch]
            images.prefetch(key)
            time.sleep(work)
            tick = time.perf_counter()
            images[key]
            waits.append(time.perf_counter() - tick)
        figures["wait_after_prefetch_ms"] = 1000 * float(np.median(waits))
        figures["step_ms_simulated"] = 1000 * work
        figures["cores_for_h200_rate"] = H200_STEP_RATE / figures["decode_1_thread"]
        torch.set_num_threads(1)
        figures["decode_1_thread_busy_caller"], figures["caller_ops_per_s"] = with_busy_caller(single, args.batch, rng)
    print(f"{figures['images']} streamed images (ImageNet-sized JPEG -> 256 px), batches of {args.batch}, "
          f"{figures['cpus']} CPUs")
    print(f"  decode, 1 process:          {figures['decode_1_thread']:8.1f} images/s")
    print(f"  decode, {threads} processes:        {figures[f'decode_{threads}_threads']:8.1f} images/s")
    print(f"  wait for a prefetched batch after {figures['step_ms_simulated']:.0f} ms of work: "
          f"{figures['wait_after_prefetch_ms']:.1f} ms")
    print(f"  decode, 1 process, every batch prefetched while the caller launches torch operations: "
          f"{figures['decode_1_thread_busy_caller']:.1f} images/s (the caller: "
          f"{figures['caller_ops_per_s']:.0f} operations/s)")
    print(f"  cores to decode at one H200's step rate ({H200_STEP_RATE:.0f} images/s): "
          f"{figures['cores_for_h200_rate']:.1f} (the streamed path uses at most {streaming.MAX_THREADS})")
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
