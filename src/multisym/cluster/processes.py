"""One training run as several processes on this machine, one per GPU (or
gloo processes on the CPU): what ``torchrun --nproc-per-node W`` would do,
started from Python so that the workflow's local executor and the SLURM job
run the same call (``launch.run``).

Each process gets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` and a free
``MASTER_ADDR:MASTER_PORT`` on this host, which ``distributed.joined`` reads.
Rank 0's return value is the run's result; an exception in any process is
re-raised here with its own type (rank 0's first), so a signal-stopped run
still raises ``InterruptedRun``. SIGTERM and SIGUSR2 sent to this process are
passed on to every rank, which then stop together at a step boundary. Imports
no torch at module level: the waiting process stays light.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import tempfile
import time
import traceback
from pathlib import Path

FORWARDED = (signal.SIGTERM, signal.SIGUSR2)
FAILURE_GRACE_S = 30.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _rank_main(rank: int, call, world: int, port: int, folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world))
    try:
        outcome = ("result", call())
    except BaseException as error:  # handed to the parent with its type, then this process exits non-zero
        traceback.print_exc()
        outcome = ("error", error)
    try:
        payload = pickle.dumps(outcome)
    except Exception:  # an exception that does not pickle: its text
        payload = pickle.dumps(("error", RuntimeError(f"rank {rank}: {outcome[1]!r}")))
    (Path(folder) / f"rank{rank}.pkl").write_bytes(payload)
    if outcome[0] == "error":
        raise SystemExit(1)


def _join(processes, grace_s: float) -> None:
    """Wait for every process. Once one has failed, the others get ``grace_s``
    to fail too (a collective with a dead peer never returns), then are killed."""
    failed_at = None
    while any(p.is_alive() for p in processes):
        if failed_at is None and any(p.exitcode not in (None, 0) for p in processes):
            failed_at = time.monotonic()
        if failed_at is not None and time.monotonic() - failed_at > grace_s:
            for p in processes:
                if p.is_alive():
                    p.kill()
        time.sleep(0.1)
    for p in processes:
        p.join()


def run(call, world: int):
    """Run ``call`` in ``world`` processes on this host; rank 0's result."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="multisym-ranks-") as folder:
        context = mp.start_processes(_rank_main, args=(call, world, free_port(), folder), nprocs=world,
                                     join=False, start_method="spawn")

        def forward(signum, frame):
            for process in context.processes:
                if process.is_alive():
                    os.kill(process.pid, signum)

        previous = {s: signal.signal(s, forward) for s in FORWARDED}
        try:
            _join(context.processes, FAILURE_GRACE_S)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        outcomes = {}
        for rank in range(world):
            path = Path(folder) / f"rank{rank}.pkl"
            if path.exists():
                with open(path, "rb") as handle:
                    outcomes[rank] = pickle.load(handle)
    errors = [outcome[1] for _, outcome in sorted(outcomes.items()) if outcome[0] == "error"]
    if errors:
        raise errors[0]
    if 0 not in outcomes:
        codes = {rank: process.exitcode for rank, process in enumerate(context.processes)}
        raise RuntimeError(f"training process(es) ended without a result (exit codes by rank: {codes})")
    return outcomes[0][1]
