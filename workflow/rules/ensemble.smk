# Ensembles from stored logits (docs/method.md#ensembles): every member alone, then
# each pool's greedy and random ensembles with test metrics and bootstrap CIs, and
# their values on every resample for paired differences (claims, Tables 9, 10). Each
# job spreads its work over its threads (multisym.ensembles.rowblocks); Snakemake gives it at
# most the cores it has, so jobs side by side do not each take every core.
rule member_metrics:
    input:
        logits=PLAN.member_logits,
    output:
        metrics=kept(LAYOUT.member_metrics),
    log:
        LAYOUT.log("member_metrics", "members"),
    conda:
        env("workflow")
    threads: 8
    resources:
        cpus_per_task=threads_as_cpus,
    params:
        spec=spec(PLAN.member_metrics_spec),
        version=stage_version("member_metrics"),
    shell:
        "multisym member-metrics --spec-json {params.spec:q} --logits {input.logits}"
        " --out {output.metrics} --threads {threads} > {log} 2>&1"


rule ensemble:
    input:
        logits=PLAN.pool_logits,
    output:
        result=kept(LAYOUT.ensemble("{pool}", "{strategy}")),
        resamples=kept(LAYOUT.ensemble_resamples("{pool}", "{strategy}")),
    log:
        LAYOUT.log("ensemble", "{pool}_{strategy}"),
    conda:
        env("workflow")
    threads: 8
    resources:
        cpus_per_task=threads_as_cpus,
    params:
        spec=spec(PLAN.ensemble_spec),
        version=stage_version("ensemble"),
    shell:
        "multisym ensemble --strategy {wildcards.strategy} --spec-json {params.spec:q}"
        " --logits {input.logits} --out {output.result}"
        " --out-resamples {output.resamples} --threads {threads} > {log} 2>&1"
