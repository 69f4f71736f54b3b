# Tables and figures read small result files only (never checkpoints or logits).
import os


rule table:
    input:
        results=target_inputs,
    output:
        csv=kept(LAYOUT.table("{table}", "csv")),
        md=kept(LAYOUT.table("{table}", "md")),
        tex=kept(LAYOUT.table("{table}", "tex")),
        html=report(
            kept(LAYOUT.table("{table}", "html")),
            caption="../report/table.rst",
            category="Tables",
            labels={"table": "{table}"},
        ),
    log:
        LAYOUT.log("table", "{table}"),
    localrule: True
    conda:
        env("workflow")
    params:
        spec=spec(PLAN.report_spec),
        version=stage_version("table"),
    shell:
        "multisym table --table {wildcards.table} --spec-json {params.spec:q}"
        " --inputs {input.results} --out-csv {output.csv} --out-md {output.md}"
        " --out-tex {output.tex} --out-html {output.html} > {log} 2>&1"


rule figure:
    input:
        results=target_inputs,
    output:
        pdf=kept(LAYOUT.figure("{figure}", "pdf")),
        png=report(
            kept(LAYOUT.figure("{figure}", "png")),
            caption="../report/figure.rst",
            category="Figures",
            labels={"figure": "{figure}"},
        ),
    log:
        LAYOUT.log("figure", "{figure}"),
    localrule: True
    conda:
        env("workflow")
    params:
        spec=spec(PLAN.report_spec),
        version=stage_version("figure"),
    shell:
        "multisym figure --figure {wildcards.figure} --spec-json {params.spec:q}"
        " --inputs {input.results} --out-pdf {output.pdf} --out-png {output.png} > {log} 2>&1"


# The protocol record of the run, of each member and of each table
# (docs/deviations.md), which the comparison checks against the paper's.
rule protocol:
    input:
        manifest=LAYOUT.manifest,
    output:
        record=kept(LAYOUT.protocol),
    log:
        LAYOUT.log("protocol", "record"),
    localrule: True
    conda:
        env("workflow")
    params:
        spec=spec(protocol_spec),
        version=stage_version("protocol"),
    shell:
        "multisym protocol --spec-json {params.spec:q} --manifest {input.manifest}"
        " --out {output.record} > {log} 2>&1"


rule comparison:
    input:
        tables=comparison_inputs,
        protocol=LAYOUT.protocol,
    output:
        csv=kept(LAYOUT.comparison("csv")),
        md=kept(LAYOUT.comparison("md")),
        html=report(
            kept(LAYOUT.comparison("html")),
            caption="../report/comparison.rst",
            category="Paper vs reproduction",
            labels={"table": "paper comparison"},
        ),
    log:
        LAYOUT.log("comparison", "paper"),
    localrule: True
    conda:
        env("workflow")
    params:
        spec=spec(PLAN.comparison_spec),
        version=stage_version("comparison"),
    shell:
        "multisym compare --spec-json {params.spec:q} --protocol {input.protocol} --tables {input.tables}"
        " --out-csv {output.csv} --out-md {output.md} --out-html {output.html} > {log} 2>&1"


# The paper's claims, each a paired bootstrap difference of two ensembles on the
# same test resamples (docs/method.md#claims), from the ensembles' resamples files.
rule claims:
    input:
        results=claims_inputs,
    output:
        csv=kept(LAYOUT.table("claims", "csv")),
        md=kept(LAYOUT.table("claims", "md")),
        html=report(
            kept(LAYOUT.table("claims", "html")),
            caption="../report/claims.rst",
            category="Claims",
            labels={"table": "claims"},
        ),
    log:
        LAYOUT.log("claims", "paper"),
    localrule: True
    conda:
        env("workflow")
    params:
        spec=spec(PLAN.claims_spec),
        version=stage_version("claims"),
    shell:
        "multisym claims --spec-json {params.spec:q} --inputs {input.results}"
        " --out-csv {output.csv} --out-md {output.md} --out-html {output.html} > {log} 2>&1"


# The report's provenance page: commit, versions, every target's status, the
# member manifest and the resolved config.
rule provenance:
    input:
        all_tables_and_figures,
        models=PLAN.member_models,
    output:
        page=report(
            kept(LAYOUT.provenance_page),
            caption="../report/provenance.rst",
            category="Provenance",
            labels={"page": "provenance"},
        ),
    log:
        LAYOUT.log("provenance", "page"),
    localrule: True
    conda:
        env("workflow")
    params:
        spec=spec(provenance_spec),
        members=spec(PLAN.provenance_members_spec),
        config=spec(PLAN.provenance_config_spec),
    shell:
        "multisym provenance --spec-json {params.spec:q} --members-json {params.members:q}"
        " --config-json {params.config:q} --out {output.page} > {log} 2>&1"


# The sha256 of every result file, written last, so a reviewer can check a run
# with `multisym verify results/<name>` before rebuilding from it.
rule checksums:
    input:
        all_tables_and_figures,
        LAYOUT.provenance_page,
    output:
        ledger=kept(LAYOUT.checksums),
    log:
        LAYOUT.log("checksums", "ledger"),
    localrule: True
    conda:
        env("workflow")
    params:
        root=lambda wildcards, output: os.path.dirname(output.ledger),
    shell:
        "multisym checksums {params.root} --out {output.ledger} > {log} 2>&1"
