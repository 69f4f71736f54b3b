# One member's training. The rolling checkpoint state.pt in the run folder is not a
# declared output (Snakemake would delete it before a rerun), so a killed or
# failed job resumes from its last epoch when the job runs again.
rule pretrain:
    input:
        data=LAYOUT.dataset,
        manifest=LAYOUT.manifest,
    output:
        model=kept(LAYOUT.member_model("{member}")),
        epochs=kept(LAYOUT.member_epochs("{member}")),
    log:
        LAYOUT.log("pretrain", "{member}"),
    localrule: True
    conda:
        env("workflow")
    threads: 1
    resources:
        **gpu_job_resources("pretrain"),
    params:
        settings=spec(PLAN.member_settings_spec),
        run_dir=PLAN.member_run_dir,
    shell:
        "multisym pretrain --settings-json {params.settings:q} --data {input.data}"
        " --manifest {input.manifest} --run-dir {params.run_dir} --out-model {output.model}"
        " --out-log {output.epochs} --threads {threads}"
        " --keep-every {resources.keep_every} --decode {resources.decode} --cuda-graphs {resources.cuda_graphs}"
        + PLAN.gpu_job_shell
        + " > {log} 2>&1"


# A member read from an existing checkpoint (members.imported) instead of trained.
rule import_member:
    input:
        checkpoint=PLAN.imported_checkpoint,
        manifest=LAYOUT.manifest,
    output:
        model=kept(LAYOUT.member_model("{imported}")),
        record=kept(f"{LAYOUT.member_dir('{imported}')}/import.json"),
    log:
        LAYOUT.log("import_member", "{imported}"),
    conda:
        env("workflow")
    params:
        settings=spec(PLAN.member_settings_spec),
    shell:
        "multisym import-member --checkpoint {input.checkpoint} --settings-json {params.settings:q}"
        " --manifest {input.manifest} --out-model {output.model} --out-record {output.record} > {log} 2>&1"
