"""Several processes training one member.

Issue 12 (g): two CPU processes with gloo and plain BatchNorm, each on one
half of a global batch, give the loss and the gradients of one process on the
whole batch. Plain BatchNorm normalises each half with its own statistics, so
the one-process reference runs the networks on each half too (as SyncBatchNorm
would not); everything else, the contrastive loss over the global batch above
all, is computed once on the whole batch.

Then the whole training loop on two processes: rank 0 alone writes, a signal
stops both at one step, and the rerun is bit-identical."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from conftest import SMOKE, prepared_eq_member, tool_env
from test_interruptions import command as pretrain_command
from multisym.train import checkpoint
from multisym.train import distributed
from multisym import config as config_module
from multisym.data.splits import DatasetInfo
from multisym.errors import UserError
from multisym.train.losses import cross_view_info_nce, equivariance_loss
from multisym.members import member_table, settings_hash
from multisym.train.pretrain import STATE_FILE, ContrastiveStep, build_model, global_batch
from multisym.runtime import make_runtime

WORLD = 2
BATCH = 16  # global


def eq_settings() -> dict:
    return next(m for m in member_table(config_module.load(SMOKE)) if m.mode == "eq").settings


INFO = DatasetInfo(name="digits", num_classes=10, channels=1, image_size=8, mean=(0.5,), std=(0.25,))


def drawn_global_batch(settings: dict) -> dict[str, torch.Tensor]:
    images = torch.rand(BATCH, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    model = build_model(settings, INFO)
    return ContrastiveStep(settings, model, make_runtime(torch.device("cpu"), "fp32", INFO, model)) \
        .draw(images, torch.zeros(BATCH, dtype=torch.long), torch.Generator().manual_seed(2))


def shard(batch: dict[str, torch.Tensor], rank: int) -> dict[str, torch.Tensor]:
    """Rank r's half: its rows of both views, and the orbits of its images."""
    half = BATCH // WORLD
    out = {v: batch[v][rank * half:(rank + 1) * half] for v in ("view1", "view2")}
    per_image = len(batch["orbit"]) // BATCH
    rows = slice(rank * half * per_image, (rank + 1) * half * per_image)
    return {**out, "orbit": batch["orbit"][rows], "elements": batch["elements"][rows]}


