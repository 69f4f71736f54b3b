# Tables and figures read small result files only (never checkpoints or logits).
rule table:
    input:
        results=table_inputs,
    output:
        csv=LAYOUT.table("{table}", "csv"),
        md=LAYOUT.table("{table}", "md"),
    log:
        LAYOUT.log("table", "{table}"),
    localrule: True
    conda:
        env("workflow")
    params:
        spec=report_spec_json,
        code=code_digest("tables"),
    shell:
        "multisym table --table {wildcards.table} --spec-json {params.spec:q}"
        " --inputs {input.results} --out-csv {output.csv} --out-md {output.md} > {log} 2>&1"


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
        code=code_digest("figures", "tables"),
    shell:
        "multisym figure --figure {wildcards.figure} --spec-json {params.spec:q}"
        " --inputs {input.results} --out-pdf {output.pdf} --out-png {output.png} > {log} 2>&1"
