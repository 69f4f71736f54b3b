# Shared logic: the validated config, the member table, wildcard constraints and
# every input function. Stage files hold rules only.
import json
import os
import re
import sys

from snakemake.exceptions import WorkflowError

from multisym.config import ConfigError, resolve, resolve_cluster
from multisym.layout import Layout
from multisym.stages import stage_version
from multisym.members import (
    adaptation_candidates,
    by_folder,
    finetuned_members,
    member_table,
    axis_pools,
    pools,
    transfer_members,
)

config = resolve(config)
LAYOUT = Layout(config["name"])
MEMBERS = member_table(config)
FINETUNED = finetuned_members(config, MEMBERS)
POOLS = pools(config, MEMBERS, FINETUNED)
AXIS_POOLS = axis_pools(config, MEMBERS)
ALL_POOLS = {**POOLS, **AXIS_POOLS}
MEMBER_BY_FOLDER = by_folder(MEMBERS)
FINETUNED_BY_FOLDER = by_folder(FINETUNED)
ADAPT_MODE = config["adapt"]["mode"]
STRATEGIES = ("greedy", "random")
TABLES = (
    "table1",
    "table2",
    "table3",
    "table4",
    "table6",
    "table7",
    "table5",
    "table8",
    "table9",
    "table10",
    "table_shift",
    "table_audit",
)
FIGURES = (
    "figure2",
    "figure3",
    "figure4",
    "figure6",
    "figure7",
    "figure_audit",
    "figure_emergence",
    "figure_emergence_size",
)
TRANSFER = {entry["key"]: entry for entry in config["transfer"]["datasets"]}
TRANSFER_MEMBERS = transfer_members(config, MEMBERS)
TRANSFER_POOLS = [pool for pool in ("eq", "inv", "eq_inv") if pool in POOLS]


def alternatives(names):
    """A wildcard regex matching exactly these names (nothing when there are none:
    an empty pattern would match every string)."""
    names = list(names)
    return "|".join(re.escape(name) for name in names) if names else "(?!)"


wildcard_constraints:
    member=alternatives(m.folder for m in MEMBERS if not m.imported),
    imported=alternatives(m.folder for m in MEMBERS if m.imported),
    ssl_member=alternatives(m.folder for m in MEMBERS if m.is_ssl),
    sup_member=alternatives(m.folder for m in MEMBERS if not m.is_ssl),
    finetuned=alternatives(FINETUNED_BY_FOLDER),
    evaluated=alternatives([*MEMBER_BY_FOLDER, *FINETUNED_BY_FOLDER]),
    pool=alternatives(ALL_POOLS),
    strategy=alternatives((*STRATEGIES, "all")),
    lr="[0-9.e+-]+",
    tdata=alternatives(TRANSFER),
    tprobe=alternatives(k for k, t in TRANSFER.items() if t["mode"] == "probe"),
    tfine=alternatives(k for k, t in TRANSFER.items() if t["mode"] == "finetune"),
    teval=alternatives(k for k, t in TRANSFER.items() if t["mode"] == "evaluate"),
    tmember=alternatives(m.folder for m in TRANSFER_MEMBERS),
    ood=alternatives(k["key"] for k in config["audit"]["ood_datasets"]),
    run="augmented|control",
    table=alternatives(TABLES),
    figure=alternatives(FIGURES),


# How a job that loads a split from a root holds it (streaming.in_memory_gib);
# a resource, so that changing it reruns nothing.
LOADING = {"in_memory_gib": config["streaming"]["in_memory_gib"]}
LOADING_SHELL = " --in-memory-gib {resources.in_memory_gib}"


# The cluster section's keys travel to the GPU waiters as resources
# cluster_<key>: the slurm profile sets the site values among them in its
# set-resources, which a --config on the command line does not replace (a
# profile's config: list it would); config values are their defaults. Each
# waiter checks them against the schema and resolves executor auto
# (multisym.config.resolve_cluster).
CLUSTER_RESOURCES = list(config["cluster"])


def snakemake_executor(wildcards):
    # workflow.executor_plugin: the executor-plugin interface's Plugin of this
    # run (set before any job's resources are evaluated; "dryrun" under -n)
    plugin = workflow.executor_plugin
    return plugin.name if plugin is not None else "local"


