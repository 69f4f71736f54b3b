"""Evaluation-only sets of an ImageNet scale (Loh et al. Table 9, Fig. 4;
docs/method.md#transfer-and-distribution-shift):
ImageNet-V2 and ImageNet-R, on which the members adapted to ImageNet are
evaluated without retraining.

A member's logits file for such a set has the layout of every other logits
file, so member metrics, ensembles and the dataset summary treat it as one
more dataset:

* ``test``: the adapted member on the set's images;
* ``val``: the member's own logits on ImageNet's val split, copied, so that
  greedy ensembles are chosen on in-distribution data, never on the shift set.

ImageNet-R covers 200 of the 1000 classes: both splits keep only the logits of
those classes (the 200-of-1000 mask of the paper) and only the val images of
those classes, and labels become positions among them; so ImageNet-R is
200-way classification, as reported.
"""

from __future__ import annotations

import numpy as np

from multisym.data import splits
from multisym.files import read_npz
from multisym.logits import logits_of, write_logits


def restrict(logits: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Logits of the classes in ``mask`` (sorted 1000-way indices) and the rows
    whose label is one of them, labels renumbered to positions in ``mask``."""
    position = np.full(int(max(logits.shape[1], labels.max(initial=0) + 1)), -1)
    position[mask] = np.arange(len(mask))
    rows = position[labels] >= 0
    return np.ascontiguousarray(logits[rows][:, mask]), position[labels[rows]]


def member_logits(model_path, probe_params, data_path, manifest_path, primary_logits, primary_manifest, out_path,
                  device="auto", threads=None) -> None:
    """One member's val (ImageNet's, copied) and test (the set's) logits."""
    from multisym.evaluate.classifier import AdaptedClassifier
    from multisym.runtime import select_device, set_threads

    set_threads(threads)
    info = splits.info(splits.read_manifest(primary_manifest))  # the network's input: the ImageNet scale's
    arrays, _ = splits.load_arrays(data_path, manifest_path)
    images, labels, _ = splits.load_split(data_path, manifest_path, "test")
    classify = AdaptedClassifier(model_path, probe_params, info, select_device(device))
    test_logits, test_labels = classify(images), labels.numpy()
    primary = read_npz(primary_logits)
    val_logits, val_labels = logits_of(primary, "val"), primary["val_labels"]
    if "class_mask" in arrays:
        val_logits, val_labels = restrict(val_logits, val_labels, arrays["class_mask"])
        test_logits, test_labels = restrict(test_logits, test_labels, arrays["class_mask"])
    write_logits(out_path, val_logits=val_logits, val_labels=val_labels.astype(np.int64),
                      test_logits=test_logits, test_labels=test_labels.astype(np.int64))
