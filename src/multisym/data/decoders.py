"""How a split's images are decoded (``gpu_jobs.decode``), the same way on
every path: RGB (or grayscale for one-channel datasets), the shorter side
resized to ``dataset.eval_resize`` (default ``image_size``; bilinear,
antialiased), the centre ``image_size`` square cropped, 8-bit, then float32
in [0, 1]. A training split whose views are cut from the original image
(``dataset.views_from: original``) is instead decoded at its own size and
every view's crop cut and resized from it (``cuts``), handed over as uint8
views. ``streaming`` holds the split, in memory or streamed, that these fill.

- ``SplitDecoder`` (``cpu``): each image decoded and resized in a worker
  process (the Python around a decode holds its interpreter's GIL, so
  threads of one process would take turns at it), a JPEG file by
  libjpeg-turbo through ``torchvision.io`` (faster than through Pillow, the
  same pixels), anything else by the dataset's torchvision class. The
  workers write 8-bit pixels straight into a buffer shared with this
  process, so no image is pickled; the batch becomes float on the device.
- ``JpegDecoder`` (``device``): the threads only read each file's bytes; the
  batch's JPEGs are decoded on the device (nvjpeg through
  ``torchvision.io.decode_jpeg``, on the GPU's hardware decoder where it has
  one) and resized there, on a side CUDA stream, with the same torchvision
  functions as the CPU path. A file that is not a JPEG, or that the device
  decoder rejects (CMYK JPEGs), is decoded by the CPU path instead.
"""

from __future__ import annotations

import mmap
import multiprocessing
import os
import signal
import threading
import time
import warnings
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from multisym.data.cuts import Cut, cut_views
from multisym.errors import UserError

# torchvision 0.29 deprecates its image codecs for TorchCodec, which has no
# build for the torch of the GPU machines this runs on; they still work.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                        category=DeprecationWarning)

SLOT_BYTES = 64 * 2**20  # the buffer worker processes decode into: 341 images of 256 px


def _to_device(batch: Tensor, device: torch.device) -> Tensor:
    return batch.to(device, non_blocking=True) if device.type != "cpu" else batch


def as_float(pixels: Tensor) -> Tensor:
    """8-bit pixels as float32 in [0, 1], by the same torchvision function on
    any device (so the same values)."""
    from torchvision.transforms.v2 import functional as F

    return F.to_dtype(pixels, torch.float32, scale=True)


