"""A run's checksum ledger and `verify`: changed results, prepared arrays and imported checkpoints."""

from __future__ import annotations

import json

import numpy as np

from multisym.report import checksums
from multisym.data import splits
from multisym import files
from multisym.files import write_npz


def digits_run(tmp_path):
    root = tmp_path / "results" / "demo"
    spec = {"name": "digits", "image_size": 8, "channels": None, "root": None, "classes": None,
            "checksum": "listing", "splits": {"val": 0.15, "test": 0.15, "seed": 0}}
    splits.prepare(spec, root / "data" / "dataset.npz", root / "data" / "manifest.json")
    (root / "tables").mkdir()
    (root / "tables" / "table1.csv").write_text("table,row\n")
    (root / "members" / "m").mkdir(parents=True)
    (root / "members" / "m" / "state.pt").write_bytes(b"rolling")
    checksums.write_ledger(root, root / checksums.LEDGER)
    return root


def test_a_fresh_run_verifies_and_skips_training_state(tmp_path):
    root = digits_run(tmp_path)
    recorded = json.loads((root / checksums.LEDGER).read_text())["files"]
    assert set(recorded) == {"data/dataset.npz", "data/manifest.json", "tables/table1.csv"}
    assert checksums.verify(root) == []


def test_changed_and_missing_results_are_named(tmp_path):
    root = digits_run(tmp_path)
    (root / "tables" / "table1.csv").write_text("table,row\nx,y\n")
    (root / "data" / "manifest.json").unlink()
    problems = checksums.verify(root)
    assert any("table1.csv: changed" in p for p in problems)
    assert any("manifest.json: missing" in p for p in problems)


def test_a_prepared_array_that_no_longer_matches_its_manifest(tmp_path):
    root = digits_run(tmp_path)
    path = root / "data" / "dataset.npz"
    with np.load(path) as stored:
        arrays = {k: stored[k] for k in stored.files}
    arrays["labels"][0] = (arrays["labels"][0] + 1) % 10
    write_npz(path, **arrays)
    problems = checksums.verify(root)
    assert any("does not match the sha256" in p for p in problems)


def test_an_imported_checkpoint_that_changed(tmp_path):
    root = digits_run(tmp_path)
    source = tmp_path / "ckpt.pth"
    source.write_bytes(b"weights")
    record = root / "members" / "base-s9" / "import.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"source": str(source), "sha256": files.sha256_file(source)}))
    checksums.write_ledger(root, root / checksums.LEDGER)
    assert checksums.verify(root) == []
    source.write_bytes(b"other weights")
    assert any("changed since it was imported" in p for p in checksums.verify(root))
    assert checksums.verify(tmp_path / "nowhere")[0].endswith(
        "build the run's tables and figures first (snakemake figures)")
