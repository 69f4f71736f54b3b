"""Ensembling at paper scale (issue 15, target 4): every pool, strategy, size
and metric for synthetic logits of 18 members (6 Eq, 6 Inv, 6 Base), 50,000
test and 10,000 val samples, 1,000 classes, stored as the workflow stores
logits (float16 gaps to each row's maximum).

It runs the workflow's jobs, one at a time, each as the command line its
rule runs (``multisym member-metrics`` and ``multisym ensemble``, with the
spec JSON the rule passes and ``--threads 2``): member metrics of all 18
members, then greedy and random ensembles of the pools eq, inv, eq_inv and
base with the paper config's ensembles section (greedy up to 7, random sizes
2-7 x 5 draws, 1,000 bootstrap resamples). It prints each process's seconds
(start, imports and result file included) and peak memory, and the totals
beside the targets: under 60 s on 2 CPU cores, under 8 GB.

    python benchmarks/ensembling.py [--folder /tmp/mse-ensembling] [--test 50000] [--val 10000]
        [--threads 2] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
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
    """One file per member, written as the workflow writes logits
    (``logits.write_logits``: float16 gaps to each row's maximum): a shared
    class signal per mode plus member noise, so members agree often but not
    always (about 75 % top-1)."""
    from multisym.logits import write_logits as store

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
            arrays[f"{split}_logits"] = 2.0 * z
            arrays[f"{split}_labels"] = y
        store(path, **arrays)


def settings() -> dict:
    import yaml

    from multisym.config import resolve

    config = resolve(yaml.safe_load((ROOT / "config" / "paper.yaml").read_text()))
    return config["ensembles"]


def job_commands(folder: Path, out: Path, threads: int) -> list[tuple[str, list[str]]]:
    """The workflow's command line of each job (rules member_metrics and
    ensemble), with the spec JSON its rule would pass."""
    spec = settings()
    logits = {m: str(folder / f"{m}.npz") for m in member_ids()}
    members = {"members": member_ids(), "modes": [m.split("-")[0] for m in member_ids()],
               "axes": [None if m.startswith("base") else "rotation" for m in member_ids()],
               "axis": spec["axis"], "bootstrap": spec["bootstrap"]}
    jobs = [("members all", ["member-metrics", "--spec-json", json.dumps(members), "--logits", *logits.values(),
                             "--out", str(out / "members.json")])]
    for pool, modes in POOLS.items():
        ids = [m for m in member_ids() if m.split("-")[0] in modes]
        random = dict(spec["random"])  # at most 6 members of a class: a one-class pool cannot draw 7
        random["sizes"] = [size for size in random["sizes"] if size <= PER_MODE * len(modes)]
        pool_spec = {"pool": pool, "members": ids, "classes": [m.split("-")[0] for m in ids], "random": random,
                     **{key: spec[key] for key in ("greedy", "bootstrap", "diversity_size")}}
        for strategy in ("greedy", "random"):
            jobs.append((f"{strategy} {pool}", ["ensemble", "--strategy", strategy, "--spec-json",
                                                json.dumps(pool_spec),
                                                "--logits", *(logits[m] for m in ids),
                                                "--out", str(out / f"{pool}_{strategy}.json")]))
    return [(name, [*command, "--threads", str(threads)]) for name, command in jobs]


def run(command: list[str]) -> tuple[float, float]:
    """Seconds and peak resident GB of one ``multisym`` process."""
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "multisym.cli", *command], stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"multisym {command[0]} failed:\n{process.stderr.read()}")
    return seconds, usage.ru_maxrss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", default="/tmp/mse-ensembling")
    parser.add_argument("--test", type=int, default=50_000)
    parser.add_argument("--val", type=int, default=10_000)
    parser.add_argument("--out", help="also write the figures to this JSON file")
    parser.add_argument("--threads", type=int, default=2, help="each job's --threads, as the rule gives it")
    args = parser.parse_args()
    folder = Path(args.folder) / f"{args.test}x{args.val}-gaps"
    start = time.perf_counter()
    write_logits(folder, args.test, args.val)
    print(f"synthetic logits in {folder} ({time.perf_counter() - start:.0f} s, cached for later runs)")
    results = []
    with tempfile.TemporaryDirectory() as out:
        for name, command in job_commands(folder, Path(out), args.threads):
            seconds, peak = run(command)
            results.append({"job": name, "seconds": seconds, "peak_gb": peak})
            print(f"  {name:<16} {seconds:7.1f} s  peak {peak:.2f} GB")
    total = sum(r["seconds"] for r in results)
    peak = max(r["peak_gb"] for r in results)
    print(f"every pool, strategy, size and metric: {total:.1f} s one job at a time (target < 60 s on 2 cores)")
    print(f"largest job's peak memory: {peak:.2f} GB (target < 8 GB)")
    if args.out:
        Path(args.out).write_text(json.dumps({"jobs": results, "total_s": total, "peak_gb": peak}, indent=1) + "\n")


if __name__ == "__main__":
    main()
