"""nvjpeg in a process of its own: ``gpu_jobs.decode: device`` with
``MULTISYM_NVJPEG_PROCESS=1`` (an operational setting, like the decoder
itself: it changes no image, so it retrains nothing).

Why a process. Beside a step replayed from a CUDA graph, torchvision's nvjpeg
call took a whole step (82 ms) per batch on an H200, against 10.5 ms beside
eager steps: the call waits for work it did not queue. The likely cause is a
device-wide synchronisation inside it (nvjpeg's default allocators free device
and pinned memory with ``cudaFree`` and ``cudaFreeHost``, which wait for every
stream of the calling process's CUDA context), and a graph keeps that context's
queue a full step deep. A second process has a context of its own, whose
synchronisations wait for its own work only. Its price: without MPS the two
contexts take turns on the GPU's compute engine, so the decoder's kernels (the
resize) do not overlap the step's, while the hardware JPEG engine's work and
the copies do. ``benchmarks/nvjpeg_waits.py`` tests the cause, and
``benchmarks/paper_path.py``'s ``device-process`` variant the remedy; until
they have run on a GPU this path is off by default.

How a batch travels. The training process allocates a slot of (rows, C, S, S)
uint8 pixels where it trains and hands it to the decoding process once, when
that process starts (on CUDA by inter-process memory handles: both processes
see the same device memory; on the CPU as shared memory). Then, for each
slotful of a batch, it sends the rows; the decoding process reads their files
on its threads, decodes and resizes them (``streaming.JpegDecoder``, on the
slot's device), writes the pixels into the slot, waits for its own stream and
answers with the count. The training process copies the slot on its current
stream and waits for that copy alone before it asks for the slot to be filled
again.
"""

from __future__ import annotations

import atexit
import os
import threading
import traceback
import weakref
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import Tensor

from .errors import UserError
from .streaming import JpegDecoder, as_float, ignore_job_signals, slot_rows

VARIABLE = "MULTISYM_NVJPEG_PROCESS"
STOP_WAIT_S = 10.0  # for the decoding process to leave on its own when asked


def wanted() -> bool:
    """Whether ``decode: device`` runs nvjpeg in a process of its own."""
    return os.environ.get(VARIABLE, "0") == "1"


class ProcessJpegDecoder:
    """``JpegDecoder``'s batches, decoded in a process of its own (see the
    module docstring); the decoder interface of ``streaming.StreamedImages``."""

    def __init__(self, jpeg: JpegDecoder):
        self.jpeg = jpeg
        self.shape = jpeg.shape

    def workers(self, count: int) -> DecodingProcess:
        """The process, with ``count`` threads reading files in it; it starts at its first batch."""
        return DecodingProcess(self.jpeg, count)

    def batch(self, pool: DecodingProcess, workers: int, rows: np.ndarray, device: torch.device) -> Tensor:
        """Split ``rows`` on ``device``, float32 in [0, 1]."""
        return as_float(pool.pixels(rows, device))


_running: weakref.WeakSet[DecodingProcess] = weakref.WeakSet()


class DecodingProcess:
    """One decoding process, started for the device of its first batch (and
    started again should a batch ask for another device). ``shutdown`` ends it,
    as an ``Executor``'s does its workers."""

    def __init__(self, jpeg: JpegDecoder, threads: int):
        self.jpeg, self.threads = jpeg, threads
        self._lock = threading.RLock()  # one slotful in flight; shutdown waits for it
        self._process = self._connection = self._slot = self._device = None

    def _start(self, device: torch.device) -> None:
        if self._process is not None and device == self._device:  # as asked: "cuda" is not "cuda:0"
            return
        self.shutdown()
        self._device = device
        self._slot = torch.empty((slot_rows(self.jpeg.shape), *self.jpeg.shape[1:]), dtype=torch.uint8,
                                 device=device)
        # spawned: a CUDA context cannot be forked, and torch's pickler shares the slot
        context = torch.multiprocessing.get_context("spawn")
        self._connection, theirs = context.Pipe()
        self._process = context.Process(target=_serve, args=(self.jpeg, self._slot, self.threads, theirs),
                                        name="nvjpeg", daemon=True)
        self._process.start()
        theirs.close()
        _running.add(self)

    def pixels(self, rows: np.ndarray, device: torch.device) -> Tensor:
        """Split ``rows`` as uint8 on ``device``, decoded a slotful at a time."""
        out = torch.empty((len(rows), *self.jpeg.shape[1:]), dtype=torch.uint8, device=device)
        with self._lock:
            self._start(device)
            for start in range(0, len(rows), len(self._slot)):
                count = self._ask(rows[start:start + len(self._slot)])
                out[start:start + count].copy_(self._slot[:count], non_blocking=True)
                if device.type == "cuda":  # the slot is filled again only once this copy has read it
                    copied = torch.cuda.Event()
                    copied.record()
                    copied.synchronize()
        return out

    def _ask(self, rows: np.ndarray) -> int:
        """The decoding process's answer for ``rows``: how many it wrote into the slot."""
        try:
            self._connection.send(rows.tolist())
            kind, answer = self._connection.recv()
        except (EOFError, OSError) as error:
            process = self._process
            self.shutdown()
            raise RuntimeError(f"the nvjpeg decoding process ended (exit code {process.exitcode}) before it "
                               "answered; the next batch starts a new one") from error
        if kind == "user":
            raise UserError(answer)
        if kind == "failed":
            raise RuntimeError(f"the nvjpeg decoding process failed on a batch:\n{answer}")
        return answer

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        """Ask the process to leave; kill it if it has not within ``STOP_WAIT_S``
        (it ignores the job's signals, which the training process handles).
        A slotful in flight is waited for as long, so that nothing else
        talks to the process meanwhile."""
        idle = self._lock.acquire(timeout=STOP_WAIT_S)
        try:
            process, self._process = self._process, None
            if process is None:
                return
            try:
                self._connection.send(None)
            except OSError:
                pass
            process.join(STOP_WAIT_S)
            if process.is_alive():
                process.kill()
                process.join()
            self._connection.close()
            _running.discard(self)
        finally:
            if idle:
                self._lock.release()


@atexit.register
def _stop_running() -> None:
    """Before multiprocessing's own exit handler, which would ask a daemon
    process to leave by SIGTERM, which it ignores, and wait for it."""
    for process in list(_running):
        process.shutdown()


def _serve(jpeg: JpegDecoder, slot: Tensor, threads: int, connection) -> None:
    """The decoding process: fills ``slot`` with the rows asked for until asked
    to leave (None) or until the training process is gone."""
    ignore_job_signals()
    torch.set_num_threads(1)
    if slot.device.type == "cuda":
        torch.cuda.set_device(slot.device)
    readers = ThreadPoolExecutor(threads, thread_name_prefix="read")
    try:
        while (rows := _receive(connection)) is not None:
            try:
                pixels = jpeg.pixels(readers, threads, np.asarray(rows, dtype=np.int64), slot.device)
                slot[:len(pixels)].copy_(pixels)
                if slot.device.type == "cuda":
                    torch.cuda.current_stream(slot.device).synchronize()
                answer = ("done", len(pixels))
            except UserError as error:
                answer = ("user", str(error))
            except Exception:  # noqa: BLE001 - whatever failed is raised in the training process
                answer = ("failed", traceback.format_exc())
            try:
                connection.send(answer)
            except OSError:
                return
    finally:
        readers.shutdown(wait=False, cancel_futures=True)


def _receive(connection):
    """The next request, or None when asked to leave or when the training process is gone."""
    try:
        return connection.recv()
    except (EOFError, OSError):
        return None
