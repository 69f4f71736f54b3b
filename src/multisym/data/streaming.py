"""Images of a dataset read from a root, decoded by ``decoders``: all at
once into memory for a split that fits, or on demand for one that does not
(ImageNet's 1.28M training images need about 750 GB as float32). Both paths
give the same tensors; views then crop and augment on the device
(``views``). A training split whose views are cut from the original image
(``cuts``) is indexed by ``cut(rows, seeds)`` instead: ``StreamedImages``
has its workers decode and cut each batch, ``OriginalsInMemory`` holds the
decoded originals (``cut_split`` picks one); both give the same views.

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


def rows_of(key, length: int) -> np.ndarray:
    """The rows of a split of ``length`` images that ``key`` (a 1-d index, a
    tensor or a slice) picks, as int64."""
    if isinstance(key, Tensor):
        return key.cpu().numpy().astype(np.int64)
    if isinstance(key, slice):
        return np.arange(length)[key]
    rows = np.asarray(key, dtype=np.int64)
    if rows.ndim != 1:
        raise IndexError(f"streamed images are indexed by a 1-d index, a tensor or a slice, not {key!r}")
    return rows


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

    @property
    def decoder_cuts(self) -> tuple:
        return getattr(self.decoder, "cuts", None) or getattr(getattr(self.decoder, "fallback", None), "cuts", ())

    def __len__(self) -> int:
        return self.decoder.shape[0]

    def to(self, device) -> "StreamedImages":
        """The same images, returned on ``device`` when indexed."""
        return StreamedImages(self.decoder, device, self._pool, self._workers)

    def _rows(self, key) -> np.ndarray:
        return rows_of(key, len(self))

    def _make(self, rows: np.ndarray, seeds: np.ndarray | None) -> Tensor | list[Tensor]:
        if seeds is None:
            return self.decoder.batch(self._pool, self._workers, rows, self.device)
        return self.decoder.cut_batch(self._pool, self._workers, rows, seeds, self.device)

    def _batch(self, rows: np.ndarray, seeds: np.ndarray | None = None
               ) -> tuple[Tensor | list[Tensor], torch.cuda.Event | None]:
        """The batch of ``rows`` (with ``seeds``: their cuts) and, on CUDA,
        the event that marks it made: its device work runs on a side stream
        (the copies overlap the step, and what it frees is not reused under
        the step's queued work)."""
        if self.device.type != "cuda":
            return self._make(rows, seeds), None
        self._side = self._side or torch.cuda.Stream(self.device)
        with torch.cuda.stream(self._side):
            batch = self._make(rows, seeds)
            made = torch.cuda.Event()
            made.record()
        return batch, made

    def _hand_over(self, batch: Tensor | list[Tensor], made: torch.cuda.Event | None) -> Tensor | list[Tensor]:
        """``batch`` for the asking thread's current stream, which waits for it
        there: the step queued before it does not."""
        if made is not None:
            consumer = torch.cuda.current_stream(self.device)
            consumer.wait_event(made)
            for tensor in batch if isinstance(batch, list) else [batch]:
                if tensor.numel():
                    tensor.record_stream(consumer)
        return batch

    @staticmethod
    def _ticket(rows: np.ndarray, seeds: np.ndarray | None) -> bytes:
        return rows.tobytes() + (b"" if seeds is None else b"|" + np.asarray(seeds, np.uint64).tobytes())

    def prefetch(self, key, seeds: np.ndarray | None = None) -> None:
        """Start decoding and assembling ``key``'s rows (with ``seeds``: their
        cuts); the next ``self[key]`` (``self.cut(key, seeds)``) returns them."""
        rows = self._rows(key)
        self._ahead = (self._ticket(rows, seeds), self._assembler.submit(self._batch, rows, seeds))

    def _get(self, rows: np.ndarray, seeds: np.ndarray | None) -> Tensor | list[Tensor]:
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] == self._ticket(rows, seeds):
            return self._hand_over(*ahead[1].result())
        return self._hand_over(*self._batch(rows, seeds))

    def __getitem__(self, key) -> Tensor:
        return self._get(self._rows(key), None)

    def cut(self, key, seeds: np.ndarray) -> list[Tensor]:
        """The decoder's cuts of ``key``'s rows, row i's boxes drawn from
        ``seeds[i]``: one uint8 batch per cut on this split's device."""
        return self._get(self._rows(key), np.asarray(seeds, dtype=np.uint64))

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



