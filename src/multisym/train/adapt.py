"""Turn members into classifiers (docs/method.md#adaptation): cached features
for the linear probe (fit in ``probe``), supervised members' logits, the
choice among fine-tuning candidates (fine-tuning itself: ``finetune``), and
a trained member loaded and applied to new images.

Linear probe (docs/method.md#linear-probe): the backbone is frozen in eval mode;
features of every split are extracted once and cached here, so the probe
(``probe.py``) can be refit without touching the network.

Logits files (``.npz``, ``multisym.logits.write_logits``): ``val_logits``, ``test_logits``
(N, C) float16 and ``val_labels``, ``test_labels``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from multisym.data import splits, streaming
from multisym.data.views import resize_center
from multisym.files import write_npz
from multisym.logits import write_logits
from multisym.members import settings_hash
from multisym.runtime import make_runtime, select_device, set_threads
from multisym.train import checkpoint
from multisym.train.models import SupervisedModel, build_backbone


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


def choose_adaptation(summaries: list[str]) -> int:
    """Index of the fine-tuning candidate (learning rate) best on its selection
    split; ties go to the first (the grid's order)."""
    scores = []
    for path in summaries:
        with open(path) as handle:
            scores.append(json.load(handle)["selection_accuracy"])
    return max(range(len(scores)), key=lambda i: (scores[i], -i))
