"""``multisym``: one subcommand per workflow step, so any step can be run by hand.

Each rule of the Snakemake workflow calls exactly one subcommand with the
resolved settings it needs (as JSON, from the rule's ``params``). By hand, give
``--config`` (a scale file) and the step's name for the thing to build instead,
and the paths default to the workflow's layout, for example::

    multisym prepare-data --config config.yaml
    multisym pretrain --config config.yaml --member eq-rotation-s1
    multisym members --config config.yaml
"""

from __future__ import annotations

import argparse
import json
import sys

from multisym import config as config_module
from multisym import layout
from multisym.members import member_table


def _settings_from(args, key: str):
    """The settings JSON given by the workflow, or those derived from ``--config``."""
    raw = getattr(args, key)
    if raw is not None:
        return json.loads(raw)
    if args.config is None:
        raise SystemExit(f"error: give --{key.replace('_', '-')} (as the workflow does) or --config")
    return None


def _load_config(args) -> dict:
    try:
        return config_module.load(args.config)
    except config_module.ConfigError as error:
        raise SystemExit(f"error: {args.config}: {error}") from None


def _find_member(cfg: dict, name: str):
    table = member_table(cfg)
    for member in table:
        if name in (member.id, member.folder):
            return member
    raise SystemExit(f"error: no member {name!r} in this config; members: {[m.id for m in table]}")


# ----------------------------------------------------------------- commands
def cmd_validate(args) -> None:
    if args.config_json is not None:
        try:
            cfg = config_module.resolve(json.loads(args.config_json))
        except config_module.ConfigError as error:
            raise SystemExit(f"error: {error}") from None
    else:
        cfg = _load_config(args)
    text = json.dumps(cfg, indent=2, sort_keys=True) + "\n"
    if args.out:
        from multisym.files import atomic_write_text

        atomic_write_text(text, args.out)
    else:
        sys.stdout.write(text)


def cmd_members(args) -> None:
    cfg = _load_config(args)
    for member in member_table(cfg):
        print(f"{member.id}\t{member.mode}\t{member.axis or '-'}\t{member.seed}\t{member.folder}")


def cmd_prepare_data(args) -> None:
    from multisym.data import splits

    dataset = _settings_from(args, "dataset_json")
    if dataset is None:
        cfg = _load_config(args)
        dataset = cfg["dataset"]
        paths = layout.Layout(cfg["name"], args.results)
        args.out_data = args.out_data or paths.dataset
        args.out_manifest = args.out_manifest or paths.manifest
    manifest = splits.prepare(dataset, args.out_data, args.out_manifest)
    print(f"prepared {manifest['dataset']}: {manifest['counts']}", file=sys.stderr)


def cmd_pretrain(args) -> None:
    settings = _settings_from(args, "settings_json")
    if settings is None:
        cfg = _load_config(args)
        member = _find_member(cfg, args.member)
        settings = member.settings
        paths = layout.Layout(cfg["name"], args.results)
        args.data = args.data or paths.dataset
        args.manifest = args.manifest or paths.manifest
        args.run_dir = args.run_dir or paths.member_dir(member.folder)
        args.out_model = args.out_model or paths.member_model(member.folder)
        args.out_log = args.out_log or paths.member_epochs(member.folder)
    missing = [k for k in ("data", "manifest", "run_dir", "out_model", "out_log") if getattr(args, k) is None]
    if missing:
        raise SystemExit(f"error: missing {', '.join('--' + k.replace('_', '-') for k in missing)}")
    from multisym.cluster.launch import Call

    kwargs = dict(
        settings=settings, data_path=args.data, manifest_path=args.manifest, run_dir=args.run_dir,
        out_model=args.out_model, out_log=args.out_log, device=args.device, precision=args.precision,
        threads=args.threads, stop_after_epochs=args.stop_after_epochs, keep_every=args.keep_every,
        decode=args.decode, cuda_graphs=args.cuda_graphs == "on",
    )
    job = _gpu_job(args, "pretrain", kwargs)
    finished = _train(Call("multisym.train.pretrain:train_member", kwargs), args.run_dir, job)
    if not finished:
        print("stopped early; rerun the same command to resume", file=sys.stderr)


