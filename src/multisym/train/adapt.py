"""Turn members into classifiers (docs/method.md#adaptation): cached features
for the linear probe (fit in ``probe``), fine-tuning, and supervised members' logits.

Linear probe (docs/method.md#linear-probe): the backbone is frozen in eval mode;
features of every split are extracted once and cached here, so the probe
(``probe.py``) can be refit without touching the network.

Fine-tuning (docs/method.md#fine-tuning): the whole network, SGD with a cosine
schedule, RRC + flip training augmentation and the evaluation transform for val
and test; the epoch kept is the best on val, never on test. Used here for the
SSL-FT pool: one Base backbone fine-tuned with several seeds (head init, data
order, augmentation).

Logits files (``.npz``, ``multisym.logits.write_logits``): ``val_logits``, ``test_logits``
(N, C) float16 and ``val_labels``, ``test_labels``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from multisym.train import checkpoint
from multisym.data import splits
from multisym.train import optim
from multisym.data import streaming
from multisym.files import sha256_file, write_npz
from multisym.members import settings_hash
from multisym.train.models import SupervisedModel, build_backbone
from multisym.train.pretrain import (STATE_FILE, epoch_start, history_csv, restore_training, resume_position,
                                     supervised_view_spec, training_state)
from multisym.runtime import make_runtime, select_device, set_threads
from multisym.train.stopping import InterruptedRun, StopSignal
from multisym.data.views import make_views, resize_center

from multisym.logits import write_logits


def load_member(model_path: str | Path) -> tuple[dict, dict]:
    """The exported state dicts and settings of a trained member, checked
    against the settings hash stored beside them."""
    exported = checkpoint.load(model_path)
    settings = json.loads(exported["settings"])
    if exported.get("settings_hash") != settings_hash(settings):
        raise checkpoint.CheckpointError(
            f"{model_path}: its settings do not match its settings hash; the file was altered. Retrain the member"
        )
    return exported, settings


def load_network(model_path, info: splits.DatasetInfo, classifier: bool):
    """A trained member's backbone, with its classifier when ``classifier``
    (supervised and fine-tuned members), loaded strictly; plus its settings."""
    exported, settings = load_member(model_path)
    backbone = build_backbone(settings["backbone"], info.channels)
    backbone.load_state_dict(exported["backbone"], strict=True)
    if not classifier:
        return backbone, settings
    network = SupervisedModel(backbone, info.num_classes)
    network.classifier.load_state_dict(exported["classifier"], strict=True)
    return network, settings


@torch.no_grad()
def forward_in_batches(model, images: torch.Tensor, runtime, size: int, batch: int = 512) -> torch.Tensor:
    model.eval()
    outputs = []
    for start in range(0, len(images), batch):
        x = images[start:start + batch]
        streaming.prefetch(images, slice(start + batch, start + 2 * batch))
        x = resize_center(x.to(runtime.device), size)
        with runtime.amp():
            outputs.append(model(runtime.prepare(x)).float().cpu())
    return torch.cat(outputs)


class AdaptedClassifier:
    """A member as adapted to its dataset, applied to new images: a fine-tuned
    or supervised network with its own head, or a probed backbone followed by
    its fitted probe (``probe_params``; features rounded to float16, as the
    probe was fit on them). Called on images, it returns float32 logits."""

    def __init__(self, model_path, probe_params, info: splits.DatasetInfo, device: torch.device):
        from multisym.files import read_npz

        self.network, settings = load_network(model_path, info, classifier=probe_params is None)
        self.params = read_npz(probe_params) if probe_params is not None else None
        self.runtime = make_runtime(device, "auto", info, self.network)
        self.network = self.runtime.place(self.network)
        self.size = settings.get("views", {}).get("size", info.image_size)

    def __call__(self, images) -> np.ndarray:
        from multisym.evaluate.probe import probe_logits

        out = forward_in_batches(self.network, images, self.runtime, self.size).numpy()
        if self.params is None:
            return out.astype(np.float32)
        return probe_logits(self.params, out.astype(np.float16).astype(np.float32))


# --------------------------------------------------- features for the probe
def extract_features(model_path, data_path, manifest_path, out_path, device="auto", threads=None) -> None:
    """Backbone features of the train, val and test splits (eval transform)."""
    set_threads(threads)
    target = select_device(device)
    loaded, info = splits.load_splits(data_path, manifest_path)
    backbone, settings = load_network(model_path, info, classifier=False)
    runtime = make_runtime(target, "auto", info, backbone)
    backbone = runtime.place(backbone)
    size = settings["views"]["size"] if "views" in settings else info.image_size
    arrays = {}
    for split, (images, labels) in loaded.items():
        # float16 halves the cache (ImageNet's 1.28M x 2048 train features: 5 GB)
        arrays[f"{split}_features"] = forward_in_batches(backbone, images, runtime, size).numpy().astype(np.float16)
        arrays[f"{split}_labels"] = labels.numpy()
    write_npz(out_path, num_classes=np.asarray(info.num_classes), **arrays)


# --------------------------------------------------------- supervised logits
def supervised_logits(model_path, data_path, manifest_path, out_logits, device="auto", threads=None) -> None:
    """A supervised member's own head on val and test."""
    set_threads(threads)
    target = select_device(device)
    loaded, info = splits.load_splits(data_path, manifest_path, splits.EVAL_SPLITS)
    model = load_network(model_path, info, classifier=True)[0]
    runtime = make_runtime(target, "auto", info, model)
    model = runtime.place(model)
    outputs = {}
    for split, (images, labels) in loaded.items():
        outputs[f"{split}_logits"] = forward_in_batches(model, images, runtime, info.image_size).numpy()
        outputs[f"{split}_labels"] = labels.numpy()
    write_logits(out_logits, **outputs)


