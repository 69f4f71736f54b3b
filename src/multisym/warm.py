"""Warm starts: the jobs of a local run forked from one process that has
already imported torch (``warm_starts`` in the config, on by default).

Each ``multisym`` job otherwise starts a fresh interpreter and imports torch,
torchvision, numpy and the plotting stack before doing its own work, in each
of the embedded default's 190 jobs (``benchmarks/README.md`` has the measured
difference). For a local run the Snakefile starts a server (`Server`) that
imports those libraries once and listens on a Unix socket in a private
folder; it names the socket in ``.snakemake/multisym-warm`` of the run's
working folder, where every job of the run starts. A job (`delegate`, the
first thing the ``multisym`` program does) sends it its arguments, working
directory, environment, ``sys.path`` and standard streams; the server forks a
worker that runs the command as the fresh process would have:

- the project's own modules are imported afresh in the worker, so it runs the
  code on disk, not the code of when the server started;
- the thread counts Snakemake sets in each job's environment
  (``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` and the like) are applied to
  torch and to the BLAS libraries already loaded, which read them at load;
- the signals the job receives (Snakemake's or the terminal's) are forwarded
  to the worker's process group; a job killed outright has its worker sent
  SIGTERM by the server, and a job whose server died sends it SIGTERM itself
  and fails once it has stopped, so no worker outlives its job;
- the job exits with the worker's exit status, or dies by the worker's signal.

Any doubt means a cold start, the usual fresh process: no server (no socket
named, or it is refused or gone), another interpreter (a job in a conda env),
or a SLURM job (whose resources are its allocation's, not the login node's).
Forking after these imports is what torch's DataLoader does on Linux; it is
safe because the server runs no parallel region and never initialises CUDA.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

# in the run's working folder: the path of the running server's socket
WHERE = os.path.join(".snakemake", "multisym-warm")
# the third-party modules the workflow's commands import, heaviest first;
# project modules are never preloaded (see the module docstring)
PRELOADED = (
    "torch", "torchvision", "torchvision.models", "torchvision.transforms.v2", "torchvision.io",
    "torchvision.ops", "torch.func", "torch.multiprocessing", "numpy", "scipy.stats", "sklearn.linear_model",
    "sklearn.model_selection", "sklearn.preprocessing", "matplotlib.pyplot", "seaborn", "PIL.Image",
    "jsonschema", "yaml", "threadpoolctl",
)
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
MESSAGE_BYTES = 1 << 20
# how long a job whose server died waits for its worker to stop (pretraining
# saves its state on SIGTERM first)
ORPHAN_GRACE_S = 120
# Snakemake exports these per job, from its ``threads``; the libraries read
# them when they are loaded, which in a worker was in the server
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS")


# --- the job's side -------------------------------------------------------------


def delegate() -> None:
    """Run this ``multisym`` command in a worker of the run's server and exit
    with its status; return (to run it cold) if there is no such server or it
    refuses this job."""
    try:
        with open(WHERE) as handle:
            path = handle.read().strip()
    except OSError:
        return
    try:
        for fd in (0, 1, 2):
            os.fstat(fd)
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        connection.connect(path)
        request = {"argv": sys.argv, "cwd": os.getcwd(), "env": dict(os.environ), "path": sys.path,
                   "interpreter": _interpreter()}
        socket.send_fds(connection, [json.dumps(request).encode()], [0, 1, 2])
        reply = json.loads(connection.recv(MESSAGE_BYTES) or b'{"refused": "no reply"}')
    except OSError:
        return
    if "refused" in reply:
        connection.close()
        return
    worker = reply["pid"]
    try:
        ended = os.pidfd_open(worker)  # readable once the worker has exited
    except ProcessLookupError:
        ended = None

    for signum in FORWARDED:
        signal.signal(signum, lambda signum, frame: _signal_group(worker, signum))
    message = connection.recv(MESSAGE_BYTES)
    if not message:
        # the server died: its worker must not outlive the job that Snakemake
        # is about to count as failed (it would write outputs after the fact)
        _signal_group(worker, signal.SIGTERM)
        if ended is not None:
            select.select([ended], [], [], ORPHAN_GRACE_S)
        print(f"error: the warm-start server ended before this job's worker (pid {worker}) did; "
              "rerun the job, or set warm_starts: false to run jobs in fresh processes", file=sys.stderr)
        os._exit(1)
    _exit_like(json.loads(message)["status"])


def _signal_group(worker: int, signum: int) -> None:
    """Signal the worker's process group (its own children too), if still there."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(worker, signum)


