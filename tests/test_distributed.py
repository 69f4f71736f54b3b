"""Issue 12 (g): two CPU processes with gloo and plain BatchNorm, each on one
half of a global batch, give the loss and the gradients of one process on the
whole batch. Plain BatchNorm normalises each half with its own statistics, so
the one-process reference runs the networks on each half too (as SyncBatchNorm
would not); everything else, the contrastive loss over the global batch above
all, is computed once on the whole batch."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.multiprocessing as mp

from conftest import SMOKE
from multisym import config as config_module
from multisym import distributed
from multisym.data import DatasetInfo
from multisym.losses import cross_view_info_nce, equivariance_loss
from multisym.members import member_table
from multisym.pretrain import ContrastiveStep, build_model, make_runtime

WORLD = 2
BATCH = 16  # global


def eq_settings() -> dict:
    return next(m for m in member_table(config_module.load(SMOKE)) if m.mode == "eq").settings


INFO = DatasetInfo(name="digits", num_classes=10, channels=1, image_size=8, mean=(0.5,), std=(0.25,))


def global_batch(settings: dict) -> dict[str, torch.Tensor]:
    images = torch.rand(BATCH, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    return ContrastiveStep(settings, build_model(settings, INFO), make_runtime(torch.device("cpu"), "fp32", INFO)) \
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
    runtime = make_runtime(torch.device("cpu"), "fp32", INFO)
    batch = global_batch(settings)
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
        runtime = make_runtime(torch.device("cpu"), "fp32", INFO)
        step = ContrastiveStep(settings, distributed.wrap(model, torch.device("cpu")), runtime)
        terms = step.loss(shard(global_batch(settings), rank))
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
