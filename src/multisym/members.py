"""The member table: every ensemble member the config defines, as data.

A member is one pretrained (or supervised) network. Its mode is one of

- ``eq``: SimCLR plus an equivariance head for one symmetry axis (§2.4),
- ``inv``: SimCLR whose views get the axis's group elements (§2.5),
- ``base``: plain SimCLR,
- ``sup``: supervised from scratch (the paper's supervised deep ensemble).

Each member's settings are exactly the resolved config keys that change its
training, so its run folder ``<id>-<hash>`` (a readable id plus the first
hex digits of the settings' sha256) changes whenever one of them does, and two
different runs never share a folder. Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

MODES = ("eq", "inv", "base", "sup")
HASH_LENGTH = 8


@dataclass(frozen=True)
class Member:
    mode: str
    seed: int
    axis: str | None
    settings: dict[str, Any] = field(compare=False, hash=False, repr=False)

    @property
    def id(self) -> str:
        parts = [self.mode] + ([self.axis] if self.axis else []) + [f"s{self.seed}"]
        return "-".join(parts)

    @property
    def settings_hash(self) -> str:
        return settings_hash(self.settings)

    @property
    def folder(self) -> str:
        """Run folder name: readable id plus the hash of what defines the run."""
        return f"{self.id}-{self.settings_hash[:HASH_LENGTH]}"

    @property
    def is_ssl(self) -> bool:
        return self.mode != "sup"


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
    """All members of a resolved config, in a stable order (mode, axis, seed)."""
    seeds = config["members"]["seeds"]
    members = []
    for mode in MODES:
        axes = config["members"]["axes"] if mode in ("eq", "inv") else [None]
        for axis in axes:
            for seed in seeds.get(mode, []):
                settings = member_settings(config, mode, seed, axis)
                members.append(Member(mode, seed, axis, settings))
    return members


def by_folder(members: list[Member]) -> dict[str, Member]:
    return {m.folder: m for m in members}
