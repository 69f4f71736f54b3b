"""Train one member: SimCLR (base), Eq, Inv (docs/method.md#members) or supervised from scratch.

Reads top to bottom: settings -> data -> model -> optimizer and schedule ->
the loop (``trainer``: resume, checkpoints, stop signals, the log) -> export.
All randomness after the model's initialisation (data order, views, group
draws) comes from one explicit generator whose state is checkpointed, so on
the CPU a resumed run ends with exactly the weights of an uninterrupted one.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multisym import protocol, provenance
from multisym.data import splits, streaming
from multisym.data.cuts import cut_seeds
from multisym.data.views import ViewSpec, views_of
from multisym.errors import UserError
from multisym.members import settings_hash
from multisym.runtime import Runtime, make_runtime, select_device, set_threads
from multisym.symmetries import get_group
from multisym.train import checkpoint, distributed, graphs, optim
from multisym.train.losses import cross_view_info_nce, equivariance_loss
from multisym.train.models import ContrastiveModel, SupervisedModel, build_backbone, equivariance_head
from multisym.train.trainer import STATE_FILE, LossMonitor, Task, Trainer  # noqa: F401  (the first two: re-exported)

SNAPSHOTS = "snapshots"


# --------------------------------------------------------------------- views
def contrastive_view_specs(views: dict) -> tuple[ViewSpec, ViewSpec]:
    """Views 1 and 2 of T_base (docs/method.md#views): they differ only in blur and solarization."""
    brightness, contrast, saturation, hue = views["jitter"]
    common = dict(
        size=views["size"], crop_scale=tuple(views["crop_scale"]), flip_p=views["flip_p"],
        jitter_p=views["jitter_p"], brightness=brightness, contrast=contrast,
        saturation=saturation, hue=hue, grayscale_p=views["grayscale_p"],
        blur_sigma=tuple(views["blur_sigma"]),
        # left out of the settings where views are cut from a square (bilinear roi_align)
        **({"interpolation": views["interpolation"]} if "interpolation" in views else {}),
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
        "interpolation": small.get("interpolation", ViewSpec.interpolation),
    })


def supervised_view_spec(size: int, supervised: dict) -> ViewSpec:
    """Standard supervised augmentation: RandomResizedCrop + horizontal flip
    (bilinear, torchvision's default, where it is cut from the original image)."""
    return ViewSpec(size=size, crop_scale=tuple(supervised["crop_scale"]), flip_p=supervised["flip_p"],
                    jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, solarize_p=0.0)


