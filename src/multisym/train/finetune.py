"""Fine-tuning a pretrained member (docs/method.md#fine-tuning): the whole
network with a new linear head, SGD with a cosine schedule, RRC + flip
training augmentation (or the evaluation view, ``train_augment`` false) and
the evaluation transform for val and test; the epoch kept is the best on the
selection split. Used for the SSL-FT pool (one Base backbone fine-tuned with
several seeds: head init, data order, augmentation) and for the adaptation
candidates of ``adapt.mode: finetune``.

The loop is ``trainer``'s: a run resumes from its ``state.pt`` (which also
holds the best epoch's weights, ``best``, and, mid-epoch, the epoch's losses
so far, ``losses``), stops cleanly on SIGUSR2 or SIGTERM, and logs every
epoch to ``epochs.csv``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from multisym.data import splits, streaming
from multisym.data.cuts import cut_seeds
from multisym.data.views import ViewSpec, views_of
from multisym.files import sha256_file
from multisym.logits import write_logits
from multisym.members import settings_hash
from multisym.runtime import Runtime, make_runtime, select_device, set_threads
from multisym.train import checkpoint, graphs, optim
from multisym.train.adapt import forward_in_batches, load_member
from multisym.train.models import SupervisedModel, build_backbone
from multisym.train.pretrain import supervised_view_spec
from multisym.train.trainer import Task, Trainer


@dataclass
class FineTuning(Task):
    """Fine-tuning's part of the loop: batches of the training split in a
    random order (``generator``, which also draws the views of ``spec``;
    None trains on the images as they are), each epoch scored on the
    selection split; at the end, the best epoch's val and test logits and
    model. ``data``: every split's images and labels; ``summary`` holds the
    run's summary once it is written."""

    settings: dict
    model: SupervisedModel
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    runtime: Runtime
    spec: ViewSpec | None
    generator: torch.Generator
    data: dict[str, tuple]
    size: int
    outputs: dict[str, Path | None]
    best: dict = field(default_factory=lambda: {"score": -1.0, "epoch": 0, "model": None})

    def __post_init__(self):
        self.images, self.labels = self.data["train"]
        self.cuts, self.epoch = streaming.cuts_views(self.images), -1  # the epoch begun last
        self.batch = min(self.settings["batch_size"], len(self.images))
        self.steps = len(self.images) // self.batch
        self.select = self.settings.get("selection_split", "val")
        if self.select not in ("val", "test"):
            raise ValueError(f"selection_split must be val or test, got {self.select!r}")
        self.gradients = graphs.GradientStep(self.loss, self.optimizer, self.scaler, capture=False)
        self.summary: dict = {}

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        with self.runtime.amp():
            views = (batch["images"] if self.spec is None
                     else views_of(batch["images"], [self.spec], self.generator)[0])
            logits = self.model(self.runtime.prepare(views))
        return {"loss": F.cross_entropy(logits.float(), batch["labels"])}

    def order(self) -> Tensor:
        return torch.randperm(len(self.images), generator=self.generator).to(self.labels.device)

    def seeds(self, index: int):
        """Per-sample seeds of batch ``index``'s cuts (``cuts.cut_seeds``; as pretraining's)."""
        return cut_seeds(self.generator.initial_seed(), self.epoch, index, self.batch)

    def begin(self, order: Tensor, saved: dict) -> None:
        self.epoch += 1
        # the epoch's losses, on the device until the epoch's end (a resumed epoch: the earlier ones saved)
        self.first, self.earlier = saved.get("batch", 0), list(saved.get("losses", []))
        self.losses = torch.zeros(self.steps, device=self.labels.device)

    def step(self, order: Tensor, index: int) -> dict[str, Tensor]:
        rows = order[index * self.batch:(index + 1) * self.batch]
        inputs = self.images.cut(rows, self.seeds(index)) if self.cuts else self.images[rows]
        if index + 1 < self.steps:
            streaming.prefetch(self.images, order[(index + 1) * self.batch:(index + 2) * self.batch],
                               self.seeds(index + 1) if self.cuts else None)
        terms = self.gradients({"images": inputs, "labels": self.labels[rows]})
        self.losses[index] = terms["loss"]
        return terms

    def epoch_losses(self, batch: int) -> list[float]:
        return self.earlier + self.losses[self.first:batch].tolist()

    def columns(self, epoch: int, means: dict[str, float], lr: float | None) -> dict:
        # the mean of the steps' losses as numpy takes it, as the log always did
        loss = float(np.mean(self.epoch_losses(self.steps)))
        images, labels = self.data[self.select]
        score = float((forward_in_batches(self.model, images, self.runtime, self.size).argmax(1) == labels)
                      .float().mean())
        if score > self.best["score"]:
            self.best = {"score": score, "epoch": epoch,
                         "model": {k: v.detach().clone() for k, v in self.model.state_dict().items()}}
        return {"loss": loss, f"{self.select}_accuracy": score}

    def state(self) -> dict:
        return {"best": self.best}

    def partial(self, batch: int) -> dict:
        return {"losses": self.epoch_losses(batch)}

    def restore(self, state: dict) -> str:
        self.best = dict(state["best"])
        self.epoch = state["epoch"] - 1  # the next ``begin`` is epoch state["epoch"]
        return ""

    def finish(self) -> None:
        """The best epoch's val and test logits, its model and the summary."""
        self.model.load_state_dict(self.best["model"], strict=True)
        logits = {split: forward_in_batches(self.model, self.data[split][0], self.runtime, self.size)
                  for split in splits.EVAL_SPLITS}
        write_logits(self.outputs["logits"], **{f"{s}_logits": logits[s].numpy() for s in splits.EVAL_SPLITS},
                     **{f"{s}_labels": self.data[s][1].numpy() for s in splits.EVAL_SPLITS})
        checkpoint.save({"settings": json.dumps(self.settings, sort_keys=True), "epoch": self.best["epoch"],
                         "settings_hash": settings_hash(self.settings), "backbone": self.model.backbone.state_dict(),
                         "classifier": self.model.classifier.state_dict()}, self.outputs["model"])
        val_accuracy = float((logits["val"].argmax(1) == self.data["val"][1]).float().mean())
        self.summary = {"best_epoch": self.best["epoch"], "selection_split": self.select,
                        "selection_accuracy": self.best["score"], "val_accuracy": val_accuracy,
                        "lr": self.settings["optimizer"]["lr"]}
        if self.outputs["summary"] is not None:
            checkpoint.atomic_write_text(json.dumps(self.summary, indent=2) + "\n", self.outputs["summary"])


