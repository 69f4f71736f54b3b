"""Images of a dataset read from a root, decoded through its torchvision class
(the loaders of ``datasets``): all at once into memory for a split that fits,
or on demand for one that does not (ImageNet's 1.28M training images need
about 750 GB as float32).

Every image is decoded the same way on both paths, so they give the same
tensors: RGB (or grayscale for one-channel datasets), the shorter side
resized to ``image_size`` (bilinear, antialiased), the centre square cropped,
float32 in [0, 1]. Views then crop and augment on the device (``views``).

``StreamedImages`` stands in for the (N, C, S, S) tensor a training or
evaluation loop indexes: ``images[rows]`` (a slice, index array or tensor)
decodes those rows on a pool of threads (Pillow and torch release the GIL
while they decode and resize) and returns them on the device given to
``.to()``; ``prefetch(rows)`` starts decoding the next batch while the
current one trains.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch
from torch import Tensor

# The GIB of decoded float32 images above which a split is streamed; an
# operational setting (it changes no result), so an environment variable.
LIMIT_VARIABLE = "MULTISYM_IN_MEMORY_GIB"
DEFAULT_LIMIT_GIB = 8.0
MAX_THREADS = 8


def in_memory_limit_bytes() -> float:
    return float(os.environ.get(LIMIT_VARIABLE, DEFAULT_LIMIT_GIB)) * 2**30


def decoding_threads() -> int:
    """Threads that decode: this process's CPUs ($SLURM_CPUS_PER_TASK in a SLURM
    job), at most ``MAX_THREADS``."""
    cpus = int(os.environ.get("SLURM_CPUS_PER_TASK") or len(os.sched_getaffinity(0)))
    return max(1, min(cpus, MAX_THREADS))


class SplitDecoder:
    """Decodes row ``i`` of a split (position ``index[i]`` of its source)."""

    def __init__(self, source, index: np.ndarray, size: int, channels: int):
        from torchvision.transforms import v2

        self.source, self.index = source, np.asarray(index)
        self.shape = (len(self.index), channels, size, size)
        self.transform = v2.Compose([
            v2.PILToTensor(), v2.RGB(), v2.Resize(size, antialias=True), v2.CenterCrop(size),
            *([v2.Grayscale(1)] if channels == 1 else []), v2.ToDtype(torch.float32, scale=True),
        ])

    def __call__(self, row: int) -> Tensor:
        image, _ = self.source.dataset[int(self.index[row])]
        return self.transform(image)


class StreamedImages:
    """A split's images, decoded when indexed (see the module docstring)."""

    def __init__(self, decoder: SplitDecoder, device: torch.device | str = "cpu",
                 pool: ThreadPoolExecutor | None = None, threads: int | None = None):
        self.decoder, self.device = decoder, torch.device(device)
        self._pool = pool or ThreadPoolExecutor(threads or decoding_threads(), thread_name_prefix="decode")
        self._ahead: tuple[bytes, list[Future]] | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return self.decoder.shape

    def __len__(self) -> int:
        return self.decoder.shape[0]

    def to(self, device) -> "StreamedImages":
        """The same images, returned on ``device`` when indexed."""
        return StreamedImages(self.decoder, device, self._pool)

    def _rows(self, key) -> np.ndarray:
        if isinstance(key, Tensor):
            return key.cpu().numpy().astype(np.int64)
        if isinstance(key, slice):
            return np.arange(len(self))[key]
        rows = np.asarray(key, dtype=np.int64)
        if rows.ndim != 1:
            raise IndexError(f"streamed images are indexed by a 1-d index, a tensor or a slice, not {key!r}")
        return rows

    def _submit(self, rows: np.ndarray) -> list[Future]:
        return [self._pool.submit(self.decoder, int(row)) for row in rows]

    def prefetch(self, key) -> None:
        """Start decoding ``key``'s rows; the next ``self[key]`` returns them."""
        rows = self._rows(key)
        self._ahead = (rows.tobytes(), self._submit(rows))

    def __getitem__(self, key) -> Tensor:
        rows = self._rows(key)
        ahead, self._ahead = self._ahead, None
        futures = ahead[1] if ahead is not None and ahead[0] == rows.tobytes() else self._submit(rows)
        batch = torch.empty((len(futures), *self.shape[1:]))
        for row, future in enumerate(futures):
            batch[row] = future.result()
        return batch.to(self.device, non_blocking=True) if self.device.type != "cpu" else batch

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def decode_split(decoder: SplitDecoder) -> Tensor | StreamedImages:
    """The split in memory when it fits under the limit, else streamed."""
    streamed = StreamedImages(decoder)
    if 4 * int(np.prod(decoder.shape)) > in_memory_limit_bytes():
        return streamed
    try:
        return streamed[:]
    finally:
        streamed.close()


def prefetch(images, key) -> None:
    """Start decoding the next batch of streamed images (nothing for a tensor)."""
    if isinstance(images, StreamedImages):
        images.prefetch(key)
