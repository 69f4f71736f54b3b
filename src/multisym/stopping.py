"""Stopping a training run cleanly on the signals SLURM sends (SIGUSR2 ahead of
a time limit or a preemption, SIGTERM): the loop notes the signal, saves its
state at the next step boundary and raises :class:`InterruptedRun`. Imports no
torch, so a process that only waits on a SLURM job stays light.
"""

from __future__ import annotations

import signal
import threading


class InterruptedRun(RuntimeError):
    """Training stopped on a signal after saving its state mid-epoch."""

    def __init__(self, signum: int, member: str, epoch: int, batch: int):
        self.signum = signum
        self._fields = (signum, member, epoch, batch)
        super().__init__(
            f"{member}: stopped by {signal.Signals(signum).name} in epoch {epoch + 1} after batch {batch}; "
            "its state is saved, rerun the same command (or the workflow) to resume"
        )

    def __reduce__(self):  # pickled across processes (processes.run, submitit)
        return type(self), self._fields


class StopSignal:
    """Records SIGTERM and SIGUSR2 (what SLURM sends ahead of a time limit or a
    preemption) instead of dying, so the loop can save its state at the next
    step and exit; the previous handlers are restored on exit."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR2)

    def __init__(self):
        self.received: int | None = None
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        self.received = signum

    def __enter__(self) -> "StopSignal":
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
