"""Atomic file writes: a temporary file in the same folder, flushed and fsynced,
then renamed over the target, so a kill or a full disk never leaves a partial
file where a good one was; and reads of stored arrays that name a corrupt file.
No torch here (tables and the probe use it).
"""

from __future__ import annotations

import hashlib
import io
import mmap
import os
import struct
import zipfile
from pathlib import Path

import numpy as np

from multisym.errors import UserError


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


def _corrupt(path, error: Exception) -> CorruptFileError:
    return CorruptFileError(
        f"{path}: cannot read it ({type(error).__name__}: {error}); it is truncated or corrupt. "
        "Delete it and run the same command again: the step that wrote it rebuilds it"
    )


def _read_only(arrays: dict) -> dict:
    for array in arrays.values():
        array.setflags(write=False)
    return arrays


def map_npz(path: str | Path, keys: list[str], optional: list[str] = ()) -> dict:
    """The arrays ``keys`` of an uncompressed .npz (``np.savez``) as read-only
    views of the file mapped into memory: no copy, and pages are read from
    the page cache as they are first used. A compressed array is read as
    ``read_npz`` reads it. A missing file or key raises as ``read_npz`` does
    (keys in ``optional`` that the file lacks are left out); anything
    unreadable is a CorruptFileError."""
    import numpy as np
    from numpy.lib import format as npy

    header_readers = {(1, 0): npy.read_array_header_1_0, (2, 0): npy.read_array_header_2_0}
    try:
        with open(path, "rb") as handle, zipfile.ZipFile(handle) as archive:
            names = set(archive.namelist())
            keys = [*keys, *(key for key in optional if f"{key}.npy" in names)]
            members = {key: archive.getinfo(f"{key}.npy") for key in keys}
            if any(info.compress_type != zipfile.ZIP_STORED for info in members.values()):
                return _read_only(read_npz(path, keys))
            mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
            out = {}
            for key, info in members.items():
                # the local header: 30 bytes, then the name and an extra field of the lengths it gives
                name_length, extra_length = struct.unpack(
                    "<HH", mapped[info.header_offset + 26:info.header_offset + 30])
                start = info.header_offset + 30 + name_length + extra_length
                handle.seek(start)
                read_header = header_readers.get(npy.read_magic(handle))
                if read_header is None:  # a format version this does not map
                    return _read_only(read_npz(path, keys))
                shape, fortran, dtype = read_header(handle)
                offset, count = handle.tell(), int(np.prod(shape))
                if offset + count * dtype.itemsize > start + info.file_size:
                    raise ValueError(f"{key}: the array is longer than its zip entry")
                array = np.frombuffer(mapped, dtype, count, offset)
                out[key] = array.reshape(shape, order="F" if fortran else "C")
            return out
    except (FileNotFoundError, KeyError):
        raise
    except Exception as error:
        raise _corrupt(path, error) from error


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
        raise _corrupt(path, error) from error


def write_npz(path: str | Path, **arrays: np.ndarray) -> None:
    """Write arrays to one .npz atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(buffer.getvalue(), path)


def sha256_file(path: str | Path) -> str:
    """The SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
