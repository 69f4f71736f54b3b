"""The member table: every ensemble member the config defines, as data.

A member is one pretrained (or supervised) network. Its mode is one of

- ``eq``: SimCLR plus an equivariance head for one symmetry axis
  (docs/method.md#eq-members),
- ``inv``: SimCLR whose views get the axis's group elements
  (docs/method.md#inv-members),
- ``base``: plain SimCLR,
- ``sup``: supervised from scratch (the paper's supervised deep ensemble).

Each member's settings are exactly the resolved config keys that change its
training, plus the version of the training stage (``stages.py``), so its run
folder ``<id>-<hash>`` (a readable id plus the first hex digits of the
settings' sha256) changes whenever one of them does, and two different runs
never share a folder: a new training version trains new members beside the
old ones instead of overwriting them. Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from multisym.scale_checks import POOL_CLASSES
from multisym.stages import stage_version

MODES = ("eq", "inv", "base", "sup")
HASH_LENGTH = 8


class _KeyedBySettings:
    """Run folder = readable id + the first hex digits of the settings' hash."""

    @property
    def settings_hash(self) -> str:
        return settings_hash(self.settings)

    @property
    def folder(self) -> str:
        return f"{self.id}-{self.settings_hash[:HASH_LENGTH]}"


@dataclass(frozen=True)
class Member(_KeyedBySettings):
    mode: str
    seed: int
    axis: str | None
    settings: dict[str, Any] = field(compare=False, hash=False, repr=False)

    @property
    def id(self) -> str:
        parts = [self.mode] + ([self.axis] if self.axis else []) + [f"s{self.seed}"]
        return "-".join(parts)

    @property
    def is_ssl(self) -> bool:
        return self.mode != "sup"

    @property
    def imported(self) -> bool:
        """Read from an existing checkpoint instead of trained."""
        return "imported" in self.settings


