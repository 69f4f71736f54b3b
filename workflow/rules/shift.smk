# Distribution shift generated locally: corrupted copies of the test split, every
# member's logits on them, and the members and greedy ensembles under shift.
rule prepare_shift:
    input:
        data=LAYOUT.dataset,
        manifest=LAYOUT.manifest,
    output:
        data=kept(LAYOUT.shift_data),
        manifest=kept(LAYOUT.shift_manifest),
    log:
        LAYOUT.log("prepare_shift", "sets"),
    conda:
        env("workflow")
    threads: 1
    resources:
        **PLAN.loading,
        runtime="2h",
        mem_mb=8000,
    params:
        settings=spec(PLAN.shift_settings_spec),
        version=stage_version("shift_sets"),
    shell:
        "multisym prepare-shift --settings-json {params.settings:q} --data {input.data}"
        " --manifest {input.manifest} --out-data {output.data}"
        " --out-manifest {output.manifest} --in-memory-gib {resources.in_memory_gib}"
        " > {log} 2>&1"


rule shift_logits:
    input:
        unpack(PLAN.adapted_network),
        shift_data=LAYOUT.shift_data,
        shift_manifest=LAYOUT.shift_manifest,
        manifest=LAYOUT.manifest,
    output:
        logits=kept(LAYOUT.shift_logits("{evaluated}")),
    log:
        LAYOUT.log("shift_logits", "{evaluated}"),
    conda:
        env("workflow")
    threads: 1
    resources:
        runtime="1h",
        mem_mb=8000,
    params:
        probe=probe_option,
        version=stage_version("shift_logits"),
    shell:
        "multisym shift-logits --model {input.model} {params.probe}"
        " --shift-data {input.shift_data} --shift-manifest {input.shift_manifest}"
        " --manifest {input.manifest} --out {output.logits} --threads {threads} > {log} 2>&1"


rule shift_metrics:
    input:
        logits=PLAN.shift_member_logits,
        greedy=PLAN.greedy_ensembles,
        manifest=LAYOUT.shift_manifest,
    output:
        metrics=kept(LAYOUT.shift_metrics),
    log:
        LAYOUT.log("shift_metrics", "metrics"),
    conda:
        env("workflow")
    params:
        spec=spec(PLAN.shift_spec),
        version=stage_version("shift_metrics"),
    shell:
        "multisym shift-metrics --spec-json {params.spec:q} --logits {input.logits}"
        " --greedy {input.greedy} --shift-manifest {input.manifest}"
        " --out {output.metrics} > {log} 2>&1"
