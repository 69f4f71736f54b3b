"""The plan of one scale: from its resolved config, every member, pool and
dataset the workflow builds, the files each job reads and the spec its
command gets (docs/workflow.md).

The Snakefile hands these methods to its rules: an input or params function
receives the job's wildcards (any mapping with ``get``), so one method serves
a stage's rule on the pretraining dataset and its reuse on a transfer dataset
(wildcard ``tdata``). Specs are plain data; the workflow writes them as JSON.
Imported while planning: nothing here imports torch.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

from multisym.errors import ConfigError

from multisym.layout import Layout
from multisym.members import (
    adaptation_candidates,
    axis_pools,
    by_folder,
    finetuned_members,
    member_table,
    pools,
    transfer_members,
)

Wildcards = Mapping[str, str]
STRATEGIES = ("greedy", "random")
EMERGENCE_RUNS = ("augmented", "control")
# The emergence keys one image run reads (multisym.evaluate.emergence.train)
EMERGENCE_RUN_KEYS = ("members", "epochs", "train_images", "widths", "hidden", "batch_size", "lr", "seed",
                      "so2_angles")
# The cluster site values a probe on the GPU asks the SLURM executor for, by
# the executor's resource names.
PROBE_SITE = {"partition": "slurm_partition", "account": "slurm_account", "qos": "qos",
              "constraint": "constraint", "gpu_model": "gpu_model"}


def alternatives(names) -> str:
    """A wildcard regex matching exactly these names (nothing when there are
    none: an empty pattern would match every string)."""
    names = list(names)
    return "|".join(re.escape(name) for name in names) if names else "(?!)"


def _without_jobs(emergence: dict) -> dict:
    """The emergence section without the resources of its jobs (job, ising.job)."""
    ising = {k: v for k, v in emergence["ising"].items() if k != "job"}
    return {**{k: v for k, v in emergence.items() if k != "job"}, "ising": ising}


def _check_imported_files(config: dict) -> None:
    """Each imported member's checkpoint is a file, named by its key before
    anything is planned (Snakemake would name only the missing path)."""
    for index, entry in enumerate(config["members"]["imported"]):
        if not Path(entry["path"]).expanduser().is_file():
            raise ConfigError(
                f"config key 'members.imported[{index}].path': {entry['path']} is not a file; point it at "
                "the member's checkpoint (the official release format or a torchvision state dict)"
            )


class Plan:
    """What a scale's workflow runs, for the rules' input, params and
    resource functions; planned from a resolved config."""

    def __init__(self, config: dict):
        _check_imported_files(config)
        self.config = config
        self.layout = Layout(config["name"])
        self.members = member_table(config)
        self.finetuned = finetuned_members(config, self.members)
        self.pools = pools(config, self.members, self.finetuned)
        self.axis_pools = axis_pools(config, self.members)
        self.all_pools = {**self.pools, **self.axis_pools}
        self.member_by_folder = by_folder(self.members)
        self.finetuned_by_folder = by_folder(self.finetuned)
        self.adapt_mode = config["adapt"]["mode"]
        self.transfer = {entry["key"]: entry for entry in config["transfer"]["datasets"]}
        self.transfer_members = transfer_members(config, self.members)
        self.transfer_pools = [pool for pool in ("eq", "inv", "eq_inv") if pool in self.pools]
        self.audit_ood = {entry["key"]: entry for entry in config["audit"]["ood_datasets"]}

    # ------------------------------------------------------------ wildcards
    def wildcard_patterns(self) -> dict[str, str]:
        """Each wildcard's values at this scale (probed, tuned: the SSL members
        adapted by a linear probe, by fine-tuning: by adapt.mode)."""
        members, transfer = self.members, self.transfer
        return {
            "member": alternatives(m.folder for m in members if not m.imported),
            "imported": alternatives(m.folder for m in members if m.imported),
            "probed": alternatives(m.folder for m in members if m.is_ssl and self.adapt_mode == "probe"),
            "tuned": alternatives(m.folder for m in members if m.is_ssl and self.adapt_mode == "finetune"),
            "sup_member": alternatives(m.folder for m in members if not m.is_ssl),
            "finetuned": alternatives(self.finetuned_by_folder),
            "evaluated": alternatives([*self.member_by_folder, *self.finetuned_by_folder]),
            "pool": alternatives(self.all_pools),
            "strategy": alternatives((*STRATEGIES, "all")),
            "lr": "[0-9.e+-]+",
            "tdata": alternatives(transfer),
            "tprobe": alternatives(k for k, t in transfer.items() if t["mode"] == "probe"),
            "tfine": alternatives(k for k, t in transfer.items() if t["mode"] == "finetune"),
            "teval": alternatives(k for k, t in transfer.items() if t["mode"] == "evaluate"),
            "tmember": alternatives(m.folder for m in self.transfer_members),
            "ood": alternatives(self.audit_ood),
            "run": alternatives(EMERGENCE_RUNS),
            "architecture": alternatives(self.config["emergence"]["ising"]["architectures"]),
            "egroup": alternatives(self.config["emergence"]["groups"]),
        }

    def layout_of(self, wildcards: Wildcards) -> Layout:
        """The pretraining dataset's layout, or the transfer dataset's of a job with ``tdata``."""
        key = wildcards.get("tdata")
        return self.layout.transfer(key) if key else self.layout

    def member_of(self, wildcards: Wildcards):
        """The member (or fine-tuned member) a job trains, adapts or evaluates, if any."""
        for value in wildcards.values():
            member = self.member_by_folder.get(value) or self.finetuned_by_folder.get(value)
            if member is not None:
                return member
        return None

    def evaluated_members(self) -> list:
        """Every member with logits, in table order: pretrained, then fine-tuned."""
        return [*self.members, *self.finetuned]

    def pool_members(self, pool: str) -> list[tuple[str, Any]]:
        return [(cls, m) for cls, members in self.all_pools[pool].items() for m in members]

    # ------------------------------------------------------ job resources
    @property
    def loading(self) -> dict:
        """How a job that loads a split from a root holds it (streaming.in_memory_gib);
        a resource, so that changing it reruns nothing."""
        return {"in_memory_gib": self.config["streaming"]["in_memory_gib"]}

    def gpu_job_resources(self, step: str, executor) -> dict:
        """What one training job of ``step`` asks a cluster for (shown by a
        dry-run), the site settings its waiter submits with (the cluster
        section as resources cluster_<key>: the slurm profile's set-resources
        override them), and the review tier that may forbid it. Resources,
        unlike params, never trigger a rerun: moving to a cluster or reviewing
        must not retrain anything. ``executor``: the resource naming
        Snakemake's executor."""
        config, job = self.config, self.config["gpu_jobs"][step]
        return {
            **self.loading,
            "gpu_nodes": job["nodes"],
            "gpus_per_node": job["gpus_per_node"],
            "gpu_cpus_per_task": job["cpus_per_task"],
            "gpu_mem_gb": job["mem_gb"],
            "gpu_time_limit_min": job["time_limit_min"],
            "snakemake_executor": executor,
            **{f"cluster_{key}": "" if value is None else value for key, value in config["cluster"].items()},
            "review_tier": config["review"]["tier"],
            "keep_every": config["gpu_jobs"]["keep_every"] if step == "pretrain" else 0,
            "decode": config["gpu_jobs"]["decode"] if step == "pretrain" else "cpu",
            "cuda_graphs": "on" if config["gpu_jobs"]["cuda_graphs"] else "off",
        }

    @property
    def gpu_job_shell(self) -> str:
        """The options that hand those resources to a GPU waiter."""
        return (
            " --gpu-nodes {resources.gpu_nodes} --gpus-per-node {resources.gpus_per_node}"
            " --gpu-cpus-per-task {resources.gpu_cpus_per_task} --gpu-mem-gb {resources.gpu_mem_gb}"
            " --gpu-time-limit-min {resources.gpu_time_limit_min} --in-memory-gib {resources.in_memory_gib}"
            " --snakemake-executor {resources.snakemake_executor}"
            + "".join(f" --cluster {key}={{resources.cluster_{key}:q}}" for key in self.config["cluster"])
            + " --review-tier {resources.review_tier}"
        )

    def gpu_site(self, gpus: int) -> dict:
        """What a job run by the SLURM executor asks for to get ``gpus`` GPUs:
        the count, on the cluster section's partition, account, QoS, constraint
        and GPU model (the site values of GPU training jobs); nothing without a
        GPU, so the profile's defaults stand."""
        if not gpus:
            return {}
        site = self.config["cluster"]
        return {"gpu": gpus, **{name: site[key] for key, name in PROBE_SITE.items() if site[key]}}

    def probe_gpu_resources(self) -> dict:
        """A probe on the GPU asks for one; a probe on the CPU adds nothing."""
        return self.gpu_site(1 if self.config["probe"]["device"] == "cuda" else 0)

    def emergence_job(self, ising: bool = False) -> dict:
        """The job section of the image runs (emergence.job) or of the Ising
        jobs (emergence.ising.job)."""
        emergence = self.config["emergence"]
        return (emergence["ising"] if ising else emergence)["job"]

    def emergence_job_resources(self, ising: bool = False) -> dict:
        """What one job of the emergence study asks the SLURM executor for:
        its GPU (gpu_site), CPUs, memory and time limit. Unlike pretraining
        (gpu_job_resources), these jobs keep no checkpoint, so they run as
        ordinary executor jobs, never through a waiter that requeues them at
        the time limit: a stopped run starts again. Resources, so changing
        them reruns nothing."""
        job = self.emergence_job(ising)
        return {**self.gpu_site(job["gpus"]), "cpus_per_task": job["cpus"],
                "mem_mb": job["mem_gb"] * 1000, "runtime": job["time_limit_min"]}

    # -------------------------------------------------- data and members
    def dataset_spec(self, wildcards: Wildcards) -> dict:
        """The dataset a prepare job reads: the pretraining one, a transfer
        dataset (tdata) or an audit out-of-distribution set (ood)."""
        if wildcards.get("tdata"):
            return self.transfer[wildcards["tdata"]]["dataset"]
        if wildcards.get("ood"):
            return self.audit_ood[wildcards["ood"]]["dataset"]
        return self.config["dataset"]

    def dataset_key(self, wildcards: Wildcards) -> str:
        """Where that dataset sits in the config, for its errors to name."""
        for section, key, wildcard in (("transfer", "datasets", "tdata"), ("audit", "ood_datasets", "ood")):
            if wildcards.get(wildcard):
                keys = [entry["key"] for entry in self.config[section][key]]
                return f"{section}.{key}[{keys.index(wildcards[wildcard])}].dataset"
        return "dataset"

    def config_spec(self, wildcards: Wildcards) -> dict:
        return self.config

    def member_settings_spec(self, wildcards: Wildcards) -> dict:
        return self.member_by_folder[wildcards.get("member") or wildcards["imported"]].settings

    def imported_checkpoint(self, wildcards: Wildcards) -> str:
        return self.member_by_folder[wildcards["imported"]].settings["imported"]["path"]

    def member_run_dir(self, wildcards: Wildcards) -> str:
        return self.layout.member_dir(wildcards["member"])

    def member_models(self, wildcards: Wildcards) -> list[str]:
        return [self.layout.member_model(m.folder) for m in self.members]

    # --------------------------------------------------------- adaptation
    def probe_spec(self, wildcards: Wildcards) -> dict:
        # threads size the job, not the fit: changing them reruns nothing
        return {k: v for k, v in self.config["probe"].items() if k != "threads"}

    def candidates(self, wildcards: Wildcards) -> dict[str, dict]:
        """Fine-tuning candidates of an SSL member (tuned, on the pretraining
        dataset; or tmember on transfer dataset tfine), keyed by their learning
        rate as written in their folder name."""
        key = wildcards.get("tfine")
        member = self.member_by_folder[wildcards.get("tuned") or wildcards["tmember"]]
        protocol = self.transfer[key]["finetune"] if key else None
        return {f"{c['optimizer']['lr']:g}": c for c in adaptation_candidates(self.config, member, protocol)}

    def candidate_spec(self, wildcards: Wildcards) -> dict:
        return self.candidates(wildcards)[wildcards["lr"]]

    def candidate_files(self, name: str):
        """An input function: file ``name`` of every candidate of the job's member."""

        def paths(wildcards: Wildcards) -> list[str]:
            key, folder = wildcards.get("tfine"), wildcards.get("tuned") or wildcards["tmember"]
            layout = self.layout.transfer(key) if key else self.layout
            return [layout.adapt_candidate(folder, lr, name) for lr in self.candidates(wildcards)]

        return paths

    def finetune_base_model(self, wildcards: Wildcards) -> str:
        return self.layout.member_model(self.finetuned_by_folder[wildcards["finetuned"]].base.folder)

    def finetune_spec(self, wildcards: Wildcards) -> dict:
        return self.finetuned_by_folder[wildcards["finetuned"]].settings

    def adapted_network(self, wildcards: Wildcards) -> dict[str, str]:
        """A member's network file as adapted to the pretraining dataset, and
        its fitted probe if it is probed (evaluated, or tmember)."""
        folder = wildcards.get("evaluated") or wildcards["tmember"]
        if folder in self.finetuned_by_folder:
            return {"model": f"{self.layout.finetune_dir(folder)}/model.pt"}
        member = self.member_by_folder[folder]
        if member.is_ssl and self.adapt_mode == "finetune":
            return {"model": f"{self.layout.adapt_dir(folder)}/model.pt"}
        network = {"model": self.layout.member_model(folder)}
        if member.is_ssl:
            network["probe"] = self.layout.probe_params(folder)
        return network

    # ---------------------------------------------------------- ensembles
    def logits_members(self, wildcards: Wildcards) -> list:
        """The members with logits on a dataset: every evaluated member on the
        pretraining dataset, the transfer members on a transfer dataset."""
        return self.transfer_members if wildcards.get("tdata") else self.evaluated_members()

    def member_logits(self, wildcards: Wildcards) -> list[str]:
        layout = self.layout_of(wildcards)
        return [layout.logits(m.folder) for m in self.logits_members(wildcards)]

    def member_metrics_spec(self, wildcards: Wildcards) -> dict:
        members = self.logits_members(wildcards)
        spec = {"members": [m.id for m in members], "modes": [m.mode for m in members],
                "bootstrap": self.config["ensembles"]["bootstrap"]}
        if not wildcards.get("tdata"):
            spec.update(axes=[getattr(m, "axis", None) for m in members], axis=self.config["ensembles"]["axis"])
        return spec

    def pool_logits(self, wildcards: Wildcards) -> list[str]:
        layout = self.layout_of(wildcards)
        return [layout.logits(m.folder) for _, m in self.pool_members(wildcards["pool"])]

    def ensemble_spec(self, wildcards: Wildcards) -> dict:
        members = self.pool_members(wildcards["pool"])
        ensembles = self.config["ensembles"]
        return {"pool": wildcards["pool"], "dataset": wildcards.get("tdata") or "",
                "members": [m.id for _, m in members],
                "classes": [cls for cls, _ in members],
                **{key: ensembles[key] for key in ("greedy", "random", "bootstrap", "diversity_size")}}

    def ensembles(self, strategies=STRATEGIES) -> list[str]:
        return [self.layout.ensemble(p, s) for p in self.pools for s in strategies]

    def greedy_ensembles(self, wildcards: Wildcards) -> list[str]:
        return self.ensembles(["greedy"])

    # ---------------------------------------------------- dataset summaries
    def summary_inputs(self, wildcards: Wildcards) -> dict[str, Any]:
        """A dataset summary's member metrics and Eq / Inv / Eq+Inv ensembles,
        and the greedy Eq and Eq+Inv ensembles' values on every resample (Δ's CI)."""
        layout = self.layout_of(wildcards)
        return {"members": layout.member_metrics,
                "ensembles": [layout.ensemble(p, s) for p in self.transfer_pools for s in STRATEGIES],
                "resamples": [layout.ensemble_resamples(p, "greedy") for p in ("eq", "eq_inv")
                              if p in self.transfer_pools]}

    def dataset_summary_spec(self, wildcards: Wildcards) -> dict:
        key = wildcards.get("tdata")
        dataset = self.transfer[key]["dataset"] if key else self.config["dataset"]
        label = key or dataset["name"]
        return {"key": label, "label": label, "dataset": dataset["name"],
                "delta_size": self.config["transfer"]["ensemble_size"],
                "axes_size": self.config["ensembles"]["axes_size"],
                "level": self.config["ensembles"]["bootstrap"]["level"],
                "evaluation_only": bool(key) and self.transfer[key]["mode"] == "evaluate"}

    def dataset_summaries(self) -> list[str]:
        """The pretraining dataset's summary, then each transfer dataset's."""
        return [self.layout.dataset_summary, *(self.layout.transfer(k).dataset_summary for k in self.transfer)]

    # ------------------------------------------------------- shift, audit
    def shift_settings_spec(self, wildcards: Wildcards) -> dict:
        return self.config["shift"]

    def pool_member_ids(self) -> dict[str, list[str]]:
        return {pool: [m.id for _, m in self.pool_members(pool)] for pool in self.pools}

    def shift_members(self) -> list:
        """Every pool member once, in a fixed order shared by inputs and spec."""
        by_id = {m.id: m for m in self.evaluated_members()}
        return [by_id[m] for m in dict.fromkeys(m for members in self.pool_member_ids().values() for m in members)]

    def shift_member_logits(self, wildcards: Wildcards) -> list[str]:
        return [self.layout.shift_logits(m.folder) for m in self.shift_members()]

    def shift_spec(self, wildcards: Wildcards) -> dict:
        return {"pools": self.pool_member_ids(), "members": [m.id for m in self.shift_members()],
                "ensemble_size": self.config["shift"]["ensemble_size"],
                "bootstrap": self.config["ensembles"]["bootstrap"]}

    def audit_settings_spec(self, wildcards: Wildcards) -> dict:
        return {k: v for k, v in self.config["audit"].items() if k != "ood_datasets"}

    def audit_sets_inputs(self, wildcards: Wildcards) -> dict[str, str]:
        inputs = {"data": self.layout.dataset, "manifest": self.layout.manifest}
        for key in self.audit_ood:
            inputs[f"ood_{key}_data"] = self.layout.audit_ood(key, "dataset.npz")
            inputs[f"ood_{key}_manifest"] = self.layout.audit_ood(key, "manifest.json")
        return inputs

    def audit_ood_option(self, wildcards: Wildcards, input: Mapping[str, str]) -> str:
        pairs = [f"{key}={input[f'ood_{key}_data']},{input[f'ood_{key}_manifest']}" for key in self.audit_ood]
        return f"--ood {' '.join(pairs)}" if pairs else ""

    def audited_member_model(self, wildcards: Wildcards) -> str:
        """The pretrained member behind an evaluated network (its Eq head is audited)."""
        folder = wildcards["evaluated"]
        if folder in self.finetuned_by_folder:
            folder = self.finetuned_by_folder[folder].base.folder
        return self.layout.member_model(folder)

    def member_audit_outputs(self, wildcards: Wildcards) -> list[str]:
        return [self.layout.audit_outputs(m.folder) for m in self.evaluated_members()]

    def audit_spec(self, wildcards: Wildcards) -> dict:
        members = self.evaluated_members()
        return {"members": [m.id for m in members], "modes": {m.id: m.mode for m in members},
                "pools": self.pool_member_ids(), "groups": self.config["audit"]["groups"],
                "ensemble_size": self.config["audit"]["ensemble_size"],
                "bootstrap": self.config["ensembles"]["bootstrap"]}

    def emergence_spec(self, wildcards: Wildcards) -> dict:
        """What the metrics of the trained runs read: the section without
        where its jobs run (moving them reruns nothing), the Ising study and
        the untrained ensembles' sizes (each has its own job), and with the CI
        level of the finite-ensemble slopes (ensembles.bootstrap.level)."""
        own = {k: v for k, v in self.config["emergence"].items()
               if k not in ("job", "ising", "init_members", "init_inputs")}
        return {**own, "level": self.config["ensembles"]["bootstrap"]["level"]}

    def emergence_init_spec(self, wildcards: Wildcards) -> dict:
        """What the untrained ensembles depend on: the network, the seeds, the
        sizes of the study and the CI level; not the training settings."""
        keys = ("widths", "hidden", "seed", "init_members", "init_inputs", "bootstrap_resamples", "subensemble_draws")
        return {**{k: self.config["emergence"][k] for k in keys},
                "level": self.config["ensembles"]["bootstrap"]["level"]}

    @property
    def ising_enabled(self) -> bool:
        emergence = self.config["emergence"]
        return emergence["enabled"] and emergence["ising"]["enabled"]

    def ising_spec(self, wildcards: Wildcards) -> dict:
        """The Ising study's settings and the CI level of its slopes (ensembles.bootstrap.level)."""
        ising = _without_jobs(self.config["emergence"])["ising"]
        return {**ising, "level": self.config["ensembles"]["bootstrap"]["level"]}

    def ising_results(self) -> list[str]:
        """The trained ensembles' result file of every architecture."""
        return [self.layout.ising(a) for a in self.config["emergence"]["ising"]["architectures"]]

    def emergence_run_spec(self, wildcards: Wildcards) -> dict:
        """The settings of one group's run: only the keys the training reads
        (EMERGENCE_RUN_KEYS), so that adding a group, an Ising setting or a metric's
        setting reruns no image run."""
        return {k: self.config["emergence"][k] for k in EMERGENCE_RUN_KEYS}

    def emergence_runs(self) -> list[tuple[str, str]]:
        """(group, run) of every emergence run, group by group."""
        return [(group, run) for group in self.config["emergence"]["groups"] for run in EMERGENCE_RUNS]

    def emergence_logits(self, wildcards: Wildcards) -> list[str]:
        return [self.layout.emergence_logits(group, run) for group, run in self.emergence_runs()]

    # ------------------------------------------------- report and provenance
    def report_spec(self, wildcards: Wildcards) -> dict:
        config = self.config
        return {"name": config["name"], "dataset": config["dataset"]["name"],
                "diversity_size": config["ensembles"]["diversity_size"],
                "selection_split": config["ensembles"]["greedy"]["selection_split"],
                "axes_size": config["ensembles"]["axes_size"], "level": config["ensembles"]["bootstrap"]["level"]}

    def claims_spec(self, wildcards: Wildcards) -> dict:
        """What the claims step needs beside its result files: the sizes the
        claims are read at, the CI level and the seed of the draws' redrawing,
        and the transfer datasets in the config's order."""
        config = self.config
        return {"name": config["name"], "dataset": config["dataset"]["name"],
                "diversity_size": config["ensembles"]["diversity_size"],
                "delta_size": config["transfer"]["ensemble_size"], "axes_size": config["ensembles"]["axes_size"],
                "level": config["ensembles"]["bootstrap"]["level"], "seed": config["ensembles"]["bootstrap"]["seed"],
                "transfer": list(self.transfer), "axes": config["members"]["axes"],
                "pools": list(self.pools), "axis_pools": list(self.axis_pools)}

    def comparison_spec(self, wildcards: Wildcards) -> dict:
        config = self.config
        return {"name": config["name"], "dataset": config["dataset"]["name"], "arch": config["backbone"]["arch"],
                "transfer": {k: t["dataset"]["name"] for k, t in self.transfer.items()},
                "selection_split": config["ensembles"]["greedy"]["selection_split"],
                "diversity_size": config["ensembles"]["diversity_size"],
                "delta_size": config["transfer"]["ensemble_size"], "axes_size": config["ensembles"]["axes_size"]}

    def provenance_config_spec(self, wildcards: Wildcards) -> dict:
        """The resolved config without where and how it runs (cluster, GPU job
        resources, review tier): moving a run elsewhere changes no result."""
        config = {k: v for k, v in self.config.items() if k not in ("cluster", "gpu_jobs", "review")}
        return {**config, "emergence": _without_jobs(config["emergence"])}

    def provenance_members_spec(self, wildcards: Wildcards) -> dict[str, str]:
        folders = {m.id: self.layout.member_dir(m.folder) for m in self.members}
        folders.update({m.id: self.layout.finetune_dir(m.folder) for m in self.finetuned})
        return folders
