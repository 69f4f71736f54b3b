# One member's training. The rolling checkpoint state.pt in the run folder is not a
# declared output (Snakemake would delete it before a rerun), so a killed or
# failed job resumes from its last epoch when the job runs again.
rule pretrain:
    input:
        data=LAYOUT.dataset,
        manifest=LAYOUT.manifest,
    output:
        model=LAYOUT.member_model("{member}"),
        epochs=LAYOUT.member_epochs("{member}"),
    log:
        LAYOUT.log("pretrain", "{member}"),
    conda:
        env("workflow")
    threads: 1
    resources:
        runtime="2h",
        mem_mb=4000,
    params:
        settings=member_settings_json,
        run_dir=member_run_dir,
    shell:
        "multisym pretrain --settings-json {params.settings:q} --data {input.data}"
        " --manifest {input.manifest} --run-dir {params.run_dir} --out-model {output.model}"
        " --out-log {output.epochs} --threads {threads} > {log} 2>&1"
