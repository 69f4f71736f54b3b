"""Ensembling at paper scale (issue 15, target 4): every pool, strategy, size
and metric for synthetic logits of 18 members (6 Eq, 6 Inv, 6 Base), 50,000
test and 10,000 val samples, 1,000 classes, stored as float16 .npz files.

It runs what the workflow's jobs run, one job at a time, each in its own
process (as Snakemake would): member metrics of all 18 members, then greedy
and random ensembles of the pools eq, inv, eq_inv and base with the paper
config's ensembles section (greedy up to 7, random sizes 2-7 x 5 draws,
1,000 bootstrap resamples). It prints each job's seconds and peak memory,
and the totals beside the targets: under 60 s on 2 CPU cores, under 8 GB.

    python benchmarks/ensembling.py [--folder /tmp/mse-ensembling] [--test 50000] [--val 10000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODES = ("eq", "inv", "base")
PER_MODE = 6
CLASSES = 1000
POOLS = {"eq": ("eq",), "inv": ("inv",), "eq_inv": ("eq", "inv"), "base": ("base",)}


def member_ids() -> list[str]:
    return [f"{mode}-s{seed}" for mode in MODES for seed in range(1, PER_MODE + 1)]


def write_logits(folder: Path, n_test: int, n_val: int) -> None:
    """One float16 file per member: a shared class signal per mode plus member
    noise, so members agree often but not always (about 75 % top-1)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    labels = {"test": rng.integers(0, CLASSES, n_test), "val": rng.integers(0, CLASSES, n_val)}
    for member in member_ids():
        path = folder / f"{member}.npz"
        if path.exists():
            continue
        arrays = {}
        for split, y in labels.items():
            z = rng.standard_normal((len(y), CLASSES), dtype=np.float32)
            z[np.arange(len(y)), y] += rng.uniform(1.5, 5.5, len(y)).astype(np.float32)
            arrays[f"{split}_logits"] = (2.0 * z).astype(np.float16)
            arrays[f"{split}_labels"] = y
        np.savez(path, **arrays)


def settings() -> dict:
    import yaml

    from multisym.config import resolve

    config = resolve(yaml.safe_load((ROOT / "config" / "paper.yaml").read_text()))
    return config["ensembles"]


def run_job(kind: str, folder: str, pool: str) -> None:
    """One workflow job, in this process; prints its seconds and peak RSS as JSON."""
    from multisym.ensemble import JOB_INPUTS, greedy_results, load_logits, member_results, random_results

    start = time.perf_counter()
    spec = settings()
    ids = member_ids() if kind == "members" else [m for m in member_ids() if m.split("-")[0] in POOLS[pool]]
    classes = [m.split("-")[0] for m in ids]
    stacks = load_logits([str(Path(folder) / f"{m}.npz") for m in ids], **JOB_INPUTS[kind])
    loaded = time.perf_counter() - start
    if kind == "members":
        member_results(ids, classes, stacks, spec, CLASSES)
    else:
        # a random ensemble draws without replacement within each class: 6 per class
        # allow sizes up to 6 for one class, up to 12 for Eq+Inv
        limit = PER_MODE * len(POOLS[pool])
        spec["random"]["sizes"] = [size for size in spec["random"]["sizes"] if size <= limit]
        runner = greedy_results if kind == "greedy" else random_results
        runner(ids, classes, stacks, spec)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps({"job": f"{kind} {pool}", "seconds": time.perf_counter() - start, "load_s": loaded,
                      "peak_gb": peak}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", default="/tmp/mse-ensembling")
    parser.add_argument("--test", type=int, default=50_000)
    parser.add_argument("--val", type=int, default=10_000)
    parser.add_argument("--job", nargs=3, metavar=("KIND", "FOLDER", "POOL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        run_job(*args.job)
        return
    folder = Path(args.folder) / f"{args.test}x{args.val}"
    start = time.perf_counter()
    write_logits(folder, args.test, args.val)
    print(f"synthetic logits in {folder} ({time.perf_counter() - start:.0f} s, cached for later runs)")
    jobs = [("members", "all")] + [(kind, pool) for pool in POOLS for kind in ("greedy", "random")]
    results = []
    for kind, pool in jobs:
        out = subprocess.run([sys.executable, __file__, "--job", kind, str(folder), pool], check=True,
                             capture_output=True, text=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
        r = results[-1]
        print(f"  {r['job']:<16} {r['seconds']:7.1f} s  (reading {r['load_s']:.1f} s)  peak {r['peak_gb']:.2f} GB")
    total = sum(r["seconds"] for r in results)
    peak = max(r["peak_gb"] for r in results)
    print(f"every pool, strategy, size and metric: {total:.1f} s one job at a time (target < 60 s on 2 cores)")
    print(f"largest job's peak memory: {peak:.2f} GB (target < 8 GB)")


if __name__ == "__main__":
    main()
