"""A member as adapted to its task, applied to images it was not trained on
(the shift sets and ImageNet's evaluation-only sets, docs/method.md#adaptation)."""

from __future__ import annotations

import numpy as np
import torch

from multisym.data import splits
from multisym.evaluate.probe import probe_logits
from multisym.files import read_npz
from multisym.runtime import make_runtime
from multisym.train.adapt import forward_in_batches, load_network


class AdaptedClassifier:
    """A member as adapted to its dataset, applied to new images: a fine-tuned
    or supervised network with its own head, or a probed backbone followed by
    its fitted probe (``probe_params``; features rounded to float16, as the
    probe was fit on them). Called on images, it returns float32 logits."""

    def __init__(self, model_path, probe_params, info: splits.DatasetInfo, device: torch.device):
        self.network, settings = load_network(model_path, info, classifier=probe_params is None)
        self.params = read_npz(probe_params) if probe_params is not None else None
        self.runtime = make_runtime(device, "auto", info, self.network)
        self.network = self.runtime.place(self.network)
        self.size = settings.get("views", {}).get("size", info.image_size)

    def __call__(self, images) -> np.ndarray:
        out = forward_in_batches(self.network, images, self.runtime, self.size).numpy()
        if self.params is None:
            return out.astype(np.float32)
        return probe_logits(self.params, out.astype(np.float16).astype(np.float32))
