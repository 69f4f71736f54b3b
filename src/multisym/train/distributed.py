"""Several processes training one member (docs/method.md#contrastive-loss,
docs/method.md#how-the-official-code-runs): the pieces that
make W processes on W shards of a global batch compute the loss and gradients
of one process on the whole batch.

- ``gather``: the all-gather of the projections for the contrastive loss. Its
  backward sends every process the gradient of the loss with respect to its
  own rows (``torch.distributed.nn.functional.all_gather``), so the negatives
  of the whole global batch shape every process's gradients; with DDP
  averaging the gradients, the update is the one-process update. The official
  code gathered without gradients, which drops every other process's
  contribution to the gradient of each row.
- ``wrap``: DDP around the model; on CUDA with more than one process,
  BatchNorm first becomes SyncBatchNorm (statistics of the global batch).
  gloo on the CPU has no SyncBatchNorm, so each process normalises its shard.

- ``joined``: the process group the environment describes (``RANK``,
  ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``, as torchrun,
  ``launch`` and submitit's ``TorchDistributedEnvironment`` set them), with
  the process's device: ``cuda:<local rank>`` and NCCL on GPUs, gloo on CPUs.
- ``average``, ``agreed_signal``, ``gathered``: the few collectives the
  training loop needs (epoch means of the loss terms, one decision to stop,
  every process's random-generator state for the checkpoint).

One process (the default) leaves everything as it is.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn


def world_size() -> int:
    return torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1


def gather(z: Tensor) -> Tensor:
    """Rows of every process, in rank order, with gradients; ``z`` itself on one process."""
    if world_size() == 1:
        return z
    import warnings

    from torch.distributed.nn.functional import all_gather

    with warnings.catch_warnings():  # its suggested successor is a private module
        warnings.simplefilter("ignore", FutureWarning)
        return torch.cat(all_gather(z), dim=0)


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """The model as DDP trains it (unchanged on one process)."""
    if world_size() == 1:
        return model
    if device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


@dataclass(frozen=True)
class Process:
    """This process's place in the job: global rank, process count, rank on its node."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0 alone writes checkpoints, logs and exports."""
        return self.rank == 0

    @classmethod
    def from_environment(cls) -> "Process":
        env = os.environ
        return cls(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))


def process_device(device: torch.device, process: Process) -> torch.device:
    """One GPU per process: ``cuda:<local rank>`` (modulo the GPUs this process
    sees, so a job that binds one GPU per task gets ``cuda:0``)."""
    if device.type != "cuda" or process.world == 1:
        return device
    return torch.device("cuda", process.local_rank % torch.cuda.device_count())


@contextmanager
def joined(device: torch.device):
    """Join the environment's process group (if it names more than one process)
    for the duration; yields (Process, device). NCCL on CUDA, gloo on the CPU."""
    process = Process.from_environment()
    device = process_device(device, process)
    if process.world == 1 or torch.distributed.is_initialized():
        yield process, device
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=process.rank,
                                         world_size=process.world)
    try:
        yield process, device
    finally:
        torch.distributed.destroy_process_group()


@contextmanager
def on_main(context, process: Process):
    """Enter ``context`` (a lock) on rank 0 only. When it fails there, every
    process raises, so none is left waiting for a rank 0 that has gone."""
    error = None
    if process.main:
        try:
            context.__enter__()
        except Exception as caught:  # re-raised below, once the others have heard of it
            error = caught
    message = gathered(None if error is None else str(error))[0]
    if error is not None:
        raise error
    if message is not None:
        raise RuntimeError(f"rank 0 could not start: {message}")
    try:
        yield
    finally:
        if process.main:
            context.__exit__(None, None, None)


def average(values: dict[str, Tensor]) -> dict[str, Tensor]:
    """Each tensor's mean over the processes (the same tensors on one process)."""
    if world_size() == 1 or not values:
        return values
    keys = list(values)  # every process records the same terms in the same order
    stacked = torch.stack([values[k] for k in keys])
    torch.distributed.all_reduce(stacked)
    return dict(zip(keys, stacked / world_size()))


def agreed_signal(received: int | None, device: torch.device) -> int | None:
    """The stop signal any process received (the largest number when several
    did), so every process stops at the same step; None when none did."""
    if world_size() == 1:
        return received
    flag = torch.tensor([received or 0], device=device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return int(flag) or None


def gathered(value) -> list:
    """Every process's ``value`` (any picklable object), in rank order."""
    if world_size() == 1:
        return [value]
    out = [None] * world_size()
    torch.distributed.all_gather_object(out, value)
    return out
