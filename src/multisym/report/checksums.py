"""A run's checksums, and the check of a run against them (README "Reviewing").

``write_ledger`` records the sha256 of every file under ``results/<name>``
once the tables and figures are built (``checksums.json``). ``verify`` then
checks, without running anything:

- every file of the ledger is present and unchanged;
- every prepared array (dataset, transfer, shift and audit sets) matches the
  sha256 in its manifest;
- every dataset root still holds the file listing its manifest recorded;
- every imported member's source checkpoint still has its recorded sha256.

Rolling training state, locks and SLURM bookkeeping are not results and are
left out of the ledger.
"""

from __future__ import annotations

import json
from pathlib import Path

from multisym.data import splits
from multisym.files import atomic_write_text, sha256_file

LEDGER = "checksums.json"
SKIPPED_NAMES = {LEDGER, "state.pt", "slurm_job.json"}
SKIPPED_SUFFIXES = (".lock", ".tmp")
PREPARED = {"data/manifest.json": ("data/dataset.npz", "prepare_data"),
            "shift/manifest.json": ("shift/sets.npz", "prepare_shift"),
            "audit/manifest.json": ("audit/sets.npz", "prepare_audit")}


def _recorded(path: Path, root: Path) -> bool:
    relative = path.relative_to(root)
    return (path.is_file() and path.name not in SKIPPED_NAMES and not path.name.endswith(SKIPPED_SUFFIXES)
            and "slurm" not in relative.parts[:-1])


def ledger(root: str | Path) -> dict[str, str]:
    """sha256 of every result file under ``root``, keyed by its relative path."""
    root = Path(root)
    return {str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*")) if _recorded(p, root)}


def write_ledger(root: str | Path, out: str | Path) -> int:
    files = ledger(root)
    atomic_write_text(json.dumps({"files": files}, indent=1, sort_keys=True) + "\n", out)
    return len(files)


def _prepared_arrays(root: Path) -> list[str]:
    problems = []
    manifests = [root / m for m in PREPARED] + sorted(root.glob("transfer/*/data/manifest.json")) + sorted(
        root.glob("audit/ood/*/manifest.json"))
    for manifest_path in manifests:
        if not manifest_path.is_file():
            continue
        relative = str(manifest_path.relative_to(root))
        array_file, step = PREPARED.get(relative, (None, "prepare_data"))
        array_path = root / array_file if array_file else manifest_path.with_name("dataset.npz")
        manifest = splits.read_manifest(manifest_path)
        try:
            splits.read_verified(array_path, manifest, manifest_path, step)
        except splits.DataError as error:
            problems.append(str(error))
        if "files" in manifest and "root" in manifest:
            problems += _dataset_root(manifest, manifest_path)
    return problems


def _dataset_root(manifest: dict, manifest_path: Path) -> list[str]:
    """The dataset root still lists the files (paths and sizes) it was prepared from."""
    from multisym.data.datasets import open_sources

    try:
        sources = open_sources(manifest["settings"])
    except Exception as error:  # a moved or missing root is a finding, not a crash
        return [f"{manifest_path}: its dataset root cannot be read ({error})"]
    files = sorted({Path(f) for src in sources.values() for f in [*src.files, *src.metadata]})
    found = splits.files_digest(files, "content_sha256" in manifest["files"])
    if found != manifest["files"]:
        return [f"{manifest_path}: the files under {manifest['root']} differ from those it was prepared from "
                f"(recorded {manifest['files']}, found {found})"]
    return []


def _imported_members(root: Path) -> list[str]:
    problems = []
    for record_path in sorted(root.glob("members/*/import.json")):
        record = json.loads(record_path.read_text())
        source = Path(record["source"])
        if not source.is_file():
            problems.append(f"{record_path}: its source checkpoint {source} is missing")
        elif sha256_file(source) != record["sha256"]:
            problems.append(f"{record_path}: its source checkpoint {source} changed since it was imported")
    return problems


def verify(root: str | Path) -> list[str]:
    """Every problem found in a run folder (an empty list when it verifies)."""
    root = Path(root)
    ledger_path = root / LEDGER
    if not ledger_path.is_file():
        return [f"{ledger_path} is missing: build the run's tables and figures first (snakemake figures)"]
    recorded = json.loads(ledger_path.read_text())["files"]
    problems = []
    for relative, expected in recorded.items():
        path = root / relative
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif sha256_file(path) != expected:
            problems.append(f"{path}: changed since the run recorded it")
    return problems + _prepared_arrays(root) + _imported_members(root)
