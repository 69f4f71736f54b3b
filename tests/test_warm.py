"""Warm starts (multisym.warm): a `multisym` job handed to the run's server runs
as a fresh process would (its streams, working directory, environment and
exit status; the signals sent to it; the same weights), and any job the
server should not or cannot take runs cold."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import eq_member_with_reference, prepared_eq_member, tool_env
from multisym import warm
from multisym.train.pretrain import STATE_FILE

PROGRAM = str(Path(sys.executable).parent / "multisym")
DIGITS = {"name": "digits", "image_size": 16, "splits": {"seed": 0, "val": 0.15, "test": 0.15}}


@pytest.fixture
def server(tmp_path):
    """A server as the Snakefile starts it, for jobs started in ``tmp_path``,
    ready; its log's path."""
    log = tmp_path / "warm.log"
    started = warm.Server(str(log), str(tmp_path))
    try:
        wait_until_ready(started, log)
        yield log
    finally:
        started.stop()
    assert not os.path.exists(started.folder) and not os.path.exists(started.where)


def wait_until_ready(started: warm.Server, log: Path) -> None:
    deadline = time.time() + 120
    while not os.path.exists(started.socket):
        assert started.process.poll() is None and time.time() < deadline, log.read_text()
        time.sleep(0.1)


def job_env(**changes) -> dict:
    env = {**tool_env(), **changes}
    return {name: value for name, value in env.items() if value is not None}


def served(log: Path) -> list[tuple[int, str]]:
    """(worker pid, exit status) of each job the server ran."""
    return [(int(pid), status)
            for pid, status in re.findall(r"worker (\d+) \(\S+\) ended with (-?\d+)", log.read_text())]


