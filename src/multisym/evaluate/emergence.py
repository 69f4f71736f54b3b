"""Emergent invariance of deep ensembles (Gerken & Kessel, ICML 2024;
docs/method.md#emergent-equivariance).

Claim under test: an ensemble of networks without built-in invariance, each
trained with full group augmentation (every element of the group applied to
every training image, every epoch), is invariant as a whole, on and off the
data manifold, at every epoch, while its members are not.

Members: a small CNN with a flatten + fully connected head (no global pooling,
which would give rotation robustness for free): [conv3x3, ReLU, max-pool 2]
per width, flatten, a hidden linear layer, ReLU, linear to the classes;
PyTorch's default init with the member's own seed. All members are trained
together: their parameters stacked (``torch.func.stack_module_state``) and the
training forward pass vectorised with ``vmap``; Adam's update is elementwise,
so this is exactly M independent Adam runs. Each member draws its own data
order. The loop is ``multisym.train.trainer``'s, without a checkpoint (an
interrupted run starts again); it logs each epoch's mean member loss.
Evaluation runs one member at a time on channels_last orbits, where the
CPU's max-pooling is an order of magnitude faster than on the NCHW batches
``vmap`` hands it (the whole evaluation on one core: 2.6x).

Runs, for each group of ``emergence.groups``: ``augmented`` (each epoch is
the whole orbit of every training image) and ``control`` (each image |G|
times as the identity element gives it, so both runs take the same number of
steps and, for the rotation groups C_N, see the same disc-masked images).

Stored per audit set ``name`` (``emergence/<group>/<run>.npz``), at epoch 0
and after each of the E epochs, for M members, N inputs and C classes:

- ``{name}_predictions`` (E+1, M, |G|, N): every member's predicted class on
  the orbit, in the smallest unsigned integer type that holds the classes;
  every member metric is argmax-based (OSP, orbit consistency, accuracy);
- ``{name}_ensemble_logit`` and ``{name}_ensemble_prob`` (E+1, |G|, N, C),
  float32: the whole ensemble's output, the mean logit and the log of the
  mean softmax (``invariance.combine``), computed member by member where the
  logits are (the latter as a running ``logaddexp`` of log-softmaxes, so it
  is log((1/M) Σ_m softmax(z_m)) without a probability underflowing);
- ``{name}_final_logits`` (M, |G|, N, C), float32: every member's logits at
  the last epoch, for random sub-ensembles and the finite-ensemble fit.

Not every member's logits at every epoch, which is what grows with the
paper's scale: at M = 100, E = 10, |G| = 16, C = 10 and two sets of 10,000
inputs, those were 2 x 11 x 100 x 16 x 10^4 x 10 x 4 B = 14.1 GB per run
(held in memory through training), and the stored arrays above are
2 x (176 MB + 141 MB + 640 MB) = 1.9 GB.

SO(2) (Gerken & Kessel's continuous-rotation measure): for a C_N group, after
the last epoch every member is evaluated on K rotations of every audit input
by angles drawn uniformly from [0°, 360°) (``emergence.so2_angles``; one
seeded draw shared by all runs), with the unrotated (masked) input first:
stored are ``{name}_so2_predictions`` (M, K+1, N) and the ensemble's
``{name}_so2_ensemble_logit`` and ``{name}_so2_ensemble_prob`` (K+1, N, C)
(at K = 64 on the scale above 2 x (65 MB + 52 MB) = 0.23 GB a run, where the
members' logits were 5.2 GB), with ``so2_angles`` and ``test_labels``. An
input's SO(2) fraction is the share of the K angles whose rotated input gets
the unrotated input's prediction.

Measured per set and epoch, from the stored arrays: OSP and the
orbit-consistent fraction (``invariance``) of every member and of the
ensemble's combined output.
"""

from __future__ import annotations

import copy
import json
import math

import numpy as np

from multisym.data import splits
from multisym.evaluate import finite_ensemble, invariance
from multisym.files import atomic_write_text, read_npz
from multisym.files import write_npz

RUNS = ("augmented", "control")
QUANTILES = (5, 25, 50, 75, 95)
# what each evaluation point stores per audit set (the suffixes of the stored arrays)
PER_EPOCH = ("predictions", "ensemble_logit", "ensemble_prob")


