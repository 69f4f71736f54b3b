"""The provenance page of the HTML report (``snakemake --report``).

One self-contained HTML file: the git commit and whether the tree was clean,
package versions, every target of the paper with its status (built, or why
the config cannot feed it) and its title in the target registry
(``multisym.targets``), the member manifest (run folder, sha256 of the
weights, where and when it was trained, SLURM job id, device, training time)
and the resolved config. Snakemake's report adds each job's run time.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from multisym import provenance
from multisym.files import atomic_write_text, sha256_file
from multisym.report import pages
from multisym.targets import TARGETS


def _training_seconds(epochs_csv: Path) -> float | None:
    if not epochs_csv.is_file():
        return None
    with open(epochs_csv, newline="") as handle:
        seconds = [float(row["seconds"]) for row in csv.DictReader(handle) if row.get("seconds")]
    return round(sum(seconds), 1) if seconds else None


def member_row(member_id: str, folder: Path) -> list:
    """id, folder, sha256 of model.pt, git commit, SLURM job, device, started, training seconds."""
    run = json.loads((folder / "run.json").read_text()) if (folder / "run.json").is_file() else {}
    job = run.get("slurm_job_id")
    if job is None and (folder / "slurm_job.json").is_file():
        job = json.loads((folder / "slurm_job.json").read_text()).get("job_id")
    imported = folder / "import.json"
    if imported.is_file():
        run = {"git": {"commit": "imported from " + json.loads(imported.read_text())["source"]}}
    model = folder / "model.pt"
    return [member_id, folder.name, sha256_file(model) if model.is_file() else "missing",
            (run.get("git") or {}).get("commit"), job, run.get("device"), run.get("started"),
            _training_seconds(folder / "epochs.csv")]


def _title(target: str) -> str:
    """A target's title in the registry, its numbers named by their config keys."""
    if target not in TARGETS:
        return ""
    return TARGETS[target].title.format(m="ensembles.diversity_size", axes_size="ensembles.axes_size")


def write(spec: dict, members: dict[str, str], config: dict, out: str) -> None:
    """``spec``: scale name and the targets with their status; ``members``: id -> run folder;
    ``config``: the resolved config (without its site sections)."""
    git, versions = provenance.git_state(), provenance.versions()
    member_rows = [member_row(m, Path(f)) for m, f in members.items()]
    atomic_write_text(pages.page(
        f"Provenance of scale {spec['name']}",
        pages.heading("Code"),
        pages.table(["git commit", "tree clean"], [[git["commit"], git["clean"]]]),
        pages.table(["package", "version"], sorted(versions.items())),
        pages.heading("Targets"),
        pages.table(["target", "status", "reason", "title"],
                    [[t["target"], t["status"], t["reason"], _title(t["target"])] for t in spec["targets"]]),
        pages.heading("Members"),
        pages.table(["member", "run folder", "sha256 of model.pt", "git commit", "SLURM job", "device", "started",
                     "training seconds"], member_rows),
        pages.heading("Resolved config (site sections left out: cluster, gpu_jobs, review)"),
        pages.preformatted(json.dumps(config, indent=2, sort_keys=True)),
    ), out)