class OriginalsInMemory:
    """A training split's images as decoded, at their own sizes, held in
    memory (uint8, one tensor each), cut in this process by the same
    function the decoding workers run (``cuts.cut_views``), so that the same
    seeds give the same views as ``StreamedImages.cut``."""

    def __init__(self, images: list[Tensor], cuts: tuple, device: torch.device | str = "cpu"):
        self.images, self.cuts, self.device = images, tuple(cuts), torch.device(device)
        self._pool: ThreadPoolExecutor | None = None
        self.channels = images[0].shape[0] if images else 3
        self.shape = (len(images), self.channels)

    def __len__(self) -> int:
        return len(self.images)

    def to(self, device) -> "OriginalsInMemory":
        return OriginalsInMemory(self.images, self.cuts, device)

    def close(self, wait: bool = False) -> None:
        """End the cutting threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=wait)

    def cut(self, key, seeds: np.ndarray) -> list[Tensor]:
        """Row i's cuts from ``seeds[i]``, one uint8 batch per cut; the
        samples are cut on threads (torch's resampling releases the GIL)."""
        from multisym.data.cuts import cut_views

        rows = rows_of(key, len(self.images))
        if self._pool is None:
            self._pool = ThreadPoolExecutor(decoding_threads(), thread_name_prefix="cut")
        views = list(self._pool.map(lambda pair: cut_views(self.images[int(pair[0])], int(pair[1]), self.cuts),
                                    zip(rows, seeds)))
        return [torch.stack([v[i] for v in views]).to(self.device) if views
                else torch.empty((0, self.channels, cut.size, cut.size), dtype=torch.uint8, device=self.device)
                for i, cut in enumerate(self.cuts)]


# Bytes one decoded original is counted as when a training split of originals
# is weighed against the in-memory limit: a 512 x 512 RGB image (ImageNet's
# mean is about 400 x 350), since their sizes are known only once decoded.
ORIGINAL_BYTES = 3 * 512 * 512


def cut_split(decoder, device: torch.device | str = "cpu") -> StreamedImages | OriginalsInMemory:
    """A training split whose views are cut from the original images
    (``decoder.cuts``): decoded once into memory when its originals, counted
    at ``ORIGINAL_BYTES`` each, fit under the limit, else streamed (each
    batch decoded and cut by the workers)."""
    cpu = getattr(decoder, "fallback", decoder)  # in memory, decoded once: by the CPU path
    if ORIGINAL_BYTES * len(cpu.index) > in_memory_limit_bytes():
        return StreamedImages(decoder)
    with ThreadPoolExecutor(decoding_threads(), thread_name_prefix="decode") as pool:
        images = list(pool.map(cpu.image, range(len(cpu.index))))
    return OriginalsInMemory(images, cpu.cuts, device)


def cuts_views(images) -> bool:
    """Whether ``images`` is a training split cut from its original images
    (indexed by ``cut(rows, seeds)``, not ``images[rows]``)."""
    return isinstance(images, OriginalsInMemory) or (isinstance(images, StreamedImages)
                                                     and bool(images.decoder_cuts))


def decoder_name(images) -> str | None:
    """What decodes a streamed split (its decoder's class name, for the run's
    provenance); None for a split in memory."""
    return type(images.decoder).__name__ if isinstance(images, StreamedImages) else None


def decodes_on_device(images) -> bool:
    """Whether ``images`` is a split streamed through nvjpeg."""
    return isinstance(images, StreamedImages) and isinstance(images.decoder, JpegDecoder)


def prefetch(images, key, seeds: np.ndarray | None = None) -> None:
    """Start decoding (with ``seeds``: and cutting) the next batch of
    streamed images (nothing for images in memory)."""
    if isinstance(images, StreamedImages):
        images.prefetch(key, seeds)


def close(images) -> None:
    """End the decoding workers of streamed images, or the cutting threads
    of originals in memory (nothing for a tensor)."""
    if isinstance(images, (StreamedImages, OriginalsInMemory)):
        images.close()


def on_host(images, order: Tensor) -> Tensor:
    """The order to pick streamed rows by, on the host (one copy per epoch, not
    a device sync per step); a tensor in memory takes ``order`` as it is."""
    return order.cpu() if isinstance(images, (StreamedImages, OriginalsInMemory)) else order
