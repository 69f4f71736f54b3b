# Turning members into classifiers (docs/method.md#adaptation): cached features and
# a linear probe for SSL members, their own head for supervised members, and the
# SSL-FT pool. Both adapt modes' rules are declared at every scale, since the
# transfer datasets reuse them (transfer.smk): wildcard `probed` names the SSL members
# of adapt mode probe, `tuned` those of adapt mode finetune, and no member otherwise.
rule features:
    input:
        model=LAYOUT.member_model("{probed}"),
        data=LAYOUT.dataset,
        manifest=LAYOUT.manifest,
    output:
        features=kept(LAYOUT.features("{probed}")),
    log:
        LAYOUT.log("features", "{probed}"),
    conda:
        env("workflow")
    threads: 1
    resources:
        **PLAN.loading,
        runtime="1h",
        mem_mb=4000,
    shell:
        "multisym features --model {input.model} --data {input.data}"
        " --manifest {input.manifest} --out {output.features} --threads {threads}"
        " --in-memory-gib {resources.in_memory_gib}"
        " > {log} 2>&1"


rule probe:
    input:
        features=LAYOUT.features("{probed}"),
    output:
        logits=kept(LAYOUT.logits("{probed}")),
        summary=kept(LAYOUT.probe_summary("{probed}")),
        params=kept(LAYOUT.probe_params("{probed}")),
    log:
        LAYOUT.log("probe", "{probed}"),
    conda:
        env("workflow")
    threads: config["probe"]["threads"]
    resources:
        **PLAN.probe_gpu_resources(),
        cpus_per_task=threads_as_cpus,
        runtime=probe_runtime,
        mem_mb=probe_mem_mb,
    params:
        settings=spec(PLAN.probe_spec),
        version=stage_version("probe"),
    shell:
        "multisym probe --features {input.features} --settings-json {params.settings:q}"
        " --out-logits {output.logits} --out-summary {output.summary}"
        " --out-params {output.params} > {log} 2>&1"


# Adapt mode finetune (docs/method.md#fine-tuning): each SSL member fine-tuned once
# per learning rate of its mode's grid, then the candidate best on the selection
# split is kept.
rule adapt_candidate:
    input:
        model=LAYOUT.member_model("{tuned}"),
        data=LAYOUT.dataset,
        manifest=LAYOUT.manifest,
    output:
        model=kept(LAYOUT.adapt_candidate("{tuned}", "{lr}", "model.pt")),
        logits=kept(LAYOUT.adapt_candidate("{tuned}", "{lr}", "logits.npz")),
        epochs=kept(LAYOUT.adapt_candidate("{tuned}", "{lr}", "epochs.csv")),
        summary=kept(LAYOUT.adapt_candidate("{tuned}", "{lr}", "summary.json")),
    log:
        LAYOUT.log("adapt_candidate", "{tuned}-lr{lr}"),
    localrule: True
    conda:
        env("workflow")
    threads: 1
    resources:
        **gpu_job_resources("adapt"),
    params:
        settings=spec(PLAN.candidate_spec),
    shell:
        "multisym adapt-candidate --model {input.model} --settings-json {params.settings:q}"
        " --data {input.data} --manifest {input.manifest} --out-model {output.model}"
        " --out-logits {output.logits} --out-log {output.epochs}"
        " --out-summary {output.summary} --threads {threads}"
        + PLAN.gpu_job_shell
        + " > {log} 2>&1"


rule adapted_logits:
    input:
        summaries=PLAN.candidate_files("summary.json"),
        logits=PLAN.candidate_files("logits.npz"),
        models=PLAN.candidate_files("model.pt"),
    output:
        logits=kept(LAYOUT.logits("{tuned}")),
        model=kept(f"{LAYOUT.adapt_dir('{tuned}')}/model.pt"),
        choice=kept(f"{LAYOUT.adapt_dir('{tuned}')}/choice.json"),
    log:
        LAYOUT.log("adapted_logits", "{tuned}"),
    conda:
        env("workflow")
    shell:
        "multisym adapt-select --summaries {input.summaries} --logits {input.logits}"
        " --models {input.models} --out-logits {output.logits} --out-model {output.model}"
        " --out-choice {output.choice} > {log} 2>&1"


rule sup_logits:
    input:
        model=LAYOUT.member_model("{sup_member}"),
        data=LAYOUT.dataset,
        manifest=LAYOUT.manifest,
    output:
        logits=kept(LAYOUT.logits("{sup_member}")),
    log:
        LAYOUT.log("sup_logits", "{sup_member}"),
    conda:
        env("workflow")
    threads: 1
    resources:
        **PLAN.loading,
        runtime="1h",
        mem_mb=4000,
    params:
        version=stage_version("sup_logits"),
    shell:
        "multisym sup-logits --model {input.model} --data {input.data}"
        " --manifest {input.manifest} --out-logits {output.logits} --threads {threads}"
        " --in-memory-gib {resources.in_memory_gib}"
        " > {log} 2>&1"


rule finetune:
    input:
        base=PLAN.finetune_base_model,
        data=LAYOUT.dataset,
        manifest=LAYOUT.manifest,
    output:
        model=kept(f"{LAYOUT.finetune_dir('{finetuned}')}/model.pt"),
        epochs=kept(f"{LAYOUT.finetune_dir('{finetuned}')}/epochs.csv"),
        logits=kept(LAYOUT.logits("{finetuned}")),
    log:
        LAYOUT.log("finetune", "{finetuned}"),
    localrule: True
    conda:
        env("workflow")
    threads: 1
    resources:
        **gpu_job_resources("adapt"),
    params:
        settings=spec(PLAN.finetune_spec),
    shell:
        "multisym finetune --base-model {input.base} --settings-json {params.settings:q}"
        " --data {input.data} --manifest {input.manifest} --out-model {output.model}"
        " --out-logits {output.logits} --out-log {output.epochs} --threads {threads}"
        + PLAN.gpu_job_shell
        + " > {log} 2>&1"
