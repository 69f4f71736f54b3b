"""Faults injected for real (issue 16): a disk that fills up under a training
run and under a results write, a second Snakemake on the same folder, and a
member whose loss turns NaN under --keep-going."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import SMOKE, planned_jobs, tool_env
from multisym.train import checkpoint
from multisym.data import splits
from multisym.report import failures
from multisym import config as config_module
from multisym.files import write_npz
from multisym.files import CorruptFileError, WriteError, map_npz, read_npz
from multisym.members import member_table
from multisym.plan import Plan
from multisym import targets
from multisym.train.pretrain import STATE_FILE, train_member


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs, mounted for the test and unmounted after it."""
    if os.geteuid() != 0:
        pytest.fail("the full-disk tests mount a tmpfs and need root (CI runs as root)")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def fill(disk: Path, leave: int) -> Path:
    """Leave about ``leave`` bytes free on ``disk``."""
    stats = os.statvfs(disk)
    filler = disk / "filler"
    with open(filler, "wb") as handle:
        handle.write(b"\0" * max(0, stats.f_bavail * stats.f_frsize - leave))
    return filler


@pytest.fixture(scope="module")
def smoke_member(tmp_path_factory):
    cfg = config_module.load(SMOKE)
    folder = tmp_path_factory.mktemp("data")
    splits.prepare(cfg["dataset"], folder / "dataset.npz", folder / "manifest.json")
    member = next(m for m in member_table(cfg) if m.mode == "eq")
    return member.settings, (folder / "dataset.npz", folder / "manifest.json")


def train(settings, prepared, run_dir: Path, out: Path, **kwargs) -> bool:
    return train_member(settings, *prepared, run_dir, out / "model.pt", out / "epochs.csv", device="cpu",
                        threads=1, **kwargs)


def test_full_disk_during_training_keeps_the_last_checkpoint(small_disk, smoke_member, tmp_path):
    """The checkpoint of epoch 2 cannot be written: a clear error naming the
    file; epoch 1's checkpoint is intact and loadable, no temporary file is
    left; with space freed, the rerun ends like an uninterrupted run."""
    settings, prepared = smoke_member
    run_dir, out = small_disk / "run", tmp_path / "out"
    assert not train(settings, prepared, run_dir, out, stop_after_epochs=1)
    size = (run_dir / STATE_FILE).stat().st_size
    filler = fill(small_disk, leave=size // 2)
    with pytest.raises(WriteError, match=rf"could not write {run_dir / STATE_FILE}: No space left on device"):
        train(settings, prepared, run_dir, out)
    assert checkpoint.load(run_dir / STATE_FILE)["epoch"] == 1
    assert sorted(p.name for p in run_dir.iterdir() if p.name != ".lock") == ["run.json", STATE_FILE]
    filler.unlink()
    assert train(settings, prepared, run_dir, out)
    straight = tmp_path / "straight"
    assert train(settings, prepared, straight, straight)
    a, b = (torch.load(d / "model.pt", weights_only=True) for d in (out, straight))
    assert all(torch.equal(a["backbone"][k], b["backbone"][k]) for k in a["backbone"])


def test_full_disk_never_replaces_stored_logits(small_disk):
    path = small_disk / "logits.npz"
    first = np.arange(10, dtype=np.float32)
    write_npz(path, test_logits=first)
    fill(small_disk, leave=4096)
    with pytest.raises(WriteError, match=rf"could not write {path}"):
        write_npz(path, test_logits=np.zeros(1_000_000, dtype=np.float32))
    with np.load(path) as stored:
        assert np.array_equal(stored["test_logits"], first)
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "logits.npz"]


def test_write_error_reaches_the_user_without_a_traceback(small_disk, tmp_path):
    """Through the CLI: exit 2 and one line naming the file."""
    fill(small_disk, leave=0)
    out = small_disk / "config.json"
    result = subprocess.run([sys.executable, "-m", "multisym.cli", "validate", "--config", str(SMOKE),
                             "--out", str(out)],
                            capture_output=True, text=True, env=tool_env())
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"could not write {out}" in result.stderr and not out.exists()