def reference(settings: dict) -> tuple[float, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = build_model(settings, INFO)
    runtime = make_runtime(torch.device("cpu"), "fp32", INFO, model)
    batch = drawn_global_batch(settings)
    parts = [model(*(runtime.prepare(shard(batch, r)[k]) for k in ("view1", "view2", "orbit"))) for r in range(WORLD)]
    z1, z2 = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    loss_eq = torch.stack([equivariance_loss(p[2], shard(batch, r)["elements"]) for r, p in enumerate(parts)]).mean()
    loss = cross_view_info_nce(z1, z2, settings["pretrain"]["temperature"]) + settings["lambda"] * loss_eq
    loss.backward()
    return float(loss.detach()), {name: p.grad.clone() for name, p in model.named_parameters()}


def worker(rank: int, port: int, settings: dict, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                         world_size=WORLD)
    try:
        torch.manual_seed(0)
        model = build_model(settings, INFO)
        runtime = make_runtime(torch.device("cpu"), "fp32", INFO, model)
        step = ContrastiveStep(settings, distributed.wrap(model, torch.device("cpu")), runtime)
        terms = step.loss(shard(drawn_global_batch(settings), rank))
        terms["loss"].backward()
        torch.save({"loss": float(terms["loss"]), "grads": {n: p.grad for n, p in model.named_parameters()}},
                   f"{out}/rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_give_the_one_process_loss_and_gradients(tmp_path):
    settings = eq_settings()
    mp.spawn(worker, args=(free_port(), settings, str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    loss, grads = reference(settings)
    # each process reports the global contrastive loss plus its half's Eq loss
    assert sum(r["loss"] for r in ranks) / WORLD == pytest.approx(loss, rel=1e-5)
    assert grads.keys() == ranks[0]["grads"].keys()
    for name, expected in grads.items():
        for r in ranks:
            torch.testing.assert_close(r["grads"][name], expected, rtol=1e-4, atol=1e-6, msg=name)


def test_one_process_is_left_as_it_is():
    model = torch.nn.Linear(2, 2)
    z = torch.ones(3, 2)
    assert distributed.world_size() == 1
    assert distributed.gather(z) is z and distributed.wrap(model, torch.device("cpu")) is model


# ------------------------------------------- the training loop on two processes
EPOCHS = 12


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    """An Eq member trained start to end by two gloo processes (the local
    executor's one process per GPU), with a snapshot every 4 epochs."""
    folder = tmp_path_factory.mktemp("two")
    settings, prepared = prepared_eq_member(folder, EPOCHS, 64)
    reference = folder / "reference"
    done = subprocess.run(two_process_command(settings, prepared, reference), env=tool_env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return settings, prepared, reference


def two_process_command(settings, prepared, run: Path) -> list[str]:
    return [*pretrain_command(settings, prepared, run), "--gpus-per-node", "2", "--keep-every", "4"]


def epochs_logged(run: Path) -> int:
    path = run / "epochs.csv"
    return len(path.read_text().splitlines()) - 1 if path.exists() else 0


def test_rank_zero_alone_writes_and_snapshots_follow_keep_every(two_process_run):
    settings, _, reference = two_process_run
    names = sorted(p.relative_to(reference).as_posix() for p in reference.rglob("*"))
    assert names == [".lock", "epochs.csv", "model.pt", "run.json", "snapshots", "snapshots/epoch0004.pt",
                     "snapshots/epoch0008.pt", "state.pt"]
    state = checkpoint.load(reference / STATE_FILE, expected_hash=settings_hash(settings))
    assert state["world"] == 2 and len(state["view_rng"]) == 2
    assert not torch.equal(state["view_rng"][0], state["view_rng"][1])  # each process draws its own views
    assert json.loads((reference / "run.json").read_text())["processes"] == 2
    snapshot = checkpoint.load(reference / "snapshots" / "epoch0008.pt", expected_hash=settings_hash(settings))
    final = checkpoint.load(reference / "model.pt")
    assert snapshot["epochs"] == 8 and final["epochs"] == EPOCHS
    assert not torch.equal(snapshot["backbone"]["stem.0.weight"], final["backbone"]["stem.0.weight"])


def test_a_signal_stops_both_processes_at_one_step_and_the_rerun_is_bit_identical(two_process_run, tmp_path):
    """SIGUSR2 to the launching process reaches both ranks; they agree on the
    step, rank 0 saves the state (both view generators included), and the
    rerun ends with the uninterrupted two-process run's weights and log."""
    settings, prepared, reference = two_process_run
    run = tmp_path / "run"
    process = subprocess.Popen(two_process_command(settings, prepared, run), env=tool_env(),
                               stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while epochs_logged(run) < 3:
        assert process.poll() is None and time.time() < deadline, "training ended before it could be interrupted"
        time.sleep(0.05)
    process.send_signal(signal.SIGUSR2)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGUSR2, stderr[-3000:]
    state = checkpoint.load(run / STATE_FILE, expected_hash=None)
    assert 3 <= state["epoch"] < EPOCHS and "batch" in state and state["world"] == 2
    assert not (run / "model.pt").exists()

    resumed = subprocess.run(two_process_command(settings, prepared, run), env=tool_env(), capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed" in resumed.stderr
    final, expected = (torch.load(r / "model.pt", weights_only=True) for r in (run, reference))
    for part in ("backbone", "projector", "eq_head"):
        for name, tensor in expected[part].items():
            assert torch.equal(final[part][name], tensor), f"{part}.{name} differs after the interrupted run"
    strip = [[c for c in line.split(",")[:-1]] for line in (run / "epochs.csv").read_text().splitlines()]
    assert strip == [[c for c in line.split(",")[:-1]] for line in (reference / "epochs.csv").read_text().splitlines()]


def test_a_batch_that_does_not_split_over_the_processes_is_refused():
    with pytest.raises(UserError, match="batch size 65 does not split evenly over 2 processes"):
        global_batch(65, 1000, distributed.Process(rank=0, world=2))
    assert global_batch(64, 1000, distributed.Process(rank=1, world=2)) == (64, slice(32, 64))
    assert global_batch(64, 45, distributed.Process(rank=0, world=2)) == (44, slice(0, 22))