def gpu_job_resources(step):
    """What one training job of ``step`` asks a cluster for (shown by a dry-run),
    the site settings its waiter submits with, and the review tier that may
    forbid it. Resources, unlike params, never trigger a rerun: moving to a
    cluster or reviewing must not retrain anything."""
    job = config["gpu_jobs"][step]
    return {
        **LOADING,
        "gpu_nodes": job["nodes"],
        "gpus_per_node": job["gpus_per_node"],
        "gpu_cpus_per_task": job["cpus_per_task"],
        "gpu_mem_gb": job["mem_gb"],
        "gpu_time_limit_min": job["time_limit_min"],
        "snakemake_executor": snakemake_executor,
        **{
            f"cluster_{key}": (
                "" if config["cluster"][key] is None else config["cluster"][key]
            )
            for key in CLUSTER_RESOURCES
        },
        "review_tier": config["review"]["tier"],
        "keep_every": config["gpu_jobs"]["keep_every"] if step == "pretrain" else 0,
        "decode": config["gpu_jobs"]["decode"] if step == "pretrain" else "cpu",
        "cuda_graphs": "on" if config["gpu_jobs"]["cuda_graphs"] else "off",
    }


GPU_JOB_SHELL = (
    " --gpu-nodes {resources.gpu_nodes} --gpus-per-node {resources.gpus_per_node}"
    " --gpu-cpus-per-task {resources.gpu_cpus_per_task} --gpu-mem-gb {resources.gpu_mem_gb}"
    " --gpu-time-limit-min {resources.gpu_time_limit_min}"
    + LOADING_SHELL
    + " --snakemake-executor {resources.snakemake_executor}"
    + "".join(
        f" --cluster {key}={{resources.cluster_{key}:q}}" for key in CLUSTER_RESOURCES
    )
    + " --review-tier {resources.review_tier}"
)


def refuse_local_training_under_slurm():
    """onstart: the waiters' own check (resolve_cluster) once for the run, so
    that it stops before anything is submitted or trained."""
    try:
        resolve_cluster(
            {"executor": config["cluster"]["executor"]}, snakemake_executor(None)
        )
    except ConfigError as error:
        raise WorkflowError(f"{error}. Nothing was submitted.") from None


def kept(path):
    """A result output whose previous version survives a failed rerun of its
    job (Snakemake's update flag; see failures.smk)."""
    return update(path)


def env(name):
    """Conda environment file for a rule (paths in rules are relative to rules/)."""
    return f"../../envs/{name}.yaml"


def dataset_json(wildcards):
    return json.dumps(config["dataset"], sort_keys=True)


def member_settings_json(wildcards):
    folder = wildcards.get("member") or wildcards.get("imported")
    return json.dumps(MEMBER_BY_FOLDER[folder].settings, sort_keys=True)


def imported_checkpoint(wildcards):
    return MEMBER_BY_FOLDER[wildcards.imported].settings["imported"]["path"]


def member_run_dir(wildcards):
    return LAYOUT.member_dir(wildcards.member)


def config_json(wildcards):
    return json.dumps(config, sort_keys=True)


def member_models(members):
    return [LAYOUT.member_model(m.folder) for m in members]


def all_member_models(wildcards):
    return member_models(MEMBERS)


# ---------------------------------------------------------------- adaptation
def probe_settings_json(wildcards):
    # threads size the job, not the fit: changing them reruns nothing
    fit = {k: v for k, v in config["probe"].items() if k != "threads"}
    return json.dumps(fit, sort_keys=True)


def probe_gpu_resources():
    """A probe on the GPU asks the SLURM executor for one, on the cluster
    section's partition, account, QoS, constraint and GPU model (the site
    values of GPU training jobs); a probe on the CPU adds nothing, so the
    profile's defaults stand."""
    if config["probe"]["device"] != "cuda":
        return {}
    names = {
        "partition": "slurm_partition",
        "account": "slurm_account",
        "qos": "qos",
        "constraint": "constraint",
        "gpu_model": "gpu_model",
    }
    site = config["cluster"]
    return {"gpu": 1, **{names[k]: site[k] for k in names if site[k]}}


def threads_as_cpus(wildcards, threads):
    # a cluster job asks for the CPUs its threads run on (the slurm profile's
    # default is 1, right for the single-threaded rules)
    return threads


