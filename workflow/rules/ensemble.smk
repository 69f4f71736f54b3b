# Ensembles from stored logits (§4): every member alone, then each pool's greedy
# and random ensembles with test metrics and bootstrap CIs.
rule member_metrics:
    input:
        logits=member_logits,
    output:
        metrics=kept(LAYOUT.member_metrics),
    log:
        LAYOUT.log("member_metrics", "members"),
    conda:
        env("workflow")
    params:
        spec=member_metrics_spec_json,
        version=stage_version("member_metrics"),
    shell:
        "multisym member-metrics --spec-json {params.spec:q} --logits {input.logits}"
        " --out {output.metrics} > {log} 2>&1"


rule ensemble:
    input:
        logits=pool_logits,
    output:
        result=kept(LAYOUT.ensemble("{pool}", "{strategy}")),
    log:
        LAYOUT.log("ensemble", "{pool}_{strategy}"),
    conda:
        env("workflow")
    params:
        spec=ensemble_spec_json,
        version=stage_version("ensemble"),
    shell:
        "multisym ensemble --strategy {wildcards.strategy} --spec-json {params.spec:q}"
        " --logits {input.logits} --out {output.result} > {log} 2>&1"
