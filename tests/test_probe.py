"""The linear probe minimises its stated objective, not just approximately."""

import json

import numpy as np
import pytest
import torch

from multisym.files import write_npz
from multisym.logits import logits_of
from multisym.files import read_npz
from multisym.evaluate.probe import fit_probe


def objective(weight, bias, x, y, c):
    """C · Σ_i CE(W x_i + b, y_i) + ½ ‖W‖², in float64."""
    z = x @ weight.T + bias
    z = z - z.max(axis=1, keepdims=True)
    cross_entropy = np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(y)), y]
    return c * cross_entropy.sum() + 0.5 * (weight * weight).sum()


def test_probe_reaches_the_minimum_at_weak_regularisation(tmp_path):
    """With C = 100 on the 8x8 digits (nearly separable), scikit-learn's default
    tolerance stops about 25 % above the minimum; the probe's fit is within
    1e-6 of it (relative), and reports how many iterations it took."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    images, labels = load_digits(return_X_y=True)
    features = images.astype(np.float16)  # cached as the workflow caches them
    parts = {"train": slice(0, 1000), "val": slice(1000, 1400), "test": slice(1400, None)}
    write_npz(tmp_path / "features.npz", num_classes=np.asarray(10),
              **{f"{s}_features": features[p] for s, p in parts.items()},
              **{f"{s}_labels": labels[p] for s, p in parts.items()})
    summary = fit_probe(tmp_path / "features.npz", {"C": [100.0], "max_iter": 1000, "tol": 1e-8},
                        tmp_path / "logits.npz", tmp_path / "summary.json", tmp_path / "params.npz")
    assert summary == json.loads((tmp_path / "summary.json").read_text())
    assert 0 < summary["iterations"][0] < 1000

    train = features[parts["train"]].astype(np.float64)
    y = labels[parts["train"]]
    x = StandardScaler().fit(train).transform(train)
    reference = LogisticRegression(C=100.0, tol=1e-12, max_iter=100_000).fit(x, y)
    minimum = objective(reference.coef_, reference.intercept_, x, y, 100.0)
    params = read_npz(tmp_path / "params.npz")
    ours = objective(params["weight"], params["bias"], (train - params["mean"]) / params["scale"], y, 100.0)
    assert abs(ours - minimum) / minimum < 1e-6
    # the case discriminates: the default tolerance is far from the minimum here
    default = LogisticRegression(C=100.0, max_iter=1000).fit(x, y)
    assert objective(default.coef_, default.intercept_, x, y, 100.0) / minimum - 1 > 0.05


def digits_split(tmp_path, classes: int = 10):
    """The 8x8 digits of the first ``classes`` classes as a features file
    (float16, as the workflow caches them); returns the train features,
    standardised as both probe paths fit them, and their labels."""
    from sklearn.datasets import load_digits
    from sklearn.preprocessing import StandardScaler

    images, labels = load_digits(n_class=classes, return_X_y=True)
    features = images.astype(np.float16)
    n = len(labels)
    parts = {"train": slice(0, n * 5 // 9), "val": slice(n * 5 // 9, n * 7 // 9), "test": slice(n * 7 // 9, None)}
    write_npz(tmp_path / "features.npz", num_classes=np.asarray(classes),
              **{f"{s}_features": features[p] for s, p in parts.items()},
              **{f"{s}_labels": labels[p] for s, p in parts.items()})
    train = features[parts["train"]].astype(np.float64)
    return StandardScaler().fit(train).transform(train), labels[parts["train"]]


@pytest.mark.parametrize("classes", [10, 2])
def test_the_gpu_fits_objective_and_solver_are_scikit_learns(tmp_path, classes):
    """probe.device cuda evaluates the objective in torch (here on the CPU,
    the same code): with strong regularisation, where L-BFGS converges in few
    steps, its path is scikit-learn's to rounding (same iterations, weights
    within 1e-9); with weak regularisation both stop within tol of the same
    minimum and predict alike. Two classes are one logistic regression, as
    scikit-learn fits them."""
    from sklearn.linear_model import LogisticRegression

    from multisym.evaluate.device_probe import DeviceObjective, fit

    x, y = digits_split(tmp_path, classes)
    on_device = DeviceObjective(x, y, torch.device("cpu"))
    for c in (0.01, 100.0):
        ours = fit(on_device, c, max_iter=1000, tol=1e-8)
        reference = LogisticRegression(C=c, max_iter=1000, tol=1e-8).fit(x, y)
        assert ours.coef_.shape == reference.coef_.shape
        assert (ours.predict(x) == reference.predict(x)).all()
        if c == 0.01:
            assert ours.n_iter_[0] == reference.n_iter_[0]
            assert np.abs(ours.coef_ - reference.coef_).max() < 1e-9
            assert np.abs(ours.intercept_ - reference.intercept_).max() < 1e-9
        elif classes > 2:
            mine = objective(ours.coef_, ours.intercept_, x, y, c)
            theirs = objective(reference.coef_, reference.intercept_, x, y, c)
            assert abs(mine - theirs) / theirs < 1e-6


def test_a_gpu_probe_where_there_is_none_says_what_to_do(tmp_path):
    """probe.device cuda in a job that sees no GPU stops before it reads its
    features (here none exist), with the setting to change, and writes nothing."""
    from multisym.errors import UserError

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    outputs = [tmp_path / name for name in ("logits.npz", "summary.json", "params.npz")]
    with pytest.raises(UserError, match="probe.device is cuda but this job sees no GPU.*probe.device: cpu"):
        fit_probe(tmp_path / "features.npz", {"C": [1.0], "max_iter": 100, "tol": 1e-8, "device": "cuda"}, *outputs)
    assert not any(path.exists() for path in outputs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
def test_a_probe_on_the_gpu_chooses_and_predicts_as_the_cpu_probe(tmp_path):
    """The whole probe on the GPU against the CPU's: the same C, the same
    test predictions, logits within 1e-3 of each other."""
    digits_split(tmp_path)
    settings = {"C": [0.01, 0.1, 1.0, 10.0, 100.0], "max_iter": 1000, "tol": 1e-8}
    runs = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / device
        out.mkdir()
        summary = fit_probe(tmp_path / "features.npz", {**settings, "device": device},
                            out / "logits.npz", out / "summary.json", out / "params.npz")
        runs[device] = summary, read_npz(out / "logits.npz")
    (cpu, cpu_logits), (gpu, gpu_logits) = runs["cpu"], runs["cuda"]
    assert gpu["device"] == "cuda" and gpu["C"] == cpu["C"]
    a, b = logits_of(cpu_logits, "test"), logits_of(gpu_logits, "test")
    assert (a.argmax(axis=1) == b.argmax(axis=1)).all()
    assert np.abs(a - b).max() < 1e-3


def test_a_probe_job_asks_for_more_memory_than_its_fit_takes(tmp_path):
    """The memory a probe job asks a cluster for bounds the fit's measured peak
    (in a process of its own, on features where the data, not the libraries,
    dominate) without asking for more than twice it."""
    import subprocess
    import sys

    from multisym.evaluate.probe import job_memory_mb

    rng = np.random.default_rng(0)
    classes, dims = 200, 512
    splits = {"train": 24_000, "val": 3_000, "test": 3_000}
    arrays = {}
    for split, rows in splits.items():
        labels = rng.integers(0, classes, rows)
        arrays[f"{split}_labels"] = labels
        arrays[f"{split}_features"] = (rng.standard_normal((rows, dims)) + (labels[:, None] % 5 == np.arange(dims) % 5)
                                       ).astype(np.float16)
    write_npz(tmp_path / "features.npz", num_classes=np.asarray(classes), **arrays)
    del arrays
    # the peak is VmHWM, which starts afresh at exec: getrusage's ru_maxrss in
    # a child starts from the parent's peak (this test process's)
    fit = (
        "import re, sys, warnings\nwarnings.simplefilter('ignore')\n"
        "from multisym.evaluate.probe import fit_probe\n"
        "d = sys.argv[1]\n"
        "fit_probe(f'{d}/features.npz', {'C': [1.0], 'max_iter': 12, 'tol': 1e-8},"
        " f'{d}/logits.npz', f'{d}/summary.json', f'{d}/params.npz')\n"
        "print(re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1))\n"
    )
    result = subprocess.run([sys.executable, "-c", fit, str(tmp_path)], capture_output=True, text=True, check=True)
    peak_mb = int(result.stdout.split()[-1]) / 1024
    assert json.loads((tmp_path / "summary.json").read_text())["iterations"] == [12]  # L-BFGS's history full
    asked = job_memory_mb(tmp_path / "features.npz", {"device": "cpu"})
    assert peak_mb < asked < 2 * peak_mb, (peak_mb, asked)


def test_a_probe_jobs_time_limit_covers_its_worst_case(tmp_path):
    """The time limit covers every C running max_iter iterations at the assumed
    rate, shrinks with threads, and is never under an hour; at paper scale
    (iNat-2019: 212k train images of 2,048 features, 1,010 classes) it is
    hours, where the rule used to ask for one hour and 4 GB."""
    from multisym.evaluate import probe

    settings = {"C": [0.01, 0.1, 1.0, 10.0, 100.0], "max_iter": 1000, "tol": 1e-8}
    write_npz(tmp_path / "small.npz", num_classes=np.asarray(10),
              **{f"{s}_features": np.zeros((50, 64), np.float16) for s in ("train", "val", "test")},
              **{f"{s}_labels": np.zeros(50, np.int64) for s in ("train", "val", "test")})
    assert probe.feature_shapes(tmp_path / "small.npz") == (50, 150, 64, 10)
    assert probe.job_runtime_min(tmp_path / "small.npz", settings, threads=1) == 60

    train, rows, dims, classes = 212_170, 265_213, 2_048, 1_010
    operations = 5 * 1000 * probe.EVALUATIONS_PER_ITERATION * 4 * train * dims * classes
    one_thread = probe.runtime_min(train, dims, classes, settings, threads=1)
    assert one_thread * 60 >= operations / probe.FLOPS_PER_THREAD > (one_thread - 1) * 60
    assert 17 * 60 < probe.runtime_min(train, dims, classes, settings, threads=16) < 21 * 60
    assert 12_000 < probe.memory_mb(train, rows, dims, classes) < 16_000
    # on a GPU: hours at the assumed rate, whatever the threads; the host
    # holds no (n_train, K) arrays but torch's CUDA libraries
    on_gpu = {**settings, "device": "cuda"}
    gpu_seconds = 5 * 1000 * probe.EVALUATIONS_PER_ITERATION * (
        4 * train * dims * classes / probe.GPU_FLOPS + probe.GPU_EVALUATION_S)
    assert probe.runtime_min(train, dims, classes, on_gpu, threads=1) == int(gpu_seconds / 60) + 1
    assert 2 * 60 < probe.runtime_min(train, dims, classes, on_gpu, threads=16) < 4 * 60
    assert probe.memory_mb(train, rows, dims, classes, "cuda") < probe.memory_mb(train, rows, dims, classes)
