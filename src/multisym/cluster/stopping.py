"""Stopping a training run cleanly on the signals SLURM sends (SIGUSR2 ahead of
a time limit or a preemption, SIGTERM): the loop notes the signal, saves its
state at the next step boundary and raises :class:`InterruptedRun`. Imports no
torch, so a process that only waits on a SLURM job stays light.
"""

from __future__ import annotations

import signal
import sys
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


_HOLD_AFTER_FINISH = False


def hold_after_finish() -> None:
    """In a process that only runs one training job (a SLURM task): once a
    run has finished (``StopSignal.finish``), SIGTERM and SIGUSR2 stay ignored
    until the process exits, so a late warning neither requeues a finished
    job nor kills it before its result is written (which SLURM would account
    as FAILED although every output is complete)."""
    global _HOLD_AFTER_FINISH
    _HOLD_AFTER_FINISH = True


class StopSignal:
    """Records SIGTERM and SIGUSR2 (what SLURM sends ahead of a time limit or a
    preemption) instead of dying, so the loop can save its state at the next
    step and exit; the previous handlers are restored on exit.

    After ``finish`` (the final state is saved: nothing is left to resume),
    a signal is noted and ignored while the outputs are exported; and in a
    SLURM task (``hold_after_finish``) it stays ignored after exit too."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR2)

    def __init__(self):
        self.received: int | None = None
        self.finished = False
        self.late: list[int] = []
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        if self.finished:
            self.late.append(signum)
        else:
            self.received = signum

    def finish(self) -> None:
        """Training is over and its final state saved: ignore stop signals."""
        self.finished = True
        if self.received is not None:  # arrived after the last step, before the final state: nothing to save
            self.late.append(self.received)
            self.received = None

    def __enter__(self) -> "StopSignal":
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        hold = self.finished and _HOLD_AFTER_FINISH and exc[0] is None
        for signum, handler in self._previous.items():
            signal.signal(signum, signal.SIG_IGN if hold else handler)
        if self.late:
            names = ", ".join(sorted({signal.Signals(s).name for s in self.late}))
            print(f"ignored {names} after training finished (its final state was saved)", file=sys.stderr, flush=True)
