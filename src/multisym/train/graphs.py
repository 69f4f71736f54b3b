"""A training step's forward and backward pass, captured once as a CUDA graph
and replayed at every later step (issue 15, target 2).

At paper scale the eager Eq step launches about 2,750 kernels, and the host
takes about as long to queue them as an H200 takes to run them (84 ms): any
other host work of the loop (drawing the views) then lengthens the step. A
replay queues the whole forward and backward pass in one call (PyTorch's
whole-network capture, ``torch.cuda.graph``), which leaves the host free for
the rest.

A replay runs the captured kernels on the captured addresses: each step's
batch is copied into the tensors the graph was captured on, and every replay
overwrites the graph's outputs in place (the loss terms returned, every
parameter's ``.grad``). So the gradients, once captured, are never set to
None; the optimizer steps outside the graph, reading them where the graph
writes them (its learning rate stays a per-step Python number). The first
``WARMUP_STEPS`` steps run eagerly on a side stream, as capture requires
(cuDNN's autotuning, lazy initialisation, the optimizer's state). Replays
compute what eager steps compute, with the same kernels.

Graphs are used on CUDA in a single process (DDP's gradient hooks are not
captured), unless the training split is streamed through nvjpeg or
``gpu_jobs.cuda_graphs`` is false: an operational setting, no part of a
member's settings (changing it retrains nothing; it travels as a resource and
is recorded in the run's ``run.json``). A split that nvjpeg decodes trains
eagerly: its decoding thread queues device work of its own, which the
replayed step's full command queue holds back (``benchmarks/README.md`` has
the measured figures). A split decoded on the CPU only copies its batches to
the device, and a replay, which releases the GIL, leaves the interpreter to
the thread that assembles them.
The graph keeps its own memory for the step's activations. A capture that
fails warns and leaves the run on eager steps.
"""

from __future__ import annotations

import sys
from typing import Callable

import torch
from torch import Tensor

WARMUP_STEPS = 3


def wanted(device: torch.device, processes: int, nvjpeg: bool, allowed: bool = True) -> bool:
    """Whether a run on ``device`` with ``processes`` processes, its split
    streamed through ``nvjpeg`` or not, captures its step (``allowed``:
    ``gpu_jobs.cuda_graphs``)."""
    return allowed and device.type == "cuda" and processes == 1 and not nvjpeg


class GradientStep:
    """Loss terms and gradients of one batch: ``terms = loss(batch)``, then the
    backward pass of ``scaler.scale(terms["loss"])``. Eager, or with
    ``capture`` (CUDA only) replayed from a graph after ``WARMUP_STEPS`` eager
    steps. The returned terms, detached, are valid until the next call."""

    def __init__(self, loss: Callable[[dict[str, Tensor]], dict[str, Tensor]], optimizer: torch.optim.Optimizer,
                 scaler: torch.amp.GradScaler, capture: bool):
        self.loss, self.optimizer, self.scaler = loss, optimizer, scaler
        self.capture = capture
        self.eager_steps = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.inputs: dict[str, Tensor] = {}
        self.outputs: dict[str, Tensor] = {}

    def __call__(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        if self.graph is not None:
            return self._replay(batch)
        if not self.capture:
            return self._eager(batch)
        if self.eager_steps < WARMUP_STEPS:
            self.eager_steps += 1
            return self._warm_up(batch)
        return self._capture(batch)

    def _backward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        terms = self.loss(batch)
        self.scaler.scale(terms["loss"]).backward()
        # detached, so that no autograd node outlives its step (a kept one
        # would run the next step's gradient accumulation on its old stream)
        return {name: value.detach() for name, value in terms.items()}

    def _eager(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        self.optimizer.zero_grad(set_to_none=True)
        return self._backward(batch)

    def _warm_up(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        side, current = torch.cuda.Stream(), torch.cuda.current_stream()
        side.wait_stream(current)
        with torch.cuda.stream(side):
            terms = self._eager(batch)
        current.wait_stream(side)
        return terms

    def _capture(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        inputs = {name: tensor.clone() for name, tensor in batch.items()}
        self.optimizer.zero_grad(set_to_none=True)  # the backward pass inside allocates the graph's gradients
        graph = torch.cuda.CUDAGraph()
        try:
            # thread_local: other threads of the process may go on using the device meanwhile
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                outputs = self._backward(inputs)
        except RuntimeError as error:
            print(f"warning: capturing the training step as a CUDA graph failed ({error}); "
                  "training goes on with eager steps (gpu_jobs.cuda_graphs: false skips the attempt)",
                  file=sys.stderr, flush=True)
            self.capture = False
            return self._eager(batch)
        self.graph, self.inputs, self.outputs = graph, inputs, outputs
        graph.replay()
        return outputs

    def _replay(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        for name, tensor in batch.items():
            target = self.inputs[name]
            if tensor.shape != target.shape or tensor.dtype != target.dtype:
                raise ValueError(f"the captured training step takes {name} of shape {tuple(target.shape)} "
                                 f"({target.dtype}), not {tuple(tensor.shape)} ({tensor.dtype})")
            target.copy_(tensor)
        self.graph.replay()
        return self.outputs
