"""Checkpoints: atomic writes, strict resume keyed by the run's settings hash.

A checkpoint is one dict of tensors, numbers and strings, so that
``torch.load(weights_only=True)`` can read it. It is written to a temporary
file in the same folder, flushed and fsynced, then renamed over the old one:
a kill at any moment leaves either the previous checkpoint or the new one,
never a partial file.
"""

from __future__ import annotations

import fcntl
import io
import os
from pathlib import Path
from typing import Any

import torch

from multisym.errors import UserError
from multisym.files import atomic_write_bytes, atomic_write_text  # noqa: F401  (re-exported)


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be used (corrupt, foreign or from other settings)."""


def save(state: dict[str, Any], path: str | Path) -> None:
    """Serialise ``state`` in memory, then write it atomically."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(buffer.getvalue(), path)


def load(path: str | Path, expected_hash: str | None = None, map_location="cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; refuse one whose
    ``settings_hash`` differs from ``expected_hash``."""
    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({type(error).__name__}: {error}); "
            "delete it to restart this run from scratch"
        ) from error
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{path} holds a {type(state).__name__}, not a checkpoint dict; "
            "delete it to restart this run from scratch"
        )
    if expected_hash is not None and state.get("settings_hash") != expected_hash:
        raise CheckpointError(
            f"{path} belongs to a run with settings hash {state.get('settings_hash')!r}, "
            f"not {expected_hash!r}; it was not written by this member's settings. "
            "Move it away (or delete the folder) to train this member from scratch"
        )
    return state


class RunLockedError(UserError, RuntimeError):
    """A run folder that another training process holds."""


class RunLock:
    """An exclusive lock on a run folder, so two training processes never
    write the same run. Released on exit (and by the OS if the process dies)."""

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / ".lock"
        self._handle = None

    def __enter__(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if not isinstance(error, BlockingIOError):
                handle.close()
                raise
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise RunLockedError(
                f"run folder {self.path.parent} is locked by {owner}; "
                "another training process is using it. Wait for it to finish or stop it"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
        handle.flush()
        self._handle = handle
        # Temporary files of a writer killed mid-write (the lock proves it is gone):
        # never visible as checkpoints, but a checkpoint's size each.
        for stale in self.path.parent.glob(".*.tmp-*"):
            stale.unlink(missing_ok=True)
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None
