"""The evaluation stage's subcommands: the linear probe
(docs/method.md#linear-probe), the members under distribution shift and on
evaluation-only sets (docs/method.md#transfer-and-distribution-shift), the
invariance audit (docs/method.md#orbit-consistency), the emergent-invariance
experiment (docs/method.md#emergent-equivariance) and the transfer summaries."""

from __future__ import annotations

import json
import sys

from multisym.command import Command, load_config, runtime_options, settings_from, write_json


def _greedy_by_pool(paths: list[str]) -> dict[str, str]:
    """Greedy result files keyed by the pool each one names."""
    greedy = {}
    for path in paths:
        with open(path) as handle:
            greedy[json.load(handle)["pool"]] = path
    return greedy


def _probe_arguments(p) -> None:
    p.add_argument("--features", required=True)
    p.add_argument("--settings-json", required=True, help="the resolved `probe` config section as JSON")
    p.add_argument("--out-logits", required=True)
    p.add_argument("--out-summary", required=True)
    p.add_argument("--out-params", required=True, help="the fitted probe (standardisation, weights, bias)")


def probe(args) -> None:
    from multisym.evaluate.probe import fit_probe

    summary = fit_probe(args.features, json.loads(args.settings_json), args.out_logits, args.out_summary,
                        args.out_params)
    print(f"probe: C = {summary['C']}, val accuracy {max(summary['val_accuracy']):.4f}", file=sys.stderr)


