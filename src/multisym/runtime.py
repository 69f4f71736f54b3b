"""Where and how a job computes (docs/method.md#how-the-official-code-runs
for the paper's own setup): the device, the precision, the memory format,
the input normalisation, and the one rule for how many CPU threads a job
uses. Every stage that runs a network takes these from here.

Thread count: the number given (the workflow passes each rule's ``threads``),
else ``$SLURM_CPUS_PER_TASK`` inside a SLURM job (its allocation), else the
CPUs this process may run on. torch is imported only where a function needs
it, so that torch-free jobs (ensembles, metrics) take the same thread rule
without loading it.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn


def cpu_count() -> int:
    """The CPUs this job may use: ``$SLURM_CPUS_PER_TASK`` inside a SLURM job,
    else the CPUs this process may run on."""
    return max(1, int(os.environ.get("SLURM_CPUS_PER_TASK") or len(os.sched_getaffinity(0))))


def thread_count(threads: int | None) -> int:
    """The one thread-count rule: ``threads`` when given, else ``cpu_count``."""
    return threads if threads else cpu_count()


def set_threads(threads: int | None) -> int:
    """torch's intra-op threads by ``thread_count``; returns what torch uses."""
    import torch

    torch.set_num_threads(thread_count(threads))
    return torch.get_num_threads()


def select_device(requested: str = "auto") -> torch.device:
    """``auto`` takes CUDA when available, else the CPU."""
    import torch

    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but CUDA is not available; use --device auto or cpu")
    return device


@dataclass
class Runtime:
    device: torch.device
    precision: str
    autocast: torch.autocast | None
    channels_last: bool
    mean: Tensor
    std: Tensor

    def prepare(self, images: Tensor) -> Tensor:
        """Normalise [0, 1] images with the train split's channel mean and std."""
        import torch

        x = (images - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def place(self, model: nn.Module) -> nn.Module:
        """``model`` on this runtime's device, in the memory format that
        ``prepare`` gives the inputs, so that no convolution converts either."""
        import torch

        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def amp(self):
        return self.autocast if self.autocast is not None else nullcontext()

    @property
    def view_dtype(self) -> torch.dtype:
        """float16 views under mixed precision on CUDA (``views.make_views``: the
        bandwidth-bound passes at half the bytes, finer than the bf16 the
        backbone reads), float32 otherwise."""
        import torch

        return torch.float16 if self.autocast is not None and self.device.type == "cuda" else torch.float32


# oneDNN's (AVX2, AVX-512) vector block of input channels; see below.
ONEDNN_CHANNEL_BLOCK = 16


def channels_last_safe_on_cpu(model: nn.Module) -> bool:
    """Whether ``model`` may train in channels_last on the CPU. Not when a
    strided 1x1 convolution has fewer input channels than oneDNN's vector
    block: the backward pass of that convolution in NHWC writes past its
    workspace (uxlfoundation/oneDNN#6035), which aborts or silently corrupts
    the weight gradients (torch 2.14 aborts on the smoke config's 4-channel
    stage)."""
    from torch import nn

    return not any(
        isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and max(m.stride) > 1
        and m.in_channels < ONEDNN_CHANNEL_BLOCK
        for m in model.modules()
    )


def make_runtime(device: torch.device, precision: str, info, model: nn.Module) -> Runtime:
    """How ``model`` runs on ``device``: bf16 autocast on CUDA by default (fp16
    with a loss scaler on GPUs without bf16), fp32 on the CPU; channels_last,
    the layout of cuDNN's and oneDNN's fast convolutions (on the CPU the
    embedded backbone's training step takes 0.75x the time and its inference
    0.55x: ``benchmarks/README.md``), unless ``channels_last_safe_on_cpu``
    rules it out. ``info`` is the dataset's ``data.DatasetInfo`` (its
    channels and their mean and std normalise the inputs)."""
    import torch

    if precision == "auto":
        precision = "fp32"
        if device.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else None
    shape = (1, info.channels, 1, 1)
    return Runtime(
        device=device,
        precision=precision,
        autocast=autocast,
        channels_last=device.type == "cuda" or channels_last_safe_on_cpu(model),
        mean=torch.tensor(info.mean, device=device).view(shape),
        std=torch.tensor(info.std, device=device).view(shape),
    )


def to_device(values: Tensor, device: torch.device, dtype: torch.dtype | None = None) -> Tensor:
    """Parameters drawn on the CPU, on ``device`` without making the host wait
    for the device: copied from pinned memory, never from pageable memory."""
    if device.type == "cuda":
        values = values.pin_memory()
    return values.to(device, dtype, non_blocking=True)
