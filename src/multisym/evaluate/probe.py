"""Linear probe on cached frozen features (docs/method.md#linear-probe).

A multinomial logistic regression (scikit-learn, L2) is fit on standardised
train features x_i, minimising

    C · Σ_i CE(W x_i + b, y_i) + ½ ‖W‖²;

its inverse regularisation C is chosen on val accuracy (ties go to the
stronger regularisation, the first of the ascending grid). The chosen fit's
decision function gives the val and test logits. With ``probe.device:
cuda`` the same solver runs with its objective on the GPU
(``multisym.evaluate.device_probe``); torch is imported only then, so that planning
(which reads this module for a job's request) never loads it.

scikit-learn's L-BFGS stops when the largest gradient entry of that objective
divided by C·n falls below ``tol``. Its default, 1e-4, stopped digits fits
with C >= 1 after 15-36 iterations, 1-80 % above the minimum (no warning), so
the probe takes ``tol`` from its settings (1e-8 by default) and fits in
float64, where L-BFGS can resolve the last relative decreases (in float32 it
stalled up to 7e-4 above the minimum).
"""

from __future__ import annotations

import json

import numpy as np

from multisym.data import splits
from multisym.evaluate import device_probe
from multisym.files import write_npz
from multisym.files import atomic_write_text, read_npz
from multisym.data.splits import EVAL_SPLITS
from multisym.logits import write_logits


ABSENT_CLASS_MARGIN = 30.0


def probe_parameters(model, scaler, num_classes: int) -> dict[str, np.ndarray]:
    """The fitted probe as arrays: standardisation, weights and bias in the
    multinomial form (two-class fits expanded to [0, d]), and the classes seen."""
    coef, intercept = model.coef_, model.intercept_
    if coef.shape[0] == 1 and len(model.classes_) == 2:
        coef = np.concatenate([np.zeros_like(coef), coef])
        intercept = np.concatenate([np.zeros_like(intercept), intercept])
    return {
        "mean": scaler.mean_, "scale": scaler.scale_, "weight": coef, "bias": intercept,
        "classes": np.asarray(model.classes_), "num_classes": np.asarray(num_classes),
    }


def probe_logits(params: dict[str, np.ndarray], features: np.ndarray) -> np.ndarray:
    """Logits over every class of the dataset from raw features:
    z = ((f − μ) / σ) Wᵀ + b, whose softmax is the logistic regression's
    probability. A class absent from the training split, which the probe can
    never predict, gets the sample's lowest logit minus 30."""
    x = (features - params["mean"]) / params["scale"]
    decision = x @ params["weight"].T + params["bias"]
    num_classes, classes = int(params["num_classes"]), params["classes"]
    if len(classes) == num_classes:
        return decision.astype(np.float32)
    logits = np.repeat(decision.min(axis=1, keepdims=True) - ABSENT_CLASS_MARGIN, num_classes, axis=1)
    logits[:, classes] = decision
    return logits.astype(np.float32)


def fit_device(settings: dict) -> str:
    """Where the fit runs: cpu or cuda. The workflow leaves device cpu out of
    a probe's settings (common.smk), so that probes made before the key
    existed stay up to date."""
    return settings.get("device", "cpu")


def _fitter(x_train: np.ndarray, y_train: np.ndarray, max_iter: int, tol: float, gpu):
    """fit(C): scikit-learn's L-BFGS on the CPU, or, given a ``gpu``, the same
    solver with its objective there (``multisym.evaluate.device_probe``)."""
    if gpu is not None:
        objective = device_probe.DeviceObjective(x_train, y_train, gpu)
        return lambda c: device_probe.fit(objective, c, max_iter, tol)
    from sklearn.linear_model import LogisticRegression

    return lambda c: LogisticRegression(C=c, max_iter=max_iter, tol=tol).fit(x_train, y_train)


def fit_probe(features_path, probe_settings: dict, out_logits, out_summary, out_params) -> dict:
    """Logistic-regression probe, C chosen on val; writes val/test logits and
    the probe's parameters (to apply it to other inputs, e.g. shift sets)."""
    from sklearn.preprocessing import StandardScaler

    # a job without the GPU it was given stops here, before reading its features
    device = fit_device(probe_settings)
    gpu = device_probe.cuda_device() if device == "cuda" else None
    feats = {k: (v.astype(np.float64) if k.endswith("_features") else v) for k, v in read_npz(features_path).items()}
    scaler = StandardScaler().fit(feats["train_features"])
    # train is standardised in place (its raw form is not used again), so float64
    # needs no more memory than float32 raw and standardised copies did; val and
    # test keep their raw features for probe_logits
    x = {"train": scaler.transform(feats.pop("train_features"), copy=False)}
    x.update({s: scaler.transform(feats[f"{s}_features"]) for s in EVAL_SPLITS})
    y = {s: feats[f"{s}_labels"] for s in splits.SPLITS}
    grid = sorted(probe_settings["C"])
    fit = _fitter(x["train"], y["train"], probe_settings["max_iter"], probe_settings["tol"], gpu)
    fits, val_acc = [], []
    for c in grid:
        fits.append(fit(c))
        val_acc.append(float((fits[-1].predict(x["val"]) == y["val"]).mean()))
    best = int(np.argmax(val_acc))  # first maximum = strongest regularisation among ties
    chosen = fits[best]
    params = probe_parameters(chosen, scaler, int(feats["num_classes"]))
    write_npz(out_params, **params)
    write_logits(
        out_logits,
        **{f"{s}_logits": probe_logits(params, feats[f"{s}_features"]) for s in EVAL_SPLITS},
        **{f"{s}_labels": y[s] for s in EVAL_SPLITS},
    )
    # iterations per C: one equal to max_iter means that fit stopped unconverged
    summary = {"C": grid[best], "grid": grid, "val_accuracy": val_acc, "device": device,
               "iterations": [int(m.n_iter_.max()) for m in fits],
               "train_accuracy": float((chosen.predict(x["train"]) == y["train"]).mean())}
    atomic_write_text(json.dumps(summary, indent=2) + "\n", out_summary)
    return summary


