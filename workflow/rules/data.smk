rule prepare_data:
    output:
        data=LAYOUT.dataset,
        manifest=LAYOUT.manifest,
    log:
        LAYOUT.log("prepare_data", config["dataset"]["name"]),
    conda:
        env("workflow")
    resources:
        # a resource, not a param: it only names the dataset in errors, so it reruns nothing
        dataset_key=PLAN.dataset_key,
    params:
        dataset=spec(PLAN.dataset_spec),
    shell:
        "multisym prepare-data --dataset-json {params.dataset:q} --key {resources.dataset_key:q}"
        " --out-data {output.data} --out-manifest {output.manifest} > {log} 2>&1"


# The resolved configuration (scale file plus schema defaults) that every other
# output of this scale was computed from.
rule resolved_config:
    output:
        config=LAYOUT.resolved_config,
    log:
        LAYOUT.log("resolved_config", "config"),
    localrule: True
    conda:
        env("workflow")
    params:
        config=spec(PLAN.config_spec),
    shell:
        "multisym validate --config-json {params.config:q} --out {output.config} > {log} 2>&1"
