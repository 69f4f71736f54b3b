# Turning members into classifiers (§3): cached features and a linear probe for
# SSL members, their own head for supervised members, and the SSL-FT pool.
rule features:
    input:
        model=LAYOUT.member_model("{ssl_member}"),
        data=LAYOUT.dataset,
        manifest=LAYOUT.manifest,
    output:
        features=LAYOUT.features("{ssl_member}"),
    log:
        LAYOUT.log("features", "{ssl_member}"),
    conda:
        env("workflow")
    threads: 1
    resources:
        runtime="1h",
        mem_mb=4000,
    shell:
        "multisym features --model {input.model} --data {input.data}"
        " --manifest {input.manifest} --out {output.features} --threads {threads} > {log} 2>&1"


rule probe:
    input:
        features=LAYOUT.features("{ssl_member}"),
    output:
        logits=LAYOUT.logits("{ssl_member}"),
        summary=LAYOUT.probe_summary("{ssl_member}"),
        params=LAYOUT.probe_params("{ssl_member}"),
    log:
        LAYOUT.log("probe", "{ssl_member}"),
    conda:
        env("workflow")
    threads: 1
    resources:
        runtime="1h",
        mem_mb=4000,
    params:
        settings=probe_settings_json,
        code=code_digest("probe"),
    shell:
        "multisym probe --features {input.features} --settings-json {params.settings:q}"
        " --out-logits {output.logits} --out-summary {output.summary}"
        " --out-params {output.params} > {log} 2>&1"


rule sup_logits:
    input:
        model=LAYOUT.member_model("{sup_member}"),
        data=LAYOUT.dataset,
        manifest=LAYOUT.manifest,
    output:
        logits=LAYOUT.logits("{sup_member}"),
    log:
        LAYOUT.log("sup_logits", "{sup_member}"),
    conda:
        env("workflow")
    threads: 1
    resources:
        runtime="1h",
        mem_mb=4000,
    shell:
        "multisym sup-logits --model {input.model} --data {input.data}"
        " --manifest {input.manifest} --out-logits {output.logits} --threads {threads} > {log} 2>&1"


rule finetune:
    input:
        base=finetune_base_model,
        data=LAYOUT.dataset,
        manifest=LAYOUT.manifest,
    output:
        model=f"{LAYOUT.finetune_dir('{finetuned}')}/model.pt",
        epochs=f"{LAYOUT.finetune_dir('{finetuned}')}/epochs.csv",
        logits=LAYOUT.logits("{finetuned}"),
    log:
        LAYOUT.log("finetune", "{finetuned}"),
    conda:
        env("workflow")
    threads: 1
    resources:
        runtime="2h",
        mem_mb=4000,
    params:
        settings=finetune_settings_json,
    shell:
        "multisym finetune --base-model {input.base} --settings-json {params.settings:q}"
        " --data {input.data} --manifest {input.manifest} --out-model {output.model}"
        " --out-logits {output.logits} --out-log {output.epochs} --threads {threads} > {log} 2>&1"
