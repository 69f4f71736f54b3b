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
decodes those rows on a pool of at most 8 workers and returns them on the
device given to ``.to()``; ``prefetch(rows)`` starts decoding the next batch
while the current one trains.

Two decoders fill a batch (``gpu_jobs.decode``):

- ``SplitDecoder`` (``cpu``): each image decoded by Pillow and resized in a
  worker process (Pillow's and torchvision's Python around the decode would
  hold one interpreter's GIL: 8 threads decoded no faster than about two
  cores); the batch travels as 8-bit pixels and becomes float on the device.
- ``JpegDecoder`` (``device``): the threads only read each file's bytes; the
  batch's JPEGs are decoded on the device (nvjpeg through
  ``torchvision.io.decode_jpeg``, on the GPU's hardware decoder where it has
  one) and resized there, on a side CUDA stream, with the same torchvision
  functions as the CPU path. A file that is not a JPEG, or that the device
  decoder rejects (CMYK JPEGs), is decoded by the CPU path instead.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import warnings
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

# torchvision 0.29 deprecates its image codecs for TorchCodec, which has no
# build for the torch of the GPU machines this runs on; they still work.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                        category=DeprecationWarning)

# The GIB of decoded float32 images above which a split is streamed; an
# operational setting (it changes no result), so an environment variable.
LIMIT_VARIABLE = "MULTISYM_IN_MEMORY_GIB"
DEFAULT_LIMIT_GIB = 8.0
MAX_THREADS = 8  # decoding workers, threads or processes


def in_memory_limit_bytes() -> float:
    return float(os.environ.get(LIMIT_VARIABLE, DEFAULT_LIMIT_GIB)) * 2**30


def decoding_threads() -> int:
    """Workers that decode: this process's CPUs ($SLURM_CPUS_PER_TASK in a SLURM
    job), at most ``MAX_THREADS``."""
    cpus = int(os.environ.get("SLURM_CPUS_PER_TASK") or len(os.sched_getaffinity(0)))
    return max(1, min(cpus, MAX_THREADS))


def _to_device(batch: Tensor, device: torch.device) -> Tensor:
    return batch.to(device, non_blocking=True) if device.type != "cpu" else batch


def _as_float(pixels: Tensor) -> Tensor:
    """8-bit pixels as float32 in [0, 1], by the same torchvision function on
    any device (so the same values)."""
    from torchvision.transforms.v2 import functional as F

    return F.to_dtype(pixels, torch.float32, scale=True)


class SplitDecoder:
    """Decodes row ``i`` of a split (position ``index[i]`` of its source) with
    Pillow: RGB (or grayscale), shorter side resized to ``size`` (bilinear,
    antialiased), centre square; 8-bit, float32 in [0, 1] once assembled."""

    def __init__(self, source, index: np.ndarray, size: int, channels: int):
        from torchvision.transforms import v2

        self.source, self.index = source, np.asarray(index)
        self.size, self.channels = size, channels
        self.shape = (len(self.index), channels, size, size)
        self.transform = v2.Compose([
            v2.PILToTensor(), v2.RGB(), v2.Resize(size, antialias=True), v2.CenterCrop(size),
            *([v2.Grayscale(1)] if channels == 1 else []),
        ])

    def read(self, row: int) -> Tensor:
        """Worker work: the decoded (C, S, S) uint8 image."""
        image, _ = self.source.dataset[int(self.index[row])]
        return self.transform(image)

    def workers(self, count: int) -> Executor:
        """Processes forked from this one, as torch's DataLoader does on Linux
        (they touch no CUDA; they all start at the first task, before the
        training loop's threads), each holding this decoder. Spawned ones would
        run the caller's main module again."""
        context = multiprocessing.get_context("fork")
        return ProcessPoolExecutor(count, mp_context=context, initializer=_hold, initargs=(self,))

    def task(self, pool: Executor, row: int) -> Future:
        return pool.submit(_read_held, row)

    def assemble(self, parts: list[Tensor], rows: np.ndarray, device: torch.device) -> Tensor:
        """The batch on ``device``: 8-bit pixels copied from pinned memory (the
        copy does not wait for the device), float there."""
        pinned = device.type == "cuda"
        batch = torch.empty((len(parts), *self.shape[1:]), dtype=torch.uint8, pin_memory=pinned)
        for row, image in enumerate(parts):
            batch[row] = torch.as_tensor(image)
        return _as_float(_to_device(batch, device))


