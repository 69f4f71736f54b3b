"""The report stage's subcommands: the paper's tables and figures from result
files, every paper number beside this run's (docs/results.md), the paper's
claims tested (docs/method.md#claims), the provenance
page, and the checksum ledger a reviewer verifies (docs/workflow.md#targets-and-reviewing)."""

from __future__ import annotations

import json
import sys

from multisym.command import Command


def _target_arguments(p, kind: str, formats: tuple[str, ...]) -> None:
    """A table's or figure's name, its spec, the result files it reads and the files it writes."""
    p.add_argument(f"--{kind}", required=True)
    p.add_argument("--spec-json", required=True)
    p.add_argument("--inputs", nargs="+", required=True)
    for extension in formats:
        p.add_argument(f"--out-{extension}", required=True)


def _table_arguments(p) -> None:
    _target_arguments(p, "table", ("csv", "md"))
    p.add_argument("--out-tex", help="the same table in LaTeX (booktabs)")
    p.add_argument("--out-html", help="the same table as an HTML page (for the report)")


def table(args) -> None:
    from multisym.report import tables

    tables.write(args.table, args.inputs, json.loads(args.spec_json), args.out_csv, args.out_md, args.out_tex,
                 args.out_html)


def _provenance_arguments(p) -> None:
    p.add_argument("--spec-json", required=True, help="scale name and every target's status")
    p.add_argument("--members-json", required=True, help="member id -> run folder")
    p.add_argument("--config-json", required=True, help="the resolved config, without its site sections, as JSON")
    p.add_argument("--out", required=True)


def provenance(args) -> None:
    from multisym.report.report_page import write

    write(json.loads(args.spec_json), json.loads(args.members_json), json.loads(args.config_json), args.out)


def _run_folder(p) -> None:
    p.add_argument("folder", help="the run folder, results/<name>")


def _checksums_arguments(p) -> None:
    _run_folder(p)
    p.add_argument("--out", required=True)


def checksums(args) -> None:
    from multisym.report.checksums import write_ledger

    print(f"checksums: {write_ledger(args.folder, args.out)} files", file=sys.stderr)


def verify(args) -> None:
    from multisym.report.checksums import verify as problems_of

    problems = problems_of(args.folder)
    for problem in problems:
        print(problem)
    if problems:
        raise SystemExit(f"{args.folder}: {len(problems)} problem(s); rebuild what they name before reviewing")
    print(f"{args.folder}: every result, prepared array, dataset root and imported checkpoint verifies")


def _protocol_arguments(p) -> None:
    p.add_argument("--spec-json", required=True, help="the run's and each member's protocol record, the tables built")
    p.add_argument("--manifest", help="the pretraining dataset's data manifest (its class list, where drawn)")
    p.add_argument("--out", required=True)


def protocol(args) -> None:
    from multisym.report.protocol_record import write

    content = write(json.loads(args.spec_json), args.manifest, args.out)
    print(f"protocol: {len(content['run'])} keys, {len(content['members'])} members, {len(content['tables'])} tables",
          file=sys.stderr)


def _deviations_arguments(p) -> None:
    p.add_argument("--out", required=True, help="the Markdown page (docs/deviations.md)")


def deviations(args) -> None:
    from multisym.report.deviations import write

    write(args.out)


def _compare_arguments(p) -> None:
    p.add_argument("--spec-json", required=True, help="scale name, dataset, backbone, transfer datasets, sizes")
    p.add_argument("--protocol", required=True, help="the run's protocol file (tables/protocol.json)")
    p.add_argument("--tables", nargs="*", default=[], help="the table CSVs of this run")
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-md", required=True)
    p.add_argument("--out-html", help="the comparison as an HTML page (for the report)")


def compare(args) -> None:
    from multisym.report.comparison import write

    rows = write(args.tables, json.loads(args.spec_json), args.protocol, args.out_csv, args.out_md, args.out_html)
    statuses = sorted({r.status for r in rows})
    print("paper comparison: " + ", ".join(f"{sum(r.status == s for r in rows)} {s}" for s in statuses),
          file=sys.stderr)


def _claims_arguments(p) -> None:
    p.add_argument("--spec-json", required=True, help="sizes, CI level, seed, transfer datasets, axes and pools")
    p.add_argument("--inputs", nargs="+", required=True, help="the ensembles' resamples files and member metrics")
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-md", required=True)
    p.add_argument("--out-html", help="the claims as an HTML page (for the report)")


def claims(args) -> None:
    from multisym.report.claims import write

    rows = write(args.inputs, json.loads(args.spec_json), args.out_csv, args.out_md, args.out_html)
    verdicts = [r.verdict for r in rows if r.cell == "summary"]
    print("claims: " + ", ".join(f"{verdicts.count(v)} {v}" for v in sorted(set(verdicts))), file=sys.stderr)


def _figure_arguments(p) -> None:
    _target_arguments(p, "figure", ("pdf", "png"))


def figure(args) -> None:
    from multisym.report import figures

    figures.write(args.figure, args.inputs, json.loads(args.spec_json), args.out_pdf, args.out_png)


COMMANDS = (
    Command("table", "write one of the paper's tables (CSV and Markdown) from result files", _table_arguments, table),
    Command("provenance", "write the report's provenance page", _provenance_arguments, provenance),
    Command("checksums", "record the sha256 of every result file of a run", _checksums_arguments, checksums),
    Command("verify", "check a run's files, prepared data, dataset roots and imported checkpoints", _run_folder,
            verify),
    Command("protocol", "write the run's, each member's and each table's protocol record", _protocol_arguments,
            protocol),
    Command("compare", "every paper number beside the value this run reproduced for it, protocol checked",
            _compare_arguments, compare),
    Command("deviations", "write docs/deviations.md from the list of deviations from the paper",
            _deviations_arguments, deviations),
    Command("claims", "test the paper's claims by paired bootstrap differences of ensembles", _claims_arguments,
            claims),
    Command("figure", "draw one of the paper's figures (PDF and PNG) from result files", _figure_arguments, figure),
)
