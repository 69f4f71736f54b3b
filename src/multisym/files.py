"""Atomic file writes: a temporary file in the same folder, flushed and fsynced,
then renamed over the target, so a kill or a full disk never leaves a partial
file where a good one was. No torch here (tables and the probe use it).
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import UserError


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