# ------------------------------------------------------------- the workflow
def long_config(workflow_copy, name: str, **changes) -> tuple[Path, dict]:
    config = yaml.safe_load(SMOKE.read_text())
    config["name"] = name
    config["members"]["seeds"] = {"eq": [1, 2], "sup": [1]}
    config["finetune"] = {"seeds": []}
    config["ensembles"] = {**config["ensembles"], "pools": ["eq"]}
    config["transfer"] = {"datasets": []}
    for key, value in changes.items():
        config[key] = {**config.get(key, {}), **value}
    return workflow_copy.write_config(f"{name}.yaml", config), config


def test_second_snakemake_on_the_same_folder_is_refused(workflow_copy):
    """While one Snakemake trains a member, a second one that needs the same
    files is refused; the first finishes untouched."""
    path, config = long_config(workflow_copy, "busy", pretrain={"epochs": 120})
    member = next(m for m in member_table(config_module.resolve(config)) if m.mode == "eq")
    run_dir = workflow_copy.folder / "results" / "busy" / "members" / member.folder
    target = str((run_dir / "model.pt").relative_to(workflow_copy.folder))
    first = subprocess.Popen(["timeout", "-k", "10", "600", sys.executable, "-m", "snakemake",
                              f"--configfile={path.name}",
                              target], cwd=workflow_copy.folder, env=tool_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not (run_dir / "epochs.csv").exists():
        assert time.monotonic() < deadline and first.poll() is None, "the first run did not start training"
        time.sleep(0.2)
    # the workflow profile redoes incomplete files, so the second meets the lock
    second = workflow_copy.snakemake(f"--configfile={path.name}", "members", check=False, hard_timeout=120)
    assert second.returncode != 0 and "cannot be locked" in second.stdout + second.stderr
    output = first.communicate(timeout=600)[0]
    assert first.returncode == 0, output
    assert len((run_dir / "epochs.csv").read_text().splitlines()) == 121


def test_failed_runs_keep_good_results_report_what_failed_and_rerun_only_that(workflow_copy):
    """A member whose loss turns NaN stops at once with its id and epoch; under
    --keep-going every other member and every target it does not feed is built,
    and the failure report names it and every target it could not feed. Then a
    member's logits are truncated: the ensembles rerun, fail naming the file,
    and their previous results are kept bit for bit. With both causes fixed,
    the rerun redoes only what failed (and what it feeds) and ends like a
    clean run, and the failure report is gone."""
    off = {"enabled": False}
    path, config = long_config(workflow_copy, "nan", supervised={"optimizer": {"lr": 1.0e30}},
                               ensembles={"pools": ["eq", "sup"], "random": {"sizes": [2], "draws": 2}},
                               audit=off, emergence=off, shift=off)
    config["members"]["seeds"]["sup"] = [1, 2]
    workflow_copy.write_config(path.name, config)
    root = workflow_copy.folder / "results" / "nan"
    first = workflow_copy.snakemake(f"--configfile={path.name}", "figures", "--keep-going", check=False,
                                    hard_timeout=600)
    assert first.returncode != 0
    members = member_table(config_module.resolve(config))
    sups = [m for m in members if m.mode == "sup"]
    for member in members:
        assert (root / "members" / member.folder / "model.pt").exists() == (member.mode != "sup")
    log = (workflow_copy.folder / "logs" / "nan" / "pretrain" / f"{sups[0].folder}.log").read_text()
    assert f"member {sups[0].folder}: loss is" in log and "at epoch 1" in log
    kept = json.loads((root / "members" / sups[0].folder / "run.json").read_text())
    assert kept["settings_hash"] == sups[0].settings_hash  # the failed run's record stays for inspection

    report = json.loads((root / "failures.json").read_text())
    assert sorted(f["member"] for f in report) == sorted(m.id for m in sups)
    unbuilt = {p.name.split(".")[0] for p in (root / "tables").glob("*.md")} ^ {"table1", "table2", "table3", "table4",
                                                                                "table7", "paper_comparison"}
    for failure in report:
        assert "loss is nan at epoch 1" in failure["error"] and failure["log"].endswith(".log")
        assert {"table1", "table2", "figure2", "checksums"} <= set(failure["targets"])
        assert unbuilt <= set(failure["targets"])  # nothing it feeds was built
    assert (root / "figures" / "figure7.png").exists()  # fed by the eq pool alone
    assert "targets it could not feed" in (root / "failures.md").read_text()
    assert "sup-s1" in first.stderr and "targets it could not feed" in first.stderr

    # a good result must survive a failed rerun of its job
    ensembles = {p: p.read_bytes() for p in (root / "ensembles").glob("eq_*.json")}
    assert len(ensembles) == 2
    logits = root / "logits" / f"{next(m for m in members if m.mode == 'eq').folder}.npz"
    good, stat = logits.read_bytes(), logits.stat()
    logits.write_bytes(good[:100])
    second = workflow_copy.snakemake(f"--configfile={path.name}", "figures", "--keep-going", check=False,
                                     hard_timeout=600)
    assert second.returncode != 0 and "Restored previous version" in second.stdout + second.stderr
    assert {p: p.read_bytes() for p in ensembles} == ensembles
    failed = {f["job"]: f for f in json.loads((root / "failures.json").read_text())}
    assert {"ensemble pool=eq strategy=greedy", "ensemble pool=eq strategy=random"} <= set(failed)
    relative = logits.relative_to(workflow_copy.folder)
    assert f"{relative}: cannot read it" in failed["ensemble pool=eq strategy=greedy"]["error"]

    # both causes fixed: only what failed, and what it feeds, runs again
    logits.write_bytes(good)
    os.utime(logits, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    config["supervised"]["optimizer"]["lr"] = 0.1
    workflow_copy.write_config(path.name, config)
    plan = planned_jobs(workflow_copy.snakemake(f"--configfile={path.name}", "figures", "-n").stdout)
    assert plan["pretrain"] == 2 and plan["ensemble"] == 4  # the two sup members; eq (failed) and sup ensembles
    assert "features" not in plan and "probe" not in plan  # the eq members' chain stays as it is
    workflow_copy.snakemake(f"--configfile={path.name}", "figures", hard_timeout=600)
    assert not (root / "failures.json").exists() and not (root / "failures.md").exists()
    assert {p: p.read_bytes() for p in ensembles} == ensembles  # the same inputs give the same results
    assert "Nothing to be done" in workflow_copy.snakemake(f"--configfile={path.name}", "figures", "-n").stdout


def test_failure_report_keeps_what_is_still_failing(tmp_path):
    log = tmp_path / "job.log"
    log.write_text("epoch 1\nTraceback (most recent call last):\n  ...\nFloatingPointError: member x: loss is nan\n\n")
    assert failures.error_line(log) == "FloatingPointError: member x: loss is nan"
    assert failures.error_line(tmp_path / "missing.log") == ""
    # a command's own message, once, not a later line that mentions an error
    log.write_text("error: results/x/model.pt is not a checkpoint (truncated?); delete it and rerun\n"
                   "Please file an issue ... WeightsUnpickler error: Unsupported operand 95\n")
    assert failures.error_line(log) == "results/x/model.pt is not a checkpoint (truncated?); delete it and rerun"
    # a SLURM job's failure: the cause inside its trace
    log.write_text("eq-1: SLURM job 7 RUNNING\nerror: eq-1: SLURM job 7 failed: Job (task=0) failed during "
                   "processing with trace:\n----------------------\nTraceback (most recent call last):\n  ...\n"
                   "FloatingPointError: eq-1: loss is nan at epoch 3\n\nlog: /x/7_0_log.err\n")
    assert failures.error_line(log) == ("eq-1: SLURM job 7 failed: Job (task=0) failed during processing: "
                                        "FloatingPointError: eq-1: loss is nan at epoch 3")
    entries = [{"job": f"pretrain member={m}", "member": m, "error": "e", "log": str(log), "targets": ["table1"]}
               for m in ("a", "b")]
    failures.write(tmp_path, entries)
    failures.clear(tmp_path, {"pretrain member=a"})
    assert [f["member"] for f in json.loads((tmp_path / "failures.json").read_text())] == ["b"]
    assert "pretrain member=a" not in (tmp_path / "failures.md").read_text()
    failures.clear(tmp_path, None)
    assert not any((tmp_path / f"failures.{ext}").exists() for ext in failures.FORMATS)


def snakemake_log(plan, *jobs) -> str:
    """A run's log as Snakemake writes it: each job's block when it starts,
    then an error block for each failed job (jobs: rule, wildcards, inputs,
    outputs, failed)."""
    started, errors = [], []
    for jobid, (rule, wildcards, inputs, outputs, failed) in enumerate(jobs, 1):
        files = {"input": ", ".join(inputs), "output": ", ".join(f"{f} (update)" for f in outputs)}
        started += ["[Mon Dec  7 12:47:24 2026]", f"localrule {rule}:", f"    input: {files['input']}",
                    f"    output: {files['output']}", f"    log: logs/{rule}.log", f"    jobid: {jobid}",
                    "    reason: Missing output files: x; Input files updated by another job: y",
                    "    wildcards: " + ", ".join(f"{k}={v}" for k, v in wildcards.items()),
                    "    resources: tmpdir=/tmp"]
        if failed:
            errors += ["RuleException:", 'CalledProcessError in file "x.smk", line 2:', "[Mon Dec  7 12:47:25 2026]",
                       f"Error in rule {rule}:", "    message: None", f"    jobid: {jobid}",
                       f"    input: {files['input']}", f"    output: {files['output']}",
                       f"    log: logs/{rule}.log (check log file(s) for error details)", "    shell:",
                       f"        multisym {rule} --spec-json '{{\"a\": 1}}'",
                       "        (command exited with non-zero exit code)",
                       f"Cannot restore {outputs[0]}: no backup found."]
        else:
            errors += ["[Mon Dec  7 12:47:29 2026]", f"Finished jobid: {jobid} (Rule: {rule})",
                       "1 of 9 steps (11%) done"]
    return "\n".join(["Building DAG of jobs...", *started, *errors, "Exiting because a job execution failed."]) + "\n"


def test_a_failed_runs_log_names_each_failed_job_and_the_targets_it_could_not_feed(tmp_path):
    """The failure report comes from the run's own log (handed to the onerror
    handler) and the target registry: each failed job's rule, wildcards, log
    and outputs; the tables and figures it could not feed are the registry's
    targets reading a result built from what it failed to make."""
    plan = Plan(config_module.load(SMOKE))
    layout = plan.layout
    sup = next(m for m in plan.members if m.mode == "sup")
    base = next(m for m in plan.members if m.mode == "base" and m.seed == plan.finetuned[0].base.seed)
    eq = next(m for m in plan.members if m.mode == "eq")
    data = [layout.dataset, layout.manifest]
    log = tmp_path / "run.snakemake.log"
    log.write_text(snakemake_log(
        plan,
        ("pretrain", {"member": sup.folder}, data, [layout.member_model(sup.folder)], True),
        ("shift_logits", {"evaluated": eq.folder}, data, [layout.shift_logits(eq.folder)], True),
        ("transfer_probe", {"tprobe": "rotated", "tmember": eq.folder}, [],
         [layout.transfer("rotated").logits(eq.folder)], True),
        ("ensemble", {"pool": "eq", "strategy": "greedy"}, [],
         [layout.ensemble("eq", "greedy"), layout.ensemble_resamples("eq", "greedy")], True),
        ("pretrain", {"member": base.folder}, data, [layout.member_model(base.folder)], True),
        ("probe", {"probed": eq.folder}, [], [layout.logits(eq.folder)], False),
    ))
    run = failures.read_log(log)
    assert run.done == {f"probe probed={eq.folder}"}
    failed = {job.name: job for job in run.failed}
    assert list(failed)[0] == f"pretrain member={sup.folder}" and len(failed) == 5
    job = failed[f"pretrain member={sup.folder}"]
    assert job.log == "logs/pretrain.log" and job.inputs == data and job.outputs == [layout.member_model(sup.folder)]

    def unfed(name):
        return set(targets.unfed(plan, failed[name].outputs, failed[name].wildcards))

    after = {"paper_comparison", "provenance", "checksums"}
    every = {t.name for t in targets.built(plan)}
    pools = {"table2", "table3", "table4", "table7", "figure2", "figure3"}
    # a member's training feeds everything computed from it, not the eq-only Figure 7 or the emergence run
    assert unfed(f"pretrain member={sup.folder}") == {"table1", "table_shift", "table_audit", "figure_audit",
                                                      "table9", "figure4", "figure6", "claims"} | pools | after
    # ... and the fine-tuned members built on it
    assert {"table1", "table2"} <= unfed(f"pretrain member={base.folder}")
    assert unfed(f"shift_logits evaluated={eq.folder}") == {"table_shift"} | after
    assert unfed(f"transfer_probe tprobe=rotated tmember={eq.folder}") == {"table5", "table8", "table9",
                                                                            "figure4", "claims"} | after
    assert unfed("ensemble pool=eq strategy=greedy") == {"table2", "table4", "table7", "figure2", "figure7",
                                                         "table_shift", "table_audit", "figure_audit", "table9",
                                                         "figure4", "claims"} | after
    assert set(targets.unfed(plan, data, {})) == every | after
    assert set(targets.unfed(plan, [layout.table("table1", "csv")], {"table": "table1"})) == after


def test_a_failed_jobs_kept_outputs_are_made_older_than_its_inputs(tmp_path):
    """What Snakemake put back after a failed job is made older than the
    job's inputs, so that the next run redoes the job (and only it)."""
    made, used = tmp_path / "ensemble.json", tmp_path / "logits.npz"
    used.write_text("logits")
    made.write_text("previous result")
    os.utime(used, (1_000_000, 1_000_000))
    failures.mark_for_rerun(failures.Job("ensemble", "1", inputs=[str(used)], outputs=[str(made)]))
    assert made.stat().st_mtime < used.stat().st_mtime and made.read_text() == "previous result"


@pytest.mark.parametrize("read", [read_npz, lambda path: map_npz(path, ["test_logits"])])
def test_a_corrupt_results_file_is_named_with_what_to_do(tmp_path, read):
    path = tmp_path / "logits.npz"
    write_npz(path, test_logits=np.zeros(3, dtype=np.float32))
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CorruptFileError, match=rf"{path}: cannot read it .*Delete it and run the same command again"):
        read(path)


def test_mapped_arrays_are_the_stored_ones_read_only(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"test_logits": rng.standard_normal((5, 3)).astype(np.float16), "test_labels": np.arange(5),
              "fortran": np.asfortranarray(rng.standard_normal((4, 6)))}
    path, packed = tmp_path / "logits.npz", tmp_path / "packed.npz"
    write_npz(path, **arrays)
    np.savez_compressed(packed, **arrays)  # compressed entries cannot be mapped: they are read
    for source in (path, packed):
        mapped = map_npz(source, list(arrays))
        for key, array in arrays.items():
            np.testing.assert_array_equal(mapped[key], array)
            assert mapped[key].dtype == array.dtype and not mapped[key].flags.writeable
    with pytest.raises(KeyError):
        map_npz(path, ["val_logits"])
    # an entry whose array runs past its end is corrupt, not read beyond it
    data = bytearray(path.read_bytes())
    header = data.index(b"'shape': (5, 3)")
    data[header:header + 15] = b"'shape': (9, 3)"
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match="longer than its zip entry"):
        map_npz(path, ["test_logits"])
