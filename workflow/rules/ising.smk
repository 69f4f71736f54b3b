# Gerken & Kessel's Ising experiment (docs/method.md#the-ising-model): spin
# lattices drawn on the fly, so these jobs read no dataset. One job trains every
# width of one architecture, augmented and control; one measures untrained
# ensembles for the finite-ensemble slopes (docs/method.md#the-finite-ensemble-rate).
rule ising:
    output:
        result=kept(LAYOUT.ising("{architecture}")),
    log:
        LAYOUT.log("ising", "{architecture}"),
    conda:
        env("workflow")
    threads: 1
    resources:
        runtime="2h",
        mem_mb=4000,
    params:
        settings=spec(PLAN.ising_spec),
        version=stage_version("ising"),
    shell:
        "multisym ising --architecture {wildcards.architecture} --settings-json {params.settings:q}"
        " --out {output.result} --threads {threads} > {log} 2>&1"


rule ising_initialisation:
    output:
        result=kept(LAYOUT.ising_initialisation),
    log:
        LAYOUT.log("ising_initialisation", "initialisation"),
    conda:
        env("workflow")
    threads: 1
    resources:
        runtime="1h",
        mem_mb=4000,
    params:
        settings=spec(PLAN.ising_spec),
        version=stage_version("ising_initialisation"),
    shell:
        "multisym ising-initialisation --settings-json {params.settings:q}"
        " --out {output.result} --threads {threads} > {log} 2>&1"
