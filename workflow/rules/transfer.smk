# Transfer (docs/method.md#transfer-and-distribution-shift): every Eq and Inv member
# of the ensembles axis adapted to each transfer dataset (a probe on cached
# features, or fine-tuned) by the stage rules reused, its Eq / Inv / Eq+Inv ensembles,
# and one summary per dataset for Tables 5, 8, 9 and Figure 4. The plan's input and
# spec functions take the transfer dataset from wildcard tdata.
TLAYOUT = LAYOUT.transfer("{tdata}")
PROBED = LAYOUT.transfer("{tprobe}")
TUNED = LAYOUT.transfer("{tfine}")
EVALUATED = LAYOUT.transfer("{teval}")


rule dataset_summary:
    input:
        unpack(PLAN.summary_inputs),
    output:
        summary=kept(LAYOUT.dataset_summary),
    log:
        LAYOUT.log("dataset_summary", config["dataset"]["name"]),
    conda:
        env("workflow")
    params:
        spec=spec(PLAN.dataset_summary_spec),
        version=stage_version("dataset_summary"),
    shell:
        "multisym dataset-summary --spec-json {params.spec:q} --members {input.members}"
        " --ensembles {input.ensembles} --resamples {input.resamples}"
        " --out {output.summary} > {log} 2>&1"


use rule prepare_data as prepare_transfer_data with:
    output:
        data=TLAYOUT.dataset,
        manifest=TLAYOUT.manifest,
    log:
        TLAYOUT.log("prepare_data", "{tdata}"),


use rule features as transfer_features with:
    input:
        model=LAYOUT.member_model("{tmember}"),
        data=PROBED.dataset,
        manifest=PROBED.manifest,
    output:
        features=kept(PROBED.features("{tmember}")),
    log:
        PROBED.log("features", "{tmember}"),


use rule probe as transfer_probe with:
    input:
        features=PROBED.features("{tmember}"),
    output:
        logits=kept(PROBED.logits("{tmember}")),
        summary=kept(PROBED.probe_summary("{tmember}")),
        params=kept(PROBED.probe_params("{tmember}")),
    log:
        PROBED.log("probe", "{tmember}"),


use rule adapt_candidate as transfer_candidate with:
    input:
        model=LAYOUT.member_model("{tmember}"),
        data=TUNED.dataset,
        manifest=TUNED.manifest,
    output:
        model=TUNED.adapt_candidate("{tmember}", "{lr}", "model.pt"),
        logits=TUNED.adapt_candidate("{tmember}", "{lr}", "logits.npz"),
        epochs=TUNED.adapt_candidate("{tmember}", "{lr}", "epochs.csv"),
        summary=TUNED.adapt_candidate("{tmember}", "{lr}", "summary.json"),
    log:
        TUNED.log("adapt_candidate", "{tmember}-lr{lr}"),


use rule adapted_logits as transfer_adapted_logits with:
    output:
        logits=kept(TUNED.logits("{tmember}")),
        model=kept(f"{TUNED.adapt_dir('{tmember}')}/model.pt"),
        choice=kept(f"{TUNED.adapt_dir('{tmember}')}/choice.json"),
    log:
        TUNED.log("adapted_logits", "{tmember}"),


# Evaluation-only sets (ImageNet-V2, ImageNet-R): each member as adapted to the
# pretraining dataset, on the set's images; its val logits are its own on the
# pretraining dataset, so ensembles are chosen in distribution.
rule transfer_evaluation_logits:
    input:
        unpack(PLAN.adapted_network),
        data=EVALUATED.dataset,
        manifest=EVALUATED.manifest,
        primary_logits=LAYOUT.logits("{tmember}"),
        primary_manifest=LAYOUT.manifest,
    output:
        logits=kept(EVALUATED.logits("{tmember}")),
    log:
        EVALUATED.log("evaluation_logits", "{tmember}"),
    conda:
        env("workflow")
    threads: 1
    resources:
        **PLAN.loading,
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
    output:
        metrics=kept(TLAYOUT.member_metrics),
    log:
        TLAYOUT.log("member_metrics", "members"),


use rule ensemble as transfer_ensemble with:
    output:
        result=kept(TLAYOUT.ensemble("{pool}", "{strategy}")),
        resamples=kept(TLAYOUT.ensemble_resamples("{pool}", "{strategy}")),
    log:
        TLAYOUT.log("ensemble", "{pool}_{strategy}"),


use rule dataset_summary as transfer_dataset_summary with:
    output:
        summary=kept(TLAYOUT.dataset_summary),
    log:
        TLAYOUT.log("dataset_summary", "{tdata}"),