def _interpreter() -> list[str]:
    """The interpreter binary and environment (a venv's python, python3 and
    python3.11 are one)."""
    return [os.path.realpath(sys.executable), sys.prefix]


def _exit_like(status: int) -> None:
    """Exit with the worker's code, or die by the signal that ended it."""
    if status < 0:
        with contextlib.suppress(OSError, ValueError):  # SIGKILL's disposition cannot be set
            signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
        status = 128 - status  # a signal whose default is to be ignored
    os._exit(status)


# --- the server's side ----------------------------------------------------------


def serve(path: str, parent: int) -> None:
    """Preload, then fork a worker per job until ``parent`` (the Snakemake
    process) is gone or the server is sent SIGTERM."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal's ^C is the jobs' to act on
    signal.signal(signal.SIGTERM, _stop)
    workers: dict[int, _Worker] = {}
    try:
        listener, selector = _listen(path)
        while os.getppid() == parent:
            for key, _ in selector.select(timeout=1.0):
                try:
                    _handle(key, listener, selector, workers)
                except Exception as error:  # one job's trouble must not end the others'
                    _log(f"error: {error!r}")
    except _Stopped:  # also while preloading, when a run ends within seconds
        pass
    finally:
        for worker in workers.values():
            _signal_group(worker.pid, signal.SIGTERM)
        shutil.rmtree(os.path.dirname(path), ignore_errors=True)
        _log("stopped")


def _listen(path: str):
    """Import `PRELOADED`, then open the socket; jobs find it only once it
    answers."""
    import importlib

    started = time.monotonic()
    for name in PRELOADED:
        try:
            importlib.import_module(name)
        except ImportError as error:  # a job that needs it fails as it would cold
            _log(f"not preloaded: {error}")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path + ".new")
    listener.listen(64)
    os.rename(path + ".new", path)
    _log(f"ready in {time.monotonic() - started:.1f} s, pid {os.getpid()}, {sys.executable}")
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    return listener, selector


def _handle(key, listener, selector, workers: dict) -> None:
    if key.fileobj is listener:
        worker = _accept(listener, selector, workers)
        if worker is not None:
            workers[worker.pid] = worker
    elif key.data[0] == "exit":
        workers.pop(key.data[1].pid).finish(selector)
    else:
        key.data[1].job_gone(selector)


class _Stopped(BaseException):
    """SIGTERM, raised out of whatever the server is doing; not an Exception,
    so that the loop's guard around each event lets it through."""


def _stop(signum, frame):
    raise _Stopped


