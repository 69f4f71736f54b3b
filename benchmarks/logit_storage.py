"""What the stored logits (float16 gaps to each row's maximum plus the float32
maxima, ``multisym.logits.write_logits``) preserve and what they can move,
against the same logits in float64.

Synthetic pools shaped like trained members: each member's logits are a
shared class signal (the label's logit raised so that members reach about
the given top-1) plus member noise, at the scale of a trained network's
logits. For each number of classes, it writes every member through
``write_logits``, reads it back with ``logits_of`` and compares, over the
pools and sizes the workflow ensembles:

- each member's own argmax (the storage keeps the top class exactly, so it
  never changes);
- the argmax of the averaged probabilities of ensembles of 2 to M members
  (rows where two classes are nearly tied in the average can flip);
- the ensemble's top-1, NLL and ECE (15 bins), as the workflow computes them.

Prints one line per setting and the largest differences; ``--out`` writes
them as JSON.

    python benchmarks/logit_storage.py [--rows 2000] [--members 6] [--pools 200] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from multisym.ensembles.metrics import ece, ensemble_probs, nll_terms
from multisym.logits import logits_of, write_logits


def member_logits(rng, rows: int, classes: int, members: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, classes, rows)
    shared = rng.normal(0, scale, (rows, classes))
    shared[np.arange(rows), labels] += 2.2 * scale
    logits = shared[None] + rng.normal(0, 0.6 * scale, (members, rows, classes))
    return logits, labels


def stored(logits: np.ndarray, folder: Path) -> np.ndarray:
    out = []
    for index, member in enumerate(logits):
        path = folder / f"m{index}.npz"
        write_logits(path, test_logits=member.astype(np.float32))
        out.append(logits_of(dict(np.load(path)), "test"))
    return np.stack(out).astype(np.float64)


def compare(exact: np.ndarray, kept: np.ndarray, labels: np.ndarray, rng, pools: int) -> dict:
    members = exact.shape[0]
    own = int((exact.argmax(-1) != kept.argmax(-1)).sum())
    flips = rows = 0
    top1 = nll = calibration = 0.0
    for _ in range(pools):
        size = int(rng.integers(2, members + 1))
        chosen = rng.choice(members, size, replace=False)
        p_exact, p_kept = ensemble_probs(exact[chosen]), ensemble_probs(kept[chosen])
        flips += int((p_exact.argmax(-1) != p_kept.argmax(-1)).sum())
        rows += len(labels)
        top1 = max(top1, abs((p_exact.argmax(-1) == labels).mean() - (p_kept.argmax(-1) == labels).mean()) * 100)
        nll = max(nll, abs(nll_terms(p_exact, labels).mean() - nll_terms(p_kept, labels).mean()))
        calibration = max(calibration, abs(ece(p_exact, labels) - ece(p_kept, labels)))
    return {"member_argmax_changes": own, "ensemble_argmax_changes": flips, "ensemble_rows": rows,
            "max_top1_points": top1, "max_nll": nll, "max_ece": calibration}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--members", type=int, default=6)
    parser.add_argument("--pools", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for classes, scale in ((10, 3.0), (100, 3.0), (1000, 3.0), (1000, 8.0)):
            exact, labels = member_logits(rng, args.rows, classes, args.members, scale)
            row = {"classes": classes, "logit_scale": scale, **compare(exact, stored(exact, Path(folder)), labels,
                                                                       rng, args.pools)}
            results.append(row)
            print(f"C={classes:5d} scale={scale:3.0f}: member argmax changed {row['member_argmax_changes']}, "
                  f"ensemble argmax changed {row['ensemble_argmax_changes']} of {row['ensemble_rows']:,} rows; "
                  f"largest |delta| top-1 {row['max_top1_points']:.3f} pts, NLL {row['max_nll']:.2e}, "
                  f"ECE {row['max_ece']:.2e}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
