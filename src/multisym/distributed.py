"""Several processes training one member (mse_spec §2.3, §8): the pieces that
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

One process (the default) leaves everything as it is.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def world_size() -> int:
    return torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1


def gather(z: Tensor) -> Tensor:
    """Rows of every process, in rank order, with gradients; ``z`` itself on one process."""
    if world_size() == 1:
        return z
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(z), dim=0)


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """The model as DDP trains it (unchanged on one process)."""
    if world_size() == 1:
        return model
    if device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
