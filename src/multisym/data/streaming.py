"""Images of a dataset read from a root, decoded by ``decoders``: all at
once into memory for a split that fits, or on demand for one that does not
(ImageNet's 1.28M training images need about 750 GB as float32). Both paths
give the same tensors; views then crop and augment on the device
(``views``).

``StreamedImages`` stands in for the (N, C, S, S) tensor a training or
evaluation loop indexes: ``images[rows]`` (a slice, index array or tensor)
decodes those rows on a pool of at most 8 workers and returns them on the
device given to ``.to()``; ``prefetch(rows)`` starts decoding the next batch
while the current one trains. A batch is one task per worker (a share of its
rows), not one per image: the training thread, which launches the step's
kernels, holds the GIL most of the time, and each task's result costs the
assembling thread a turn at it.
"""

from __future__ import annotations

import atexit
import weakref
from concurrent.futures import Executor, Future, ThreadPoolExecutor

import numpy as np
import torch
from torch import Tensor

from multisym.data.decoders import JpegDecoder

# The GiB of decoded float32 images above which a split is streamed
# (streaming.in_memory_gib in the config; the CLI sets it for its command).
in_memory_gib = 8.0
MAX_THREADS = 8  # decoding workers, threads or processes


def set_in_memory_limit(gib: float) -> None:
    """Splits above ``gib`` GiB of float32 images are streamed from now on in
    this process (``streaming.in_memory_gib``; it changes no result)."""
    global in_memory_gib
    in_memory_gib = float(gib)


def in_memory_limit_bytes() -> float:
    return in_memory_gib * 2**30


def decoding_threads() -> int:
    """Workers that decode: this process's CPUs ($SLURM_CPUS_PER_TASK in a SLURM
    job), at most ``MAX_THREADS``."""
    from multisym.runtime import cpu_count

    return min(cpu_count(), MAX_THREADS)


class StreamedImages:
    """A split's images, decoded when indexed (see the module docstring) by
    ``decoder``: a ``SplitDecoder`` or a ``JpegDecoder``."""

    def __init__(self, decoder, device: torch.device | str = "cpu",
                 pool: Executor | None = None, workers: int | None = None):
        self.decoder, self.device = decoder, torch.device(device)
        self._workers = workers or decoding_threads()
        self._pool = pool or decoder.workers(self._workers)
        # Assembles a prefetched batch off the training thread: nvjpeg's calls
        # wait for the device, which would stop that thread queueing the step.
        self._assembler = ThreadPoolExecutor(1, thread_name_prefix="assemble")
        self._ahead: tuple[bytes, Future] | None = None  # rows, and their (batch, made) to come
        self._side: torch.cuda.Stream | None = None
        _open.add(self)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.decoder.shape

    def __len__(self) -> int:
        return self.decoder.shape[0]

    def to(self, device) -> "StreamedImages":
        """The same images, returned on ``device`` when indexed."""
        return StreamedImages(self.decoder, device, self._pool, self._workers)

    def _rows(self, key) -> np.ndarray:
        if isinstance(key, Tensor):
            return key.cpu().numpy().astype(np.int64)
        if isinstance(key, slice):
            return np.arange(len(self))[key]
        rows = np.asarray(key, dtype=np.int64)
        if rows.ndim != 1:
            raise IndexError(f"streamed images are indexed by a 1-d index, a tensor or a slice, not {key!r}")
        return rows

    def _batch(self, rows: np.ndarray) -> tuple[Tensor, torch.cuda.Event | None]:
        """The batch of ``rows`` and, on CUDA, the event that marks it made:
        its device work runs on a side stream (the copies overlap the step,
        and what it frees is not reused under the step's queued work)."""
        if self.device.type != "cuda":
            return self.decoder.batch(self._pool, self._workers, rows, self.device), None
        self._side = self._side or torch.cuda.Stream(self.device)
        with torch.cuda.stream(self._side):
            batch = self.decoder.batch(self._pool, self._workers, rows, self.device)
            made = torch.cuda.Event()
            made.record()
        return batch, made

    def _hand_over(self, batch: Tensor, made: torch.cuda.Event | None) -> Tensor:
        """``batch`` for the asking thread's current stream, which waits for it
        there: the step queued before it does not."""
        if made is not None:
            consumer = torch.cuda.current_stream(self.device)
            consumer.wait_event(made)
            if batch.numel():
                batch.record_stream(consumer)
        return batch

    def prefetch(self, key) -> None:
        """Start decoding and assembling ``key``'s rows; the next ``self[key]``
        returns them."""
        rows = self._rows(key)
        self._ahead = (rows.tobytes(), self._assembler.submit(self._batch, rows))

    def __getitem__(self, key) -> Tensor:
        rows = self._rows(key)
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] == rows.tobytes():
            return self._hand_over(*ahead[1].result())
        return self._hand_over(*self._batch(rows))

    def close(self, wait: bool = False) -> None:
        """End the decoding workers; ``wait`` until they have gone."""
        self._pool.shutdown(wait=wait, cancel_futures=True)
        self._assembler.shutdown(wait=wait, cancel_futures=True)


_open: weakref.WeakSet[StreamedImages] = weakref.WeakSet()


@atexit.register
def close_all() -> None:
    """End the workers of every split still open, and wait for them (at exit,
    and by ``cli.release`` in a warm worker). multiprocessing's own exit
    handler, registered before this one (with ProcessPoolExecutor's import
    by ``decoders``) and so run after it, joins the worker processes: they
    wait for work until their executor shuts down, which Python does only at
    its threading shutdown, after the handlers. Not waiting here would race
    that handler, which closes the queue the executor's stop messages go
    through."""
    for images in list(_open):
        images.close(wait=True)


def decode_split(decoder, device: torch.device | str = "cpu",
                 chunk: int = 512) -> Tensor | StreamedImages:
    """The split in memory (on the CPU) when it fits under the limit, else
    streamed; ``device`` is where a ``JpegDecoder`` decodes the chunks of the
    split it holds in memory."""
    if 4 * int(np.prod(decoder.shape)) > in_memory_limit_bytes():
        return StreamedImages(decoder)
    streamed = StreamedImages(decoder, device)
    try:
        images = torch.empty(decoder.shape)
        for start in range(0, len(streamed), chunk):
            images[start:start + chunk] = streamed[start:start + chunk].cpu()
        return images
    finally:
        streamed.close()



def decoder_name(images) -> str | None:
    """What decodes a streamed split (its decoder's class name, for the run's
    provenance); None for a split in memory."""
    return type(images.decoder).__name__ if isinstance(images, StreamedImages) else None


def decodes_on_device(images) -> bool:
    """Whether ``images`` is a split streamed through nvjpeg."""
    return isinstance(images, StreamedImages) and isinstance(images.decoder, JpegDecoder)


def prefetch(images, key) -> None:
    """Start decoding the next batch of streamed images (nothing for a tensor)."""
    if isinstance(images, StreamedImages):
        images.prefetch(key)


def close(images) -> None:
    """End the decoding workers of streamed images (nothing for a tensor)."""
    if isinstance(images, StreamedImages):
        images.close()


def on_host(images, order: Tensor) -> Tensor:
    """The order to pick streamed rows by, on the host (one copy per epoch, not
    a device sync per step); a tensor in memory takes ``order`` as it is."""
    return order.cpu() if isinstance(images, StreamedImages) else order
