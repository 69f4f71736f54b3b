"""Work on blocks of rows, spread over the job's CPU cores.

NumPy's element-wise kernels run on one core each, but they release the GIL
while they run, so threads that take one block of rows at a time keep every
core busy: no process pool (which would copy the arrays) and no torch (whose
import alone costs seconds in every job). Each thread keeps its own scratch
buffers, so a block's temporaries stay in that core's cache and are not
allocated afresh (the first touch of new memory costs more than the
arithmetic on it).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence, TypeVar

import numpy as np

BLOCK_ROWS = 256  # rows of a block: a few 256 x 1,000 float32 temporaries stay in cache

Task = TypeVar("Task")
_POOLS: dict[int, ThreadPoolExecutor] = {}
_LOCAL = threading.local()


_configured: int | None = None  # set_job_threads


def set_job_threads(threads: int | None) -> None:
    """The threads a job was given (its rule's ``threads``), so that jobs the
    workflow runs side by side do not each take every core."""
    global _configured
    _configured = threads


def job_threads() -> int:
    """The job's threads as ``runtime.thread_count`` gives them for the
    number set (its rule's threads)."""
    from multisym.runtime import thread_count

    return thread_count(_configured)


def row_blocks(n: int, rows: int = BLOCK_ROWS) -> list[slice]:
    return [slice(start, min(start + rows, n)) for start in range(0, n, rows)]


def for_each(tasks: Sequence[Task], work: Callable[[Task], object], threads: int | None = None) -> list:
    """``[work(task) for task in tasks]``, run on ``threads`` threads (the job's
    cores by default); an exception in any task is raised here."""
    threads = threads or job_threads()
    if threads == 1 or len(tasks) < 2:
        return [work(task) for task in tasks]
    if threads not in _POOLS:
        _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="rowblocks")
    return list(_POOLS[threads].map(work, tasks))


def scratch(name: str, shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
    """A buffer of ``shape`` private to the calling thread; later calls with the
    same name get the same memory (a view of it when they ask for fewer rows)."""
    buffers = _LOCAL.__dict__.setdefault("buffers", {})
    key = (name, np.dtype(dtype))
    buffer = buffers.get(key)
    if buffer is None or buffer.shape[1:] != tuple(shape[1:]) or len(buffer) < shape[0]:
        buffer = buffers[key] = np.empty(shape, dtype)
    return buffer[:shape[0]]
