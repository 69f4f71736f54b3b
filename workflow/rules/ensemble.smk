# Ensembles from stored logits (§4): every member alone, then each pool's greedy
# and random ensembles with test metrics and bootstrap CIs.
rule member_metrics:
    input:
        member_logits,
    output:
        LAYOUT.member_metrics,
    log:
        LAYOUT.log("member_metrics", "members"),
    conda:
        env("workflow")
    params:
        spec=member_metrics_spec_json,
    shell:
        "multisym member-metrics --spec-json {params.spec:q} --logits {input}"
        " --out {output} > {log} 2>&1"


rule ensemble:
    input:
        pool_logits,
    output:
        LAYOUT.ensemble("{pool}", "{strategy}"),
    log:
        LAYOUT.log("ensemble", "{pool}_{strategy}"),
    conda:
        env("workflow")
    params:
        spec=ensemble_spec_json,
    shell:
        "multisym ensemble --strategy {wildcards.strategy} --spec-json {params.spec:q}"
        " --logits {input} --out {output} > {log} 2>&1"