def _log(line: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {line}", file=sys.stderr, flush=True)


class _Worker:
    """A forked worker, the connection to its job and a pidfd to await it."""

    def __init__(self, pid: int, connection: socket.socket, command: str):
        self.pid, self.connection, self.command = pid, connection, command
        self.pidfd = os.pidfd_open(pid)
        self.started = time.monotonic()

    def job_gone(self, selector) -> None:
        """The job's end of the connection: readable only once it is gone
        (jobs send nothing after their request), so its worker is stopped."""
        selector.unregister(self.connection)
        _log(f"job of worker {self.pid} is gone: SIGTERM to the worker's group")
        _signal_group(self.pid, signal.SIGTERM)

    def finish(self, selector) -> None:
        """Reap the worker and tell its job the status (logged first, so the
        log has it by the time the job has exited)."""
        _, wait_status = os.waitpid(self.pid, 0)
        status = os.waitstatus_to_exitcode(wait_status)
        _log(f"worker {self.pid} ({self.command}) ended with {status} after {time.monotonic() - self.started:.1f} s")
        selector.unregister(self.pidfd)
        os.close(self.pidfd)
        with contextlib.suppress(KeyError):  # its job is gone already
            selector.unregister(self.connection)
        with contextlib.suppress(OSError):
            self.connection.send(json.dumps({"status": status}).encode())
        self.connection.close()


def _accept(listener, selector, workers) -> _Worker | None:
    connection, _ = listener.accept()
    connection.settimeout(10)
    try:
        message, fds, _, _ = socket.recv_fds(connection, MESSAGE_BYTES, 3)
        request = json.loads(message)
    except (OSError, ValueError) as error:
        _log(f"unreadable request ({error})")
        connection.close()
        return None
    refusal = _refusal(request, fds)
    if refusal:
        _log(f"refused: {refusal}")
        for fd in fds:
            os.close(fd)
        connection.send(json.dumps({"refused": refusal}).encode())
        connection.close()
        return None
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    pid = os.fork()
    if pid == 0:
        inherited = [listener.fileno(), selector.fileno()]
        for worker in workers.values():
            inherited += [worker.pidfd, worker.connection.fileno()]
        _become_the_job(request, fds, inherited + [connection.fileno()])
    # the worker leads its own group, which the job's signals go to; set here
    # too, so that it is in place before the job can send one
    with contextlib.suppress(OSError):
        os.setpgid(pid, pid)
    for fd in fds:
        os.close(fd)
    command = " ".join(request["argv"][1:2])
    worker = _Worker(pid, connection, command)
    _log(f"worker {pid} runs {command}")
    connection.settimeout(None)
    try:
        connection.send(json.dumps({"pid": pid}).encode())
    except OSError:  # the job is gone already
        _signal_group(worker.pid, signal.SIGTERM)
    selector.register(worker.pidfd, selectors.EVENT_READ, ("exit", worker))
    selector.register(connection, selectors.EVENT_READ, ("job", worker))
    return worker


def _refusal(request: dict, fds: list[int]) -> str | None:
    if len(fds) != 3:
        return f"expected 3 standard streams, got {len(fds)}"
    if request.get("interpreter") != _interpreter():
        return f"the job runs {request.get('interpreter')}, this server {_interpreter()}"
    job_allocation = request.get("env", {}).get("SLURM_JOB_ID")
    if job_allocation != os.environ.get("SLURM_JOB_ID"):
        return f"the job runs in SLURM allocation {job_allocation}, outside this server's"
    return None


# --- the worker's side ----------------------------------------------------------


def _become_the_job(request: dict, fds: list[int], inherited: list[int]) -> None:
    """In the forked worker: take the job's streams, place and environment,
    then run its command on freshly imported project modules. Never returns."""
    code = 1
    try:
        with contextlib.suppress(OSError):  # the server may have done it first
            os.setpgid(0, 0)
        for signum in FORWARDED + (signal.SIGCHLD,):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for fd in inherited:
            os.close(fd)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        tempfile.tempdir = None  # found again from the job's TMPDIR (Snakemake's tmpdir resource)
        time.tzset()
        sys.path[:] = request["path"]
        sys.argv[:] = request["argv"]
        _apply_thread_counts()
        for name in [name for name in sys.modules if name == "multisym" or name.startswith("multisym.")]:
            del sys.modules[name]
        from multisym import cli

        code = _run(cli)
    except BaseException:
        sys.excepthook(*sys.exc_info())
    finally:
        os._exit(code)


def _run(cli) -> int:
    """The command's exit code as the interpreter would give it, after what it
    left to the interpreter's exit is done (`cli.release`)."""
    try:
        cli.main(sys.argv[1:])
        code = 0
    except SystemExit as exit:
        if exit.code is None or isinstance(exit.code, int):
            code = exit.code or 0
        else:  # sys.exit("message")
            print(exit.code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt:
        sys.excepthook(*sys.exc_info())
        code = 128 + signal.SIGINT
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    cli.release()
    return code


def _apply_thread_counts() -> None:
    """What a fresh process would take from ``OMP_NUM_THREADS`` and the BLAS
    variables at load: torch's intra-op threads and the loaded BLAS pools."""
    import threadpoolctl
    import torch

    if os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    for variable in BLAS_THREAD_VARIABLES:
        if os.environ.get(variable):
            threadpoolctl.threadpool_limits(int(os.environ[variable]), user_api="blas")
            break


# --- started and stopped by the Snakefile -------------------------------------


class Server:
    """The run's server process, started by the Snakefile's ``onstart`` and
    stopped by ``onsuccess``/``onerror``; jobs started in ``workdir`` find it
    through ``WHERE`` there."""

    def __init__(self, log_path: str, workdir: str = "."):
        self.folder = tempfile.mkdtemp(prefix="multisym-warm-")  # private: mode 0700
        self.socket = os.path.join(self.folder, "socket")
        self.where = os.path.join(workdir, WHERE)
        with open(log_path, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "multisym.warm", self.socket, str(os.getpid())],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        os.makedirs(os.path.dirname(self.where), exist_ok=True)
        with open(self.where + ".new", "w") as handle:
            handle.write(self.socket + "\n")
        os.replace(self.where + ".new", self.where)

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            with open(self.where) as handle:
                ours = handle.read().strip() == self.socket
            if ours:
                os.unlink(self.where)
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        shutil.rmtree(self.folder, ignore_errors=True)  # gone unless the server died before it could


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))
