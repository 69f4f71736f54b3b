"""Train one member: SimCLR (base), Eq, Inv (docs/method.md#members) or supervised from scratch.

Reads top to bottom: settings -> data -> model -> optimizer and schedule ->
resume -> loop -> export. A checkpoint is written atomically after every epoch
(model, optimizer, step, scaler and RNG states, the per-epoch history) to
``<run_dir>/state.pt``; a restarted run resumes from it when its settings hash
matches, and loads it strictly. All randomness after the model's
initialisation (data order, views, group draws) comes from one explicit
generator whose state is checkpointed, so on the CPU a resumed run ends with
exactly the weights of an uninterrupted one.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multisym.train import checkpoint
from multisym.data import splits
from multisym.train import distributed
from multisym.train import graphs
from multisym.train import optim
from multisym import provenance
from multisym.data import streaming
from multisym.train.losses import cross_view_info_nce, equivariance_loss
from multisym.errors import UserError
from multisym.members import settings_hash
from multisym.train.models import ContrastiveModel, SupervisedModel, build_backbone, equivariance_head
from multisym.runtime import Runtime, make_runtime, select_device, set_threads
from multisym.symmetries import get_group
from multisym.train.stopping import InterruptedRun, StopSignal
from multisym.data.views import ViewSpec, make_view_batch, make_views

STATE_FILE = "state.pt"
SNAPSHOTS = "snapshots"
# Several processes agree on a stop signal every this many steps (and at the
# end of each epoch): a collective per step would make the host wait for the GPU.
STOP_CHECK_EVERY = 8


# --------------------------------------------------------------------- views
def contrastive_view_specs(views: dict) -> tuple[ViewSpec, ViewSpec]:
    """Views 1 and 2 of T_base (docs/method.md#views): they differ only in blur and solarization."""
    brightness, contrast, saturation, hue = views["jitter"]
    common = dict(
        size=views["size"], crop_scale=tuple(views["crop_scale"]), flip_p=views["flip_p"],
        jitter_p=views["jitter_p"], brightness=brightness, contrast=contrast,
        saturation=saturation, hue=hue, grayscale_p=views["grayscale_p"],
        blur_sigma=tuple(views["blur_sigma"]),
    )
    return tuple(
        ViewSpec(**common, blur_p=views["blur_p"][i], solarize_p=views["solarize_p"][i]) for i in (0, 1)
    )


def small_crop_spec(views: dict, small: dict) -> ViewSpec:
    """The Eq member's extra small crop (docs/method.md#small-crop)."""
    first, _ = contrastive_view_specs(views)
    return ViewSpec(**{
        **first.__dict__, "size": small["size"], "crop_scale": tuple(small["crop_scale"]),
        "blur_p": small["blur_p"], "solarize_p": small["solarize_p"],
    })


def supervised_view_spec(size: int, supervised: dict) -> ViewSpec:
    """Standard supervised augmentation: RandomResizedCrop + horizontal flip."""
    return ViewSpec(size=size, crop_scale=tuple(supervised["crop_scale"]), flip_p=supervised["flip_p"],
                    jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, solarize_p=0.0)


# -------------------------------------------------------------------- steps
class ContrastiveStep:
    """Loss of one batch for base / eq / inv members:
    L = L_CL(z1, z2) + λ · L_eq (eq only); docs/method.md#contrastive-loss, #eq-members, #inv-members.

    ``draw`` makes the batch's views from the CPU generator; ``loss`` runs the
    networks on them (``graphs.GradientStep`` adds the backward pass, the
    benchmark times it on fixed views)."""

    def __init__(self, settings: dict, model: ContrastiveModel, runtime: Runtime):
        self.mode = settings["mode"]
        self.model, self.runtime = model, runtime
        self.temperature = settings["pretrain"]["temperature"]
        self.specs = contrastive_view_specs(settings["views"])
        self.group = get_group(settings["axis"]) if self.mode in ("eq", "inv") else None
        if self.mode == "eq":
            self.small_spec = small_crop_spec(settings["views"], settings["small_crop"])
            self.weight = settings["lambda"]
        if self.mode == "inv":
            self.p = settings["p"]

    def draw(self, images: Tensor, labels: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        specs = [*self.specs, self.small_spec] if self.mode == "eq" else self.specs
        views = make_view_batch(images, specs, generator, self.runtime.view_dtype)
        if self.mode == "inv":
            views = [self.group.act(v, self.group.sample_non_identity(len(v), self.p, generator)) for v in views]
        batch = {"view1": views[0], "view2": views[1]}
        if self.mode == "eq":
            batch["orbit"], batch["elements"] = self.group.orbit(views[2])
        return batch

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        prepare = self.runtime.prepare
        with self.runtime.amp():
            z1, z2, logits = self.model(prepare(batch["view1"]), prepare(batch["view2"]),
                                        prepare(batch["orbit"]) if self.mode == "eq" else None)
        # on several processes the negatives are the whole global batch (distributed.gather)
        terms = {"loss_cl": cross_view_info_nce(z1, z2, self.temperature, gather=distributed.gather)}
        loss = terms["loss_cl"]
        if self.mode == "eq":
            terms["loss_eq"] = equivariance_loss(logits, batch["elements"])
            terms["eq_acc"] = (logits.argmax(1) == batch["elements"]).float().mean()
            loss = loss + self.weight * terms["loss_eq"]
        terms["loss"] = loss
        return terms


class SupervisedStep:
    """Cross-entropy of a backbone + linear classifier on augmented images."""

    def __init__(self, settings: dict, model: SupervisedModel, runtime: Runtime, size: int):
        self.model, self.runtime = model, runtime
        self.spec = supervised_view_spec(size, settings["supervised"])

    def draw(self, images: Tensor, labels: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        return {"view": make_views(images, self.spec, generator, self.runtime.view_dtype), "labels": labels}

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        with self.runtime.amp():
            logits = self.model(self.runtime.prepare(batch["view"]))
        loss = F.cross_entropy(logits.float(), batch["labels"])
        return {"loss": loss, "train_acc": (logits.argmax(1) == batch["labels"]).float().mean()}


class LossMonitor:
    """Running sums of an epoch's loss terms, kept on the device, and the
    non-finite-loss check.

    On the CPU a step's loss is checked before its backward pass. On CUDA the
    check reads a flag copied to pinned memory behind the loss and is made when
    the next step is recorded (or the sums are read), so the host never waits
    for the step in flight; a NaN step's update is then never saved, because
    every checkpoint reads the sums first.
    """

    def __init__(self, member: str, device: torch.device, sums: dict[str, float] | None = None):
        self.member, self.device = member, device
        self.sums = {k: torch.tensor(v, dtype=torch.float64, device=device) for k, v in (sums or {}).items()}
        self._pending: tuple | None = None
        if device.type == "cuda":
            self._flag = torch.empty((), dtype=torch.bool, pin_memory=True)
            self._event = torch.cuda.Event()

    def record(self, terms: dict[str, Tensor], epoch: int, index: int) -> None:
        self.check()
        # float64 copies: a step replayed from a CUDA graph overwrites the terms it returned
        values = {key: value.detach().to(torch.float64) for key, value in terms.items()}
        loss = values["loss"]
        for key, value in values.items():
            self.sums[key] = self.sums[key] + value if key in self.sums else value
        if self.device.type == "cuda":
            self._flag.copy_(torch.isfinite(loss), non_blocking=True)
            self._event.record()
            self._pending = (self._flag, loss, epoch, index)
        else:
            self._pending = (torch.isfinite(loss), loss, epoch, index)
            self.check()

    def check(self) -> None:
        if self._pending is None:
            return
        flag, loss, epoch, index = self._pending
        self._pending = None
        if self.device.type == "cuda":
            self._event.synchronize()
        if not bool(flag):
            raise FloatingPointError(
                f"member {self.member}: loss is {loss.item()} at epoch {epoch + 1}, step {index}; stopping"
            )

    def totals(self) -> dict[str, float]:
        """The sums as floats, averaged over the processes (one host read per epoch).
        A resumed epoch starts every process from the same saved averages,
        so averaging again keeps them."""
        self.check()
        return {key: float(value) for key, value in distributed.average(self.sums).items()}


# ------------------------------------------------------------------ helpers
def build_model(settings: dict, info: splits.DatasetInfo) -> nn.Module:
    backbone = build_backbone(settings["backbone"], info.channels)
    if settings["mode"] == "sup":
        return SupervisedModel(backbone, info.num_classes)
    head = None
    if settings["mode"] == "eq":
        order = get_group(settings["axis"]).order
        head = equivariance_head(backbone.out_dim, settings["pretrain"]["eq_head"], order)
    return ContrastiveModel(backbone, settings["pretrain"]["projector"], head)


def rng_state(generator: torch.Generator) -> dict[str, Tensor | list]:
    state = {"generator": generator.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict, generator: torch.Generator) -> None:
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def training_state(model: nn.Module, optimizer, scaler, generator: torch.Generator) -> dict:
    """What a checkpoint holds to resume training exactly: weights, optimizer
    and loss-scaler states, the generators."""
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
            "rng": rng_state(generator)}


def restore_training(state: dict, model: nn.Module, optimizer, scaler, generator: torch.Generator) -> None:
    """Load ``training_state``'s parts back (the weights strictly)."""
    model.load_state_dict(state["model"], strict=True)
    optimizer.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    restore_rng(state["rng"], generator)


def epoch_start(resume: dict | None, count: int, generator: torch.Generator,
                device: torch.device) -> tuple[Tensor, int, dict]:
    """An epoch's data order, its first batch and what was saved with them: the
    epoch a signal interrupted (``resume``), else a new permutation."""
    if resume is not None:
        return resume["order"].to(device), resume["batch"], resume
    return torch.randperm(count, generator=generator).to(device), 0, {}


def resume_position(finished: int, resume: dict | None, epochs: int) -> str:
    """Where a resumed run goes on, numbered as every message numbers epochs
    (from 1, as in "epoch 3/10" and "stopped ... in epoch 3 after batch 5")."""
    if finished >= epochs:
        return f"after its last epoch ({epochs}/{epochs})"
    if resume:
        return f"in epoch {finished + 1}/{epochs} after batch {resume['batch']}"
    return f"at the start of epoch {finished + 1}/{epochs}"


def history_csv(history: list[dict]) -> str:
    if not history:
        return ""
    columns = list(history[0])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    return buffer.getvalue()


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def global_batch(configured: int, samples: int, process: distributed.Process) -> tuple[int, slice]:
    """The global batch (at most the split; a multiple of the process count)
    and this process's contiguous shard of it."""
    if configured % process.world:
        raise UserError(
            f"the batch size {configured} does not split evenly over {process.world} processes "
            "(gpu_jobs.pretrain: nodes x gpus_per_node); choose a batch size that is a multiple of it"
        )
    size = min(configured, samples)
    size -= size % process.world
    if size == 0:
        raise UserError(f"{samples} training images cannot feed {process.world} processes")
    local = size // process.world
    return size, slice(process.rank * local, (process.rank + 1) * local)


def view_generator(seed: int, rank: int) -> torch.Generator:
    """The generator of one process's view draws: a stream of its own per rank."""
    import numpy as np

    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, rank]).generate_state(1)[0]))


