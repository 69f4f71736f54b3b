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
steps and, for the rotation groups C_N, see the same disc-masked images). At
epoch 0 and after every epoch, every member's logits on the orbit of every
audit set are stored, shape (E+1, M, |G|, N, C), so every metric and every
sub-ensemble can be recomputed offline.

SO(2) (Gerken & Kessel's continuous-rotation measure): for a C_N group, after
the last epoch every member's logits on K rotations of every audit input by
angles drawn uniformly from [0°, 360°) (``emergence.so2_angles``; one seeded
draw shared by all runs), with the unrotated (masked) input first, shape
(M, K+1, N, C). An input's SO(2) fraction is the share of the K angles whose
rotated input gets the unrotated input's prediction.

Measured per set and epoch: OSP and the orbit-consistent fraction
(``invariance``) of every member and of the ensemble's averaged output.
"""

from __future__ import annotations

import copy
import json

import numpy as np

from multisym.data import splits
from multisym.evaluate import finite_ensemble, invariance
from multisym.files import atomic_write_text, read_npz
from multisym.files import write_npz

RUNS = ("augmented", "control")
QUANTILES = (5, 25, 50, 75, 95)


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
    store their orbit logits at every evaluation point (and the SO(2) logits
    after the last); returns a short summary."""
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

    @torch.no_grad()
    def evaluate() -> dict[str, np.ndarray]:
        states = [member(m) for m in range(count)]
        out = {}
        for name, orbit in orbits.items():
            logits = torch.stack([torch.cat([forward(*state, chunk) for chunk in orbit.split(1024)])
                                  for state in states])
            out[name] = logits.reshape(count, group.order, -1, logits.shape[-1]).cpu().numpy()
        return out

    # one generator per member: a member's run does not depend on how many train beside it
    generators = [torch.Generator().manual_seed(settings["seed"] * 1000 + index) for index in range(count)]
    batch = settings["batch_size"]
    history = [evaluate()]

    class Members(Task):
        """Each member's own order of the training set; every member's logits after each epoch."""

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
            history.append(evaluate())
            return {"member_loss": means["loss"] / count}

    # Adam unscaled: the disabled loss scaler only passes the step on to it
    scaler = torch.amp.GradScaler(target.type, enabled=False)
    Trainer(f"emergence {run}", None, optimizer, scaler, settings["epochs"], -(-len(train_y) // batch),
            target).run(Members())
    arrays = {f"{name}_logits": np.stack([h[name] for h in history]).astype(np.float32) for name in orbits}
    if measures_so2(settings, group_name):
        angles = so2_angles(settings)
        states = [member(m) for m in range(count)]
        with torch.no_grad():
            for name, x in sets.items():
                x = torch.from_numpy(x)
                # the unrotated (masked) input first, then each angle
                copies = torch.cat([group.identity(x)] + [rotate_degrees(x, float(a)) for a in angles])
                copies = ((copies - mean) / std).to(target).contiguous(memory_format=torch.channels_last)
                logits = torch.stack([torch.cat([forward(*state, chunk) for chunk in copies.split(1024)])
                                      for state in states])
                arrays[f"{name}_so2_logits"] = logits.reshape(count, len(angles) + 1, len(x), -1).cpu().numpy()
        arrays["so2_angles"] = angles.astype(np.float32)
    write_npz(out_path, test_labels=test_labels, **arrays)
    final = arrays["test_logits"][-1]
    accuracy = float((final[:, 0].argmax(-1) == test_labels[None]).mean()) * 100.0
    return {"group": group_name, "run": run, "members": count, "epochs": settings["epochs"],
            "sets": list(manifest["sets"]), "final_member_test_accuracy": accuracy}


# ----------------------------------------------------------------- metrics
def _consistent(orbit_logits: np.ndarray) -> float:
    """Fraction of inputs whose prediction is the same on the whole orbit."""
    return float(invariance.orbit_consistent(orbit_logits).mean())


def so2_fraction(logits: np.ndarray) -> np.ndarray:
    """(N,) per input, the share of the K rotated copies whose prediction is
    the unrotated input's, from (K+1, N, C) logits with the unrotated first."""
    predicted = invariance.predictions(logits)
    return (predicted[1:] == predicted[0]).mean(axis=0)


def run_metrics(stored: dict[str, np.ndarray], settings: dict) -> dict:
    """Curves of one run from its stored logits: per set, per epoch, every
    member's mean OSP and orbit-consistent fraction, their quantiles, the
    ensemble's (logit and prob mean) and accuracies on the test set; at the
    last epoch, both for random sub-ensembles of every size
    (``subensemble_draws`` each, without replacement), and the deviation of
    the ensemble's mean logits from invariance against the number of members
    with its fitted slope (``finite_ensemble``); and the SO(2) fraction
    where it was measured."""
    draws, seed = settings["subensemble_draws"], settings["seed"]
    labels = stored["test_labels"]
    out = {}
    for key in sorted(k for k in stored if k.endswith("_logits") and not k.endswith("_so2_logits")):
        name = key[: -len("_logits")]
        logits = stored[key]  # (E+1, M, |G|, N, C)
        epochs, members, order = logits.shape[:3]
        member_osp = np.stack([invariance.mean_osp(logits[e]) for e in range(epochs)])
        member_consistent = np.array([[_consistent(z) for z in logits[e]] for e in range(epochs)])
        entry = {
            "order": order,
            "inputs": int(logits.shape[3]),
            "epochs": list(range(epochs)),
            "member_osp": member_osp.tolist(),
            "member_quantiles": {str(q): np.percentile(member_osp, q, axis=1).tolist() for q in QUANTILES},
            "ensemble_osp": {how: [float(invariance.osp(invariance.combine(logits[e], how)).mean())
                                   for e in range(epochs)] for how in invariance.COMBINATIONS},
            "member_consistent": member_consistent.tolist(),
            "consistent_quantiles": {str(q): np.percentile(member_consistent, q, axis=1).tolist()
                                     for q in QUANTILES},
            "ensemble_consistent": {how: [_consistent(invariance.combine(logits[e], how)) for e in range(epochs)]
                                    for how in invariance.COMBINATIONS},
        }
        if name == "test":
            entry["member_accuracy"] = [float(100.0 * (logits[e, :, 0].argmax(-1) == labels).mean())
                                        for e in range(epochs)]
            entry["ensemble_accuracy"] = [float(100.0 * (invariance.combine(logits[e][:, :1], "prob")[0].argmax(-1)
                                                         == labels).mean()) for e in range(epochs)]
        entry["by_size"] = _by_size(logits[-1], draws, seed)
        entry["finite"] = finite_ensemble.fit(finite_ensemble.differences(logits[-1]),
                                              finite_ensemble.sizes_up_to(members), settings["bootstrap_resamples"],
                                              settings["level"], seed)
        if f"{name}_so2_logits" in stored:
            entry["so2"] = _so2(stored[f"{name}_so2_logits"])
        out[name] = entry
    return out


def _so2(logits: np.ndarray) -> dict:
    """SO(2) fraction (mean over inputs) of every member, their quantiles and
    the ensemble's, from (M, K+1, N, C) logits."""
    members = np.array([so2_fraction(z).mean() for z in logits])
    return {"angles": int(logits.shape[1] - 1), "member": members.tolist(),
            "member_quantiles": {str(q): float(np.percentile(members, q)) for q in QUANTILES},
            "ensemble": {how: float(so2_fraction(invariance.combine(logits, how)).mean())
                         for how in invariance.COMBINATIONS}}


def _by_size(final: np.ndarray, draws: int, seed: int) -> dict:
    """OSP and orbit-consistent fraction of random sub-ensembles of each size
    at the last epoch: the mean over draws and its 5-95 % range."""
    rng = np.random.default_rng(seed)
    members = final.shape[0]
    sizes = list(range(1, members + 1))
    curves = {how: {"mean": [], "low": [], "high": []} for how in invariance.COMBINATIONS}
    consistent = {how: {"mean": [], "low": [], "high": []} for how in invariance.COMBINATIONS}
    for size in sizes:
        picks = [rng.choice(members, size=size, replace=False) for _ in range(draws if size < members else 1)]
        for how in invariance.COMBINATIONS:
            combined = [invariance.combine(final[p], how) for p in picks]
            for target, values in ((curves, np.array([invariance.osp(z).mean() for z in combined])),
                                   (consistent, np.array([_consistent(z) for z in combined]))):
                target[how]["mean"].append(float(values.mean()))
                target[how]["low"].append(float(np.percentile(values, 5)))
                target[how]["high"].append(float(np.percentile(values, 95)))
    return {"sizes": sizes, "draws": draws, **curves, "consistent": consistent}


def write_metrics(settings: dict, paths: dict[tuple[str, str], str], sets_manifest, out) -> dict:
    """Every run's curves, by group then run; ``paths`` maps (group, run) to
    its stored logits."""
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
