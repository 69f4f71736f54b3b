"""What a probe job asks a cluster for against what its fit takes (issue 15,
fast probing at paper scale): the memory (``probe.job_memory_mb``) against
the fit's peak resident size, and the time limit (``probe.job_runtime_min``)
against the measured time per L-BFGS iteration, extrapolated to iNat-2019 at
paper scale (212k train images of 2,048 features, 1,010 classes).

Each case writes synthetic float16 features as the features step caches them,
then runs ``probe.fit_probe`` (one C) in a process of its own twice, with 2 and
with 2 + ``--iterations`` L-BFGS iterations; the difference is the time of
those iterations, without the reading and standardising both runs share.
With ``--device cuda`` the fit's objective runs on the GPU
(``multisym.evaluate.device_probe``): the memory is then the host's, beside the
device's peak, and the time limit is the GPU's.

    python benchmarks/probe_scale.py [--device cpu] [--threads 1] [--iterations 5] [--out run.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from multisym.config import section_defaults
from multisym.files import write_npz
from multisym.evaluate.probe import FLOPS_PER_THREAD, GPU_FLOPS, job_memory_mb, memory_mb, runtime_min

# (train rows, feature size, classes); val and test are a tenth of train each
CASES = ((16_000, 2_048, 1_010), (24_000, 512, 200), (8_000, 1_024, 1_000))
INAT = (212_170, 265_213, 2_048, 1_010)  # train rows, all rows, d, K
FIT = """
import re, sys, time, warnings
warnings.simplefilter("ignore")
from multisym.evaluate.probe import fit_probe
folder, iterations, device = sys.argv[1], int(sys.argv[2]), sys.argv[3]
start = time.perf_counter()
fit_probe(f"{folder}/features.npz", {"C": [1.0], "max_iter": iterations, "tol": 1e-8, "device": device},
          f"{folder}/logits.npz", f"{folder}/summary.json", f"{folder}/params.npz")
seconds = time.perf_counter() - start
peak_kib = re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)
device_mb = 0
if device == "cuda":
    import torch
    device_mb = torch.cuda.max_memory_allocated() / 2**20
print(seconds, int(peak_kib) / 1024, device_mb)
"""


def write_features(folder: Path, train: int, dims: int, classes: int) -> None:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, rows in (("train", train), ("val", train // 10), ("test", train // 10)):
        labels = rng.integers(0, classes, rows)
        arrays[f"{split}_labels"] = labels
        arrays[f"{split}_features"] = rng.standard_normal((rows, dims), dtype=np.float32).astype(np.float16)
    write_npz(folder / "features.npz", num_classes=np.asarray(classes), **arrays)


def fit(folder: Path, iterations: int, threads: int, device: str) -> tuple[float, float, float]:
    """(seconds, host peak MB, device peak MB) of fit_probe in a fresh process. The peak is its
    VmHWM, which starts afresh at exec; getrusage's ru_maxrss would start from
    this process's own peak."""
    env = {**os.environ, **{name: str(threads) for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                           "MKL_NUM_THREADS")}}
    out = subprocess.run([sys.executable, "-c", FIT, str(folder), str(iterations), device], env=env, check=True,
                         capture_output=True, text=True).stdout.split()
    return float(out[0]), float(out[1]), float(out[2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()
    rows = []
    settings = {**section_defaults("probe"), "device": args.device}  # the grid and max_iter the time limit is for
    print(f"{'train x d x K':>22} {'peak MB':>8} {'asked MB':>9} {'device MB':>9} {'s/iteration':>12} {'GFLOP/s':>8}")
    for train, dims, classes in CASES:
        with tempfile.TemporaryDirectory() as name:
            folder = Path(name)
            write_features(folder, train, dims, classes)
            short, _, _ = fit(folder, 2, args.threads, args.device)
            long, peak, device_peak = fit(folder, 2 + args.iterations, args.threads, args.device)
            asked = job_memory_mb(folder / "features.npz", settings)
        per_iteration = (long - short) / args.iterations
        rate = 4 * train * dims * classes / per_iteration / 1e9
        rows.append({"train": train, "dims": dims, "classes": classes, "peak_mb": peak, "asked_mb": asked,
                     "device_peak_mb": device_peak, "seconds_per_iteration": per_iteration, "gflops": rate})
        print(f"{f'{train} x {dims} x {classes}':>22} {peak:8.0f} {asked:9d} {device_peak:9.0f} {per_iteration:12.2f}"
              f" {rate:8.1f}  {'ok' if peak < asked else 'ASKS TOO LITTLE'}")
    # iNat at paper scale: the job's request, and one iteration at the rate
    # measured on the largest case against the rate the time limit assumes
    train, rows_all, dims, classes = INAT
    operations = 4 * train * dims * classes
    assumed = GPU_FLOPS if args.device == "cuda" else FLOPS_PER_THREAD * args.threads
    where = "the GPU" if args.device == "cuda" else f"{args.threads} thread(s)"
    inat = {"asked_mb": memory_mb(train, rows_all, dims, classes, args.device),
            "asked_min_16_threads": runtime_min(train, dims, classes, settings, 16),
            "seconds_per_iteration_measured_rate": operations / (rows[0]["gflops"] * 1e9),
            "seconds_per_iteration_assumed_rate": operations / assumed}
    print(f"iNat-2019 at paper scale ({train} x {dims} x {classes}): asks {inat['asked_mb']} MB and "
          f"{inat['asked_min_16_threads'] / 60:.1f} h with 16 threads; one iteration on {where} "
          f"{inat['seconds_per_iteration_measured_rate']:.2f} s at the measured rate, "
          f"{inat['seconds_per_iteration_assumed_rate']:.2f} s at the assumed {assumed / 1e9:.0f} GFLOP/s")
    if args.out:
        Path(args.out).write_text(json.dumps({"device": args.device, "threads": args.threads, "cases": rows,
                                              "inat": inat}, indent=2) + "\n")


if __name__ == "__main__":
    main()