def member_network(channels: int, size: int, num_classes: int, widths: list[int], hidden: int):
    import torch.nn as nn

    layers, previous = [], channels
    for width in widths:
        layers += [nn.Conv2d(previous, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        previous, size = width, size // 2
    if size < 1:
        raise ValueError(f"{len(widths)} pooling stages leave no pixels of the input; use fewer widths")
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(previous * size * size, hidden), nn.ReLU(),
                         nn.Linear(hidden, num_classes))


def so2_angles(settings: dict) -> np.ndarray:
    """The K angles (degrees) of the SO(2) measure, the same for every run."""
    return np.random.default_rng(settings["seed"]).uniform(0.0, 360.0, settings["so2_angles"])


def measures_so2(settings: dict, group_name: str) -> bool:
    return group_name.startswith("rot") and group_name != "rotation" and settings["so2_angles"] > 0


def train(settings: dict, group_name: str, run: str, data_path, manifest_path, sets_path, sets_manifest,
          out_path, device="auto", threads=None) -> dict:
    """Train ``settings['members']`` networks for one run of one group and
    store, at every evaluation point, their predictions on the orbits and the
    ensemble's two combinations, their logits at the last (and the SO(2)
    predictions and combinations after it); returns a short summary."""
    import torch
    import torch.nn.functional as F
    from torch.func import functional_call, stack_module_state, vmap

    from multisym.evaluate.audit import load_sets
    from multisym.runtime import select_device, set_threads
    from multisym.symmetries import get_group, rotate_degrees
    from multisym.train.trainer import Task, Trainer

    if run not in RUNS:
        raise ValueError(f"unknown run {run!r}; known: {RUNS}")
    set_threads(threads)
    target = select_device(device)
    group = get_group(group_name)
    images, labels, info = splits.load_split(data_path, manifest_path, "train")
    if settings["train_images"] and settings["train_images"] < len(labels):
        keep = np.random.default_rng(settings["seed"]).choice(len(labels), settings["train_images"], replace=False)
        images, labels = images[np.sort(keep)], labels[np.sort(keep)]
    elif not isinstance(images, torch.Tensor):
        raise splits.DataError(
            f"the train split of {info.name} is streamed ({len(labels)} images, more than fit in memory); "
            "set emergence.train_images to the number of training images the experiment uses"
        )
    mean = torch.tensor(info.mean).view(1, -1, 1, 1)
    std = torch.tensor(info.std).view(1, -1, 1, 1)
    if run == "augmented":
        train_x, train_y = group.orbit(images)
        train_y = labels.repeat(group.order)
    else:
        train_x, train_y = group.identity(images).repeat(group.order, 1, 1, 1), labels.repeat(group.order)
    train_x, train_y = ((train_x - mean) / std).to(target), train_y.to(target)

    count = settings["members"]
    nets = []
    for index in range(count):
        torch.manual_seed(settings["seed"] * 1000 + index)
        nets.append(member_network(info.channels, info.image_size, info.num_classes,
                                   settings["widths"], settings["hidden"]).to(target))
    params, buffers = stack_module_state(nets)
    skeleton = copy.deepcopy(nets[0]).to("meta")

    def forward(p, b, x):
        return functional_call(skeleton, (p, b), (x,))

    batched = vmap(forward)
    optimizer = torch.optim.Adam(list(params.values()), lr=settings["lr"])
    sets, test_labels, manifest = load_sets(sets_path, sets_manifest)
    orbits = {name: ((group.orbit(torch.from_numpy(x))[0] - mean) / std).to(target)
              .contiguous(memory_format=torch.channels_last) for name, x in sets.items()}

    def member(index: int) -> tuple[dict, dict]:
        return {k: v[index] for k, v in params.items()}, {k: v[index] for k, v in buffers.items()}

    classes = np.min_scalar_type(info.num_classes - 1)

    @torch.no_grad()
    def measure(inputs, shape: tuple[int, int], keep: bool) -> dict[str, np.ndarray]:
        """Every member's predicted classes on ``inputs`` (M, *shape), the
        ensemble's mean logits and log mean probabilities (*shape, C), and with
        ``keep`` every member's logits (M, *shape, C). One member at a time, so
        the device holds one member's logits and the two running combinations."""
        total = log_total = None
        predicted, kept = [], []
        for index in range(count):
            state = member(index)
            logits = torch.cat([forward(*state, chunk) for chunk in inputs.split(1024)])
            predicted.append(logits.argmax(-1).cpu().numpy().astype(classes))
            log_probs = torch.log_softmax(logits, dim=-1)
            if total is None:
                total, log_total = logits.clone(), log_probs
            else:
                total += logits
                # log sum_m p_m, kept in log space: no probability underflows
                log_total = torch.logaddexp(log_total, log_probs)
            if keep:
                kept.append(logits.cpu().numpy())
        out = {"predictions": np.stack(predicted).reshape(count, *shape),
               "ensemble_logit": (total / count).reshape(*shape, -1).cpu().numpy(),
               "ensemble_prob": (log_total - math.log(count)).reshape(*shape, -1).cpu().numpy()}
        if keep:
            out["final_logits"] = np.stack(kept).reshape(count, *shape, -1)
        return out

    history = {name: {key: [] for key in PER_EPOCH} for name in orbits}
    final = {}

    def evaluate(last: bool) -> None:
        """Store one evaluation point; the members' logits only at the last."""
        for name, orbit in orbits.items():
            measured = measure(orbit, (group.order, len(orbit) // group.order), last)
            for key in PER_EPOCH:
                history[name][key].append(measured[key])
            if last:
                final[name] = measured["final_logits"]

    # one generator per member: a member's run does not depend on how many train beside it
    generators = [torch.Generator().manual_seed(settings["seed"] * 1000 + index) for index in range(count)]
    batch = settings["batch_size"]
    evaluate(settings["epochs"] == 0)

    class Members(Task):
        """Each member's own order of the training set; the evaluation after each epoch."""

        def order(self):
            return torch.stack([torch.randperm(len(train_y), generator=g) for g in generators])

        def step(self, order, index):
            picked = order[:, index * batch:(index + 1) * batch].to(target)
            logits = batched(params, buffers, train_x[picked])
            # each member's mean cross-entropy, summed: members' gradients stay separate
            loss = F.cross_entropy(logits.flatten(0, 1), train_y[picked].flatten()) * count
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            return {"loss": loss.detach()}

        def columns(self, epoch, means, lr):
            evaluate(epoch == settings["epochs"])
            return {"member_loss": means["loss"] / count}

    # Adam unscaled: the disabled loss scaler only passes the step on to it
    scaler = torch.amp.GradScaler(target.type, enabled=False)
    Trainer(f"emergence {run}", None, optimizer, scaler, settings["epochs"], -(-len(train_y) // batch),
            target).run(Members())
    if set(final) != set(orbits):
        raise RuntimeError(f"emergence {run}: training ended before epoch {settings['epochs']}")
    arrays = {}
    for name, stored in history.items():
        arrays.update({f"{name}_{key}": np.stack(values) for key, values in stored.items()})
        arrays[f"{name}_final_logits"] = final[name]
    if measures_so2(settings, group_name):
        angles = so2_angles(settings)
        for name, x in sets.items():
            x = torch.from_numpy(x)
            # the unrotated (masked) input first, then each angle
            copies = torch.cat([group.identity(x)] + [rotate_degrees(x, float(a)) for a in angles])
            copies = ((copies - mean) / std).to(target).contiguous(memory_format=torch.channels_last)
            measured = measure(copies, (len(angles) + 1, len(x)), False)
            arrays.update({f"{name}_so2_{key}": value for key, value in measured.items()})
        arrays["so2_angles"] = angles.astype(np.float32)
    write_npz(out_path, test_labels=test_labels, **arrays)
    accuracy = float((arrays["test_predictions"][-1][:, 0] == test_labels[None]).mean()) * 100.0
    return {"group": group_name, "run": run, "members": count, "epochs": settings["epochs"],
            "sets": list(manifest["sets"]), "final_member_test_accuracy": accuracy}


# ----------------------------------------------------------------- metrics
def _consistent(predicted: np.ndarray) -> float:
    """Fraction of inputs whose prediction is the same on the whole orbit,
    from the (|G|, N) predicted classes."""
    return float(invariance.consistent_of_predictions(predicted).mean())


def so2_fraction_of_predictions(predicted: np.ndarray) -> np.ndarray:
    """(N,) per input, the share of the K rotated copies whose prediction is
    the unrotated input's, from (K+1, N) predicted classes, the unrotated first."""
    return (predicted[1:] == predicted[0]).mean(axis=0)


def so2_fraction(logits: np.ndarray) -> np.ndarray:
    """``so2_fraction_of_predictions`` from (K+1, N, C) logits."""
    return so2_fraction_of_predictions(invariance.predictions(logits))


def run_metrics(stored: dict[str, np.ndarray], settings: dict) -> dict:
    """Curves of one run from its stored arrays: per set, per epoch, every
    member's mean OSP and orbit-consistent fraction (from its predictions),
    their quantiles, the ensemble's (from its stored logit and prob
    combinations) and accuracies on the test set; at the last epoch, both for
    random sub-ensembles of every size (``subensemble_draws`` each, without
    replacement), and the deviation of the ensemble's mean logits from
    invariance against the number of members with its fitted slope
    (``finite_ensemble``), both from the members' last logits; and the SO(2)
    fraction where it was measured."""
    draws, seed = settings["subensemble_draws"], settings["seed"]
    labels = stored["test_labels"]
    out = {}
    suffix = "_predictions"
    for key in sorted(k for k in stored if k.endswith(suffix) and not k.endswith("_so2" + suffix)):
        name = key[: -len(suffix)]
        predicted = stored[key]  # (E+1, M, |G|, N)
        ensembles = {how: stored[f"{name}_ensemble_{how}"] for how in invariance.COMBINATIONS}  # (E+1, |G|, N, C)
        final = stored[f"{name}_final_logits"]  # (M, |G|, N, C)
        epochs, members, order = predicted.shape[:3]
        member_osp = np.stack([invariance.mean_osp_of_predictions(predicted[e]) for e in range(epochs)])
        member_consistent = np.array([[_consistent(p) for p in predicted[e]] for e in range(epochs)])
        ensemble_predicted = {how: invariance.predictions(z) for how, z in ensembles.items()}  # (E+1, |G|, N)
        entry = {
            "order": order,
            "inputs": int(predicted.shape[3]),
            "epochs": list(range(epochs)),
            "member_osp": member_osp.tolist(),
            "member_quantiles": {str(q): np.percentile(member_osp, q, axis=1).tolist() for q in QUANTILES},
            "ensemble_osp": {how: [float(invariance.osp_of_predictions(p).mean()) for p in ensemble_predicted[how]]
                             for how in invariance.COMBINATIONS},
            "member_consistent": member_consistent.tolist(),
            "consistent_quantiles": {str(q): np.percentile(member_consistent, q, axis=1).tolist()
                                     for q in QUANTILES},
            "ensemble_consistent": {how: [_consistent(p) for p in ensemble_predicted[how]]
                                    for how in invariance.COMBINATIONS},
        }
        if name == "test":
            entry["member_accuracy"] = [float(100.0 * (predicted[e, :, 0] == labels).mean()) for e in range(epochs)]
            entry["ensemble_accuracy"] = [float(100.0 * (ensemble_predicted["prob"][e, 0] == labels).mean())
                                          for e in range(epochs)]
        entry["by_size"] = _by_size(final, draws, seed)
        entry["finite"] = finite_ensemble.fit(finite_ensemble.differences(final),
                                              finite_ensemble.sizes_up_to(members), settings["bootstrap_resamples"],
                                              settings["level"], seed)
        if f"{name}_so2_predictions" in stored:
            entry["so2"] = _so2(stored[f"{name}_so2_predictions"],
                                {how: stored[f"{name}_so2_ensemble_{how}"] for how in invariance.COMBINATIONS})
        out[name] = entry
    return out


def _so2(predicted: np.ndarray, ensembles: dict[str, np.ndarray]) -> dict:
    """SO(2) fraction (mean over inputs) of every member, their quantiles and
    the ensemble's, from the members' (M, K+1, N) predicted classes and the
    ensemble's (K+1, N, C) output by combination."""
    members = np.array([so2_fraction_of_predictions(p).mean() for p in predicted])
    return {"angles": int(predicted.shape[1] - 1), "member": members.tolist(),
            "member_quantiles": {str(q): float(np.percentile(members, q)) for q in QUANTILES},
            "ensemble": {how: float(so2_fraction(ensembles[how]).mean()) for how in invariance.COMBINATIONS}}


def _by_size(final: np.ndarray, draws: int, seed: int) -> dict:
    """OSP and orbit-consistent fraction of random sub-ensembles of each size
    at the last epoch, from the members' (M, |G|, N, C) logits: the mean over
    draws and its 5-95 % range."""
    rng = np.random.default_rng(seed)
    members = final.shape[0]
    sizes = list(range(1, members + 1))
    curves = {how: {"mean": [], "low": [], "high": []} for how in invariance.COMBINATIONS}
    consistent = {how: {"mean": [], "low": [], "high": []} for how in invariance.COMBINATIONS}
    for size in sizes:
        picks = [rng.choice(members, size=size, replace=False) for _ in range(draws if size < members else 1)]
        for how in invariance.COMBINATIONS:
            combined = [invariance.predictions(invariance.combine(final[p], how)) for p in picks]
            for target, values in ((curves, np.array([invariance.osp_of_predictions(p).mean() for p in combined])),
                                   (consistent, np.array([_consistent(p) for p in combined]))):
                target[how]["mean"].append(float(values.mean()))
                target[how]["low"].append(float(np.percentile(values, 5)))
                target[how]["high"].append(float(np.percentile(values, 95)))
    return {"sizes": sizes, "draws": draws, **curves, "consistent": consistent}


def write_metrics(settings: dict, paths: dict[tuple[str, str], str], sets_manifest, out) -> dict:
    """Every run's curves, by group then run; ``paths`` maps (group, run) to
    its stored arrays."""
    manifest = splits.read_manifest(sets_manifest)
    result = {"dataset": manifest["dataset"], "stand_in": manifest["stand_in"], "sets": manifest["sets"],
              "settings": settings, "groups": {}}
    for (group, run), path in paths.items():
        stored = read_npz(path)
        curves = run_metrics(stored, settings)
        entry = result["groups"].setdefault(group, {"order": next(iter(curves.values()))["order"], "runs": {}})
        entry["runs"][run] = curves
    atomic_write_text(json.dumps(result, indent=2) + "\n", out)
    return result
