"""Tests for multisym.train.checkpoint: atomic writes, strict loading, the run lock."""

import os
import multiprocessing

import pytest
import torch

from multisym.train import checkpoint
from multisym.train.checkpoint import (
    CheckpointError,
    RunLock,
    atomic_write_bytes,
    atomic_write_text,
    load,
    save,
)


def _state():
    return {
        "model": {"w": torch.arange(6.0).reshape(2, 3), "b": torch.tensor([1, 2], dtype=torch.int64)},
        "step": 17,
        "epoch": 3,
        "loss": 0.25,
        "settings_hash": "abc123",
        "rng": torch.Generator().manual_seed(0).get_state(),
        "history": [1.0, 0.5],
    }


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


def test_save_load_roundtrip(tmp_path):
    path = tmp_path / "sub" / "ckpt.pt"
    state = _state()
    save(state, path)
    assert path.exists()
    assert _leftovers(path.parent) == []
    loaded = load(path, expected_hash="abc123")
    assert set(loaded) == set(state)
    assert torch.equal(loaded["model"]["w"], state["model"]["w"])
    assert torch.equal(loaded["model"]["b"], state["model"]["b"])
    assert loaded["model"]["b"].dtype == torch.int64
    assert loaded["step"] == 17 and loaded["epoch"] == 3 and loaded["loss"] == 0.25
    assert loaded["settings_hash"] == "abc123"
    assert torch.equal(loaded["rng"], state["rng"])
    assert loaded["history"] == [1.0, 0.5]
    # no expected hash: any checkpoint is accepted
    assert load(path)["step"] == 17


def test_saved_file_readable_with_weights_only(tmp_path):
    path = tmp_path / "ckpt.pt"
    save(_state(), path)
    raw = torch.load(path, weights_only=True)
    assert raw["step"] == 17
    assert torch.equal(raw["model"]["w"], torch.arange(6.0).reshape(2, 3))


def test_save_overwrites(tmp_path):
    path = tmp_path / "ckpt.pt"
    save({"step": 1}, path)
    save({"step": 2}, path)
    assert load(path)["step"] == 2
    assert _leftovers(tmp_path) == []


def test_wrong_hash_raises_naming_file(tmp_path):
    path = tmp_path / "ckpt.pt"
    save(_state(), path)
    with pytest.raises(CheckpointError) as info:
        load(path, expected_hash="different")
    message = str(info.value)
    assert str(path) in message
    assert "abc123" in message and "different" in message


def test_missing_hash_raises_when_one_is_expected(tmp_path):
    path = tmp_path / "ckpt.pt"
    save({"step": 1}, path)
    with pytest.raises(CheckpointError, match="ckpt.pt"):
        load(path, expected_hash="abc123")


def test_truncated_file_raises_naming_file(tmp_path):
    path = tmp_path / "ckpt.pt"
    save(_state(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as info:
        load(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("content", [b"", b"this is not a checkpoint", bytes(range(256)) * 4])
def test_garbage_file_raises_naming_file(tmp_path, content):
    path = tmp_path / "ckpt.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        load(path)
    assert str(path) in str(info.value)


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "absent.pt")


class NotAllowed:
    """A class that weights_only loading must refuse."""


def test_unsafe_pickle_is_refused(tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save({"obj": NotAllowed()}, path)
    with pytest.raises(CheckpointError, match="ckpt.pt"):
        load(path)


# --- atomic writes ------------------------------------------------------------


def test_atomic_write_bytes_leaves_no_temp(tmp_path):
    path = tmp_path / "deep" / "file.bin"
    atomic_write_bytes(b"\x00\x01hello", path)
    assert path.read_bytes() == b"\x00\x01hello"
    assert _leftovers(path.parent) == []
    atomic_write_text("text ü", path)
    assert path.read_text(encoding="utf-8") == "text ü"
    assert sorted(p.name for p in path.parent.iterdir()) == ["file.bin"]


def test_atomic_write_failure_keeps_previous_content(tmp_path, monkeypatch):
    path = tmp_path / "file.bin"
    atomic_write_bytes(b"old content", path)

    def failing_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint.os, "replace", failing_replace)
    with pytest.raises(OSError) as info:
        atomic_write_bytes(b"new content", path)
    assert str(path) in str(info.value)
    monkeypatch.undo()
    assert path.read_bytes() == b"old content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.bin"]


def test_save_failure_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save({"step": 1, "settings_hash": "h"}, path)

    def failing_fsync(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(checkpoint.os, "fsync", failing_fsync)
    with pytest.raises(OSError):
        save({"step": 2, "settings_hash": "h"}, path)
    monkeypatch.undo()
    assert load(path, expected_hash="h")["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]


# --- run lock -------------------------------------------------------------------

def _child_try_lock(folder, connection):
    try:
        with RunLock(folder):
            connection.send(("acquired", ""))
    except RuntimeError as error:
        connection.send(("refused", str(error)))
    finally:
        connection.close()


def _try_lock_in_other_process(folder):
    """Try the lock from a forked process (fast: no re-import of torch)."""
    context = multiprocessing.get_context("fork")
    parent_end, child_end = context.Pipe(duplex=False)
    process = context.Process(target=_child_try_lock, args=(str(folder), child_end))
    process.start()
    child_end.close()
    assert parent_end.poll(30), "child did not answer"
    outcome = parent_end.recv()
    process.join(30)
    assert process.exitcode == 0
    return outcome


def test_run_lock_refuses_second_process_then_releases(tmp_path):
    folder = tmp_path / "run"
    with RunLock(folder) as lock:
        assert (folder / ".lock").exists()
        assert f"pid {os.getpid()}" in lock.path.read_text()
        status, message = _try_lock_in_other_process(folder)
        assert status == "refused"
        assert str(folder) in message
        assert f"pid {os.getpid()}" in message  # names the owner
    status, message = _try_lock_in_other_process(folder)
    assert status == "acquired", message


def test_run_lock_refuses_second_acquisition_in_same_process(tmp_path):
    folder = tmp_path / "run"
    with RunLock(folder):
        with pytest.raises(RuntimeError) as info:
            with RunLock(folder):
                pass
        assert str(folder) in str(info.value)
    # released: acquirable again
    with RunLock(folder) as again:
        assert again.path == folder / ".lock"


def test_run_lock_released_on_exception(tmp_path):
    folder = tmp_path / "run"
    with pytest.raises(KeyError):
        with RunLock(folder):
            raise KeyError("boom")
    with RunLock(folder):
        pass
    assert (folder / ".lock").exists()


def test_non_dict_checkpoint_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), path)
    with pytest.raises(CheckpointError, match="tensor.pt"):
        load(path, expected_hash="abc")
