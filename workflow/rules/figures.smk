# Tables and figures read small result files only (never checkpoints or logits).
rule table:
    input:
        results=table_inputs,
    output:
        csv=LAYOUT.table("{table}", "csv"),
        md=LAYOUT.table("{table}", "md"),
        tex=LAYOUT.table("{table}", "tex"),
    log:
        LAYOUT.log("table", "{table}"),
    localrule: True
    conda:
        env("workflow")
    params:
        spec=report_spec_json,
        version=stage_version("table"),
    shell:
        "multisym table --table {wildcards.table} --spec-json {params.spec:q}"
        " --inputs {input.results} --out-csv {output.csv} --out-md {output.md}"
        " --out-tex {output.tex} > {log} 2>&1"


rule figure:
    input:
        results=figure_inputs,
    output:
        pdf=LAYOUT.figure("{figure}", "pdf"),
        png=LAYOUT.figure("{figure}", "png"),
    log:
        LAYOUT.log("figure", "{figure}"),
    localrule: True
    conda:
        env("workflow")
    params:
        spec=report_spec_json,
        version=stage_version("figure"),
    shell:
        "multisym figure --figure {wildcards.figure} --spec-json {params.spec:q}"
        " --inputs {input.results} --out-pdf {output.pdf} --out-png {output.png} > {log} 2>&1"


rule comparison:
    input:
        tables=comparison_inputs,
    output:
        csv=LAYOUT.comparison("csv"),
        md=LAYOUT.comparison("md"),
    log:
        LAYOUT.log("comparison", "paper"),
    localrule: True
    conda:
        env("workflow")
    params:
        spec=comparison_spec_json,
        version=stage_version("comparison"),
    shell:
        "multisym compare --spec-json {params.spec:q} --tables {input.tables}"
        " --out-csv {output.csv} --out-md {output.md} > {log} 2>&1"


# The sha256 of every result file, written last, so a reviewer can check a run
# with `multisym verify results/<name>` before rebuilding from it.
rule checksums:
    input:
        all_tables_and_figures,
    output:
        ledger=LAYOUT.checksums,
    log:
        LAYOUT.log("checksums", "ledger"),
    localrule: True
    conda:
        env("workflow")
    params:
        root=lambda wildcards, output: os.path.dirname(output.ledger),
    shell:
        "multisym checksums {params.root} --out {output.ledger} > {log} 2>&1"
