"""Where every file of a scale lives, shared by the Snakefile and the CLI.

    results/<name>/data/dataset.npz, manifest.json
    results/<name>/members/<folder>/model.pt, epochs.csv   (+ state.pt, run.json)
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

    def log(self, step: str, thing: str) -> str:
        return f"{self.logs}/{self.name}/{step}/{thing}.log"