def member_view_specs(settings: dict, image_size: int) -> list[ViewSpec]:
    """The views a member's step draws, in order: views 1 and 2 (and the Eq
    small crop), or the supervised view at the dataset's ``image_size``."""
    if settings["mode"] == "sup":
        return [supervised_view_spec(image_size, settings["supervised"])]
    specs = list(contrastive_view_specs(settings["views"]))
    if settings["mode"] == "eq":
        specs.append(small_crop_spec(settings["views"], settings["small_crop"]))
    return specs


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

    def draw(self, images: Tensor | list[Tensor], labels: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        """``images``: a batch (views cut on the device) or its views cut
        already, one uint8 batch per spec (``views.views_of``)."""
        specs = [*self.specs, self.small_spec] if self.mode == "eq" else self.specs
        views = views_of(images, specs, generator, self.runtime.view_dtype)
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

    def draw(self, images: Tensor | list[Tensor], labels: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        return {"view": views_of(images, [self.spec], generator, self.runtime.view_dtype)[0], "labels": labels}

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        with self.runtime.amp():
            logits = self.model(self.runtime.prepare(batch["view"]))
        loss = F.cross_entropy(logits.float(), batch["labels"])
        return {"loss": loss, "train_acc": (logits.argmax(1) == batch["labels"]).float().mean()}


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


@dataclass
class MemberTask(Task):
    """Pretraining's part of the loop: global batches of the training split in
    a random order (``generator``), each process's ``shard`` of them, the
    step's views drawn from ``views``; the snapshots and the final export."""

    settings: dict
    images: Tensor
    labels: Tensor
    batch_size: int
    shard: slice
    step_fn: ContrastiveStep | SupervisedStep
    gradients: graphs.GradientStep
    generator: torch.Generator
    views: torch.Generator
    model: nn.Module
    process: distributed.Process
    snapshots: Path
    out_model: Path
    keep_every: int = 0

    def __post_init__(self):
        self.digest, self.steps = settings_hash(self.settings), len(self.images) // self.batch_size
        self.epochs = (self.settings["supervised"] if self.settings["mode"] == "sup"
                       else self.settings["pretrain"])["epochs"]
        self.cuts, self.epoch = streaming.cuts_views(self.images), -1  # the epoch begun last

    def seeds(self, index: int):
        """The per-sample seeds of this process's share of batch ``index``'s
        cuts: a function of the view generator's seed, the epoch and the
        batch, so that the next batch is cut while this one trains and a
        resumed run cuts the same boxes (``cuts.cut_seeds``)."""
        count = len(range(self.batch_size)[self.shard])
        return cut_seeds(self.views.initial_seed(), self.epoch, index, count)

    def inputs(self, index: int) -> Tensor | list[Tensor]:
        """Batch ``index``'s images (views cut already, for a split of originals)."""
        rows = self.rows[index * self.batch_size:(index + 1) * self.batch_size][self.shard]
        return self.images.cut(rows, self.seeds(index)) if self.cuts else self.images[rows]

    def order(self) -> Tensor:
        return torch.randperm(len(self.images), generator=self.generator).to(self.labels.device)

    def begin(self, order: Tensor, saved: dict) -> None:
        self.rows, self.epoch = streaming.on_host(self.images, order), self.epoch + 1

    def step(self, order: Tensor, index: int) -> dict[str, Tensor]:
        size, shard, rows = self.batch_size, self.shard, self.rows
        batch = order[index * size:(index + 1) * size][shard]
        inputs = self.inputs(index)
        if index + 1 < self.steps:  # a streamed split decodes the next batch while this one trains
            streaming.prefetch(self.images, rows[(index + 1) * size:(index + 2) * size][shard],
                               self.seeds(index + 1) if self.cuts else None)
        return self.gradients(self.step_fn.draw(inputs, self.labels[batch], self.views))

    def columns(self, epoch: int, means: dict[str, float], lr: float | None) -> dict:
        return {**means, "lr": lr}

    def state(self) -> dict:
        if self.process.world == 1:
            return {}
        return {"world": self.process.world, "view_rng": distributed.gathered(self.views.get_state())}

    def restore(self, state: dict) -> str:
        self.epoch = state["epoch"] - 1  # the next ``begin`` is epoch state["epoch"], finished or resumed
        return restore_view_rng(state, self.views, self.process)

    def after_epoch(self, epoch: int) -> None:
        if self.keep_every and epoch % self.keep_every == 0 and epoch < self.epochs:
            export(self.model, self.settings, self.digest, epoch, self.snapshots / f"epoch{epoch:04d}.pt")

    def finish(self) -> None:
        export(self.model, self.settings, self.digest, self.epochs, self.out_model)


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

    Checkpoints (``trainer``): ``state.pt`` (the last epoch, rolling),
    ``out_model`` (the final export) and, with ``keep_every`` k > 0, the
    export of every k-th epoch in ``<run_dir>/snapshots/``. ``decode``
    (``gpu_jobs.decode``) says where a dataset's JPEG files are decoded:
    ``cpu`` or ``device`` (``streaming``). A run on one GPU, unless nvjpeg
    decodes its split or ``cuda_graphs`` (``gpu_jobs.cuda_graphs``) is false,
    replays its forward and backward pass from a CUDA graph (``graphs``); on
    CUDA cuDNN picks its fastest kernels for the run's fixed shapes.

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
        cuts = tuple(spec.cut for spec in member_view_specs(settings, splits.info(splits.read_manifest(
            manifest_path)).image_size))  # used where the dataset's views are cut from the original image
        images, labels, info = splits.load_split(data_path, manifest_path, "train", decode, target, cuts)
        images, labels = images.to(target), labels.to(target)
        resources.callback(streaming.close, images)  # a streamed split's decoding processes
        batch_size, shard = global_batch(recipe["batch_size"], len(images), process)
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
        # ------------------------------------------------------------ loop
        trainer = Trainer(run_dir.name, model, optimizer, scaler, recipe["epochs"], len(images) // batch_size, target,
                          generator=generator, schedule=recipe["optimizer"], run_dir=run_dir, digest=digest,
                          out_log=Path(out_log), process=process, subject=f"member {run_dir.name}")
        if process.main and not trainer.state_path.exists():
            checkpoint.atomic_write_text(
                json.dumps(provenance.record(settings=settings, settings_hash=digest,
                                             protocol={**protocol.member_record(settings),
                                                       "precision": runtime.precision},
                                             threads=threads,
                                             device=str(target), processes=process.world, decode=decode,
                                             decoder=streaming.decoder_name(images),
                                             in_memory_gib=streaming.in_memory_gib,
                                             cuda_graphs=gradients.capture), indent=2) + "\n",
                run_dir / "run.json",
            )
        task = MemberTask(settings, images, labels, batch_size, shard, step_fn, gradients, generator, views, model,
                          process, run_dir / SNAPSHOTS, Path(out_model), keep_every)
        return trainer.run(task, stop_after_epochs)


def export(model: nn.Module, settings: dict, digest: str, epochs: int, path: str | Path) -> None:
    """The member's weights after ``epochs`` epochs: every sub-network's state
    dict (the Eq head is kept, unlike the official export:
    docs/method.md#where-the-official-code-differs, item 7) plus its settings."""
    parts = {name: module.state_dict() for name, module in model.named_children() if module is not None}
    checkpoint.save(
        {"settings_hash": digest, "settings": json.dumps(settings, sort_keys=True), "epochs": epochs, **parts},
        path,
    )