def _train(call, run_dir, job: tuple[dict, dict, str]):
    """A training run, here or as a SLURM job; stopped by a signal (its state
    saved), it exits with 128 + the signal's number."""
    from multisym.cluster.launch import run
    from multisym.train.stopping import InterruptedRun

    try:
        return run(call, run_dir, *job)
    except InterruptedRun as stopped:
        print(stopped, file=sys.stderr)
        raise SystemExit(128 + stopped.signum) from None


GPU_JOB_OPTIONS = (("--gpu-nodes", "nodes"), ("--gpus-per-node", "gpus_per_node"),
                   ("--gpu-cpus-per-task", "cpus_per_task"), ("--gpu-mem-gb", "mem_gb"),
                   ("--gpu-time-limit-min", "time_limit_min"))


def _gpu_job(args, step: str, kwargs: dict) -> tuple[dict, dict, str]:
    """The job request and the site settings (``gpu_jobs.<step>`` and
    ``cluster``, checked against the schema); without them the run stays in
    this process. A SLURM job takes its thread count from its allocation, not
    from the submitting rule."""
    from multisym.config import check_signal_delay, resolve_cluster, section_defaults

    _check_review_tier(args.review_tier, step, kwargs.get("out_model"))
    job = section_defaults("gpu_jobs")[step]
    job.update({key: getattr(args, f"gpu_{key}")
                for _, key in GPU_JOB_OPTIONS if getattr(args, f"gpu_{key}") is not None})
    given = json.loads(args.cluster_json) if args.cluster_json else {}
    for pair in args.cluster:
        key, _, value = pair.partition("=")
        given[key] = value
    cluster = resolve_cluster(given, args.snakemake_executor)
    if cluster["executor"] == "slurm":
        check_signal_delay(cluster["signal_delay_s"], {step: job})
        kwargs["threads"] = None
    return job, cluster, step


# Review tiers (README "Reviewing"): which training steps each one allows.
TIER_ALLOWS = {"scratch": ("pretrain", "adapt"), "checkpoints": ("adapt",), "results": ()}


def _check_review_tier(tier: str, step: str, output) -> None:
    """Refuse a training step the review tier forbids, before it starts."""
    from multisym.errors import UserError

    if step in TIER_ALLOWS[tier]:
        return
    what = {"pretrain": "pretrain a member", "adapt": "fine-tune a member"}[step]
    fix = ("put the existing results (with their .snakemake metadata) in place, or run `snakemake --touch` if they "
           "are only older than their inputs" if tier == "results" else
           "declare every member under members.imported")
    raise UserError(
        f"review tier {tier!r} (config key review.tier) forbids training, but this run would {what} "
        f"({output}: missing, or older than its inputs). Nothing was trained; {fix}, or set review.tier: scratch"
    )


