"""Where this reproduction differs from Loh et al. or the official recipe, as
data (``deviations.yaml``): each deviation's reason, expected effect, the
config switch that restores the paper's choice, and the protocol keys on which
a run may keep it and still be compared with the paper
(``multisym.report.comparison``). docs/deviations.md is :func:`to_markdown`
of this list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from multisym.files import atomic_write_text

DEVIATIONS_PATH = Path(__file__).with_name("deviations.yaml")
ANY = "any"  # a protocol entry whose documented value is whatever the run holds


@dataclass(frozen=True)
class Deviation:
    id: str
    title: str
    paper: str
    ours: str
    reason: str
    effect: str
    switch: str
    compared: bool = True  # whether a row that keeps it is still compared
    protocol: tuple[tuple[str, Any], ...] = field(default=())  # (key, our documented value)

    def covers(self, key: str, value: Any) -> bool:
        """Whether this deviation documents ``value`` of protocol key ``key``."""
        return any(k == key and (documented == ANY or documented == value) for k, documented in self.protocol)


def load(path: str | Path = DEVIATIONS_PATH) -> list[Deviation]:
    entries = yaml.safe_load(Path(path).read_text())["deviations"]
    out = []
    for entry in entries:
        protocol = tuple((item["key"], item["ours"]) for item in entry.pop("protocol", []))
        out.append(Deviation(**entry, protocol=protocol))
    ids = [d.id for d in out]
    if len(ids) != len(set(ids)):
        raise ValueError(f"{path}: deviation ids repeat: {sorted(i for i in ids if ids.count(i) > 1)}")
    return out


def documenting(deviations: list[Deviation], key: str, value: Any) -> Deviation | None:
    """The deviation that documents ``value`` of ``key``, if one does."""
    return next((d for d in deviations if d.covers(key, value)), None)


def to_markdown(deviations: list[Deviation]) -> str:
    lines = [
        "# Deviations from the paper",
        "",
        "<!-- generated from src/multisym/report/deviations.yaml by `multisym deviations --out "
        "docs/deviations.md`; edit the YAML, not this page -->",
        "",
        "Every place where this reproduction differs from Loh et al. or from the official code, with its "
        "reason, its expected effect and the config switch that restores the paper's choice where one exists. "
        "The paper comparison (`tables/paper_comparison.*`, [results.md](results.md#paper-comparison)) reads "
        "the same list: a row whose run differs from the paper's protocol only in a documented choice is "
        "compared and names it; any other difference makes the row \"protocol differs\". The paper's protocol "
        "per table is `src/multisym/report/paper_protocol.yaml`, a run's own is `tables/protocol.json`.",
        "",
        "| deviation | protocol keys | compared |",
        "|---|---|---|",
    ]
    for d in deviations:
        keys = ", ".join(f"`{k}`" for k, _ in d.protocol) or "–"
        compared = ("yes" if d.compared else "no") if d.protocol else "–"
        lines.append(f"| [{d.title}](#{d.id}) | {keys} | {compared} |")
    for d in deviations:
        lines += ["", f"## {d.id}", "", f"**{d.title[0].upper() + d.title[1:]}.**", "",
                  f"- **Paper / official code:** {d.paper}", f"- **Here:** {d.ours}", f"- **Why:** {d.reason}",
                  f"- **Expected effect:** {d.effect}", f"- **Restores the paper's choice:** {d.switch}"]
        if d.protocol:
            values = ", ".join(f"`{k}` = {'any value' if v == ANY else f'`{v}`'}" for k, v in d.protocol)
            verdict = "compared, naming this deviation" if d.compared else "reported as \"protocol differs\""
            lines.append(f"- **In the paper comparison:** {values}: {verdict}")
    return "\n".join(lines) + "\n"


def write(out: str | Path) -> None:
    atomic_write_text(to_markdown(load()), out)