def probe_mem_mb(wildcards, input):
    from multisym.evaluate.probe import job_memory_mb

    return job_memory_mb(input.features, config["probe"])


def probe_runtime(wildcards, input, threads):
    from multisym.evaluate.probe import job_runtime_min

    return job_runtime_min(input.features, config["probe"], threads)


def candidate_settings(folder):
    """Fine-tuning candidates of an SSL member, keyed by their learning rate as
    written in their folder name."""
    member = MEMBER_BY_FOLDER[folder]
    return {
        f"{c['optimizer']['lr']:g}": c for c in adaptation_candidates(config, member)
    }


def adapt_candidate_settings_json(wildcards):
    return json.dumps(
        candidate_settings(wildcards.ssl_member)[wildcards.lr], sort_keys=True
    )


def adapt_candidates(name):
    def paths(wildcards):
        folder = wildcards.ssl_member
        return [
            LAYOUT.adapt_candidate(folder, lr, name)
            for lr in candidate_settings(folder)
        ]

    return paths


def finetune_base_model(wildcards):
    return LAYOUT.member_model(FINETUNED_BY_FOLDER[wildcards.finetuned].base.folder)


def finetune_settings_json(wildcards):
    return json.dumps(FINETUNED_BY_FOLDER[wildcards.finetuned].settings, sort_keys=True)


# ---------------------------------------------------------------- ensembles
def evaluated_members():
    """Every member with logits, in table order: pretrained, then fine-tuned."""
    return [*MEMBERS, *FINETUNED]


def member_logits(wildcards):
    return [LAYOUT.logits(m.folder) for m in evaluated_members()]


def member_metrics_spec_json(wildcards):
    members = evaluated_members()
    return json.dumps(
        {
            "members": [m.id for m in members],
            "modes": [m.mode for m in members],
            "axes": [getattr(m, "axis", None) for m in members],
            "axis": config["ensembles"]["axis"],
            "bootstrap": config["ensembles"]["bootstrap"],
        },
        sort_keys=True,
    )


def pool_members(pool):
    return [(cls, m) for cls, members in ALL_POOLS[pool].items() for m in members]


def pool_logits(wildcards):
    return [LAYOUT.logits(m.folder) for _, m in pool_members(wildcards.pool)]


def ensemble_spec_json(wildcards):
    members = pool_members(wildcards.pool)
    spec = {
        "pool": wildcards.pool,
        "members": [m.id for _, m in members],
        "classes": [cls for cls, _ in members],
        **{
            key: config["ensembles"][key]
            for key in ("greedy", "random", "bootstrap", "diversity_size")
        },
    }
    return json.dumps(spec, sort_keys=True)


def ensemble_results(strategies=STRATEGIES):
    return [LAYOUT.ensemble(p, s) for p in POOLS for s in strategies]


# --------------------------------------------------------------------- shift
def shift_settings_json(wildcards):
    return json.dumps(config["shift"], sort_keys=True)


def adapted_network(folder):
    """A member's network file as adapted to the pretraining dataset, and its
    fitted probe if it is probed."""
    if folder in FINETUNED_BY_FOLDER:
        return {"model": f"{LAYOUT.finetune_dir(folder)}/model.pt"}
    member = MEMBER_BY_FOLDER[folder]
    if member.is_ssl and ADAPT_MODE == "finetune":
        return {"model": f"{LAYOUT.adapt_dir(folder)}/model.pt"}
    network = {"model": LAYOUT.member_model(folder)}
    if member.is_ssl:
        network["probe"] = LAYOUT.probe_params(folder)
    return network


def evaluated_network(wildcards):
    return adapted_network(wildcards.evaluated)


def transfer_evaluated_network(wildcards):
    return adapted_network(wildcards.tmember)


def probe_option(wildcards, input):
    return f"--probe-params {input.probe}" if "probe" in input.keys() else ""


def greedy_inputs(wildcards):
    return [LAYOUT.ensemble(pool, "greedy") for pool in POOLS]


def shift_pool_members():
    by_id = {m.id: m for m in evaluated_members()}
    pools = {pool: [m.id for _, m in pool_members(pool)] for pool in POOLS}
    return pools, by_id


