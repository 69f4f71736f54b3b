# Symmetry audit (docs/method.md#orbit-consistency): every member's and every
# ensemble's predictions on group orbits of test and out-of-distribution inputs; and
# the emergent-invariance experiment (docs/method.md#emergent-equivariance) on the
# same inputs.
use rule prepare_data as prepare_audit_ood with:
    output:
        data=LAYOUT.audit_ood("{ood}", "dataset.npz"),
        manifest=LAYOUT.audit_ood("{ood}", "manifest.json"),
    log:
        LAYOUT.log("prepare_audit_ood", "{ood}"),


rule prepare_audit:
    input:
        unpack(PLAN.audit_sets_inputs),
    output:
        data=kept(LAYOUT.audit_sets),
        manifest=kept(LAYOUT.audit_manifest),
    log:
        LAYOUT.log("prepare_audit", "sets"),
    conda:
        env("workflow")
    threads: 1
    resources:
        **PLAN.loading,
        runtime="1h",
        mem_mb=8000,
    params:
        settings=spec(PLAN.audit_settings_spec),
        ood=PLAN.audit_ood_option,
        version=stage_version("audit_sets"),
    shell:
        "multisym prepare-audit --settings-json {params.settings:q} --data {input.data}"
        " --manifest {input.manifest} {params.ood} --out-data {output.data}"
        " --out-manifest {output.manifest} --in-memory-gib {resources.in_memory_gib}"
        " > {log} 2>&1"


rule audit_outputs:
    input:
        unpack(PLAN.adapted_network),
        member=PLAN.audited_member_model,
        sets=LAYOUT.audit_sets,
        sets_manifest=LAYOUT.audit_manifest,
        manifest=LAYOUT.manifest,
    output:
        outputs=kept(LAYOUT.audit_outputs("{evaluated}")),
    log:
        LAYOUT.log("audit_outputs", "{evaluated}"),
    conda:
        env("workflow")
    threads: 1
    resources:
        runtime="1h",
        mem_mb=8000,
    params:
        probe=probe_option,
        groups=" ".join(config["audit"]["groups"]),
        version=stage_version("audit_outputs"),
    shell:
        "multisym audit-outputs --model {input.model} {params.probe} --member-model {input.member}"
        " --sets {input.sets} --sets-manifest {input.sets_manifest} --manifest {input.manifest}"
        " --groups {params.groups} --out {output.outputs} --threads {threads} > {log} 2>&1"


rule audit_metrics:
    input:
        outputs=PLAN.member_audit_outputs,
        greedy=PLAN.greedy_ensembles,
        manifest=LAYOUT.audit_manifest,
    output:
        metrics=kept(LAYOUT.audit_metrics),
    log:
        LAYOUT.log("audit_metrics", "metrics"),
    conda:
        env("workflow")
    params:
        spec=spec(PLAN.audit_spec),
        version=stage_version("audit_metrics"),
    shell:
        "multisym audit-metrics --spec-json {params.spec:q} --outputs {input.outputs}"
        " --greedy {input.greedy} --sets-manifest {input.manifest}"
        " --out {output.metrics} > {log} 2>&1"


rule emergence:
    input:
        data=LAYOUT.dataset,
        manifest=LAYOUT.manifest,
        sets=LAYOUT.audit_sets,
        sets_manifest=LAYOUT.audit_manifest,
    output:
        logits=kept(LAYOUT.emergence_logits("{egroup}", "{run}")),
    log:
        LAYOUT.log("emergence", "{egroup}-{run}"),
    conda:
        env("workflow")
    threads: PLAN.emergence_job()["cpus"]
    resources:
        **PLAN.loading,
        **PLAN.emergence_job_resources(),
    params:
        settings=spec(PLAN.emergence_run_spec),
        version=stage_version("emergence"),
    shell:
        "multisym emergence --group {wildcards.egroup} --run {wildcards.run} --settings-json {params.settings:q}"
        " --data {input.data} --manifest {input.manifest} --sets {input.sets}"
        " --sets-manifest {input.sets_manifest} --out {output.logits}"
        " --threads {threads} --in-memory-gib {resources.in_memory_gib}"
        " > {log} 2>&1"


# Untrained ensembles of thousands of members (docs/method.md#the-finite-ensemble-rate):
# nothing is trained, so one job measures every group.
rule emergence_init:
    input:
        manifest=LAYOUT.manifest,
        sets=LAYOUT.audit_sets,
        sets_manifest=LAYOUT.audit_manifest,
    output:
        result=kept(LAYOUT.emergence_init),
    log:
        LAYOUT.log("emergence_init", "initialisation"),
    conda:
        env("workflow")
    threads: PLAN.emergence_job()["cpus"]
    resources:
        **PLAN.emergence_job_resources(),
    params:
        settings=spec(PLAN.emergence_init_spec),
        groups=" ".join(config["emergence"]["groups"]),
        version=stage_version("emergence_init"),
    shell:
        "multisym emergence-init --settings-json {params.settings:q} --groups {params.groups}"
        " --manifest {input.manifest} --sets {input.sets} --sets-manifest {input.sets_manifest}"
        " --out {output.result} --threads {threads} > {log} 2>&1"


rule emergence_metrics:
    input:
        logits=PLAN.emergence_logits,
        manifest=LAYOUT.audit_manifest,
    output:
        metrics=kept(LAYOUT.emergence_metrics),
    log:
        LAYOUT.log("emergence_metrics", "metrics"),
    conda:
        env("workflow")
    resources:
        # it reads every run's stored outputs, so it gets a run's memory and time
        mem_mb=PLAN.emergence_job()["mem_gb"] * 1000,
        runtime=PLAN.emergence_job()["time_limit_min"],
    params:
        settings=spec(PLAN.emergence_spec),
        runs=" ".join(f"{group}/{run}" for group, run in PLAN.emergence_runs()),
        version=stage_version("emergence_metrics"),
    shell:
        "multisym emergence-metrics --settings-json {params.settings:q} --runs {params.runs}"
        " --logits {input.logits} --sets-manifest {input.manifest}"
        " --out {output.metrics} > {log} 2>&1"
