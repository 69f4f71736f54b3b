"""The run's protocol file, ``tables/protocol.json``: the protocol record of
the run, of each member and of each table this scale builds
(``multisym.protocol``; docs/deviations.md). A table's record holds the run's
value of every key the paper's protocol for that table names
(``paper_protocol.yaml``), so it says at a glance what a table's numbers were
measured under. The pretraining dataset's class list is the one its data
manifest records, where it records one (a drawn ImageNet-100 sample).
"""

from __future__ import annotations

import json
from pathlib import Path

from multisym.files import atomic_write_text
from multisym.protocol import MISSING_VALUE, digest
from multisym.report.paper import load_protocol


def table_records(run: dict, tables: list[str]) -> dict[str, dict]:
    """For each table, the run's value of every key the paper's protocol of that table names."""
    groups = load_protocol()
    out = {}
    for table in tables:
        keys = sorted({key for g in groups if table in g.tables for key in g.keys})
        out[table] = {key: run.get(key, MISSING_VALUE) for key in keys}
    return out


def build(spec: dict, manifest: dict | None = None) -> dict:
    """The file's content from the workflow's protocol spec and the pretraining dataset's manifest."""
    run, members = dict(spec["run"]), {k: dict(v) for k, v in spec["members"].items()}
    if manifest is not None and manifest.get("classes") is not None:
        drawn = digest(sorted(manifest["classes"]))
        run["dataset.class_list"] = drawn
        for record in members.values():
            if record.get("dataset.name") == run["dataset.name"] and "dataset.class_list" in record:
                record["dataset.class_list"] = drawn
    return {"run": run, "members": members, "tables": table_records(run, spec["tables"])}


def write(spec: dict, manifest_path: str | None, out: str) -> dict:
    manifest = json.loads(Path(manifest_path).read_text()) if manifest_path else None
    content = build(spec, manifest)
    atomic_write_text(json.dumps(content, indent=1, sort_keys=True) + "\n", out)
    return content