# ------------------------------------------------------------- fine-tuning
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
    ``state.pt`` after every epoch (model, optimizer, scaler, generators, the
    best epoch's weights, the log) and, on SIGUSR2 or SIGTERM, mid-epoch (data
    order, batch, losses so far). The state is keyed by the settings and the
    base model file's sha256, and removed once the outputs are written."""
    run_dir = Path(out_model).parent
    with checkpoint.RunLock(run_dir):
        set_threads(threads)
        target = select_device(device)
        loaded, info = splits.load_splits(data_path, manifest_path)
        (images, labels), (val_images, val_labels), (test_images, test_labels) = (loaded[s] for s in splits.SPLITS)
        exported, base_settings = load_member(base_model_path)
        digest = settings_hash({"finetune": settings, "base_sha256": sha256_file(Path(base_model_path))})
        torch.manual_seed(settings["seed"])
        generator = torch.Generator().manual_seed(settings["seed"])
        model = SupervisedModel(build_backbone(base_settings["backbone"], info.channels), info.num_classes)
        model.backbone.load_state_dict(exported["backbone"], strict=True)
        runtime = make_runtime(target, "auto", info, model)
        model = runtime.place(model)
        spec = supervised_view_spec(info.image_size, settings) if settings.get("train_augment", True) else None
        select = settings.get("selection_split", "val")
        if select not in ("val", "test"):
            raise ValueError(f"selection_split must be val or test, got {select!r}")
        select_images, select_labels = (val_images, val_labels) if select == "val" else (test_images, test_labels)
        recipe = settings["optimizer"]
        optimizer = optim.build_optimizer(model, recipe, target)
        scaler = torch.amp.GradScaler(target.type, enabled=runtime.precision == "fp16")
        images, labels = images.to(target), labels.to(target)
        batch = min(settings["batch_size"], len(images))
        steps_per_epoch = len(images) // batch
        total = steps_per_epoch * settings["epochs"]
        # ---------------------------------------------------------- resume
        state_path = run_dir / STATE_FILE
        epoch, step, rows, best, resume = 0, 0, [], {"score": -1.0, "epoch": 0, "model": None}, None
        if state_path.exists():
            state = checkpoint.load(state_path, expected_hash=digest)
            restore_training(state, model, optimizer, scaler, generator)
            epoch, step, rows, best = state["epoch"], state["step"], list(state["rows"]), dict(state["best"])
            if "batch" in state:
                resume = {key: state[key] for key in ("batch", "order", "losses")}
            print(f"resumed fine-tuning {run_dir.name} {resume_position(epoch, resume, settings['epochs'])}",
                  file=sys.stderr)

        def save_state(**partial) -> None:
            checkpoint.save({"settings_hash": digest, "epoch": epoch, "step": step, "rows": rows, "best": best,
                             **training_state(model, optimizer, scaler, generator), **partial}, state_path)

        with StopSignal() as stop:
            while epoch < settings["epochs"]:
                tick = time.perf_counter()
                model.train()
                order, first, saved = epoch_start(resume, len(images), generator, target)
                resume, losses = None, list(saved.get("losses", []))
                for index in range(first, steps_per_epoch):
                    idx = order[index * batch:(index + 1) * batch]
                    inputs = images[idx]
                    if index + 1 < steps_per_epoch:
                        streaming.prefetch(images, order[(index + 1) * batch:(index + 2) * batch])
                    optim.set_learning_rate(optimizer, optim.learning_rate(step, total, steps_per_epoch, recipe))
                    with runtime.amp():
                        views = inputs if spec is None else make_views(inputs, spec, generator)
                        logits = model(runtime.prepare(views))
                    loss = F.cross_entropy(logits.float(), labels[idx])
                    if not torch.isfinite(loss):
                        raise FloatingPointError(
                            f"fine-tune {run_dir.name}: loss {loss.item()} at epoch {epoch + 1}, step {index}"
                        )
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                    losses.append(loss.item())
                    step += 1
                    if stop.received is not None:
                        save_state(batch=index + 1, order=order.cpu(), losses=losses)
                        raise InterruptedRun(stop.received, f"fine-tune {run_dir.name}", epoch, index + 1)
                epoch += 1
                select_logits = forward_in_batches(model, select_images, runtime, info.image_size)
                score = float((select_logits.argmax(1) == select_labels).float().mean())
                rows.append({"epoch": epoch, "loss": float(np.mean(losses)), f"{select}_accuracy": score,
                             "seconds": time.perf_counter() - tick})
                print(f"fine-tune epoch {epoch}/{settings['epochs']} loss {rows[-1]['loss']:.4f} {select} acc "
                      f"{score:.4f}", file=sys.stderr, flush=True)
                if score > best["score"]:
                    best = {"score": score, "epoch": epoch,
                            "model": {k: v.detach().clone() for k, v in model.state_dict().items()}}
                save_state()
            stop.finish()  # the final state is saved: a late signal has nothing left to save
            model.load_state_dict(best["model"], strict=True)
            val_logits = forward_in_batches(model, val_images, runtime, info.image_size)
            write_logits(
                out_logits,
                val_logits=val_logits.numpy(),
                test_logits=forward_in_batches(model, test_images, runtime, info.image_size).numpy(),
                val_labels=val_labels.numpy(),
                test_labels=test_labels.numpy(),
            )
            checkpoint.save({"settings": json.dumps(settings, sort_keys=True), "epoch": best["epoch"],
                             "settings_hash": settings_hash(settings), "backbone": model.backbone.state_dict(),
                             "classifier": model.classifier.state_dict()}, out_model)
            checkpoint.atomic_write_text(history_csv(rows), out_log)
            val_accuracy = float((val_logits.argmax(1) == val_labels).float().mean())
            summary = {"best_epoch": best["epoch"], "selection_split": select, "selection_accuracy": best["score"],
                       "val_accuracy": val_accuracy, "lr": settings["optimizer"]["lr"]}
            if out_summary is not None:
                checkpoint.atomic_write_text(json.dumps(summary, indent=2) + "\n", out_summary)
            state_path.unlink(missing_ok=True)  # every output is written; the state held the best weights twice over
        return summary


def choose_adaptation(summaries: list[str]) -> int:
    """Index of the fine-tuning candidate (learning rate) best on its selection
    split; ties go to the first (the grid's order)."""
    scores = []
    for path in summaries:
        with open(path) as handle:
            scores.append(json.load(handle)["selection_accuracy"])
    return max(range(len(scores)), key=lambda i: (scores[i], -i))