def shift_unique_members():
    """Every pool member once, in a fixed order shared by inputs and spec."""
    pools, by_id = shift_pool_members()
    return [
        by_id[m]
        for m in dict.fromkeys(m for members in pools.values() for m in members)
    ]


def shift_logits_inputs(wildcards):
    return [LAYOUT.shift_logits(m.folder) for m in shift_unique_members()]


def shift_spec_json(wildcards):
    pools, _ = shift_pool_members()
    spec = {
        "pools": pools,
        "members": [m.id for m in shift_unique_members()],
        "ensemble_size": config["shift"]["ensemble_size"],
        "bootstrap": config["ensembles"]["bootstrap"],
    }
    return json.dumps(spec, sort_keys=True)


# --------------------------------------------------------------------- audit
AUDIT_OOD = {entry["key"]: entry for entry in config["audit"]["ood_datasets"]}
EMERGENCE_RUNS = ("augmented", "control")


def audit_settings_json(wildcards):
    settings = {k: v for k, v in config["audit"].items() if k != "ood_datasets"}
    return json.dumps(settings, sort_keys=True)


def audit_ood_dataset_json(wildcards):
    return json.dumps(AUDIT_OOD[wildcards.ood]["dataset"], sort_keys=True)


def audit_sets_inputs(wildcards):
    inputs = {"data": LAYOUT.dataset, "manifest": LAYOUT.manifest}
    for key in AUDIT_OOD:
        inputs[f"ood_{key}_data"] = LAYOUT.audit_ood(key, "dataset.npz")
        inputs[f"ood_{key}_manifest"] = LAYOUT.audit_ood(key, "manifest.json")
    return inputs


def audit_ood_option(wildcards, input):
    pairs = [
        f"{key}={input[f'ood_{key}_data']},{input[f'ood_{key}_manifest']}"
        for key in AUDIT_OOD
    ]
    return f"--ood {' '.join(pairs)}" if pairs else ""


def audited_member_model(wildcards):
    """The pretrained member behind an evaluated network (its Eq head is audited)."""
    folder = wildcards.evaluated
    if folder in FINETUNED_BY_FOLDER:
        return LAYOUT.member_model(FINETUNED_BY_FOLDER[folder].base.folder)
    return LAYOUT.member_model(folder)


def audit_outputs_inputs(wildcards):
    return [LAYOUT.audit_outputs(m.folder) for m in evaluated_members()]


def audit_spec_json(wildcards):
    pools, _ = shift_pool_members()
    members = evaluated_members()
    spec = {
        "members": [m.id for m in members],
        "modes": {m.id: m.mode for m in members},
        "pools": pools,
        "groups": config["audit"]["groups"],
        "ensemble_size": config["audit"]["ensemble_size"],
        "bootstrap": config["ensembles"]["bootstrap"],
    }
    return json.dumps(spec, sort_keys=True)


def emergence_settings_json(wildcards):
    return json.dumps(config["emergence"], sort_keys=True)


# ------------------------------------------------------------------ transfer
def transfer_dataset_json(wildcards):
    return json.dumps(TRANSFER[wildcards.tdata]["dataset"], sort_keys=True)


def transfer_candidate_settings(key, folder):
    member = MEMBER_BY_FOLDER[folder]
    protocol = TRANSFER[key]["finetune"]
    return {
        f"{c['optimizer']['lr']:g}": c
        for c in adaptation_candidates(config, member, protocol)
    }


def transfer_candidate_settings_json(wildcards):
    settings = transfer_candidate_settings(wildcards.tfine, wildcards.tmember)
    return json.dumps(settings[wildcards.lr], sort_keys=True)


def transfer_candidates(name):
    def paths(wildcards):
        layout = LAYOUT.transfer(wildcards.tfine)
        return [
            layout.adapt_candidate(wildcards.tmember, lr, name)
            for lr in transfer_candidate_settings(wildcards.tfine, wildcards.tmember)
        ]

    return paths


def transfer_member_logits(wildcards):
    layout = LAYOUT.transfer(wildcards.tdata)
    return [layout.logits(m.folder) for m in TRANSFER_MEMBERS]