_held: SplitDecoder | None = None  # a worker process's decoder


def _hold(decoder: SplitDecoder) -> None:
    """Worker start: keep the decoder, one torch thread, and leave the signals
    that stop or requeue a job to the training process (which saves its state)."""
    global _held
    _held = decoder
    torch.set_num_threads(1)
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(number, signal.SIG_IGN)


def _read_held(row: int) -> np.ndarray:
    """An array, which pickles as its bytes: torch would share each tensor's
    storage through a file-descriptor handshake, slower for 128 small images."""
    return _held.read(row).numpy()


# Start-of-frame markers (FF C0-CF but DHT C4, JPG C8, DAC CC): they carry the
# number of colour components.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def jpeg_components(data: Tensor) -> int | None:
    """The number of colour components of a JPEG stream (1 grey, 3 YCbCr, 4
    CMYK), read from its frame header; None when ``data`` is not a JPEG.

    Segments after the SOI marker FF D8 are FF <marker> <2-byte length> ...;
    the frame header is FF <SOFn> <length> <precision> <height> <width> <Nf>.
    """
    raw = memoryview(data.numpy()) if isinstance(data, Tensor) else memoryview(bytes(data))  # no copy of the file
    if raw[:2] != b"\xff\xd8":
        return None
    at = 2
    while at + 9 < len(raw):
        if raw[at] != 0xFF:
            return None
        marker = raw[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in _SOF_MARKERS:
            return raw[at + 9]
        at += 2 + int.from_bytes(raw[at + 2:at + 4], "big")
    return None


class JpegDecoder:
    """Decodes a batch of a split's JPEG files on the device it is returned on
    (see the module docstring); ``fallback`` decodes what is not a JPEG."""

    def __init__(self, files: list[Path], fallback: SplitDecoder):
        self.files, self.fallback = files, fallback
        self.shape = fallback.shape
        self._streams: dict[torch.device, torch.cuda.Stream] = {}

    def workers(self, count: int) -> Executor:
        """Threads: reading a file releases the GIL."""
        return ThreadPoolExecutor(count, thread_name_prefix="read")

    def task(self, pool: Executor, row: int) -> Future:
        return pool.submit(self.read, row)

    def read(self, row: int) -> Tensor:
        """Thread work: the file's bytes (uint8, 1-d), or the image decoded by
        the CPU path when it is not a grey or YCbCr JPEG (PNG files named
        .JPEG and CMYK JPEGs exist in ImageNet's train set)."""
        from torchvision.io import read_file

        data = read_file(str(self.files[int(self.fallback.index[row])]))
        return data if jpeg_components(data) in (1, 3) else self.fallback.read(row)

    def _decode(self, datas: list[Tensor], rows: list[int], device: torch.device) -> list[Tensor]:
        """uint8 (3, H, W) images of split ``rows`` on ``device``; one at a
        time, falling back to the CPU path (its finished images) for those it
        rejects, when the batch call fails."""
        from torchvision.io import ImageReadMode, decode_jpeg

        try:
            return decode_jpeg(datas, mode=ImageReadMode.RGB, device=device)
        except RuntimeError:
            pass
        images = []
        for data, row in zip(datas, rows):
            try:
                images.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                images.append(_to_device(self.fallback.read(row), device))
        return images

    def _resized(self, images: list[Tensor]) -> list[Tensor]:
        """Each image as the CPU path makes it, a batch per distinct (H, W) so
        that photographs of a common size share one resize. An image already
        of the batch's (C, S, S) (the CPU path's) needs nothing more."""
        from torchvision.transforms.v2 import functional as F

        size, out = self.fallback.size, list(images)
        shapes: dict[tuple[int, ...], list[int]] = {}
        for position, image in enumerate(images):
            if tuple(image.shape) != self.shape[1:]:
                shapes.setdefault(tuple(image.shape), []).append(position)
        for positions in shapes.values():
            batch = torch.stack([images[p] for p in positions])
            batch = F.center_crop(F.resize(batch, [size], antialias=True), [size])
            if self.fallback.channels == 1:
                batch = F.rgb_to_grayscale(batch, num_output_channels=1)
            for position, image in zip(positions, batch):
                out[position] = image
        return out

    def assemble(self, parts: list[Tensor], rows: np.ndarray, device: torch.device) -> Tensor:
        """The batch of split ``rows`` on ``device``. On CUDA the work runs on
        a side stream (the tensors it frees are then not reused under the
        training stream's queued work), which the default stream, the
        training's, waits for."""
        if not parts:
            return torch.empty((0, *self.shape[1:]), device=device)
        if device.type != "cuda":
            return self._assemble(parts, rows, device)
        stream = self._streams.setdefault(device, torch.cuda.Stream(device))
        with torch.cuda.stream(stream):
            batch = self._assemble(parts, rows, device)
        current = torch.cuda.current_stream(device)
        current.wait_stream(stream)
        batch.record_stream(current)
        return batch

    def _assemble(self, parts: list[Tensor], rows: np.ndarray, device: torch.device) -> Tensor:
        jpegs = [position for position, part in enumerate(parts) if part.dim() == 1]  # the rest: the CPU path's
        images = [part if part.dim() == 1 else _to_device(part, device) for part in parts]
        for position, image in zip(jpegs, self._decode([parts[p] for p in jpegs], [int(rows[p]) for p in jpegs],
                                                        device)):
            images[position] = image
        return _as_float(torch.stack(self._resized(images)))


class StreamedImages:
    """A split's images, decoded when indexed (see the module docstring)."""

    def __init__(self, decoder: SplitDecoder | JpegDecoder, device: torch.device | str = "cpu",
                 pool: Executor | None = None, workers: int | None = None):
        self.decoder, self.device = decoder, torch.device(device)
        self._pool = pool or decoder.workers(workers or decoding_threads())
        # Assembles a prefetched batch off the training thread: nvjpeg's calls
        # wait for the device, which would stop that thread queueing the step.
        self._assembler = ThreadPoolExecutor(1, thread_name_prefix="assemble")
        self._ahead: tuple[bytes, Future] | None = None

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
        return [self.decoder.task(self._pool, int(row)) for row in rows]

    def _batch(self, rows: np.ndarray, futures: list[Future]) -> Tensor:
        return self.decoder.assemble([future.result() for future in futures], rows, self.device)

    def prefetch(self, key) -> None:
        """Start reading and assembling ``key``'s rows; the next ``self[key]``
        returns them."""
        rows = self._rows(key)
        self._ahead = (rows.tobytes(), self._assembler.submit(self._batch, rows, self._submit(rows)))

    def __getitem__(self, key) -> Tensor:
        rows = self._rows(key)
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] == rows.tobytes():
            return ahead[1].result()
        return self._batch(rows, self._submit(rows))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._assembler.shutdown(wait=False, cancel_futures=True)


def decode_split(decoder: SplitDecoder | JpegDecoder, device: torch.device | str = "cpu",
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


def decoder_for(source, index: np.ndarray, size: int, channels: int, decode: str = "cpu"):
    """The split's decoder: ``JpegDecoder`` for ``decode: device`` when the
    source keeps one file per image, else ``SplitDecoder``."""
    fallback = SplitDecoder(source, index, size, channels)
    files = list(source.files)
    if decode == "device" and len(files) == len(source.labels) and len(files) > 0:
        return JpegDecoder(files, fallback)
    return fallback


def prefetch(images, key) -> None:
    """Start decoding the next batch of streamed images (nothing for a tensor)."""
    if isinstance(images, StreamedImages):
        images.prefetch(key)


def on_host(images, order: Tensor) -> Tensor:
    """The order to pick streamed rows by, on the host (one copy per epoch, not
    a device sync per step); a tensor in memory takes ``order`` as it is."""
    return order.cpu() if isinstance(images, StreamedImages) else order
