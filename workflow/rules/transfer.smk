# Transfer (docs/method.md#transfer-and-distribution-shift): every Eq and Inv member
# of the ensembles axis adapted to each transfer dataset (a probe on cached
# features, or fine-tuned), its Eq / Inv / Eq+Inv ensembles, and one summary per
# dataset for Tables 5, 8, 9 and Figure 4.
TLAYOUT = LAYOUT.transfer("{tdata}")


rule dataset_summary:
    input:
        members=LAYOUT.member_metrics,
        ensembles=summary_ensembles(LAYOUT),
    output:
        summary=kept(LAYOUT.dataset_summary),
    log:
        LAYOUT.log("dataset_summary", config["dataset"]["name"]),
    conda:
        env("workflow")
    params:
        spec=dataset_summary_spec(config["dataset"]["name"], config["dataset"]),
        version=stage_version("dataset_summary"),
    shell:
        "multisym dataset-summary --spec-json {params.spec:q} --members {input.members}"
        " --ensembles {input.ensembles} --out {output.summary} > {log} 2>&1"


use rule prepare_data as prepare_transfer_data with:
    output:
        data=kept(TLAYOUT.dataset),
        manifest=kept(TLAYOUT.manifest),
    log:
        TLAYOUT.log("prepare_data", "{tdata}"),
    params:
        dataset=transfer_dataset_json,


rule transfer_features:
    input:
        model=LAYOUT.member_model("{tmember}"),
        data=LAYOUT.transfer("{tprobe}").dataset,
        manifest=LAYOUT.transfer("{tprobe}").manifest,
    output:
        features=kept(LAYOUT.transfer("{tprobe}").features("{tmember}")),
    log:
        LAYOUT.transfer("{tprobe}").log("features", "{tmember}"),
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


rule transfer_probe:
    input:
        features=LAYOUT.transfer("{tprobe}").features("{tmember}"),
    output:
        logits=kept(LAYOUT.transfer("{tprobe}").logits("{tmember}")),
        summary=kept(LAYOUT.transfer("{tprobe}").probe_summary("{tmember}")),
        params=kept(LAYOUT.transfer("{tprobe}").probe_params("{tmember}")),
    log:
        LAYOUT.transfer("{tprobe}").log("probe", "{tmember}"),
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


rule transfer_candidate:
    input:
        model=LAYOUT.member_model("{tmember}"),
        data=LAYOUT.transfer("{tfine}").dataset,
        manifest=LAYOUT.transfer("{tfine}").manifest,
    output:
        model=LAYOUT.transfer("{tfine}").adapt_candidate(
            "{tmember}", "{lr}", "model.pt"
        ),
        logits=LAYOUT.transfer("{tfine}").adapt_candidate(
            "{tmember}", "{lr}", "logits.npz"
        ),
        epochs=LAYOUT.transfer("{tfine}").adapt_candidate(
            "{tmember}", "{lr}", "epochs.csv"
        ),
        summary=LAYOUT.transfer("{tfine}").adapt_candidate(
            "{tmember}", "{lr}", "summary.json"
        ),
    log:
        LAYOUT.transfer("{tfine}").log("adapt_candidate", "{tmember}-lr{lr}"),
    localrule: True
    conda:
        env("workflow")
    threads: 1
    resources:
        **gpu_job_resources("adapt"),
    params:
        settings=transfer_candidate_settings_json,
    shell:
        "multisym adapt-candidate --model {input.model} --settings-json {params.settings:q}"
        " --data {input.data} --manifest {input.manifest} --out-model {output.model}"
        " --out-logits {output.logits} --out-log {output.epochs}"
        " --out-summary {output.summary} --threads {threads}"
        + GPU_JOB_SHELL
        + " > {log} 2>&1"


rule transfer_adapted_logits:
    input:
        summaries=transfer_candidates("summary.json"),
        logits=transfer_candidates("logits.npz"),
        models=transfer_candidates("model.pt"),
    output:
        logits=kept(LAYOUT.transfer("{tfine}").logits("{tmember}")),
        model=kept(f"{LAYOUT.transfer('{tfine}').adapt_dir('{tmember}')}/model.pt"),
        choice=kept(f"{LAYOUT.transfer('{tfine}').adapt_dir('{tmember}')}/choice.json"),
    log:
        LAYOUT.transfer("{tfine}").log("adapted_logits", "{tmember}"),
    conda:
        env("workflow")
    shell:
        "multisym adapt-select --summaries {input.summaries} --logits {input.logits}"
        " --models {input.models} --out-logits {output.logits} --out-model {output.model}"
        " --out-choice {output.choice} > {log} 2>&1"


# Evaluation-only sets (ImageNet-V2, ImageNet-R): each member as adapted to the
# pretraining dataset, on the set's images; its val logits are its own on the
# pretraining dataset, so ensembles are chosen in distribution.
rule transfer_evaluation_logits:
    input:
        unpack(transfer_evaluated_network),
        data=LAYOUT.transfer("{teval}").dataset,
        manifest=LAYOUT.transfer("{teval}").manifest,
        primary_logits=LAYOUT.logits("{tmember}"),
        primary_manifest=LAYOUT.manifest,
    output:
        logits=kept(LAYOUT.transfer("{teval}").logits("{tmember}")),
    log:
        LAYOUT.transfer("{teval}").log("evaluation_logits", "{tmember}"),
    conda:
        env("workflow")
    threads: 1
    resources:
        **LOADING,
        runtime="1h",
        mem_mb=8000,
    params:
        probe=probe_option,
        version=stage_version("evaluation_logits"),
    shell:
        "multisym evaluation-logits --model {input.model} {params.probe} --data {input.data}"
        " --manifest {input.manifest} --primary-logits {input.primary_logits}"
        " --primary-manifest {input.primary_manifest} --out {output.logits}"
        " --threads {threads} --in-memory-gib {resources.in_memory_gib}"
        " > {log} 2>&1"


use rule member_metrics as transfer_member_metrics with:
    input:
        logits=transfer_member_logits,
    output:
        metrics=kept(TLAYOUT.member_metrics),
    log:
        TLAYOUT.log("member_metrics", "members"),
    params:
        spec=transfer_member_metrics_spec_json,
        version=stage_version("member_metrics"),


use rule ensemble as transfer_ensemble with:
    input:
        logits=transfer_pool_logits,
    output:
        result=kept(TLAYOUT.ensemble("{pool}", "{strategy}")),
    log:
        TLAYOUT.log("ensemble", "{pool}_{strategy}"),


use rule dataset_summary as transfer_dataset_summary with:
    input:
        members=TLAYOUT.member_metrics,
        ensembles=summary_ensembles(TLAYOUT),
    output:
        summary=kept(TLAYOUT.dataset_summary),
    log:
        TLAYOUT.log("dataset_summary", "{tdata}"),
    params:
        spec=lambda w: dataset_summary_spec(w.tdata, TRANSFER[w.tdata]["dataset"]),
        version=stage_version("dataset_summary"),