def _prepare_shift_arguments(p) -> None:
    p.add_argument("--settings-json", required=True, help="the resolved `shift` config section as JSON")
    p.add_argument("--data", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--out-data", required=True)
    p.add_argument("--out-manifest", required=True)


def prepare_shift(args) -> None:
    from multisym.evaluate.shift import prepare

    manifest = prepare(json.loads(args.settings_json), args.data, args.manifest, args.out_data, args.out_manifest)
    print(f"shift sets: {len(manifest['sets'])} of {manifest['images']} images", file=sys.stderr)


def _shift_logits_arguments(p) -> None:
    p.add_argument("--model", required=True)
    p.add_argument("--probe-params", help="the fitted probe of an SSL member (none for supervised members)")
    p.add_argument("--shift-data", required=True)
    p.add_argument("--shift-manifest", required=True)
    p.add_argument("--manifest", required=True, help="the prepared dataset's manifest")
    p.add_argument("--out", required=True)
    runtime_options(p)


def shift_logits(args) -> None:
    from multisym.evaluate.shift import member_logits

    member_logits(args.model, args.probe_params, args.shift_data, args.shift_manifest, args.manifest, args.out,
                  device=args.device, threads=args.threads)


def _evaluation_logits_arguments(p) -> None:
    p.add_argument("--model", required=True, help="the member as adapted to the pretraining dataset")
    p.add_argument("--probe-params", help="the fitted probe of an SSL member (none for fine-tuned members)")
    p.add_argument("--data", required=True, help="the evaluation set's prepared data")
    p.add_argument("--manifest", required=True, help="the evaluation set's manifest")
    p.add_argument("--primary-logits", required=True, help="the member's logits on the pretraining dataset")
    p.add_argument("--primary-manifest", required=True, help="the pretraining dataset's manifest")
    p.add_argument("--out", required=True)
    runtime_options(p)


def evaluation_logits(args) -> None:
    from multisym.evaluate.evaluation_sets import member_logits

    member_logits(args.model, args.probe_params, args.data, args.manifest, args.primary_logits,
                  args.primary_manifest, args.out, device=args.device, threads=args.threads)


def _per_member(spec: dict, files: list[str], greedy: list[str], what: str) -> dict[str, str]:
    """The files given one per spec member (with one greedy result per pool), by member."""
    if len(spec["members"]) != len(files) or len(spec["pools"]) != len(greedy):
        raise SystemExit(f"error: give one {what} per spec member and one greedy result per pool, in order")
    return dict(zip(spec["members"], files))


def _shift_metrics_arguments(p) -> None:
    p.add_argument("--spec-json", required=True, help="pools (member ids), ensemble size, bootstrap settings")
    p.add_argument("--logits", nargs="+", required=True, help="shift logits, one per spec member, in its order")
    p.add_argument("--greedy", nargs="+", required=True, help="each pool's greedy ensemble result")
    p.add_argument("--shift-manifest", required=True)
    p.add_argument("--out", required=True)


def shift_metrics(args) -> None:
    from multisym.evaluate.shift import evaluate

    spec = json.loads(args.spec_json)
    by_member = _per_member(spec, args.logits, args.greedy, "shift logits file")
    result = evaluate(spec["pools"], by_member, _greedy_by_pool(args.greedy),
                      args.shift_manifest, spec["ensemble_size"], spec["bootstrap"])
    write_json(result, args.out)


def _prepare_audit_arguments(p) -> None:
    p.add_argument("--settings-json", required=True, help="the resolved `audit` config section as JSON")
    p.add_argument("--data", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--ood", nargs="*", help="KEY=DATA,MANIFEST of each prepared OOD dataset")
    p.add_argument("--out-data", required=True)
    p.add_argument("--out-manifest", required=True)


def prepare_audit(args) -> None:
    from multisym.evaluate.audit import prepare_sets

    ood = {}
    for item in args.ood or []:
        key, _, paths = item.partition("=")
        data_path, _, manifest_path = paths.partition(",")
        ood[key] = (data_path, manifest_path)
    manifest = prepare_sets(json.loads(args.settings_json), args.data, args.manifest, ood, args.out_data,
                            args.out_manifest)
    print("audit sets: " + ", ".join(f"{k} ({v['images']})" for k, v in manifest["sets"].items()), file=sys.stderr)


def _audit_outputs_arguments(p) -> None:
    p.add_argument("--model", required=True, help="the evaluated network")
    p.add_argument("--probe-params", help="the fitted probe of a probed SSL member")
    p.add_argument("--member-model", required=True, help="the pretrained member (its Eq head)")
    p.add_argument("--sets", required=True)
    p.add_argument("--sets-manifest", required=True)
    p.add_argument("--manifest", required=True, help="the prepared dataset's manifest")
    p.add_argument("--groups", nargs="+", required=True)
    p.add_argument("--out", required=True)
    runtime_options(p)


def audit_outputs(args) -> None:
    from multisym.evaluate.audit import member_outputs

    member_outputs(args.model, args.probe_params, args.member_model, args.sets, args.sets_manifest, args.manifest,
                   args.groups, args.out, device=args.device, threads=args.threads)


def _audit_metrics_arguments(p) -> None:
    p.add_argument("--spec-json", required=True, help="members, modes, pools, groups, ensemble size, bootstrap")
    p.add_argument("--outputs", nargs="+", required=True, help="audit outputs, one per spec member, in its order")
    p.add_argument("--greedy", nargs="*", default=[], help="each pool's greedy ensemble result")
    p.add_argument("--sets-manifest", required=True)
    p.add_argument("--out", required=True)


def audit_metrics(args) -> None:
    from multisym.evaluate.audit import evaluate

    spec = json.loads(args.spec_json)
    by_member = _per_member(spec, args.outputs, args.greedy, "audit outputs file")
    result = evaluate(spec, by_member, _greedy_by_pool(args.greedy), args.sets_manifest)
    write_json(result, args.out)


def _emergence_arguments(p) -> None:
    p.add_argument("--group", required=True, help="the group of emergence.groups this run augments with")
    p.add_argument("--run", required=True, choices=("augmented", "control"))
    p.add_argument("--settings-json", required=True,
                   help="the keys of the resolved `emergence` section a run reads, as JSON")
    p.add_argument("--data", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--sets", required=True)
    p.add_argument("--sets-manifest", required=True)
    p.add_argument("--out", required=True)
    runtime_options(p)


def emergence(args) -> None:
    from multisym.evaluate.emergence import train

    summary = train(json.loads(args.settings_json), args.group, args.run, args.data, args.manifest, args.sets,
                    args.sets_manifest, args.out, device=args.device, threads=args.threads)
    print(f"emergence {summary['group']} {summary['run']}: {summary['members']} members, {summary['epochs']} epochs, "
          f"final member test accuracy {summary['final_member_test_accuracy']:.1f}%", file=sys.stderr)


def _emergence_metrics_arguments(p) -> None:
    p.add_argument("--settings-json", required=True)
    p.add_argument("--runs", nargs="+", required=True, help="each logits file's <group>/<run>")
    p.add_argument("--logits", nargs="+", required=True)
    p.add_argument("--sets-manifest", required=True)
    p.add_argument("--out", required=True)


def emergence_metrics(args) -> None:
    from multisym.evaluate.emergence import write_metrics

    if len(args.runs) != len(args.logits):
        raise SystemExit("error: give one logits file per run, in the order of --runs")
    runs = [tuple(label.split("/", 1)) for label in args.runs]
    if any(len(run) != 2 for run in runs):
        raise SystemExit("error: name each run <group>/<run>, for example rot8/augmented")
    write_metrics(json.loads(args.settings_json), dict(zip(runs, args.logits)), args.sets_manifest, args.out)


def _emergence_init_arguments(p) -> None:
    p.add_argument("--settings-json", required=True,
                   help="the untrained ensembles' settings (Plan.emergence_init_spec) as JSON")
    p.add_argument("--groups", nargs="+", required=True, help="the groups of emergence.groups")
    p.add_argument("--manifest", required=True, help="the dataset's manifest (image size, classes, normalisation)")
    p.add_argument("--sets", required=True)
    p.add_argument("--sets-manifest", required=True)
    p.add_argument("--out", required=True)
    runtime_options(p)


def emergence_init(args) -> None:
    from multisym.evaluate.emergence_init import initialisation

    result = initialisation(json.loads(args.settings_json), args.groups, args.manifest, args.sets,
                            args.sets_manifest, device=args.device, threads=args.threads)
    write_json(result, args.out)
    for group, entry in result["groups"].items():
        for name, measures in entry["sets"].items():
            fit = measures["deviation"]
            print(f"emergence at initialisation, {group} on {name}: slope {fit['slope']:.3f} "
                  f"[{fit['slope_ci'][0]:.3f}, {fit['slope_ci'][1]:.3f}] over {result['members']} members",
                  file=sys.stderr)


def _ising_settings(args) -> tuple[dict, object]:
    """The Ising study's settings from the workflow's JSON, or from ``--config``
    (a run by hand, writing where the workflow would); and the scale's layout."""
    from multisym.layout import Layout
    from multisym.plan import Plan

    settings = settings_from(args, "settings_json")
    if settings is not None:
        if args.out is None:
            raise SystemExit("error: give --out with --settings-json")
        return settings, None
    cfg = load_config(args)
    return Plan(cfg).ising_spec({}), Layout(cfg["name"], args.results)


def _ising_arguments(p) -> None:
    p.add_argument("--architecture", required=True, choices=("mlp", "cnn"))
    p.add_argument("--settings-json", help="the resolved `emergence.ising` section and the CI level as JSON")
    p.add_argument("--out", help="the result file (default with --config: the workflow's)")
    runtime_options(p)


def ising(args) -> None:
    from multisym.evaluate.ising_ensembles import train

    settings, layout = _ising_settings(args)
    result = train(settings, args.architecture, device=args.device, threads=args.threads)
    write_json(result, args.out or layout.ising(args.architecture))
    for width, runs in result["widths"].items():
        line = ", ".join(f"{run} member {entry['curves']['test'][-1]['member_error']['mean']:.4f} ensemble "
                         f"{entry['curves']['test'][-1]['ensemble_error'][str(result['sizes'][-1])]['mean']:.4f}"
                         for run, entry in runs.items())
        print(f"ising {args.architecture} width {width}: test invariance error {line}", file=sys.stderr)
    for width, entry in result["initialisation"]["widths"].items():
        fit = entry["deviation"]
        print(f"ising {args.architecture} width {width} at initialisation: slope {fit['slope']:.3f} "
              f"[{fit['slope_ci'][0]:.3f}, {fit['slope_ci'][1]:.3f}]", file=sys.stderr)


def _dataset_summary_arguments(p) -> None:
    p.add_argument("--spec-json", required=True, help="key, label, dataset name and delta_size as JSON")
    p.add_argument("--members", required=True, help="the dataset's member metrics JSON")
    p.add_argument("--ensembles", nargs="+", required=True, help="its Eq / Inv / Eq+Inv ensemble JSONs")
    p.add_argument("--resamples", nargs="*", default=[],
                   help="its greedy Eq and Eq+Inv ensembles' values on every resample (the CIs of Δ)")
    p.add_argument("--out", required=True)


def dataset_summary(args) -> None:
    from multisym.evaluate.transfer import write_summary

    write_summary(json.loads(args.spec_json), args.members, args.ensembles, args.out, args.resamples)


COMMANDS = (
    Command("probe", "fit the linear probe on cached features; write val/test logits", _probe_arguments, probe),
    Command("prepare-shift", "corrupt the test split into the shift sets", _prepare_shift_arguments, prepare_shift),
    Command("shift-logits", "one member's logits on every shift set", _shift_logits_arguments, shift_logits),
    Command("evaluation-logits", "one adapted member's logits on an evaluation-only set (ImageNet-V2, ImageNet-R)",
            _evaluation_logits_arguments, evaluation_logits),
    Command("shift-metrics", "members and greedy ensembles of every pool under shift", _shift_metrics_arguments,
            shift_metrics),
    Command("prepare-audit", "write the audit sets: test subset, noise, photo patches, OOD",
            _prepare_audit_arguments, prepare_audit),
    Command("audit-outputs", "one member's orbit logits, feature cosines and Eq-head output",
            _audit_outputs_arguments, audit_outputs),
    Command("audit-metrics", "OSP, orbit consistency, feature invariance of members and ensembles",
            _audit_metrics_arguments, audit_metrics),
    Command("emergence", "train one run of the emergent-invariance experiment", _emergence_arguments, emergence),
    Command("emergence-metrics", "OSP curves of the emergent-invariance runs", _emergence_metrics_arguments,
            emergence_metrics),
    Command("emergence-init", "untrained image ensembles: deviation from invariance and orbit consistency vs size",
            _emergence_init_arguments, emergence_init),
    Command("ising", "the Ising study of one architecture: trained ensembles, untrained ones' slopes",
            _ising_arguments, ising),
    Command("dataset-summary", "one dataset's singles, ensembles, dominance and Δ for the transfer tables",
            _dataset_summary_arguments, dataset_summary),
)