def restore_view_rng(state: dict, views: torch.Generator, process: distributed.Process) -> str:
    """Put this process's view generator back as the checkpoint left it. A run
    resumed on another process count keeps its data order, and its views
    continue from fresh per-process streams (the returned notice says so)."""
    saved = state.get("world", 1)
    if saved == process.world:
        if process.world > 1:
            views.set_state(state["view_rng"][process.rank])
        return ""
    if process.world > 1:
        views.manual_seed(views.initial_seed() + state["step"])
    return f" (saved by {saved} process(es), resumed on {process.world}: view draws continue from new streams)"


def stop_requested(stop: StopSignal, index: int, steps: int, device: torch.device) -> int | None:
    """The stop signal every process acts on after step ``index`` (None: go on)."""
    if distributed.world_size() > 1 and (index + 1) % STOP_CHECK_EVERY and index + 1 < steps:
        return None
    return distributed.agreed_signal(stop.received, device)


# --------------------------------------------------------------------- main
def train_member(
    settings: dict,
    data_path: str | Path,
    manifest_path: str | Path,
    run_dir: str | Path,
    out_model: str | Path,
    out_log: str | Path,
    device: str = "auto",
    precision: str = "auto",
    threads: int | None = None,
    stop_after_epochs: int | None = None,
    keep_every: int = 0,
    decode: str = "cpu",
    cuda_graphs: bool = True,
) -> bool:
    """Train (or resume) one member. Returns True when it finished all epochs
    and wrote ``out_model``; False when it stopped early after
    ``stop_after_epochs`` epochs of this invocation (state saved).

    Checkpoints: ``state.pt`` (the last epoch, rolling), ``out_model`` (the
    final export) and, with ``keep_every`` k > 0, the export of every k-th
    epoch in ``<run_dir>/snapshots/``. ``decode`` (``gpu_jobs.decode``) says
    where a dataset's JPEG files are decoded: ``cpu`` or ``device``
    (``streaming``). A run on one GPU, unless nvjpeg decodes its split or
    ``cuda_graphs`` (``gpu_jobs.cuda_graphs``) is false, replays its forward
    and backward pass from a CUDA graph (``graphs``); on CUDA cuDNN
    picks its fastest kernels for the run's fixed shapes.

    In a process group (``distributed.joined``) each process trains on its
    contiguous shard of every global batch, draws its views from its own
    generator, and rank 0 alone writes; the data order comes from a generator
    every process holds in the same state."""
    run_dir = Path(run_dir)
    digest = settings_hash(settings)
    recipe = settings["supervised"] if settings["mode"] == "sup" else settings["pretrain"]
    with distributed.joined(select_device(device)) as (process, target), \
            distributed.on_main(checkpoint.RunLock(run_dir), process), ExitStack() as resources:
        threads = set_threads(threads)
        # ------------------------------------------------------------ data
        images, labels, info = splits.load_split(data_path, manifest_path, "train", decode, target)
        images, labels = images.to(target), labels.to(target)
        resources.callback(streaming.close, images)  # a streamed split's decoding processes
        batch_size, shard = global_batch(recipe["batch_size"], len(images), process)
        steps_per_epoch = len(images) // batch_size
        total_steps = steps_per_epoch * recipe["epochs"]
        # ----------------------------------------------------------- model
        torch.manual_seed(settings["seed"])
        generator = torch.Generator().manual_seed(settings["seed"])  # data order: the same in every process
        views = generator if process.world == 1 else view_generator(settings["seed"], process.rank)
        model = build_model(settings, info)
        runtime = make_runtime(target, precision, info, model)
        model = runtime.place(model)
        trained = distributed.wrap(model, target)
        if settings["mode"] == "sup":
            step_fn = SupervisedStep(settings, trained, runtime, info.image_size)
        else:
            step_fn = ContrastiveStep(settings, trained, runtime)
        # ------------------------------------------- optimizer and schedule
        optimizer = optim.build_optimizer(model, recipe["optimizer"], target)
        scaler = torch.amp.GradScaler(target.type, enabled=runtime.precision == "fp16")
        if target.type == "cuda":
            torch.backends.cudnn.benchmark = True  # every step has the same shapes
        gradients = graphs.GradientStep(step_fn.loss, optimizer, scaler,
                                        graphs.wanted(target, process.world, streaming.decodes_on_device(images),
                                                      cuda_graphs))
        # ---------------------------------------------------------- resume
        state_path = run_dir / STATE_FILE
        epoch, step, history, resume = 0, 0, [], None
        if state_path.exists():
            state = checkpoint.load(state_path, expected_hash=digest)
            restore_training(state, model, optimizer, scaler, generator)
            notice = restore_view_rng(state, views, process)
            epoch, step, history = state["epoch"], state["step"], list(state["history"])
            if "batch" in state:
                resume = {key: state[key] for key in ("batch", "order", "sums")}
            if process.main:
                print(f"resumed {run_dir.name} {resume_position(epoch, resume, recipe['epochs'])}{notice}",
                      file=sys.stderr)
        elif process.main:
            checkpoint.atomic_write_text(
                json.dumps(provenance.record(settings=settings, settings_hash=digest, threads=threads,
                                             device=str(target), processes=process.world, decode=decode,
                                             decoder=streaming.decoder_name(images),
                                             in_memory_gib=streaming.in_memory_gib,
                                             cuda_graphs=gradients.capture), indent=2) + "\n",
                run_dir / "run.json",
            )
        # ------------------------------------------------------------ loop
        def save_state(**partial) -> None:
            """Every process takes part (the view generators are gathered); rank 0 writes."""
            view_states = distributed.gathered(views.get_state()) if process.world > 1 else None
            if not process.main:
                return
            extra = {"world": process.world, "view_rng": view_states} if view_states else {}
            checkpoint.save(
                {
                    "settings_hash": digest,
                    "epoch": epoch,
                    "step": step,
                    **training_state(model, optimizer, scaler, generator),
                    "history": history,
                    **extra,
                    **partial,
                },
                state_path,
            )

        epochs_this_run = 0
        started = time.perf_counter()
        with StopSignal() as stop:
            while epoch < recipe["epochs"]:
                if stop_after_epochs is not None and epochs_this_run >= stop_after_epochs:
                    return False
                tick = time.perf_counter()
                trained.train()
                order, first, saved = epoch_start(resume, len(images), generator, target)
                resume = None
                monitor = LossMonitor(run_dir.name, target, dict(saved.get("sums", {})))
                # the rate of the epoch's last step, also when a resumed epoch has no step left
                lr = optim.learning_rate(max(step - 1, 0), total_steps, steps_per_epoch, recipe["optimizer"])
                rows = streaming.on_host(images, order)
                for index in range(first, steps_per_epoch):
                    batch = order[index * batch_size:(index + 1) * batch_size][shard]
                    inputs = images[rows[index * batch_size:(index + 1) * batch_size][shard]]
                    if index + 1 < steps_per_epoch:  # a streamed split decodes the next batch while this one trains
                        streaming.prefetch(images, rows[(index + 1) * batch_size:(index + 2) * batch_size][shard])
                    lr = optim.learning_rate(step, total_steps, steps_per_epoch, recipe["optimizer"])
                    optim.set_learning_rate(optimizer, lr)
                    terms = gradients(step_fn.draw(inputs, labels[batch], views))
                    monitor.record(terms, epoch, index)
                    scaler.step(optimizer)
                    scaler.update()
                    step += 1
                    received = stop_requested(stop, index, steps_per_epoch, target)
                    if received is not None:
                        save_state(batch=index + 1, order=order.cpu(), sums=monitor.totals())
                        raise InterruptedRun(received, run_dir.name, epoch, index + 1)
                sums = monitor.totals()
                epoch += 1
                epochs_this_run += 1
                seconds = time.perf_counter() - tick
                row = {"epoch": epoch, **{k: v / steps_per_epoch for k, v in sums.items()},
                       "lr": lr, "seconds": seconds}
                history.append(row)
                save_state()
                if not process.main:
                    continue
                checkpoint.atomic_write_text(history_csv(history), out_log)
                if keep_every and epoch % keep_every == 0 and epoch < recipe["epochs"]:
                    export(model, settings, digest, history, run_dir / SNAPSHOTS / f"epoch{epoch:04d}.pt")
                elapsed = time.perf_counter() - started
                eta = elapsed / epochs_this_run * (recipe["epochs"] - epoch)
                terms_text = " ".join(f"{k} {v:.4f}" for k, v in row.items() if k not in ("epoch", "seconds"))
                print(f"{run_dir.name} epoch {epoch}/{recipe['epochs']} {terms_text} {seconds:.2f}s "
                      f"eta {format_seconds(eta)}", file=sys.stderr, flush=True)
            # ------------------------------------------------------ export
            stop.finish()  # the final state is saved: a late signal has nothing left to save
            if process.main:
                checkpoint.atomic_write_text(history_csv(history), out_log)
                export(model, settings, digest, history, out_model)
        return True


def export(model: nn.Module, settings: dict, digest: str, history: list[dict], path: str | Path) -> None:
    """The member's final weights: every sub-network's state dict (the Eq head
    is kept, unlike the official export: docs/method.md#where-the-official-code-differs,
    item 7) plus its settings."""
    parts = {name: module.state_dict() for name, module in model.named_children() if module is not None}
    checkpoint.save(
        {"settings_hash": digest, "settings": json.dumps(settings, sort_keys=True),
         "epochs": len(history), **parts},
        path,
    )
