"""The finite-ensemble rate on the image task (docs/method.md#the-finite-ensemble-rate):
untrained ensembles of the emergence experiment's CNN (``emergence.member_network``)
with thousands of members, where nothing needs training.

For each group of ``emergence.groups`` and each audit set, every member's
logits on the orbits of the set's first ``init_inputs`` inputs give, against
the number of members M (sizes 1, 2, 4, ... ``init_members``):

- D(M), the mean over inputs and group elements g != e of the Euclidean norm
  ||f_bar(x) - f_bar(g.x)|| of the ensemble's mean LOGITS f_bar (the output
  Gerken & Kessel's argument is about; ``finite_ensemble``), with the fitted
  log-log slope and its bootstrap CI. Independent members whose init
  distribution is invariant give a slope of -1/2.
- The spread D_x(M), the same norm between neighbouring inputs of the set
  f_bar(x) - f_bar(x'), and D / D_x: at initialisation the whole ensemble mean
  shrinks towards the constant zero logit, so D falls even where the ensemble
  is no more invariant relative to how much it varies between inputs.
- The orbit-consistent fraction (argmax of the logit mean and of the
  probability mean the same on the whole orbit; ``invariance``) of disjoint
  sub-ensembles of each size, mean and 5-95 % range, and the members' own
  quartiles. By the central limit theorem sqrt(M) f_bar tends to a Gaussian
  process whose kernel is invariant but whose draws are not, so this count
  has the same distribution at every large M instead of rising to 100 %:
  the argmax sees the direction of f_bar, which D / D_x measures, not its
  size. One ensemble's count varies widely (a random constant offset of its
  mean logits can give every input the same class), so the count is kept
  for every disjoint sub-ensemble, and only sizes with several of them say
  more than one draw does.
"""

from __future__ import annotations

import numpy as np

from multisym.data import splits
from multisym.evaluate import finite_ensemble, invariance
from multisym.evaluate.emergence import QUANTILES, member_network

CHUNK = 1024  # orbit images per forward pass


def member_logits(settings: dict, info, inputs, device) -> np.ndarray:
    """Every untrained member's logits on ``inputs`` (n, C, H, W), normalised,
    channels_last: (M, n, classes). One member at a time, built from its own
    seed, so memory holds one network."""
    import torch

    rows = []
    with torch.no_grad():
        for index in range(settings["init_members"]):
            torch.manual_seed(finite_ensemble.member_seed(settings["seed"], index))
            net = member_network(info.channels, info.image_size, info.num_classes, settings["widths"],
                                 settings["hidden"]).to(device)
            net = net.to(memory_format=torch.channels_last)
            rows.append(torch.cat([net(chunk) for chunk in inputs.split(CHUNK)]).cpu().numpy())
    return np.stack(rows).astype(np.float32)


def consistency_by_size(logits: np.ndarray, sizes: list[int], draws: int, seed: int) -> dict:
    """Orbit-consistent fraction of disjoint sub-ensembles of each size (at
    most ``draws`` each), per combination: every sub-ensemble's value, their
    mean and 5-95 % range, and how many there were (one at the largest size:
    a single draw, not a mean); and the members' own quartiles."""
    rng = np.random.default_rng(seed)
    members = len(logits)
    out = {how: {"values": [], "mean": [], "low": [], "high": []} for how in invariance.COMBINATIONS}
    out["groups"] = []
    for size in sizes:
        groups = min(members // size, draws)
        picked = rng.permutation(members)[: groups * size].reshape(groups, size)
        out["groups"].append(int(groups))
        for how in invariance.COMBINATIONS:
            values = np.array([invariance.orbit_consistent(invariance.combine(logits[p], how)).mean()
                               for p in picked])
            out[how]["values"].append(values.tolist())
            out[how]["mean"].append(float(values.mean()))
            out[how]["low"].append(float(np.percentile(values, 5)))
            out[how]["high"].append(float(np.percentile(values, 95)))
    each = np.array([invariance.orbit_consistent(z).mean() for z in logits])
    out["member_quantiles"] = {str(q): float(np.percentile(each, q)) for q in QUANTILES}
    return out


def set_metrics(logits: np.ndarray, settings: dict, sizes: list[int]) -> dict:
    """One group's measures on one set from orbit logits (M, |G|, n, C)."""
    fits = finite_ensemble.initialisation_fits(logits, sizes, settings["bootstrap_resamples"], settings["level"],
                                               settings["seed"])
    return {**fits, "consistent": consistency_by_size(logits, sizes, settings["subensemble_draws"], settings["seed"])}


def initialisation(settings: dict, groups: list[str], data_manifest, sets_path, sets_manifest, device="auto",
                   threads=None) -> dict:
    """The untrained ensembles' measures for every group and audit set."""
    import torch

    from multisym.evaluate.audit import load_sets
    from multisym.runtime import select_device, set_threads
    from multisym.symmetries import get_group

    set_threads(threads)
    target = select_device(device)
    info = splits.info(splits.read_manifest(data_manifest))
    sets, _, manifest = load_sets(sets_path, sets_manifest)
    sets = {name: torch.from_numpy(x[: settings["init_inputs"]]) for name, x in sets.items()}
    mean = torch.tensor(info.mean).view(1, -1, 1, 1)
    std = torch.tensor(info.std).view(1, -1, 1, 1)
    sizes = finite_ensemble.sizes_up_to(settings["init_members"])
    result = {"dataset": manifest["dataset"], "stand_in": manifest["stand_in"], "members": settings["init_members"],
              "inputs": {name: len(x) for name, x in sets.items()}, "sizes": sizes, "level": settings["level"],
              "settings": settings, "groups": {}}
    # every group's orbit of every set in one batch: each member is built once
    orbits = {(name, set_name): group.orbit(x)[0] for name, group in ((n, get_group(n)) for n in groups)
              for set_name, x in sets.items()}
    inputs = ((torch.cat(list(orbits.values())) - mean) / std).to(target).contiguous(memory_format=torch.channels_last)
    logits = member_logits(settings, info, inputs, target)
    first = 0
    for (name, set_name), orbit in orbits.items():
        order = len(orbit) // len(sets[set_name])
        part = logits[:, first:first + len(orbit)].reshape(len(logits), order, len(sets[set_name]), -1)
        first += len(orbit)
        entry = result["groups"].setdefault(name, {"order": order, "sets": {}})
        entry["sets"][set_name] = set_metrics(part, settings, sizes)
    return result
