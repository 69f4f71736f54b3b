"""The training stage's subcommands: pretrain a member (docs/method.md#members),
import one, and adapt it to the task (docs/method.md#adaptation): frozen
features for the linear probe, its own head, or fine-tuning with the learning
rate chosen among candidates."""

from __future__ import annotations

import json
import sys

from multisym import layout
from multisym.cluster.jobs import add_gpu_job_options, gpu_job
from multisym.command import Command, find_member, load_config, runtime_options, settings_from, write_json


def _run_training(call, run_dir, job: tuple[dict, dict, str]):
    """A training run, here or as a SLURM job; stopped by a signal (its state
    saved), it exits with 128 + the signal's number."""
    from multisym.cluster.launch import run
    from multisym.cluster.stopping import InterruptedRun

    try:
        return run(call, run_dir, *job)
    except InterruptedRun as stopped:
        print(stopped, file=sys.stderr)
        raise SystemExit(128 + stopped.signum) from None


def _pretrain_arguments(p) -> None:
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
    add_gpu_job_options(p)


def pretrain(args) -> None:
    settings = settings_from(args, "settings_json")
    if settings is None:
        cfg = load_config(args)
        member = find_member(cfg, args.member)
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
    job = gpu_job(args, "pretrain", kwargs)
    finished = _run_training(Call("multisym.train.pretrain:train_member", kwargs), args.run_dir, job)
    if not finished:
        print("stopped early; rerun the same command to resume", file=sys.stderr)


def _import_member_arguments(p) -> None:
    p.add_argument("--checkpoint", required=True, help="the checkpoint file")
    p.add_argument("--settings-json", required=True, help="the imported member's settings as JSON")
    p.add_argument("--manifest", required=True, help="the prepared dataset's manifest (for its channels)")
    p.add_argument("--out-model", required=True)
    p.add_argument("--out-record", required=True)


def import_member(args) -> None:
    import hashlib

    from multisym.data.splits import info, read_manifest
    from multisym.members import settings_hash
    from multisym.train.checkpoint import save
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
    write_json({"source": args.checkpoint, "sha256": digest.hexdigest(), "parts": sorted(parts)}, args.out_record)


def _member_on_data(out: str):
    """The arguments of a command that runs a member on the prepared data and writes ``out``."""

    def add(p) -> None:
        for flag in ("--model", "--data", "--manifest", out):
            p.add_argument(flag, required=True)
        runtime_options(p)

    return add


def features(args) -> None:
    from multisym.train.adapt import extract_features

    extract_features(args.model, args.data, args.manifest, args.out, device=args.device, threads=args.threads)


def sup_logits(args) -> None:
    from multisym.train.adapt import supervised_logits

    supervised_logits(args.model, args.data, args.manifest, args.out_logits, device=args.device, threads=args.threads)


def _fine_tuning_arguments(p, model_option: str, model_help: str | None, settings_help: str,
                           summary: bool) -> None:
    """The options of a fine-tuning run, of a member (finetune) or of an
    adaptation candidate (adapt-candidate, which also writes its summary)."""
    p.add_argument(model_option, required=True, help=model_help)
    p.add_argument("--settings-json", required=True, help=settings_help)
    p.add_argument("--data", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--out-model", required=True)
    p.add_argument("--out-logits", required=True)
    p.add_argument("--out-log", required=True)
    if summary:
        p.add_argument("--out-summary", required=True)
    runtime_options(p)
    add_gpu_job_options(p)


def _finetune(args, model: str, **extra) -> dict:
    from pathlib import Path

    from multisym.cluster.launch import Call

    kwargs = dict(
        base_model_path=model, settings=json.loads(args.settings_json), data_path=args.data,
        manifest_path=args.manifest, out_model=args.out_model, out_logits=args.out_logits, out_log=args.out_log,
        device=args.device, threads=args.threads, **extra,
    )
    job = gpu_job(args, "adapt", kwargs)
    return _run_training(Call("multisym.train.finetune:finetune", kwargs), Path(args.out_model).parent, job)


def _finetune_arguments(p) -> None:
    _fine_tuning_arguments(p, "--base-model", None, "the fine-tuned member's settings as JSON", summary=False)


def finetune(args) -> None:
    result = _finetune(args, args.base_model)
    print(f"fine-tune: kept epoch {result['best_epoch']} (val accuracy {result['val_accuracy']:.4f})", file=sys.stderr)


def _adapt_candidate_arguments(p) -> None:
    _fine_tuning_arguments(p, "--model", "the pretrained member", "the candidate's fine-tuning settings as JSON",
                           summary=True)


def adapt_candidate(args) -> None:
    result = _finetune(args, args.model, out_summary=args.out_summary)
    print(f"adaptation candidate lr {result['lr']}: epoch {result['best_epoch']}, "
          f"{result['selection_split']} accuracy {result['selection_accuracy']:.4f}", file=sys.stderr)


def _adapt_select_arguments(p) -> None:
    p.add_argument("--summaries", nargs="+", required=True)
    p.add_argument("--logits", nargs="+", required=True)
    p.add_argument("--models", nargs="+", required=True)
    p.add_argument("--out-logits", required=True)
    p.add_argument("--out-model", required=True)
    p.add_argument("--out-choice", required=True)


def adapt_select(args) -> None:
    from multisym.files import atomic_write_bytes
    from multisym.train.adapt import choose_adaptation

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
    write_json({"chosen": summaries[best], "candidates": summaries, "protocol": [n for n in notes if n]},
               args.out_choice)


COMMANDS = (
    Command("pretrain", "train (or resume) one member", _pretrain_arguments, pretrain),
    Command("import-member", "read an existing checkpoint as a member (no training)", _import_member_arguments,
            import_member),
    Command("features", "cache a member's frozen backbone features of every split", _member_on_data("--out"), features),
    Command("sup-logits", "a supervised member's val/test logits from its own head", _member_on_data("--out-logits"),
            sup_logits),
    Command("finetune", "fine-tune a member's whole network; write val/test logits", _finetune_arguments, finetune),
    Command("adapt-candidate", "fine-tune an SSL member with one learning rate", _adapt_candidate_arguments,
            adapt_candidate),
    Command("adapt-select", "keep the fine-tuning candidate best on the selection split", _adapt_select_arguments,
            adapt_select),
)
