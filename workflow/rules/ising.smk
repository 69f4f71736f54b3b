# Gerken & Kessel's Ising experiment (docs/method.md#the-ising-model): spin
# lattices drawn on the fly, so these jobs read no dataset. One job per
# architecture trains each of its widths, augmented and control, and measures
# untrained ensembles for the finite-ensemble slopes
# (docs/method.md#the-finite-ensemble-rate).
rule ising:
    output:
        result=kept(LAYOUT.ising("{architecture}")),
    log:
        LAYOUT.log("ising", "{architecture}"),
    conda:
        env("workflow")
    threads: PLAN.emergence_job(ising=True)["cpus"]
    resources:
        **PLAN.emergence_job_resources(ising=True),
    params:
        settings=spec(PLAN.ising_spec),
        version=stage_version("ising"),
    shell:
        "multisym ising --architecture {wildcards.architecture} --settings-json {params.settings:q}"
        " --out {output.result} --threads {threads} > {log} 2>&1"