def transfer_member_metrics_spec_json(wildcards):
    return json.dumps(
        {
            "members": [m.id for m in TRANSFER_MEMBERS],
            "modes": [m.mode for m in TRANSFER_MEMBERS],
            "bootstrap": config["ensembles"]["bootstrap"],
        },
        sort_keys=True,
    )


def transfer_pool_logits(wildcards):
    layout = LAYOUT.transfer(wildcards.tdata)
    return [layout.logits(m.folder) for _, m in pool_members(wildcards.pool)]


def summary_ensembles(layout):
    return [layout.ensemble(p, s) for p in TRANSFER_POOLS for s in STRATEGIES]


def dataset_summary_spec(key, dataset):
    return json.dumps(
        {
            "key": key,
            "label": key,
            "dataset": dataset["name"],
            "delta_size": config["transfer"]["ensemble_size"],
            "axes_size": config["ensembles"]["axes_size"],
            # only where true, so that the specs of other datasets keep their params
            **(
                {"evaluation_only": True}
                if key in TRANSFER and TRANSFER[key]["mode"] == "evaluate"
                else {}
            ),
        },
        sort_keys=True,
    )


def dataset_summaries():
    """The pretraining dataset's summary, then each transfer dataset's."""
    return [
        LAYOUT.dataset_summary,
        *(LAYOUT.transfer(key).dataset_summary for key in TRANSFER),
    ]


# ----------------------------------------------------------- tables, figures
RESULT_INPUTS = {
    "table1": lambda: [LAYOUT.member_metrics],
    "table2": ensemble_results,
    "table3": lambda: ensemble_results(["random"]),
    "table4": lambda: ensemble_results(["greedy"]),
    "table7": ensemble_results,
    "figure2": lambda: ensemble_results(["greedy"]),
    "figure3": lambda: ensemble_results(["random"]),
    "figure6": lambda: [LAYOUT.member_metrics],
    "table_shift": lambda: [LAYOUT.shift_metrics],
    "figure7": lambda: [
        LAYOUT.ensemble(p, "greedy") for p in ("eq", "eq_inv") if p in POOLS
    ],
    "table5": lambda: dataset_summaries()[1:],
    "table8": lambda: dataset_summaries()[1:],
    "table9": dataset_summaries,
    "figure4": dataset_summaries,
    "table_audit": lambda: [LAYOUT.audit_metrics],
    "table6": lambda: [
        *(
            LAYOUT.ensemble(p, "all")
            for p in AXIS_POOLS
            if p.startswith("eq_inv_") and p != "eq_inv_all"
        ),
        LAYOUT.ensemble("eq_inv_all", "greedy"),
    ],
    "table10": lambda: [
        LAYOUT.member_metrics,
        *(LAYOUT.ensemble(p, "greedy") for p in AXIS_POOLS if p != "eq_inv_all"),
    ],
    "figure_audit": lambda: [LAYOUT.audit_metrics],
    "figure_emergence": lambda: [LAYOUT.emergence_metrics],
    "figure_emergence_size": lambda: [LAYOUT.emergence_metrics],
}


def target_needs():
    """What each table or figure needs from the config: (whether the config
    provides it, what it needs)."""
    axis = config["ensembles"]["axis"]
    eq = sum(m.mode == "eq" and m.axis == axis for m in MEMBERS)
    inv = sum(m.mode == "inv" and m.axis == axis for m in MEMBERS)
    audit, emergence = config["audit"]["enabled"], config["emergence"]["enabled"]
    two_axes = "eq_inv_all" in AXIS_POOLS
    adapted = any(t["mode"] != "evaluate" for t in TRANSFER.values())
    transfer_eq = adapted and "eq" in TRANSFER_POOLS
    transfer_both = bool(TRANSFER) and {"eq", "eq_inv"} <= set(TRANSFER_POOLS)
    return {
        "table1": (bool(MEMBERS), "at least one member"),
        "table_shift": (
            config["shift"]["enabled"] and bool(POOLS),
            "shift.enabled and at least one ensemble pool",
        ),
        "table_audit": (audit, "audit.enabled"),
        "table6": (two_axes, "Eq and Inv members of at least two members.axes"),
        "table10": (two_axes, "Eq and Inv members of at least two members.axes"),
        "figure_audit": (audit, "audit.enabled"),
        "figure_emergence": (emergence, "emergence.enabled"),
        "figure_emergence_size": (emergence, "emergence.enabled"),
        "figure6": (
            eq >= 2 and inv >= 1,
            "two Eq members and one Inv member of ensembles.axis",
        ),
        "figure7": (
            "eq" in POOLS or "eq_inv" in POOLS,
            "the eq or eq_inv pool in ensembles.pools",
        ),
        "table5": (transfer_eq, "a transfer dataset adapted to and the eq pool"),
        "table8": (transfer_eq, "a transfer dataset adapted to and the eq pool"),
        "table9": (transfer_both, "a transfer dataset and the eq and eq_inv pools"),
        "figure4": (transfer_both, "a transfer dataset and the eq and eq_inv pools"),
        **{
            target: (bool(POOLS), "at least one ensemble pool (ensembles.pools)")
            for target in ("table2", "table3", "table4", "table7")
            + ("figure2", "figure3")
        },
    }


