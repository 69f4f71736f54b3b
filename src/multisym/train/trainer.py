"""The one training loop: pretraining a member (``pretrain``), fine-tuning one
(``finetune``) and the ensembles of the emergent-invariance experiment
(``evaluate/emergence.py``) plug their step into it.

A kind of training is a :class:`Task`: it draws an epoch's data order, runs
the forward and backward pass of one batch, names the columns of the epoch's
row and may add fields of its own to the checkpoint and write its outputs
once training is over. The :class:`Trainer` owns the rest:

- every step's learning rate (``optim.learning_rate``) when it has a
  schedule, and the optimizer's step through the loss scaler;
- with a run folder, the checkpoint ``<run_dir>/state.pt`` (model,
  optimizer, scaler and generator states, the step, the rows so far) after
  every epoch and, on SIGUSR2 or SIGTERM (``stopping``), after the current
  batch (the epoch's order, the next batch and the loss sums so far). A rerun
  loads it strictly when its settings hash matches (``checkpoint.load``) and
  goes on from that batch, so on the CPU it ends with the weights of an
  uninterrupted run. Without a run folder there is no checkpoint and the
  signals keep their usual effect;
- the watch for a non-finite loss (:class:`LossMonitor`);
- the epoch's log line with the time left, and the rows in ``epochs.csv``.

In a process group only rank 0 writes (``distributed.Process.main``).
"""

from __future__ import annotations

import csv
import io
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from multisym.cluster.stopping import InterruptedRun, StopSignal
from multisym.train import checkpoint, distributed, optim

STATE_FILE = "state.pt"
# Several processes agree on a stop signal every this many steps (and at the
# end of each epoch): a collective per step would make the host wait for the GPU.
STOP_CHECK_EVERY = 8
_NON_FINITE = " non-finite"  # the flag averaged with the loss sums (no loss term has a leading space)


class LossMonitor:
    """Running sums of an epoch's loss terms, and the watch for a non-finite
    loss, both kept on the device: ``record`` reads nothing back to the host,
    which would wait for the step in flight.

    The first step whose loss is not finite is noted there (epoch, step,
    value) and read where the loop reads the sums anyway: ``totals``, at the
    end of an epoch and before a mid-epoch save, so no state that holds a
    non-finite step's update is ever saved. On several processes every
    process learns there of a non-finite loss on any of them, and all stop.
    ``subject`` names the run in the message.
    """

    def __init__(self, subject: str, device: torch.device, sums: dict[str, float] | None = None):
        self.subject = subject
        self.sums = {k: torch.tensor(v, dtype=torch.float64, device=device) for k, v in (sums or {}).items()}
        self._step = torch.full((), -1, dtype=torch.int64, device=device)
        self._epoch = torch.zeros((), dtype=torch.int64, device=device)
        self._loss = torch.zeros((), dtype=torch.float64, device=device)

    def record(self, terms: dict[str, Tensor], epoch: int, index: int) -> None:
        # float64 copies: a step replayed from a CUDA graph overwrites the terms it returned
        values = {key: value.detach().to(torch.float64) for key, value in terms.items()}
        for key, value in values.items():
            self.sums[key] = self.sums[key] + value if key in self.sums else value
        first = ~torch.isfinite(values["loss"]) & (self._step < 0)
        self._step.masked_fill_(first, index)
        self._epoch.masked_fill_(first, epoch)
        self._loss = torch.where(first, values["loss"], self._loss)

    def check(self) -> None:
        """Raise if a recorded loss was not finite (one host read)."""
        if int(self._step) >= 0:
            raise FloatingPointError(f"{self.subject}: loss is {float(self._loss)} at epoch {int(self._epoch) + 1}, "
                                     f"step {int(self._step)}; stopping")

    def totals(self) -> dict[str, float]:
        """The sums as floats, averaged over the processes (one host read per
        epoch), once no loss was non-finite. A resumed epoch starts every
        process from the same saved averages, so averaging again keeps them."""
        values = distributed.average({**self.sums, _NON_FINITE: (self._step >= 0).to(torch.float64)})
        if float(values[_NON_FINITE]) > 0:
            self.check()
            raise FloatingPointError(f"{self.subject}: loss is not finite on another process; stopping")
        return {key: float(value) for key, value in values.items() if key != _NON_FINITE}


