# Snakemake glue: the validated config, the scale's plan (multisym.plan: members,
# pools, every job's inputs and specs), the target registry (multisym.targets), wildcard
# constraints and the helpers rules share. Stage files hold rules only.
import json

from snakemake.exceptions import WorkflowError

from multisym import targets
from multisym.config import ConfigError, resolve, resolve_cluster
from multisym.plan import Plan, alternatives
from multisym.stages import stage_version

config = resolve(config)
PLAN = Plan(config)
LAYOUT = PLAN.layout


wildcard_constraints:
    **PLAN.wildcard_patterns(),
    table=alternatives(t.name for t in targets.TABLES),
    figure=alternatives(t.name for t in targets.FIGURES),


def spec(build):
    """A params function: the spec ``build`` gives for this job's wildcards, as
    JSON with sorted keys (the command's --spec-json or --settings-json)."""
    return lambda wildcards: json.dumps(build(wildcards), sort_keys=True)


def snakemake_executor(wildcards):
    # workflow attribute used: workflow.executor_plugin, the executor plugin of this
    # run (set before any job's resources are evaluated; "dryrun" under -n)
    plugin = workflow.executor_plugin
    return plugin.name if plugin is not None else "local"


def gpu_job_resources(step):
    return PLAN.gpu_job_resources(step, snakemake_executor)


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


def probe_option(wildcards, input):
    return f"--probe-params {input.probe}" if "probe" in input.keys() else ""


def all_tables_and_figures(wildcards):
    return targets.outputs(PLAN)


def target_inputs(wildcards):
    """The result files a table or figure reads (the target registry's)."""
    name = wildcards.get("table") or wildcards.get("figure")
    return targets.TARGETS[name].reads(PLAN)


def claims_inputs(wildcards):
    return targets.CLAIMS.reads(PLAN)


def comparison_inputs(wildcards):
    return targets.comparison_inputs(PLAN)


def protocol_spec(wildcards):
    return targets.protocol_spec(PLAN)


def provenance_spec(wildcards):
    return targets.provenance_spec(PLAN)