# ------------------------------------------------------ what a probe job needs
# Peak memory of fit_probe, fitted to its peak resident size on synthetic
# features (n_train 5,000 to 40,000, d 512 to 1,024, K 200 to 1,000; the
# model came out 5 to 28 % above each measured peak): float64 copies of the
# features (1.3 per value), L-BFGS's (n_train, K) arrays (2.4), the val and
# test decisions (3), copies of the weights and L-BFGS's 10 correction pairs
# (30 (K, d) arrays), on top of the libraries.
LIBRARIES_MB = 200
MEMORY_MARGIN = 1.25
# Floating-point operations per second one probe thread is assumed to sustain
# in float64: a third of what one core of the 2-core CI machine reached
# (35 GFLOP/s), for slower nodes and threads that scale imperfectly.
FLOPS_PER_THREAD = 1e10
EVALUATIONS_PER_ITERATION = 1.25  # L-BFGS's line search now and then evaluates twice
# The GPU fit (probe.device cuda), assumed rather than measured: float64 at
# 1e12 FLOP/s (a tenth of a data-centre GPU's; gaming GPUs run float64 at
# 1/64 of their float32 rate) plus 50 ms a loss evaluation for the host's
# part (sending the weights, fetching the gradient, L-BFGS-B's update).
GPU_FLOPS = 1e12
GPU_EVALUATION_S = 0.05
CUDA_LIBRARIES_MB = 3000


def feature_shapes(features_path) -> tuple[int, int, int, int]:
    """(train rows, all rows, feature size, classes) from the file's headers."""
    from multisym.files import map_npz

    arrays = map_npz(features_path, [f"{s}_features" for s in splits.SPLITS] + ["num_classes"])
    train, dims = arrays["train_features"].shape
    rows = sum(arrays[f"{s}_features"].shape[0] for s in splits.SPLITS)
    return train, rows, dims, int(arrays["num_classes"])


def memory_mb(train: int, rows: int, dims: int, classes: int, device: str = "cpu") -> int:
    """Host memory a probe job asks for (MB): the fit's peak model above, with
    a 25 % margin. iNat-2019 at paper scale (265k images of 2,048 features, 80 %
    of them train, 1,010 classes): 14 GB. On the GPU the (n_train, K) arrays
    live on the device, and torch with its CUDA context is counted instead
    (CUDA_LIBRARIES_MB, an allowance: not measured here)."""
    values = 1.3 * rows * dims + 3 * (rows - train) * classes + 30 * classes * dims
    if device == "cuda":
        libraries = CUDA_LIBRARIES_MB
    else:
        libraries = LIBRARIES_MB
        values += 2.4 * train * classes
    return int(MEMORY_MARGIN * (libraries + 8 * values / 2**20)) + 1


def runtime_min(train: int, dims: int, classes: int, settings: dict, threads: int, floor_min: int = 60) -> int:
    """Time limit of a probe job (minutes), for the worst case: every C of the
    grid runs ``max_iter`` L-BFGS iterations, each evaluating the loss and its
    gradient (4 · n_train · d · K operations) 1.25 times, at FLOPS_PER_THREAD
    per thread, or on a GPU at GPU_FLOPS plus GPU_EVALUATION_S; never under
    ``floor_min``. iNat-2019 at paper scale with the default grid: 19 hours
    on 16 threads, 3 on a GPU."""
    evaluations = len(settings["C"]) * settings["max_iter"] * EVALUATIONS_PER_ITERATION
    operations = 4 * train * dims * classes
    if fit_device(settings) == "cuda":
        seconds = evaluations * (operations / GPU_FLOPS + GPU_EVALUATION_S)
    else:
        seconds = evaluations * operations / (FLOPS_PER_THREAD * max(1, threads))
    return max(floor_min, int(seconds / 60) + 1)


def job_memory_mb(features_path, settings: dict) -> int:
    """``memory_mb`` of the features file's shapes."""
    return memory_mb(*feature_shapes(features_path), fit_device(settings))


def job_runtime_min(features_path, settings: dict, threads: int) -> int:
    """``runtime_min`` of the features file's shapes."""
    train, _, dims, classes = feature_shapes(features_path)
    return runtime_min(train, dims, classes, settings, threads)
