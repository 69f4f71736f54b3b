"""Where every file of a scale lives, shared by the Snakefile and the CLI.

    results/<name>/data/dataset.npz, manifest.json
    results/<name>/members/<folder>/model.pt, epochs.csv   (+ state.pt, run.json)
    results/<name>/features/<folder>.npz                    (SSL members)
    results/<name>/adapt/<folder>/lr<lr>/..., model.pt, choice.json  (adapt mode finetune)
    results/<name>/finetune/<folder>/model.pt, epochs.csv    (SSL-FT members)
    results/<name>/logits/<folder>.npz                      (every member; val + test)
    results/<name>/shift/sets.npz, manifest.json, logits/<folder>.npz, metrics.json
    results/<name>/metrics/members.json, dataset_summary.json
    results/<name>/audit/sets.npz, manifest.json, outputs/<folder>.npz, metrics.json,
                         ood/<key>/dataset.npz, manifest.json (audit.ood_datasets)
    results/<name>/emergence/<group>/<run>.npz, metrics.json, initialisation.json
    results/<name>/emergence/ising/<architecture>.json
    results/<name>/ensembles/<pool>_<strategy>.json, .resamples.npz
    results/<name>/tables/<table>.csv, .md, .tex; paper_comparison.csv, .md; protocol.json; claims.csv, .md, .html
    results/<name>/provenance.html (commit, versions, targets, member manifest: the report's page)
    results/<name>/checksums.json  (sha256 of every result file, for `multisym verify`)
    results/<name>/figures/<figure>.pdf, .png
    results/<name>/transfer/<key>/...   (a transfer dataset: data, features, adapt,
                                         logits, metrics, ensembles as above)
    logs/<name>/<step>/<thing>.log
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Layout:
    name: str
    results: str = "results"
    logs: str = "logs"

    @property
    def root(self) -> str:
        return f"{self.results}/{self.name}"

    @property
    def resolved_config(self) -> str:
        return f"{self.root}/config.json"

    @property
    def dataset(self) -> str:
        return f"{self.root}/data/dataset.npz"

    @property
    def manifest(self) -> str:
        return f"{self.root}/data/manifest.json"

    def member_dir(self, folder: str) -> str:
        return f"{self.root}/members/{folder}"

    def member_model(self, folder: str) -> str:
        return f"{self.member_dir(folder)}/model.pt"

    def member_epochs(self, folder: str) -> str:
        return f"{self.member_dir(folder)}/epochs.csv"

    def features(self, folder: str) -> str:
        return f"{self.root}/features/{folder}.npz"

    def logits(self, folder: str) -> str:
        return f"{self.root}/logits/{folder}.npz"

    def probe_summary(self, folder: str) -> str:
        return f"{self.root}/logits/{folder}.probe.json"

    def probe_params(self, folder: str) -> str:
        return f"{self.root}/logits/{folder}.probe.npz"

    def adapt_dir(self, folder: str) -> str:
        return f"{self.root}/adapt/{folder}"

    def adapt_candidate(self, folder: str, lr: str, name: str) -> str:
        return f"{self.adapt_dir(folder)}/lr{lr}/{name}"

    def finetune_dir(self, folder: str) -> str:
        return f"{self.root}/finetune/{folder}"

    @property
    def shift_data(self) -> str:
        return f"{self.root}/shift/sets.npz"

    @property
    def shift_manifest(self) -> str:
        return f"{self.root}/shift/manifest.json"

    def shift_logits(self, folder: str) -> str:
        return f"{self.root}/shift/logits/{folder}.npz"

    @property
    def shift_metrics(self) -> str:
        return f"{self.root}/shift/metrics.json"

    @property
    def audit_sets(self) -> str:
        return f"{self.root}/audit/sets.npz"

    @property
    def audit_manifest(self) -> str:
        return f"{self.root}/audit/manifest.json"

    def audit_ood(self, key: str, name: str) -> str:
        return f"{self.root}/audit/ood/{key}/{name}"

    def audit_outputs(self, folder: str) -> str:
        return f"{self.root}/audit/outputs/{folder}.npz"

    @property
    def audit_metrics(self) -> str:
        return f"{self.root}/audit/metrics.json"

    def emergence_logits(self, group: str, run: str) -> str:
        return f"{self.root}/emergence/{group}/{run}.npz"

    @property
    def emergence_metrics(self) -> str:
        return f"{self.root}/emergence/metrics.json"

    @property
    def emergence_init(self) -> str:
        """The untrained image ensembles' finite-ensemble study, every group."""
        return f"{self.root}/emergence/initialisation.json"

    def ising(self, architecture: str) -> str:
        """The Ising study of one architecture: trained ensembles (every width,
        both runs) and untrained ones (the finite-ensemble slopes)."""
        return f"{self.root}/emergence/ising/{architecture}.json"

    @property
    def member_metrics(self) -> str:
        return f"{self.root}/metrics/members.json"

    @property
    def dataset_summary(self) -> str:
        return f"{self.root}/metrics/dataset_summary.json"

    def ensemble(self, pool: str, strategy: str) -> str:
        return f"{self.root}/ensembles/{pool}_{strategy}.json"

    def ensemble_resamples(self, pool: str, strategy: str) -> str:
        """The ensembles' metrics on every bootstrap resample (multisym.resamples)."""
        return f"{self.root}/ensembles/{pool}_{strategy}.resamples.npz"

    def table(self, table: str, ext: str) -> str:
        return f"{self.root}/tables/{table}.{ext}"

    @property
    def provenance_page(self) -> str:
        return f"{self.root}/provenance.html"

    @property
    def checksums(self) -> str:
        return f"{self.root}/checksums.json"

    @property
    def protocol(self) -> str:
        """The run's protocol record: the run's, each member's and each table's."""
        return f"{self.root}/tables/protocol.json"

    def comparison(self, ext: str) -> str:
        return f"{self.root}/tables/paper_comparison.{ext}"

    def figure(self, figure: str, ext: str) -> str:
        return f"{self.root}/figures/{figure}.{ext}"

    def transfer(self, key: str) -> "Layout":
        """The same layout for a transfer dataset, under results/<name>/transfer/<key>
        (``key`` may be a wildcard pattern such as ``{tdata}``)."""
        return Layout(f"{self.name}/transfer/{key}", self.results, self.logs)

    def log(self, step: str, thing: str) -> str:
        return f"{self.logs}/{self.name}/{step}/{thing}.log"
