"""Percentile bootstrap over a split's samples (docs/workflow.md#selection-never-sees-test:
every reported metric carries a 95 % CI), for every ensemble of a job at once.

The resamples of ``metrics.bootstrap_indices`` are taken as a (B, N) matrix
of small integer counts c_bi (how often item i is in resample b), drawn once
per job. The mean of every per-sample metric over every resample, and the
binned sums behind ECE, are then one matrix product, Σ_i c_bi v_i / n; the
AUUQC of every resample (docs/method.md#auuqc) comes from one sort of the
ensemble's items and cumulative counts. ``tests/test_outputs.py`` checks
each against resampling by indices.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from multisym.ensembles.metrics import UQ_POINTS, bootstrap_indices, resample_stream
from multisym.ensembles.rowblocks import for_each, job_threads, row_blocks, scratch

AUUQC_BLOCK = 16  # items per block of the resampled AUUQC's cumulative counts
RESAMPLE_CHUNK = 50  # resamples drawn and counted together on one thread
ITEM_BLOCK = 4096  # items whose counts are made float at a time for the resampled means


@lru_cache(maxsize=4)
def resample_counts(n: int, samples: int, seed: int) -> np.ndarray:
    """(samples, n): how often each item is in each resample of
    ``metrics.bootstrap_indices``; uint8 when every count fits (always for
    n < 256; a resample of n ≥ 256 items would have to draw one item 256
    times), else int64. Each resample has its own stream, so chunks of
    resamples are drawn on the job's threads."""
    chunks = [range(start, min(start + RESAMPLE_CHUNK, samples)) for start in range(0, samples, RESAMPLE_CHUNK)]
    counts = np.empty((samples, n), np.uint8)

    def count(resamples: range) -> bool:
        """Fill the chunk's rows; False when a count does not fit uint8."""
        fits = True
        for b in resamples:
            row = np.bincount(resample_stream(seed, b).integers(0, n, size=n), minlength=n)
            counts[b] = row
            fits = fits and (n < 256 or row.max() < 256)
        return fits

    if not all(for_each(chunks, count)):
        counts = np.stack([np.bincount(d, minlength=n) for d in bootstrap_indices(n, samples, seed)])
    counts.setflags(write=False)
    return counts


@lru_cache(maxsize=2)
def resample_counts_by_item(n: int, samples: int, seed: int) -> np.ndarray:
    """``resample_counts`` transposed to (n, samples), contiguous: an item's
    counts in every resample side by side."""
    by_item = np.ascontiguousarray(resample_counts(n, samples, seed).T)
    by_item.setflags(write=False)
    return by_item


def resampled_means(by_item: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(samples, k): the mean of each column of ``values`` (n, k) over each
    resample, Σ_i c_bi v_i / n. The counts are made float32 a block of items
    at a time (never the whole (n, samples) matrix); the blocks' products are
    added in block order in float64."""
    n = len(values)
    values = np.ascontiguousarray(values, np.float32)
    total = np.zeros((values.shape[1], by_item.shape[1]))
    for rows in row_blocks(n, ITEM_BLOCK):
        counts = scratch("counts", (rows.stop - rows.start, by_item.shape[1]))
        counts[...] = by_item[rows]
        total += values[rows].T @ counts
    return total.T / n


def resampled_auuqc(by_item: np.ndarray, hits: np.ndarray, uncertainty: np.ndarray,
                    threads: int | None = None) -> np.ndarray:
    """AUUQC of every resample. The items sorted once by decreasing
    uncertainty; a resample is that order with each item repeated as often
    as it was drawn, so removing its k most uncertain means cutting its
    cumulative counts at k. The resamples are split between ``threads``
    threads (the job's cores by default)."""
    order = np.argsort(-uncertainty, kind="stable")
    sorted_hits = hits[order] != 0
    samples = by_item.shape[1]
    step = -(-samples // (threads or job_threads()))
    parts = [slice(start, min(start + step, samples)) for start in range(0, samples, step)]
    return np.concatenate(for_each(parts, lambda part: _auuqc_of(by_item[:, part], order, sorted_hits), threads))


def _auuqc_of(by_item: np.ndarray, order: np.ndarray, sorted_hits: np.ndarray) -> np.ndarray:
    """``resampled_auuqc`` of the resamples in ``by_item``'s columns. Counts are
    summed per block of ``AUUQC_BLOCK`` items in sorted order and cumulated
    over blocks; each cut is then found inside the one block where it falls.
    Counts and hits are whole numbers: every sum is exact."""
    n, samples = by_item.shape
    removed = np.floor(np.linspace(0.0, 0.98, UQ_POINTS) * n).astype(np.int64)
    width = AUUQC_BLOCK
    blocks = -(-n // width)
    # (items, resamples) in sorted order, padded with zero rows to whole blocks;
    # reused between ensembles: fresh memory costs more in page faults than the arithmetic
    drawn = scratch("drawn", (blocks * width, samples), by_item.dtype)
    drawn_hits = scratch("drawn_hits", (blocks * width, samples), by_item.dtype)
    hit_rows = np.zeros(blocks * width, by_item.dtype)  # a 0/1 factor of the count's own type: no cast per element
    hit_rows[:n] = sorted_hits
    drawn[n:] = 0
    np.take(by_item, order, axis=0, out=drawn[:n], mode="clip")  # "raise" would copy through a buffer
    np.multiply(drawn, hit_rows[:, None], out=drawn_hits)
    # counts and hits before each block, per resample: (2, resamples, blocks + 1), cumulated
    # along the last axis (NumPy's cumsum along a first axis of many rows is far slower)
    block_sum = np.uint16 if by_item.dtype == np.uint8 else np.int64  # width x 255 fits 16 bits
    before = np.zeros((2, samples, blocks + 1), np.int64)
    for k, values in enumerate((drawn, drawn_hits)):
        sums = values.reshape(blocks, width, samples).sum(axis=1, dtype=block_sum)
        np.cumsum(sums.T, axis=1, out=before[k, :, 1:])
    # the block holding the k-th removal: the first whose cumulative count reaches k
    block = np.stack([np.searchsorted(row, removed, side="left") for row in before[0, :, 1:-1]], axis=1)
    columns = np.arange(samples)
    need = removed[:, None] - before[0][columns, block]  # removals inside the block, (points, resamples)
    items = (block * width)[..., None] + np.arange(width)  # the block's items, (points, resamples, width)
    cum = np.cumsum(drawn[items, columns[:, None]], axis=-1, dtype=np.int64)
    cum_hits = np.cumsum(drawn_hits[items, columns[:, None]], axis=-1, dtype=np.int64)
    item = np.minimum((cum < need[..., None]).sum(axis=-1), width - 1)  # where the k-th removal falls
    previous = np.maximum(item - 1, 0)[..., None]
    count_to = np.where(item > 0, np.take_along_axis(cum, previous, -1)[..., 0], 0)
    hits_to = np.where(item > 0, np.take_along_axis(cum_hits, previous, -1)[..., 0], 0)
    hit_rate = sorted_hits[np.minimum(block * width + item, n - 1)]
    removed_hits = before[1][columns, block] + hits_to + (need - count_to) * hit_rate
    total_hits = before[1, :, -1][None, :]
    return ((total_hits - removed_hits) / (n - removed)[:, None]).mean(axis=0)