def settings_hash(settings: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of ``settings`` (sorted keys, no spaces)."""
    canonical = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def member_settings(config: dict, mode: str, seed: int, axis: str | None) -> dict:
    """The resolved settings that define one member's training run."""
    settings: dict[str, Any] = {
        "mode": mode,
        "seed": seed,
        "dataset": config["dataset"],
        "backbone": config["backbone"],
        "stage_version": stage_version("pretrain"),
    }
    if mode == "sup":
        settings["supervised"] = config["supervised"]
        return settings
    settings["pretrain"] = config["pretrain"]
    settings["views"] = config["views"]
    if mode == "eq":
        settings["axis"] = axis
        settings["lambda"] = config["symmetries"][axis]["lambda"]
        settings["small_crop"] = config["small_crop"]
    elif mode == "inv":
        settings["axis"] = axis
        settings["p"] = config["symmetries"][axis]["p"]
    return settings


def member_table(config: dict) -> list[Member]:
    """All members of a resolved config, in a stable order (mode, axis, seed),
    then the imported ones in config order."""
    seeds = config["members"]["seeds"]
    members = []
    for mode in MODES:
        axes = config["members"]["axes"] if mode in ("eq", "inv") else [None]
        for axis in axes:
            for seed in seeds.get(mode, []):
                settings = member_settings(config, mode, seed, axis)
                members.append(Member(mode, seed, axis, settings))
    for entry in config["members"]["imported"]:
        settings = {
            "mode": entry["mode"],
            "seed": entry["seed"],
            "axis": entry["axis"],
            "backbone": config["backbone"],
            "imported": {"path": entry["path"], "sha256": entry["sha256"]},
        }
        members.append(Member(entry["mode"], entry["seed"], entry["axis"], settings))
    return members


@dataclass(frozen=True)
class FinetunedMember(_KeyedBySettings):
    """One fine-tuning of a Base member's whole network (the SSL-FT pool,
    docs/method.md#fine-tuning):
    its settings are the fine-tuning recipe, its seed and the base member's
    settings hash, so retraining the base also redoes its fine-tunings."""

    base: Member
    seed: int
    settings: dict[str, Any] = field(compare=False, hash=False, repr=False)
    mode = "ssl_ft"

    @property
    def id(self) -> str:
        return f"ft-{self.base.id}-f{self.seed}"


def finetuned_members(config: dict, members: list[Member]) -> list[FinetunedMember]:
    spec = config["finetune"]
    if not spec["seeds"]:
        return []
    base = next(m for m in members if m.mode == "base" and m.seed == spec["base_seed"] and not m.imported)
    recipe = {k: v for k, v in spec.items() if k not in ("seeds", "base_seed")}
    return [
        FinetunedMember(base, seed, {**recipe, "seed": seed, "base": base.folder,
                                     "stage_version": stage_version("finetune"),
                                     "base_settings_hash": base.settings_hash,
                                     "backbone": base.settings["backbone"]})
        for seed in spec["seeds"]
    ]


def pools(config: dict, members: list[Member], finetuned: list[FinetunedMember]) -> dict[str, dict[str, list]]:
    """Each configured ensemble pool as {hypothesis class: members}, classes in
    the order of the paper's alternating compositions (Eq first)."""
    axis = config["ensembles"]["axis"]
    by_class: dict[str, list] = {
        "eq": [m for m in members if m.mode == "eq" and m.axis == axis],
        "inv": [m for m in members if m.mode == "inv" and m.axis == axis],
        "base": [m for m in members if m.mode == "base"],
        "sup": [m for m in members if m.mode == "sup"],
        "ssl_ft": list(finetuned),
    }
    return {pool: {cls: by_class[cls] for cls in POOL_CLASSES[pool]} for pool in config["ensembles"]["pools"]}


def axis_pools(config: dict, members: list[Member]) -> dict[str, dict[str, list]]:
    """With several symmetry axes (Tables 6 and 10): per axis with Eq and Inv
    members, its Eq pool ``eq_<axis>`` and Eq+Inv pool ``eq_inv_<axis>``, and
    ``eq_inv_all``, the Eq+Inv pool over every axis (greedy only)."""
    axes = config["members"]["axes"]
    if len(axes) < 2:
        return {}
    by_axis = {a: {mode: [m for m in members if m.mode == mode and m.axis == a] for mode in ("eq", "inv")}
               for a in axes}
    complete = [a for a in axes if by_axis[a]["eq"] and by_axis[a]["inv"]]
    out: dict[str, dict[str, list]] = {}
    for a in complete:
        out[f"eq_{a}"] = {"eq": by_axis[a]["eq"]}
        out[f"eq_inv_{a}"] = {"eq": by_axis[a]["eq"], "inv": by_axis[a]["inv"]}
    if len(complete) >= 2:
        out["eq_inv_all"] = {mode: [m for a in complete for m in by_axis[a][mode]] for mode in ("eq", "inv")}
    return out


def transfer_members(config: dict, members: list[Member]) -> list[Member]:
    """The members adapted to every transfer dataset: Eq and Inv of the
    ensembles axis (docs/method.md#transfer-and-distribution-shift), trained or
    imported."""
    axis = config["ensembles"]["axis"]
    return [m for m in members if m.mode in ("eq", "inv") and m.axis == axis]


def by_folder(members: list) -> dict[str, Any]:
    return {m.folder: m for m in members}


def adaptation_candidates(config: dict, member: Member, protocol: dict | None = None) -> list[dict]:
    """Fine-tuning settings of each learning rate of an SSL member's grid
    (adapt mode finetune, or a transfer dataset's ``protocol``); the seed is
    the member's own."""
    spec = protocol or config["adapt"]["finetune"]
    optimizer = {"name": "sgd", "momentum": spec["momentum"], "weight_decay": spec["weight_decay"],
                 "warmup_epochs": spec["warmup_epochs"], "final_lr_ratio": spec["final_lr_ratio"],
                 "lars_eta": 0.001}
    common = {key: spec[key] for key in ("epochs", "batch_size", "train_augment", "crop_scale", "crop_size", "flip_p")
              if key in spec}  # crop_size has no default: left out, no hash changes
    return [
        {**common, "optimizer": {**optimizer, "lr": lr}, "seed": member.seed, "member": member.folder,
         "stage_version": stage_version("finetune"),
         "selection_split": config["adapt"]["selection_split"], "backbone": member.settings["backbone"]}
        for lr in spec["lr"][member.mode]
    ]