def cmd_import_member(args) -> None:
    import hashlib

    from multisym.train.checkpoint import save
    from multisym.data.splits import info, read_manifest
    from multisym.members import settings_hash
    from multisym.train.models import import_checkpoint

    settings = json.loads(args.settings_json)
    digest = hashlib.sha256()
    with open(args.checkpoint, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    expected = settings["imported"]["sha256"]
    if expected is not None and digest.hexdigest() != expected:
        raise SystemExit(
            f"error: {args.checkpoint}: sha256 {digest.hexdigest()} differs from the configured "
            f"{expected} (members.imported); the file is not the one the config names"
        )
    channels = info(read_manifest(args.manifest)).channels
    parts = import_checkpoint(args.checkpoint, settings["backbone"], channels, settings["mode"])
    save({"settings_hash": settings_hash(settings), "settings": json.dumps(settings, sort_keys=True),
          "epochs": 0, **parts}, args.out_model)
    _write_json({"source": args.checkpoint, "sha256": digest.hexdigest(), "parts": sorted(parts)}, args.out_record)


def cmd_prepare_shift(args) -> None:
    from multisym.evaluate.shift import prepare

    manifest = prepare(json.loads(args.settings_json), args.data, args.manifest, args.out_data, args.out_manifest)
    print(f"shift sets: {len(manifest['sets'])} of {manifest['images']} images", file=sys.stderr)


def cmd_shift_logits(args) -> None:
    from multisym.evaluate.shift import member_logits

    member_logits(args.model, args.probe_params, args.shift_data, args.shift_manifest, args.manifest, args.out,
                  device=args.device, threads=args.threads)


def cmd_evaluation_logits(args) -> None:
    from multisym.evaluate.evaluation_sets import member_logits

    member_logits(args.model, args.probe_params, args.data, args.manifest, args.primary_logits,
                  args.primary_manifest, args.out, device=args.device, threads=args.threads)


def cmd_shift_metrics(args) -> None:
    from multisym.evaluate.shift import evaluate

    spec = json.loads(args.spec_json)
    if len(spec["members"]) != len(args.logits) or len(spec["pools"]) != len(args.greedy):
        raise SystemExit("error: give one shift logits file per spec member and one greedy result per pool, in order")
    result = evaluate(spec["pools"], dict(zip(spec["members"], args.logits)), _greedy_by_pool(args.greedy),
                      args.shift_manifest, spec["ensemble_size"], spec["bootstrap"])
    _write_json(result, args.out)


def _greedy_by_pool(paths: list[str]) -> dict[str, str]:
    """Greedy result files keyed by the pool each one names."""
    greedy = {}
    for path in paths:
        with open(path) as handle:
            greedy[json.load(handle)["pool"]] = path
    return greedy


def cmd_prepare_audit(args) -> None:
    from multisym.evaluate.audit import prepare_sets

    ood = {}
    for item in args.ood or []:
        key, _, paths = item.partition("=")
        data_path, _, manifest_path = paths.partition(",")
        ood[key] = (data_path, manifest_path)
    manifest = prepare_sets(json.loads(args.settings_json), args.data, args.manifest, ood, args.out_data,
                            args.out_manifest)
    print("audit sets: " + ", ".join(f"{k} ({v['images']})" for k, v in manifest["sets"].items()), file=sys.stderr)


def cmd_audit_outputs(args) -> None:
    from multisym.evaluate.audit import member_outputs

    member_outputs(args.model, args.probe_params, args.member_model, args.sets, args.sets_manifest, args.manifest,
                   args.groups, args.out, device=args.device, threads=args.threads)


def cmd_audit_metrics(args) -> None:
    from multisym.evaluate.audit import evaluate

    spec = json.loads(args.spec_json)
    if len(spec["members"]) != len(args.outputs) or len(spec["pools"]) != len(args.greedy):
        raise SystemExit("error: give one audit outputs file per spec member and one greedy result per pool, in order")
    result = evaluate(spec, dict(zip(spec["members"], args.outputs)), _greedy_by_pool(args.greedy),
                      args.sets_manifest)
    _write_json(result, args.out)


def cmd_emergence(args) -> None:
    from multisym.evaluate.emergence import train

    summary = train(json.loads(args.settings_json), args.run, args.data, args.manifest, args.sets,
                    args.sets_manifest, args.out, device=args.device, threads=args.threads)
    print(f"emergence {summary['run']}: {summary['members']} members, {summary['epochs']} epochs, "
          f"final member test accuracy {summary['final_member_test_accuracy']:.1f}%", file=sys.stderr)


def cmd_emergence_metrics(args) -> None:
    from multisym.evaluate.emergence import write_metrics

    if len(args.runs) != len(args.logits):
        raise SystemExit("error: give one logits file per run, in the order of --runs")
    write_metrics(json.loads(args.settings_json), dict(zip(args.runs, args.logits)), args.sets_manifest, args.out)


def _write_json(payload: dict, path: str) -> None:
    from multisym.files import atomic_write_text

    atomic_write_text(json.dumps(payload, indent=2) + "\n", path)


def cmd_features(args) -> None:
    from multisym.train.adapt import extract_features

    extract_features(args.model, args.data, args.manifest, args.out, device=args.device, threads=args.threads)


def cmd_probe(args) -> None:
    from multisym.evaluate.probe import fit_probe

    summary = fit_probe(args.features, json.loads(args.settings_json), args.out_logits, args.out_summary,
                        args.out_params)
    print(f"probe: C = {summary['C']}, val accuracy {max(summary['val_accuracy']):.4f}", file=sys.stderr)


def cmd_sup_logits(args) -> None:
    from multisym.train.adapt import supervised_logits

    supervised_logits(args.model, args.data, args.manifest, args.out_logits, device=args.device, threads=args.threads)


def _finetune(args, model: str, **extra) -> dict:
    from pathlib import Path

    from multisym.cluster.launch import Call

    kwargs = dict(
        base_model_path=model, settings=json.loads(args.settings_json), data_path=args.data,
        manifest_path=args.manifest, out_model=args.out_model, out_logits=args.out_logits, out_log=args.out_log,
        device=args.device, threads=args.threads, **extra,
    )
    job = _gpu_job(args, "adapt", kwargs)
    return _train(Call("multisym.train.adapt:finetune", kwargs), Path(args.out_model).parent, job)


def cmd_finetune(args) -> None:
    result = _finetune(args, args.base_model)
    print(f"fine-tune: kept epoch {result['best_epoch']} (val accuracy {result['val_accuracy']:.4f})", file=sys.stderr)


def cmd_adapt_candidate(args) -> None:
    result = _finetune(args, args.model, out_summary=args.out_summary)
    print(f"adaptation candidate lr {result['lr']}: epoch {result['best_epoch']}, "
          f"{result['selection_split']} accuracy {result['selection_accuracy']:.4f}", file=sys.stderr)


def cmd_adapt_select(args) -> None:
    from multisym.train.adapt import choose_adaptation
    from multisym.files import atomic_write_bytes

    if not len(args.summaries) == len(args.logits) == len(args.models):
        raise SystemExit("error: give one summary, logits file and model per candidate")
    best = choose_adaptation(args.summaries)
    for source, target in ((args.logits[best], args.out_logits), (args.models[best], args.out_model)):
        with open(source, "rb") as handle:
            atomic_write_bytes(handle.read(), target)
    summaries = []
    for path in args.summaries:
        with open(path) as handle:
            summaries.append(json.load(handle))
    notes = ["paper protocol: epoch and learning rate chosen on the reported (test) split"
             if summaries[best]["selection_split"] == "test" else ""]
    _write_json({"chosen": summaries[best], "candidates": summaries, "protocol": [n for n in notes if n]},
                args.out_choice)


def cmd_member_metrics(args) -> None:
    from multisym.ensembles.strategies import JOB_INPUTS, load_logits, member_results
    from multisym.ensembles.rowblocks import set_job_threads

    set_job_threads(args.threads)
    spec = json.loads(args.spec_json)
    if len(spec["members"]) != len(args.logits):
        raise SystemExit(f"error: {len(spec['members'])} members but {len(args.logits)} logits files")
    stacks = load_logits(args.logits, JOB_INPUTS["members"])
    result = member_results(spec["members"], spec["modes"], stacks, spec, stacks["test_logits"][0].shape[-1],
                            spec.get("axes"), spec.get("axis"))
    _write_json(result, args.out)


def cmd_ensemble(args) -> None:
    from multisym.ensembles.strategies import (JOB_INPUTS, greedy_results, load_logits, random_results,
                                               whole_pool_results)
    from multisym.ensembles.rowblocks import set_job_threads

    set_job_threads(args.threads)
    spec = json.loads(args.spec_json)
    if len(spec["members"]) != len(args.logits):
        raise SystemExit(f"error: {len(spec['members'])} members but {len(args.logits)} logits files")
    runner = {"greedy": greedy_results, "random": random_results, "all": whole_pool_results}[args.strategy]
    result = runner(spec["members"], spec["classes"], load_logits(args.logits, JOB_INPUTS[args.strategy]), spec)
    _write_json({"pool": spec["pool"], "strategy": args.strategy, "members": spec["members"],
                 "classes": spec["classes"], **result}, args.out)


def cmd_dataset_summary(args) -> None:
    from multisym.evaluate.transfer import write_summary

    write_summary(json.loads(args.spec_json), args.members, args.ensembles, args.out)


def cmd_table(args) -> None:
    from multisym.report import tables

    tables.write(args.table, args.inputs, json.loads(args.spec_json), args.out_csv, args.out_md, args.out_tex,
                 args.out_html)


def cmd_compare(args) -> None:
    from multisym.report.comparison import write

    rows = write(args.tables, json.loads(args.spec_json), args.out_csv, args.out_md, args.out_html)
    statuses = sorted({r.status for r in rows})
    print("paper comparison: " + ", ".join(f"{sum(r.status == s for r in rows)} {s}" for s in statuses),
          file=sys.stderr)


def cmd_provenance(args) -> None:
    from multisym.report.report_page import write

    write(json.loads(args.spec_json), json.loads(args.members_json), json.loads(args.config_json), args.out)


def cmd_checksums(args) -> None:
    from multisym.report.checksums import write_ledger

    print(f"checksums: {write_ledger(args.folder, args.out)} files", file=sys.stderr)


def cmd_verify(args) -> None:
    from multisym.report.checksums import verify

    problems = verify(args.folder)
    for problem in problems:
        print(problem)
    if problems:
        raise SystemExit(f"{args.folder}: {len(problems)} problem(s); rebuild what they name before reviewing")
    print(f"{args.folder}: every result, prepared array, dataset root and imported checkpoint verifies")


def cmd_figure(args) -> None:
    from multisym.report import figures

    figures.write(args.figure, args.inputs, json.loads(args.spec_json), args.out_pdf, args.out_png)


# ------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="multisym", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, func, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--config", help="a scale file (config.yaml or config/X.yaml), for runs by hand")
        p.add_argument("--results", default="results", help="results root for runs by hand (default: results)")
        p.add_argument("--in-memory-gib", type=float,
                       help="stream a split whose float32 images take more GiB than this (streaming.in_memory_gib)")
        p.set_defaults(func=func)
        return p

    p = command("validate", cmd_validate, "validate a config and write it with every default filled in")
    p.add_argument("--config-json", help="a config as JSON (as the workflow passes it)")
    p.add_argument("--out", help="write the resolved config here (default: standard output)")
    command("members", cmd_members, "list the member table: id, mode, axis, seed, run folder")

    def gpu_job_options(p):
        """What a SLURM job asks for (gpu_jobs.<step>; schema defaults when left out)."""
        for option, key in GPU_JOB_OPTIONS:
            p.add_argument(option, type=int, dest=f"gpu_{key}", help=f"gpu_jobs.<step>.{key} of a SLURM job")
        p.add_argument("--cluster-json", help="the cluster section as JSON: executor local runs here, slurm submits")
        p.add_argument("--cluster", action="append", default=[], metavar="KEY=VALUE",
                       help="one key of the cluster section "
                            "(over --cluster-json; as the workflow passes its resources)")
        p.add_argument("--snakemake-executor", default="local",
                       help="the executor Snakemake runs with (cluster.executor auto follows it)")
        p.add_argument("--review-tier", choices=sorted(TIER_ALLOWS), default="scratch",
                       help="review.tier: checkpoints refuses pretraining, results refuses all training")

    p = command("prepare-data", cmd_prepare_data, "build the dataset file, its splits and manifest")
    p.add_argument("--dataset-json", help="the resolved `dataset` config section as JSON")
    p.add_argument("--out-data")
    p.add_argument("--out-manifest")

    p = command("pretrain", cmd_pretrain, "train (or resume) one member")
    p.add_argument("--member", help="member id or run folder name (with --config)")
    p.add_argument("--settings-json", help="the member's resolved settings as JSON")
    p.add_argument("--data")
    p.add_argument("--manifest")
    p.add_argument("--run-dir")
    p.add_argument("--out-model")
    p.add_argument("--out-log")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda[:i]")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="auto: bf16 autocast on CUDA, fp32 on the CPU")
    p.add_argument("--threads", type=int, help="CPU threads (default: $SLURM_CPUS_PER_TASK, else torch's)")
    p.add_argument("--stop-after-epochs", type=int,
                   help="train at most this many epochs in this invocation, then save and exit")
    p.add_argument("--keep-every", type=int, default=0,
                   help="also keep the weights of every k-th epoch in <run-dir>/snapshots (gpu_jobs.keep_every)")
    p.add_argument("--decode", default="cpu", choices=("cpu", "device"),
                   help="where JPEG files are decoded: cpu (libjpeg-turbo in up to 8 processes) or device "
                        "(nvjpeg where training runs; gpu_jobs.decode)")
    p.add_argument("--cuda-graphs", default="on", choices=("on", "off"),
                   help="replay each step from a CUDA graph on one GPU (gpu_jobs.cuda_graphs)")
    gpu_job_options(p)

    def runtime_options(p):
        p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda[:i]")
        p.add_argument("--threads", type=int, help="CPU threads (default: $SLURM_CPUS_PER_TASK, else torch's)")

    p = command("import-member", cmd_import_member, "read an existing checkpoint as a member (no training)")
    p.add_argument("--checkpoint", required=True, help="the checkpoint file")
    p.add_argument("--settings-json", required=True, help="the imported member's settings as JSON")
    p.add_argument("--manifest", required=True, help="the prepared dataset's manifest (for its channels)")
    p.add_argument("--out-model", required=True)
    p.add_argument("--out-record", required=True)

    p = command("features", cmd_features, "cache a member's frozen backbone features of every split")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True)
    runtime_options(p)

    p = command("probe", cmd_probe, "fit the linear probe on cached features; write val/test logits")
    p.add_argument("--features", required=True)
    p.add_argument("--settings-json", required=True, help="the resolved `probe` config section as JSON")
    p.add_argument("--out-logits", required=True)
    p.add_argument("--out-summary", required=True)
    p.add_argument("--out-params", required=True, help="the fitted probe (standardisation, weights, bias)")

    p = command("sup-logits", cmd_sup_logits, "a supervised member's val/test logits from its own head")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--out-logits", required=True)
    runtime_options(p)

    p = command("finetune", cmd_finetune, "fine-tune a member's whole network; write val/test logits")
    p.add_argument("--base-model", required=True)
    p.add_argument("--settings-json", required=True, help="the fine-tuned member's settings as JSON")
    p.add_argument("--data", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--out-model", required=True)
    p.add_argument("--out-logits", required=True)
    p.add_argument("--out-log", required=True)
    runtime_options(p)
    gpu_job_options(p)

    p = command("prepare-shift", cmd_prepare_shift, "corrupt the test split into the shift sets")
    p.add_argument("--settings-json", required=True, help="the resolved `shift` config section as JSON")
    p.add_argument("--data", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--out-data", required=True)
    p.add_argument("--out-manifest", required=True)

    p = command("shift-logits", cmd_shift_logits, "one member's logits on every shift set")
    p.add_argument("--model", required=True)
    p.add_argument("--probe-params", help="the fitted probe of an SSL member (none for supervised members)")
    p.add_argument("--shift-data", required=True)
    p.add_argument("--shift-manifest", required=True)
    p.add_argument("--manifest", required=True, help="the prepared dataset's manifest")
    p.add_argument("--out", required=True)
    runtime_options(p)

    p = command("evaluation-logits", cmd_evaluation_logits,
                "one adapted member's logits on an evaluation-only set (ImageNet-V2, ImageNet-R)")
    p.add_argument("--model", required=True, help="the member as adapted to the pretraining dataset")
    p.add_argument("--probe-params", help="the fitted probe of an SSL member (none for fine-tuned members)")
    p.add_argument("--data", required=True, help="the evaluation set's prepared data")
    p.add_argument("--manifest", required=True, help="the evaluation set's manifest")
    p.add_argument("--primary-logits", required=True, help="the member's logits on the pretraining dataset")
    p.add_argument("--primary-manifest", required=True, help="the pretraining dataset's manifest")
    p.add_argument("--out", required=True)
    runtime_options(p)

    p = command("shift-metrics", cmd_shift_metrics, "members and greedy ensembles of every pool under shift")
    p.add_argument("--spec-json", required=True, help="pools (member ids), ensemble size, bootstrap settings")
    p.add_argument("--logits", nargs="+", required=True, help="shift logits, one per spec member, in its order")
    p.add_argument("--greedy", nargs="+", required=True, help="each pool's greedy ensemble result")
    p.add_argument("--shift-manifest", required=True)
    p.add_argument("--out", required=True)

    p = command("prepare-audit", cmd_prepare_audit, "write the audit sets: test subset, noise, photo patches, OOD")
    p.add_argument("--settings-json", required=True, help="the resolved `audit` config section as JSON")
    p.add_argument("--data", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--ood", nargs="*", help="KEY=DATA,MANIFEST of each prepared OOD dataset")
    p.add_argument("--out-data", required=True)
    p.add_argument("--out-manifest", required=True)

    p = command("audit-outputs", cmd_audit_outputs, "one member's orbit logits, feature cosines and Eq-head output")
    p.add_argument("--model", required=True, help="the evaluated network")
    p.add_argument("--probe-params", help="the fitted probe of a probed SSL member")
    p.add_argument("--member-model", required=True, help="the pretrained member (its Eq head)")
    p.add_argument("--sets", required=True)
    p.add_argument("--sets-manifest", required=True)
    p.add_argument("--manifest", required=True, help="the prepared dataset's manifest")
    p.add_argument("--groups", nargs="+", required=True)
    p.add_argument("--out", required=True)
    runtime_options(p)

    p = command("audit-metrics", cmd_audit_metrics,
                "OSP, orbit consistency, feature invariance of members and ensembles")
    p.add_argument("--spec-json", required=True, help="members, modes, pools, groups, ensemble size, bootstrap")
    p.add_argument("--outputs", nargs="+", required=True, help="audit outputs, one per spec member, in its order")
    p.add_argument("--greedy", nargs="*", default=[], help="each pool's greedy ensemble result")
    p.add_argument("--sets-manifest", required=True)
    p.add_argument("--out", required=True)

    p = command("emergence", cmd_emergence, "train one run of the emergent-invariance experiment")
    p.add_argument("--run", required=True, choices=("augmented", "control"))
    p.add_argument("--settings-json", required=True, help="the resolved `emergence` config section as JSON")
    p.add_argument("--data", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--sets", required=True)
    p.add_argument("--sets-manifest", required=True)
    p.add_argument("--out", required=True)
    runtime_options(p)

    p = command("emergence-metrics", cmd_emergence_metrics, "OSP curves of the emergent-invariance runs")
    p.add_argument("--settings-json", required=True)
    p.add_argument("--runs", nargs="+", required=True)
    p.add_argument("--logits", nargs="+", required=True)
    p.add_argument("--sets-manifest", required=True)
    p.add_argument("--out", required=True)

    p = command("adapt-candidate", cmd_adapt_candidate, "fine-tune an SSL member with one learning rate")
    p.add_argument("--model", required=True, help="the pretrained member")
    p.add_argument("--settings-json", required=True, help="the candidate's fine-tuning settings as JSON")
    p.add_argument("--data", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--out-model", required=True)
    p.add_argument("--out-logits", required=True)
    p.add_argument("--out-log", required=True)
    p.add_argument("--out-summary", required=True)
    runtime_options(p)
    gpu_job_options(p)

    p = command("adapt-select", cmd_adapt_select, "keep the fine-tuning candidate best on the selection split")
    p.add_argument("--summaries", nargs="+", required=True)
    p.add_argument("--logits", nargs="+", required=True)
    p.add_argument("--models", nargs="+", required=True)
    p.add_argument("--out-logits", required=True)
    p.add_argument("--out-model", required=True)
    p.add_argument("--out-choice", required=True)

    p = command("member-metrics", cmd_member_metrics, "test metrics of every member alone and class dominance")
    p.add_argument("--spec-json", required=True, help="members, modes and bootstrap settings")
    p.add_argument("--logits", nargs="+", required=True, help="logits files, in the order of the spec's members")
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, help="threads of the job (default: $SLURM_CPUS_PER_TASK, else its CPUs)")

    p = command("ensemble", cmd_ensemble, "build a pool's greedy or random ensembles and their test metrics")
    p.add_argument("--strategy", required=True, choices=("greedy", "random", "all"),
                   help="all: the whole pool, each member once")
    p.add_argument("--spec-json", required=True, help="pool, members, classes and the ensembles settings")
    p.add_argument("--logits", nargs="+", required=True, help="logits files, in the order of the spec's members")
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, help="threads of the job (default: $SLURM_CPUS_PER_TASK, else its CPUs)")

    p = command("dataset-summary", cmd_dataset_summary,
                "one dataset's singles, ensembles, dominance and Δ for the transfer tables")
    p.add_argument("--spec-json", required=True, help="key, label, dataset name and delta_size as JSON")
    p.add_argument("--members", required=True, help="the dataset's member metrics JSON")
    p.add_argument("--ensembles", nargs="+", required=True, help="its Eq / Inv / Eq+Inv ensemble JSONs")
    p.add_argument("--out", required=True)

    p = command("table", cmd_table, "write one of the paper's tables (CSV and Markdown) from result files")
    p.add_argument("--table", required=True)
    p.add_argument("--spec-json", required=True)
    p.add_argument("--inputs", nargs="+", required=True)
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-md", required=True)
    p.add_argument("--out-tex", help="the same table in LaTeX (booktabs)")
    p.add_argument("--out-html", help="the same table as an HTML page (for the report)")

    p = command("provenance", cmd_provenance, "write the report's provenance page")
    p.add_argument("--spec-json", required=True, help="scale name and every target's status")
    p.add_argument("--members-json", required=True, help="member id -> run folder")
    p.add_argument("--config-json", required=True, help="the resolved config, without its site sections, as JSON")
    p.add_argument("--out", required=True)

    p = command("checksums", cmd_checksums, "record the sha256 of every result file of a run")
    p.add_argument("folder", help="the run folder, results/<name>")
    p.add_argument("--out", required=True)

    p = command("verify", cmd_verify, "check a run's files, prepared data, dataset roots and imported checkpoints")
    p.add_argument("folder", help="the run folder, results/<name>")

    p = command("compare", cmd_compare, "every paper number beside the value this run reproduced for it")
    p.add_argument("--spec-json", required=True, help="scale name, dataset, backbone, transfer datasets, protocol")
    p.add_argument("--tables", nargs="*", default=[], help="the table CSVs of this run")
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-md", required=True)
    p.add_argument("--out-html", help="the comparison as an HTML page (for the report)")

    p = command("figure", cmd_figure, "draw one of the paper's figures (PDF and PNG) from result files")
    p.add_argument("--figure", required=True)
    p.add_argument("--spec-json", required=True)
    p.add_argument("--inputs", nargs="+", required=True)
    p.add_argument("--out-pdf", required=True)
    p.add_argument("--out-png", required=True)
    return parser


def main(argv: list[str] | None = None) -> None:
    from multisym.errors import UserError

    args = build_parser().parse_args(argv)
    try:
        if args.in_memory_gib is not None:
            from multisym.data.streaming import set_in_memory_limit

            set_in_memory_limit(args.in_memory_gib)
        args.func(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def release() -> None:
    """What a command leaves to the interpreter's exit, done now (for a warm
    worker, which ends with ``os._exit`` as a forked child must): the
    decoding workers of splits still open, logging's handlers, the standard
    streams' buffers."""
    import logging

    streaming = sys.modules.get("multisym.data.streaming")
    if streaming is not None:
        streaming.close_all()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing left to deliver
            pass


if __name__ == "__main__":
    main()