# ------------------------------------------------------------------ helpers
def rng_state(generator: torch.Generator) -> dict[str, Tensor | list]:
    state = {"generator": generator.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict, generator: torch.Generator) -> None:
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def training_state(model: nn.Module, optimizer, scaler, generator: torch.Generator) -> dict:
    """What a checkpoint holds to resume training exactly: weights, optimizer
    and loss-scaler states, the generators."""
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
            "rng": rng_state(generator)}


def restore_training(state: dict, model: nn.Module, optimizer, scaler, generator: torch.Generator) -> None:
    """Load ``training_state``'s parts back (the weights strictly)."""
    model.load_state_dict(state["model"], strict=True)
    optimizer.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    restore_rng(state["rng"], generator)


def resume_position(finished: int, resume: dict | None, epochs: int) -> str:
    """Where a resumed run goes on, numbered as every message numbers epochs
    (from 1, as in "epoch 3/10" and "stopped ... in epoch 3 after batch 5")."""
    if finished >= epochs:
        return f"after its last epoch ({epochs}/{epochs})"
    if resume:
        return f"in epoch {finished + 1}/{epochs} after batch {resume['batch']}"
    return f"at the start of epoch {finished + 1}/{epochs}"


def history_csv(history: list[dict]) -> str:
    if not history:
        return ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(history[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    return buffer.getvalue()


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def stop_requested(stop: StopSignal, index: int, steps: int, device: torch.device) -> int | None:
    """The stop signal every process acts on after step ``index`` (None: go on)."""
    if distributed.world_size() > 1 and (index + 1) % STOP_CHECK_EVERY and index + 1 < steps:
        return None
    return distributed.agreed_signal(stop.received, device)


# --------------------------------------------------------------------- loop
class Task:
    """What one kind of training plugs into :class:`Trainer`. ``order`` and
    ``step`` are required; the other hooks do nothing unless overridden."""

    def order(self) -> Tensor:
        """A new epoch's data order, drawn from the run's generator(s)."""
        raise NotImplementedError

    def begin(self, order: Tensor, saved: dict) -> None:
        """An epoch starts on ``order``; ``saved``: the mid-epoch state it
        resumes from (``batch``, the next batch, and ``partial``'s fields), else empty."""

    def step(self, order: Tensor, index: int) -> dict[str, Tensor]:
        """Batch ``index`` of ``order``: its loss terms (``loss`` among them),
        with the gradients of ``loss`` computed; the trainer steps the optimizer."""
        raise NotImplementedError

    def columns(self, epoch: int, means: dict[str, float], lr: float | None) -> dict:
        """The epoch's row (between ``epoch`` and ``seconds``) from the means of
        its loss terms and its last learning rate."""
        return dict(means)

    def state(self) -> dict:
        """Fields of the task's own in every checkpoint (every process calls it)."""
        return {}

    def partial(self, batch: int) -> dict:
        """Fields of the task's own in a mid-epoch checkpoint taken before batch ``batch``."""
        return {}

    def restore(self, state: dict) -> str:
        """Take the task's fields back from a checkpoint; returns a note for the resume message."""
        return ""

    def after_epoch(self, epoch: int) -> None:
        """Rank 0, once epoch ``epoch`` is saved."""

    def finish(self) -> None:
        """Rank 0, once the last epoch is saved: write the outputs."""


@dataclass
class Trainer:
    """The loop's settings and what it checkpoints. ``name`` names the run in
    messages; ``model`` is the module whose weights are checkpointed and put
    in training mode each epoch (None only without ``run_dir``); ``generator``
    the one the task draws its data order (and more) from; ``schedule`` the
    optimizer settings whose learning-rate schedule sets every step's rate
    (None: the optimizer's rate stays); ``run_dir`` the folder of
    ``state.pt`` (None: no checkpoint, no stop signals); ``digest`` the
    settings hash a checkpoint must carry; ``out_log`` the rows' CSV file;
    ``subject`` names the run in the non-finite-loss error (default:
    ``name``); ``history_key`` is the checkpoint's key of the rows."""

    name: str
    model: nn.Module | None
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    epochs: int
    steps_per_epoch: int
    device: torch.device
    generator: torch.Generator | None = None
    schedule: dict | None = None
    run_dir: Path | None = None
    digest: str = ""
    out_log: Path | None = None
    process: distributed.Process = distributed.Process()
    subject: str = ""
    history_key: str = "history"

    @property
    def state_path(self) -> Path | None:
        return None if self.run_dir is None else Path(self.run_dir) / STATE_FILE

    def run(self, task: Task, stop_after_epochs: int | None = None) -> bool:
        """Train (or resume) to the last epoch and let the task write its
        outputs: True. False when it stopped after ``stop_after_epochs``
        epochs of this call (state saved)."""
        self.epoch, self.step, self.history = 0, 0, []
        path = self.state_path
        resume = self._resume(task) if path is not None and path.exists() else None
        epochs_this_run, started = 0, time.perf_counter()
        with (StopSignal() if path is not None else nullcontext()) as stop:
            while self.epoch < self.epochs:
                if stop_after_epochs is not None and epochs_this_run >= stop_after_epochs:
                    return False
                tick = time.perf_counter()
                if self.model is not None:
                    self.model.train()
                order, first = (resume["order"].to(self.device), resume["batch"]) if resume else (task.order(), 0)
                saved, resume = resume or {}, None
                task.begin(order, saved)
                monitor = LossMonitor(self.subject or self.name, self.device, dict(saved.get("sums", {})))
                # the rate of the epoch's last step, also when a resumed epoch has no step left
                lr = self._rate(max(self.step - 1, 0))
                for index in range(first, self.steps_per_epoch):
                    lr = self._rate(self.step)
                    if lr is not None:
                        optim.set_learning_rate(self.optimizer, lr)
                    monitor.record(task.step(order, index), self.epoch, index)
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                    self.step += 1
                    received = None if stop is None else stop_requested(stop, index, self.steps_per_epoch,
                                                                         self.device)
                    if received is not None:
                        self._save(task, batch=index + 1, order=order.cpu(), sums=monitor.totals(),
                                   **task.partial(index + 1))
                        raise InterruptedRun(received, self.name, self.epoch, index + 1)
                means = {key: value / self.steps_per_epoch for key, value in monitor.totals().items()}
                self.epoch += 1
                epochs_this_run += 1
                row = {"epoch": self.epoch, **task.columns(self.epoch, means, lr)}
                row["seconds"] = time.perf_counter() - tick
                self.history.append(row)
                self._save(task)
                if self.process.main:
                    self._log(row, (time.perf_counter() - started) / epochs_this_run)
                    task.after_epoch(self.epoch)
            if stop is not None:
                stop.finish()  # the final state is saved: a late signal has nothing left to save
            if self.process.main:
                if self.out_log is not None:
                    checkpoint.atomic_write_text(history_csv(self.history), self.out_log)
                task.finish()
        return True

    def _rate(self, step: int) -> float | None:
        if self.schedule is None:
            return None
        return optim.learning_rate(step, self.steps_per_epoch * self.epochs, self.steps_per_epoch, self.schedule)

    def _resume(self, task: Task) -> dict | None:
        """Load the checkpoint; the mid-epoch state it holds, if any."""
        state = checkpoint.load(self.state_path, expected_hash=self.digest)
        restore_training(state, self.model, self.optimizer, self.scaler, self.generator)
        notice = task.restore(state)
        self.epoch, self.step, self.history = state["epoch"], state["step"], list(state[self.history_key])
        resume = state if "batch" in state else None
        if self.process.main:
            print(f"resumed {self.name} {resume_position(self.epoch, resume, self.epochs)}{notice}", file=sys.stderr)
        return resume

    def _save(self, task: Task, **partial) -> None:
        """Every process takes part (a task may gather from all of them); rank 0 writes."""
        if self.state_path is None:
            return
        extra = task.state()
        if not self.process.main:
            return
        checkpoint.save({"settings_hash": self.digest, "epoch": self.epoch, "step": self.step,
                         **training_state(self.model, self.optimizer, self.scaler, self.generator),
                         self.history_key: self.history, **extra, **partial}, self.state_path)

    def _log(self, row: dict, seconds_per_epoch: float) -> None:
        """The rows so far to ``epochs.csv``, and the epoch's line with the time left."""
        if self.out_log is not None:
            checkpoint.atomic_write_text(history_csv(self.history), self.out_log)
        eta = seconds_per_epoch * (self.epochs - self.epoch)
        terms = " ".join(f"{k} {v:.4f}" for k, v in row.items() if k not in ("epoch", "seconds"))
        print(f"{self.name} epoch {self.epoch}/{self.epochs} {terms} {row['seconds']:.2f}s "
              f"eta {format_seconds(eta)}", file=sys.stderr, flush=True)