NOT_BUILT = {
    "figure1": "the method schematic, a drawing without data: omitted",
    "figure5": "qualitative examples without numbers: omitted",
}


def available(target):
    """Whether the config provides the members a table or figure needs."""
    return target_needs()[target][0]


def target_statuses():
    """Every table and figure of the paper (and of this workflow) with its
    status at this scale: built, or why not."""
    statuses, needs = [], target_needs()
    for target in (*TABLES, *FIGURES):
        met, need = needs[target]
        if met:
            statuses.append({"target": target, "status": "built", "reason": ""})
        else:
            reason = f"the config does not feed it: it needs {need}"
            statuses.append(
                {"target": target, "status": "unavailable", "reason": reason}
            )
    for target, reason in NOT_BUILT.items():
        statuses.append({"target": target, "status": "not built", "reason": reason})
    return statuses


def provenance_spec_json(wildcards):
    return json.dumps(
        {"name": config["name"], "targets": target_statuses()}, sort_keys=True
    )


def provenance_config_json(wildcards):
    """The resolved config without where and how it runs (cluster, GPU job
    resources, review tier): moving a run elsewhere changes no result."""
    site = ("cluster", "gpu_jobs", "review")
    return json.dumps(
        {k: v for k, v in config.items() if k not in site}, sort_keys=True
    )


def provenance_members_json(wildcards):
    folders = {m.id: LAYOUT.member_dir(m.folder) for m in MEMBERS}
    folders.update({m.id: LAYOUT.finetune_dir(m.folder) for m in FINETUNED})
    return json.dumps(folders, sort_keys=True)


def table_inputs(wildcards):
    return RESULT_INPUTS[wildcards.table]()


def figure_inputs(wildcards):
    return RESULT_INPUTS[wildcards.figure]()


def report_spec_json(wildcards):
    return json.dumps(
        {
            "name": config["name"],
            "dataset": config["dataset"]["name"],
            "diversity_size": config["ensembles"]["diversity_size"],
            "selection_split": config["ensembles"]["greedy"]["selection_split"],
            "axes_size": config["ensembles"]["axes_size"],
        },
        sort_keys=True,
    )


def comparison_inputs(wildcards):
    """Every table this config feeds (CSV), for the paper-vs-reproduction table."""
    return [LAYOUT.table(t, "csv") for t in TABLES if available(t)]


def comparison_spec_json(wildcards):
    return json.dumps(
        {
            "name": config["name"],
            "dataset": config["dataset"]["name"],
            "arch": config["backbone"]["arch"],
            "transfer": {k: t["dataset"]["name"] for k, t in TRANSFER.items()},
            "selection_split": config["ensembles"]["greedy"]["selection_split"],
            "diversity_size": config["ensembles"]["diversity_size"],
            "delta_size": config["transfer"]["ensemble_size"],
            "axes_size": config["ensembles"]["axes_size"],
        },
        sort_keys=True,
    )


def all_tables_and_figures(wildcards):
    return [
        LAYOUT.comparison("csv"),
        LAYOUT.comparison("md"),
        LAYOUT.comparison("html"),
        *(
            LAYOUT.table(t, ext)
            for t in TABLES
            if available(t)
            for ext in ("csv", "md", "tex", "html")
        ),
        *(
            LAYOUT.figure(f, ext)
            for f in FIGURES
            if available(f)
            for ext in ("pdf", "png")
        ),
    ]
