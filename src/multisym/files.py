"""Atomic file writes: a temporary file in the same folder, flushed and fsynced,
then renamed over the target, so a kill or a full disk never leaves a partial
file where a good one was; and reads of stored arrays that name a corrupt file.
No torch here (tables and the probe use it).
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import UserError


class CorruptFileError(UserError):
    """A stored result that cannot be read (truncated, overwritten, not an .npz)."""


class WriteError(UserError, OSError):
    """A result that could not be written (a full disk, a read-only folder);
    whatever the target held before is unchanged."""


def atomic_write_bytes(data: bytes, path: str | Path) -> None:
    """Write ``data`` to ``path`` through a fsynced temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:
        raise WriteError(
            error.errno,
            f"could not write {path}: {error.strerror}; what it held before is unchanged. "
            "Free space (or fix the folder's permissions) and rerun",
        ) from error
    finally:
        tmp.unlink(missing_ok=True)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def atomic_write_text(text: str, path: str | Path) -> None:
    atomic_write_bytes(text.encode(), path)


def read_npz(path: str | Path, keys: list[str] | None = None) -> dict:
    """Every array of an .npz written by an earlier step (only ``keys`` when
    given), or a CorruptFileError naming the file and how to rebuild it."""
    import numpy as np

    try:
        with np.load(path) as stored:
            return {key: stored[key] for key in (stored.files if keys is None else keys)}
    except (FileNotFoundError, KeyError):  # a missing file or array is not a corrupt one
        raise
    except Exception as error:
        raise CorruptFileError(
            f"{path}: cannot read it ({type(error).__name__}: {error}); it is truncated or corrupt. "
            "Delete it and run the same command again: the step that wrote it rebuilds it"
        ) from error