def slot_rows(shape: tuple[int, ...], outputs: list[tuple[int, ...]] | None = None) -> int:
    """Rows of a split of (N, ...) ``shape`` that a slot of at most
    ``SLOT_BYTES`` of uint8 pixels holds, each row ``outputs`` (default: one
    image of ``shape[1:]``): at least one, at most N."""
    row_bytes = sum(int(np.prod(out)) for out in (outputs or [shape[1:]]))
    return max(1, min(shape[0], SLOT_BYTES // row_bytes))


def _shares(rows: np.ndarray, workers: int) -> list[np.ndarray]:
    """``rows`` in at most ``workers`` consecutive, nearly equal, non-empty shares."""
    return [share for share in np.array_split(rows, max(1, min(workers, len(rows)))) if len(share)]


class SplitDecoder:
    """Decodes row ``i`` of a split (position ``index[i]`` of its source):
    RGB (or grayscale), shorter side resized to ``resize`` (default ``size``;
    bilinear, antialiased), centre ``size`` square; 8-bit, float32 in [0, 1]
    once assembled. With ``cuts`` (``dataset.views_from: original``) a row
    of a batch is instead every cut of the image as decoded (``cuts.cut_views``,
    one seed per row), uint8. ``files``, the source's file per image where it
    keeps one, are decoded by ``torchvision.io`` when they are grey or YCbCr
    JPEGs."""

    def __init__(self, source, index: np.ndarray, size: int, channels: int, files: list[Path] | None = None,
                 resize: int | None = None, cuts: tuple[Cut, ...] = ()):
        from torchvision.transforms import v2

        self.source, self.index, self.files = source, np.asarray(index), files
        self.size, self.channels, self.resize, self.cuts = size, channels, resize or size, tuple(cuts)
        self.shape = (len(self.index), channels, size, size)
        # per row: one image of the evaluation geometry, or one view per cut
        self.outputs = [(channels, cut.size, cut.size) for cut in self.cuts] or [self.shape[1:]]
        grey = [v2.Grayscale(1)] if channels == 1 else []
        self.transform = v2.Compose([  # a decoded tensor passes PILToTensor unchanged
            v2.PILToTensor(), v2.RGB(), v2.Resize(self.resize, antialias=True), v2.CenterCrop(size), *grey,
        ])
        self.original = v2.Compose([v2.PILToTensor(), v2.RGB(), *grey])
        self._slots: list[Tensor] | None = None  # (rows, *output) uint8 shared with the workers
        self._slot_lock = threading.Lock()

    def __getstate__(self) -> dict:
        """Pickled for a spawned process: without the slot, which belongs to
        this process's workers, or its lock."""
        state = {**self.__dict__, "_slots": None}
        for name in ("_slot_lock", "_slot_memory"):
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _slot_lock=threading.Lock())

    def read(self, row: int) -> Tensor:
        """The decoded (C, S, S) uint8 image; a file that cannot be read or
        decoded is an error that names it (mid-training, not at preparation,
        which only lists the files)."""
        return self._named(row, self.transform)

    def image(self, row: int) -> Tensor:
        """The (C, H, W) uint8 image as decoded, at its own size."""
        return self._named(row, self.original)

    def row_outputs(self, row: int, seed: int | None) -> list[Tensor]:
        """What a batch holds for ``row``: its cuts (drawn from ``seed``), or its image."""
        return cut_views(self.image(row), seed, self.cuts) if self.cuts else [self.read(row)]

    def _named(self, row: int, transform) -> Tensor:
        position = int(self.index[row])
        try:
            return self._read(position, transform)
        except (OSError, RuntimeError, ValueError) as error:
            dataset = self.source.dataset
            what = (self.files[position] if self.files is not None
                    else f"image {position} of {type(dataset).__name__} at {getattr(dataset, 'root', '?')}")
            raise UserError(f"{what} cannot be decoded ({error}); replace it with an intact copy") from error

    def _read(self, position: int, transform) -> Tensor:
        from torchvision.io import ImageReadMode, decode_jpeg

        data = None if self.files is None else jpeg_bytes(self.files[position])
        if data is not None:
            try:
                return transform(decode_jpeg(data, mode=ImageReadMode.RGB))
            except RuntimeError:  # Pillow may read what libjpeg-turbo's strict mode rejects
                pass
        image, _ = self.source.dataset[position]
        return transform(image)

    def workers(self, count: int) -> Executor:
        """Processes forked from this one, as torch's DataLoader does on Linux
        (they touch no CUDA; they all start at the first task, before the
        training loop's threads), each holding this decoder. Spawned ones would
        run the caller's main module again. The slot they decode into is
        mapped before they fork, so that their writes land in pages this
        process reads: shared anonymous memory, which needs no room in
        /dev/shm (a container's is often 64 MB)."""
        if self._slots is None:
            rows = slot_rows(self.shape, self.outputs)
            sizes = [rows * int(np.prod(out)) for out in self.outputs]
            self._slot_memory = mmap.mmap(-1, sum(sizes))
            flat = torch.frombuffer(self._slot_memory, dtype=torch.uint8)
            self._slots = [part.view(rows, *out) for part, out in zip(flat.split(sizes), self.outputs)]
        context = multiprocessing.get_context("fork")
        return ProcessPoolExecutor(count, mp_context=context, initializer=_hold, initargs=(self, os.getpid()))

    def batch(self, pool: Executor, workers: int, rows: np.ndarray, device: torch.device) -> Tensor:
        """Split ``rows`` on ``device``, float32 in [0, 1] (the evaluation geometry)."""
        return as_float(self._fill(pool, workers, rows, None, device)[0])

    def cut_batch(self, pool: Executor, workers: int, rows: np.ndarray, seeds: np.ndarray,
                  device: torch.device) -> list[Tensor]:
        """Every cut of split ``rows`` (row i's boxes drawn from ``seeds[i]``),
        one uint8 (B, C, size, size) batch per cut, on ``device``."""
        return self._fill(pool, workers, rows, seeds, device)

    def _fill(self, pool: Executor, workers: int, rows: np.ndarray, seeds: np.ndarray | None,
              device: torch.device) -> list[Tensor]:
        """Split ``rows`` decoded by the workers into the slot, a slotful at a
        time (one caller at a time), each copied to pinned memory and from
        there to the device (the copy does not wait for the device)."""
        pinned = device.type == "cuda"
        batches = [torch.empty((len(rows), *out), dtype=torch.uint8, pin_memory=pinned) for out in self.outputs]
        with self._slot_lock:
            for start in range(0, len(rows), len(self._slots[0])):
                chunk = rows[start:start + len(self._slots[0])]
                picked = None if seeds is None else seeds[start:start + len(chunk)]
                shares = _shares(np.arange(len(chunk)), workers)
                futures = [pool.submit(_decode_held, int(share[0]), chunk[share].tolist(),
                                       None if picked is None else picked[share].tolist())
                           for share in shares]
                wait(futures)  # all of them, so that none writes into the slot after a failure
                for future in futures:
                    future.result()
                for batch, slot in zip(batches, self._slots):
                    batch[start:start + len(chunk)] = slot[:len(chunk)]
        return [_to_device(batch, device) for batch in batches]


_held: SplitDecoder | None = None  # a worker process's decoder


def ignore_job_signals() -> None:
    """In a decoding process: leave the signals that stop or requeue a job to
    the training process, which saves its state at its next step and then
    ends its decoders."""
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(number, signal.SIG_IGN)


def _hold(decoder: SplitDecoder, parent: int) -> None:
    """Worker start: keep the decoder, one torch thread, no job signals, and
    leave once ``parent`` has gone."""
    global _held
    _held = decoder
    torch.set_num_threads(1)
    ignore_job_signals()
    threading.Thread(target=_exit_with, args=(parent,), name="exit-with-parent", daemon=True).start()


def _exit_with(parent: int, poll_s: float = 1.0) -> None:
    """In a worker: exit once the process that started it has gone. Killed
    outright, that process could not end its workers, which ignore the job's
    signals and would wait for work for ever."""
    while os.getppid() == parent:
        time.sleep(poll_s)
    os._exit(0)


def _decode_held(start: int, rows: list[int], seeds: list[int] | None) -> None:
    """Worker work: ``rows`` decoded (and cut, with ``seeds``) into the shared
    slot from position ``start``."""
    for offset, row in enumerate(rows):
        outputs = _held.row_outputs(row, None if seeds is None else seeds[offset])
        for slot, output in zip(_held._slots, outputs):
            slot[start + offset] = output


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


def jpeg_bytes(path: Path) -> Tensor | None:
    """The file's bytes (uint8, 1-d) when it is a grey or YCbCr JPEG, which
    libjpeg-turbo and nvjpeg decode; None for anything else (a PNG named .jpg,
    a CMYK JPEG)."""
    from torchvision.io import read_file

    data = read_file(str(path))
    return data if jpeg_components(data) in (1, 3) else None


class JpegDecoder:
    """Decodes a batch of a split's JPEG files on the device it is returned on
    (see the module docstring); ``fallback`` decodes what is not a JPEG."""

    def __init__(self, files: list[Path], fallback: SplitDecoder):
        self.files, self.fallback = files, fallback
        self.shape = fallback.shape

    def workers(self, count: int) -> Executor:
        """Threads: reading a file releases the GIL."""
        return ThreadPoolExecutor(count, thread_name_prefix="read")

    def batch(self, pool: Executor, workers: int, rows: np.ndarray, device: torch.device) -> Tensor:
        """Split ``rows`` on ``device``, float32 in [0, 1]."""
        return as_float(self.pixels(pool, workers, rows, device))

    def pixels(self, pool: Executor, workers: int, rows: np.ndarray, device: torch.device) -> Tensor:
        """Split ``rows`` on ``device``, uint8: read by the threads, a share
        each, then assembled."""
        futures = [pool.submit(lambda share: [self.read(row) for row in share], share)
                   for share in _shares(rows, workers)]
        return self.assemble([part for future in futures for part in future.result()], rows, device)

    def read(self, row: int, original: bool = False) -> Tensor:
        """Thread work: the file's bytes (uint8, 1-d), or the image decoded by
        the CPU path (as decoded with ``original``) when it is not a grey or
        YCbCr JPEG (PNG files named .JPEG and CMYK JPEGs exist in ImageNet's
        train set)."""
        data = jpeg_bytes(self.files[int(self.fallback.index[row])])
        if data is not None:
            return data
        return self.fallback.image(row) if original else self.fallback.read(row)

    def cut_batch(self, pool: Executor, workers: int, rows: np.ndarray, seeds: np.ndarray,
                  device: torch.device) -> list[Tensor]:
        """Every cut (``fallback.cuts``) of split ``rows``, one uint8 batch per
        cut on ``device``: the files read by the threads, decoded on the device
        at their own size, each cut there from its seed's boxes
        (``cuts.cut_views``, the function the CPU path runs)."""
        from torchvision.transforms.v2 import functional as F

        futures = [pool.submit(lambda share: [self.read(row, original=True) for row in share], share)
                   for share in _shares(rows, workers)]
        parts = [part for future in futures for part in future.result()]
        jpegs = [position for position, part in enumerate(parts) if part.dim() == 1]  # the rest: the CPU path's
        images = [part if part.dim() == 1 else _to_device(part, device) for part in parts]
        for position, image in zip(jpegs, self._decode([parts[p] for p in jpegs], [int(rows[p]) for p in jpegs],
                                                        device, original=True)):
            images[position] = image
            if self.fallback.channels == 1:
                images[position] = F.rgb_to_grayscale(image, num_output_channels=1)
        views = [cut_views(image, int(seed), self.fallback.cuts) for image, seed in zip(images, seeds)]
        return [torch.stack([row[i] for row in views]) if views
                else torch.empty((0, *out), dtype=torch.uint8, device=device)
                for i, out in enumerate(self.fallback.outputs)]

    def _decode(self, datas: list[Tensor], rows: list[int], device: torch.device,
                original: bool = False) -> list[Tensor]:
        """uint8 (3, H, W) images of split ``rows`` on ``device``; one at a
        time, falling back to the CPU path (its finished images, or with
        ``original`` its images as decoded) for those it rejects, when the
        batch call fails."""
        from torchvision.io import ImageReadMode, decode_jpeg

        if not datas:  # a batch of PNG and CMYK files only; torchvision refuses an empty list
            return []
        try:
            return decode_jpeg(datas, mode=ImageReadMode.RGB, device=device)
        except RuntimeError:
            pass
        images = []
        for data, row in zip(datas, rows):
            try:
                images.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                images.append(_to_device(self.fallback.image(row) if original else self.fallback.read(row), device))
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
            batch = F.center_crop(F.resize(batch, [self.fallback.resize], antialias=True), [size])
            if self.fallback.channels == 1:
                batch = F.rgb_to_grayscale(batch, num_output_channels=1)
            for position, image in zip(positions, batch):
                out[position] = image
        return out

    def assemble(self, parts: list[Tensor], rows: np.ndarray, device: torch.device) -> Tensor:
        """The uint8 batch of split ``rows`` on ``device``."""
        if not parts:
            return torch.empty((0, *self.shape[1:]), dtype=torch.uint8, device=device)
        jpegs = [position for position, part in enumerate(parts) if part.dim() == 1]  # the rest: the CPU path's
        images = [part if part.dim() == 1 else _to_device(part, device) for part in parts]
        for position, image in zip(jpegs, self._decode([parts[p] for p in jpegs], [int(rows[p]) for p in jpegs],
                                                        device)):
            images[position] = image
        return torch.stack(self._resized(images))


def decoder_for(source, index: np.ndarray, size: int, channels: int, decode: str = "cpu",
                resize: int | None = None, cuts: tuple[Cut, ...] = ()):
    """The split's decoder: ``JpegDecoder`` for ``decode: device`` when the
    source keeps one file per image, else ``SplitDecoder`` (given the files
    when there is one per image). Its images: the shorter side resized to
    ``resize`` (default ``size``), the centre ``size`` square; with ``cuts``,
    every cut of the image as decoded."""
    files = list(source.files)
    if not 0 < len(files) == len(source.labels):
        return SplitDecoder(source, index, size, channels, resize=resize, cuts=cuts)
    decoder = SplitDecoder(source, index, size, channels, files, resize=resize, cuts=cuts)
    return JpegDecoder(files, decoder) if decode == "device" else decoder