def finetune(
    base_model_path, settings: dict, data_path, manifest_path, out_model, out_logits, out_log,
    device="auto", threads=None, out_summary=None,
) -> dict:
    """Fine-tune a pretrained backbone with a new linear head; keep the epoch
    best on the selection split (``selection_split``, val unless the paper's
    protocol asks for test; ties: the earlier epoch) and write its val/test
    logits. ``train_augment`` false trains on the evaluation view (the paper's
    CIFAR-100 protocol).

    Like pretraining, a run resumes: its folder (``out_model``'s) holds
    ``state.pt`` after every epoch and, on SIGUSR2 or SIGTERM, mid-epoch
    (``trainer``). The state is keyed by the settings and the base model
    file's sha256, and removed once the outputs are written."""
    run_dir = Path(out_model).parent
    with checkpoint.RunLock(run_dir):
        set_threads(threads)
        target = select_device(device)
        manifest = splits.read_manifest(manifest_path)
        # the training crop's side (finetune_protocol.crop_size; default the evaluation images')
        size = settings.get("crop_size") or manifest["image_size"]
        spec = supervised_view_spec(size, settings) if settings.get("train_augment", True) else None
        loaded, info = splits.load_splits(data_path, manifest_path, cuts=() if spec is None else (spec.cut,))
        exported, base_settings = load_member(base_model_path)
        digest = settings_hash({"finetune": settings, "base_sha256": sha256_file(Path(base_model_path))})
        torch.manual_seed(settings["seed"])
        generator = torch.Generator().manual_seed(settings["seed"])
        model = SupervisedModel(build_backbone(base_settings["backbone"], info.channels), info.num_classes)
        model.backbone.load_state_dict(exported["backbone"], strict=True)
        runtime = make_runtime(target, "auto", info, model)
        model = runtime.place(model)
        optimizer = optim.build_optimizer(model, settings["optimizer"], target)
        scaler = torch.amp.GradScaler(target.type, enabled=runtime.precision == "fp16")
        images, labels = loaded["train"]
        loaded["train"] = images.to(target), labels.to(target)
        task = FineTuning(settings, model, optimizer, scaler, runtime, spec, generator, loaded, info.image_size,
                          {"model": Path(out_model), "logits": Path(out_logits), "summary": out_summary})
        trainer = Trainer(f"fine-tune {run_dir.name}", model, optimizer, scaler, settings["epochs"], task.steps,
                          target, generator=generator, schedule=settings["optimizer"], run_dir=run_dir,
                          digest=digest, out_log=Path(out_log), history_key="rows")
        trainer.run(task)
        trainer.state_path.unlink(missing_ok=True)  # every output is written; the state held the best weights twice
        return task.summary
