# Turning members into classifiers (docs/method.md#adaptation): cached features and
# a linear probe for SSL members, their own head for supervised members, and the
# SSL-FT pool.
if ADAPT_MODE == "probe":

    rule features:
        input:
            model=LAYOUT.member_model("{ssl_member}"),
            data=LAYOUT.dataset,
            manifest=LAYOUT.manifest,
        output:
            features=kept(LAYOUT.features("{ssl_member}")),
        log:
            LAYOUT.log("features", "{ssl_member}"),
        conda:
            env("workflow")
        threads: 1
        resources:
            **LOADING,
            runtime="1h",
            mem_mb=4000,
        shell:
            "multisym features --model {input.model} --data {input.data}"
            " --manifest {input.manifest} --out {output.features} --threads {threads}"
            " --in-memory-gib {resources.in_memory_gib}"
            " > {log} 2>&1"

    rule probe:
        input:
            features=LAYOUT.features("{ssl_member}"),
        output:
            logits=kept(LAYOUT.logits("{ssl_member}")),
            summary=kept(LAYOUT.probe_summary("{ssl_member}")),
            params=kept(LAYOUT.probe_params("{ssl_member}")),
        log:
            LAYOUT.log("probe", "{ssl_member}"),
        conda:
            env("workflow")
        threads: config["probe"]["threads"]
        resources:
            **probe_gpu_resources(),
            cpus_per_task=threads_as_cpus,
            runtime=probe_runtime,
            mem_mb=probe_mem_mb,
        params:
            settings=probe_settings_json,
            version=stage_version("probe"),
        shell:
            "multisym probe --features {input.features} --settings-json {params.settings:q}"
            " --out-logits {output.logits} --out-summary {output.summary}"
            " --out-params {output.params} > {log} 2>&1"

else:

    # Adapt mode finetune (docs/method.md#fine-tuning): each SSL member fine-tuned
    # once per learning rate of its mode's grid, then the candidate best on the
    # selection split is kept.
    rule adapt_candidate:
        input:
            model=LAYOUT.member_model("{ssl_member}"),
            data=LAYOUT.dataset,
            manifest=LAYOUT.manifest,
        output:
            model=kept(LAYOUT.adapt_candidate("{ssl_member}", "{lr}", "model.pt")),
            logits=kept(LAYOUT.adapt_candidate("{ssl_member}", "{lr}", "logits.npz")),
            epochs=kept(LAYOUT.adapt_candidate("{ssl_member}", "{lr}", "epochs.csv")),
            summary=kept(LAYOUT.adapt_candidate("{ssl_member}", "{lr}", "summary.json")),
        log:
            LAYOUT.log("adapt_candidate", "{ssl_member}-lr{lr}"),
        localrule: True
        conda:
            env("workflow")
        threads: 1
        resources:
            **gpu_job_resources("adapt"),
        params:
            settings=adapt_candidate_settings_json,
        shell:
            "multisym adapt-candidate --model {input.model} --settings-json {params.settings:q}"
            " --data {input.data} --manifest {input.manifest} --out-model {output.model}"
            " --out-logits {output.logits} --out-log {output.epochs}"
            " --out-summary {output.summary} --threads {threads}"
            + GPU_JOB_SHELL
            + " > {log} 2>&1"

    rule adapted_logits:
        input:
            summaries=adapt_candidates("summary.json"),
            logits=adapt_candidates("logits.npz"),
            models=adapt_candidates("model.pt"),
        output:
            logits=kept(LAYOUT.logits("{ssl_member}")),
            model=kept(f"{LAYOUT.adapt_dir('{ssl_member}')}/model.pt"),
            choice=kept(f"{LAYOUT.adapt_dir('{ssl_member}')}/choice.json"),
        log:
            LAYOUT.log("adapted_logits", "{ssl_member}"),
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
        **LOADING,
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
        base=finetune_base_model,
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
        settings=finetune_settings_json,
    shell:
        "multisym finetune --base-model {input.base} --settings-json {params.settings:q}"
        " --data {input.data} --manifest {input.manifest} --out-model {output.model}"
        " --out-logits {output.logits} --out-log {output.epochs} --threads {threads}"
        + GPU_JOB_SHELL
        + " > {log} 2>&1"