def running(pid: int) -> bool:
    """Whether ``pid`` runs: neither gone nor a zombie (one whose parent, the
    killed server, is not there to reap it, until init does)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def prepare_data(folder: Path, dataset: dict, cwd: Path | None = None, **env) -> subprocess.CompletedProcess:
    """The job writes into ``folder``, started in ``cwd`` (a run's working
    folder: warm where its server runs); by default in ``folder``, where no
    server is named, so cold."""
    folder.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [PROGRAM, "prepare-data", "--dataset-json", json.dumps(dataset), "--out-data", str(folder / "dataset.npz"),
         "--out-manifest", str(folder / "manifest.json")],
        cwd=cwd or folder, env=job_env(**env), capture_output=True, text=True, timeout=300,
    )


def test_a_job_runs_in_a_worker_with_its_place_streams_and_exit_status(tmp_path, server):
    warm_run = prepare_data(tmp_path / "warm", DIGITS, tmp_path)
    assert warm_run.returncode == 0, warm_run.stderr
    assert served(server) == [(served(server)[0][0], "0")]
    cold_run = prepare_data(tmp_path / "cold", DIGITS)
    assert cold_run.returncode == 0, cold_run.stderr
    assert len(served(server)) == 1
    for name in ("dataset.npz", "manifest.json"):
        assert (tmp_path / "warm" / name).read_bytes() == (tmp_path / "cold" / name).read_bytes()

    # settings no validated config would hand over: an uncaught KeyError, a traceback, exit 1
    unsplit = {key: value for key, value in DIGITS.items() if key != "splits"}
    failed = prepare_data(tmp_path / "bad", unsplit, tmp_path)
    cold_failed = prepare_data(tmp_path / "bad", unsplit)
    assert failed.returncode == cold_failed.returncode == 1
    assert failed.stderr.splitlines()[-1] == cold_failed.stderr.splitlines()[-1] == "KeyError: 'splits'"
    assert "Traceback" in failed.stderr
    assert served(server)[-1][1] == "1"
    usage = subprocess.run([PROGRAM, "features"], env=job_env(), cwd=tmp_path, capture_output=True, text=True,
                           timeout=120)
    assert usage.returncode == 2 and "the following arguments are required" in usage.stderr
    assert len(served(server)) == 3


def test_jobs_the_server_should_not_take_run_cold(tmp_path, server):
    """Another SLURM allocation, a folder that names no server (a run with
    warm_starts: false starts none), or a server named that is gone."""
    other_allocation = prepare_data(tmp_path / "slurm", DIGITS, tmp_path, SLURM_JOB_ID="4242")
    assert other_allocation.returncode == 0, other_allocation.stderr
    assert "refused: the job runs in SLURM allocation 4242" in server.read_text()
    switched_off = prepare_data(tmp_path / "off", DIGITS)
    assert switched_off.returncode == 0, switched_off.stderr
    gone = tmp_path / "gone"
    (gone / warm.WHERE).parent.mkdir(parents=True)
    (gone / warm.WHERE).write_text(str(tmp_path / "no-socket") + "\n")
    no_server = prepare_data(gone, DIGITS)
    assert no_server.returncode == 0, no_server.stderr
    assert served(server) == []


@pytest.fixture(scope="module")
def eq_member(tmp_path_factory):
    """A smoke Eq member and the weights of its uninterrupted, cold run."""
    return eq_member_with_reference(tmp_path_factory.mktemp("warm-member"))


def pretrain(eq_member, run: Path, stderr=subprocess.PIPE, device: str = "cpu") -> subprocess.Popen:
    """`multisym pretrain` of ``eq_member`` (settings, (data, manifest), ...),
    started in ``run``'s parent folder (where the test's server runs)."""
    settings, (data, manifest), *_ = eq_member
    return subprocess.Popen(
        [PROGRAM, "pretrain", "--settings-json", json.dumps(settings), "--data", str(data), "--manifest",
         str(manifest), "--run-dir", str(run), "--out-model", str(run / "model.pt"), "--out-log",
         str(run / "epochs.csv"), "--threads", "1", "--device", device],
        env=job_env(), cwd=run.parent, stderr=stderr, text=True,
    )


def wait_for_epochs(process: subprocess.Popen, run: Path, count: int) -> None:
    deadline = time.time() + 120
    while not (run / "epochs.csv").exists() or len((run / "epochs.csv").read_text().splitlines()) <= count:
        assert process.poll() is None and time.time() < deadline, "training ended before it could be interrupted"
        time.sleep(0.05)


def test_a_signal_to_the_job_reaches_its_worker_and_the_rerun_gives_the_same_weights(tmp_path, server, eq_member):
    run = tmp_path / "run"
    process = pretrain(eq_member, run)
    wait_for_epochs(process, run, 3)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert "stopped by SIGTERM" in stderr
    assert not (run / "model.pt").exists()

    resumed = pretrain(eq_member, run)
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0 and "resumed" in stderr, stderr[-2000:]
    assert [status for _, status in served(server)] == [str(128 + signal.SIGTERM), "0"]
    final = torch.load(run / "model.pt", weights_only=True)
    expected = torch.load(eq_member[2] / "model.pt", weights_only=True)
    for part in ("backbone", "projector", "eq_head"):
        for name, tensor in expected[part].items():
            assert torch.equal(final[part][name], tensor), f"{part}.{name} differs from the cold, uninterrupted run"
    record = json.loads((run / "run.json").read_text())
    assert record["threads"] == 1


def test_a_job_killed_outright_takes_its_worker_with_it(tmp_path, server, eq_member):
    run = tmp_path / "run"
    process = pretrain(eq_member, run, stderr=subprocess.DEVNULL)
    wait_for_epochs(process, run, 1)
    worker = int(re.search(r"worker (\d+) runs pretrain", server.read_text()).group(1))
    process.kill()
    process.wait()
    deadline = time.time() + 30
    while f"worker {worker} (pretrain) ended" not in server.read_text():
        assert time.time() < deadline, server.read_text()
        time.sleep(0.1)
    # the server sent it SIGTERM, on which pretraining saves its state and stops
    assert served(server) == [(worker, str(128 + signal.SIGTERM))]
    assert (run / STATE_FILE).exists() and not (run / "model.pt").exists()
    assert not running(worker)


def test_the_exit_status_of_a_worker_killed_by_a_signal_is_the_jobs(monkeypatch):
    """A worker that died by a signal: the job dies by the same signal."""
    child = os.fork()
    if child == 0:
        try:
            warm._exit_like(-signal.SIGUSR1)
        finally:
            os._exit(99)
    _, status = os.waitpid(child, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGUSR1


def test_the_jobs_thread_counts_apply_to_libraries_the_server_loaded():
    """torch and the BLAS pools read these variables when loaded, which for a
    worker was in the server, under the server's environment."""
    script = (
        "import os, json, threadpoolctl, torch, numpy\n"
        "from multisym import warm\n"
        "os.environ.update(OMP_NUM_THREADS='3', OPENBLAS_NUM_THREADS='3', MKL_NUM_THREADS='3')\n"
        "warm._apply_thread_counts()\n"
        "blas = [pool['num_threads'] for pool in threadpoolctl.threadpool_info() if pool['user_api'] == 'blas']\n"
        "print(json.dumps([torch.get_num_threads(), blas]))\n"
    )
    loaded_with_one = job_env(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", script], env=loaded_with_one, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    torch_threads, blas_pools = json.loads(result.stdout)
    assert torch_threads == 3 and blas_pools and set(blas_pools) == {3}


def test_a_job_whose_server_dies_fails_and_stops_its_worker_first(tmp_path, eq_member):
    """No worker outlives the job Snakemake counts as failed: it would write
    its outputs after the fact."""
    started = warm.Server(str(tmp_path / "warm.log"), str(tmp_path))
    try:
        wait_until_ready(started, tmp_path / "warm.log")
        run = tmp_path / "run"
        process = pretrain(eq_member, run)
        wait_for_epochs(process, run, 1)
        worker = int(re.search(r"worker (\d+) runs pretrain", (tmp_path / "warm.log").read_text()).group(1))
        started.process.kill()
        _, stderr = process.communicate(timeout=150)
    finally:
        started.stop()
    assert process.returncode == 1 and "the warm-start server ended before this job's worker" in stderr
    assert "stopped by SIGTERM" in stderr  # the worker saved its state before the job exited
    assert not running(worker)


def test_preloading_never_asks_for_cuda():
    """A process that has queried CUDA (even its device count, which
    initialises the driver) cannot hand it on to forked workers; the server
    imports its modules without such a query, so workers can use the GPU."""
    script = (
        "import json, torch\n"
        "asked = []\n"
        "def recording(name, function):\n"
        "    def call(*args, **kwargs):\n"
        "        asked.append(name)\n"
        "        return function(*args, **kwargs)\n"
        "    return call\n"
        "for name in ('is_available', 'device_count', 'init', '_lazy_init'):\n"
        "    setattr(torch.cuda, name, recording(name, getattr(torch.cuda, name)))\n"
        "torch._C._cuda_getDeviceCount = recording('_cuda_getDeviceCount', torch._C._cuda_getDeviceCount)\n"
        "import importlib, multisym.warm\n"
        "for module in multisym.warm.PRELOADED:\n"
        "    importlib.import_module(module)\n"
        "print(json.dumps([asked, torch.cuda.is_initialized()]))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], env=job_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == [[], False]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
def test_a_worker_trains_on_the_gpu(tmp_path, server):
    run = tmp_path / "run"
    process = pretrain(prepared_eq_member(tmp_path, 2, 64), run, device="cuda")
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-2000:]
    assert served(server) == [(served(server)[0][0], "0")]
    assert json.loads((run / "run.json").read_text())["device"].startswith("cuda")
