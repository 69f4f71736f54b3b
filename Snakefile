# Multi-Symmetry Ensembles (Loh et al., ICML 2023), rebuilt from declared dependencies.
# Table of contents only: configuration and helpers in workflow/rules/common.smk,
# one rule file per stage, targets below.
from snakemake.utils import min_version

min_version("9.20")


# A scale file given with --configfile fully defines its run: config.yaml is read
# only when none was given (this also holds in jobs spawned by executor plugins,
# which receive the same --configfiles). Workflow attribute used:
# workflow.overwrite_configfiles, the files given with --configfile.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/adapt.smk"
include: "workflow/rules/ensemble.smk"
include: "workflow/rules/transfer.smk"
include: "workflow/rules/shift.smk"
include: "workflow/rules/audit.smk"
include: "workflow/rules/ising.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/failures.smk"
include: "workflow/rules/warm.smk"


onstart:
    refuse_local_training_under_slurm()
    start_warm_starts(log)


# The handlers' `log` (documented): the log files of this run, Snakemake's own
# among them.
onsuccess:
    stop_warm_starts()
    clear_failures(log)


onerror:
    stop_warm_starts()
    report_failures(log)


rule all:
    default_target: True
    input:
        LAYOUT.resolved_config,
        all_tables_and_figures,
        LAYOUT.checksums,
    localrule: True


rule figures:
    input:
        all_tables_and_figures,
        LAYOUT.checksums,
    localrule: True


rule members:
    input:
        PLAN.member_models,
    localrule: True
