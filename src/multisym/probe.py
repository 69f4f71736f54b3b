"""Linear probe on cached frozen features (mse_spec §3.2).

A multinomial logistic regression (scikit-learn, L2) is fit on standardised
train features; its inverse regularisation C is chosen on val accuracy (ties
go to the stronger regularisation, the first of the ascending grid). The
chosen fit's decision function gives the val and test logits. No torch here.
"""

from __future__ import annotations

import json

import numpy as np

from . import data
from .data import write_npz
from .files import atomic_write_text

EVAL_SPLITS = ("val", "test")


ABSENT_CLASS_MARGIN = 30.0


def full_logits(model, x: np.ndarray, num_classes: int) -> np.ndarray:
    """Logits over every class of the dataset. Softmax of scikit-learn's
    decision function gives its probabilities ([0, d] for two classes); a class
    absent from the training split, which the probe can never predict, gets the
    sample's lowest logit minus 30 (probability below e^-30 of the others)."""
    decision = model.decision_function(x)
    if decision.ndim == 1:
        decision = np.stack([np.zeros_like(decision), decision], axis=1)
    if len(model.classes_) == num_classes:
        return decision.astype(np.float32)
    logits = np.repeat(decision.min(axis=1, keepdims=True) - ABSENT_CLASS_MARGIN, num_classes, axis=1)
    logits[:, model.classes_] = decision
    return logits.astype(np.float32)


def fit_probe(features_path, probe_settings: dict, out_logits, out_summary) -> dict:
    """Logistic-regression probe, C chosen on val; writes val/test logits."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    with np.load(features_path) as cached:
        feats = {k: cached[k] for k in cached.files}
    scaler = StandardScaler().fit(feats["train_features"])
    x = {s: scaler.transform(feats[f"{s}_features"]) for s in data.SPLITS}
    y = {s: feats[f"{s}_labels"] for s in data.SPLITS}
    grid = sorted(probe_settings["C"])
    fits, val_acc = [], []
    for c in grid:
        model = LogisticRegression(C=c, max_iter=probe_settings["max_iter"]).fit(x["train"], y["train"])
        fits.append(model)
        val_acc.append(float((model.predict(x["val"]) == y["val"]).mean()))
    best = int(np.argmax(val_acc))  # first maximum = strongest regularisation among ties
    chosen = fits[best]
    num_classes = int(feats["num_classes"])
    write_npz(
        out_logits,
        **{f"{s}_logits": full_logits(chosen, x[s], num_classes) for s in EVAL_SPLITS},
        **{f"{s}_labels": y[s] for s in EVAL_SPLITS},
    )
    summary = {"C": grid[best], "grid": grid, "val_accuracy": val_acc,
               "train_accuracy": float((chosen.predict(x["train"]) == y["train"]).mean())}
    atomic_write_text(json.dumps(summary, indent=2) + "\n", out_summary)
    return summary
