"""The launcher's pieces that need no cluster: submitit parameters from the
config, in-process runs, refusals; the site settings as the profile passes them."""

from __future__ import annotations

import os
import signal

import pytest

from multisym.config import ConfigError, check_signal_delay, resolve, resolve_cluster, section_defaults
from multisym.cluster.launch import Call, LaunchError, hopeless, run, submit_parameters
from multisym.cluster.stopping import InterruptedRun


def job(**overrides):
    return {**section_defaults("gpu_jobs")["pretrain"], **overrides}


def cluster(**overrides):
    return {**section_defaults("cluster"), **overrides}


def test_submit_parameters_follow_the_config():
    params = submit_parameters(job(time_limit_min=90, cpus_per_task=6, mem_gb=40), cluster(signal_delay_s=300), "eq-1")
    assert params == {"name": "eq-1", "timeout_min": 90, "nodes": 1, "tasks_per_node": 1, "cpus_per_task": 6,
                      "mem_gb": 40, "slurm_signal_delay_s": 300, "gpus_per_node": 1}


def test_site_settings_and_gpu_model():
    params = submit_parameters(job(gpus_per_node=1), cluster(partition="gpu", account="lab", qos="high",
                                                             constraint="h100", gpu_model="h100"), "x")
    assert params["slurm_gres"] == "gpu:h100:1" and "gpus_per_node" not in params
    assert (params["slurm_partition"], params["slurm_account"], params["slurm_qos"], params["slurm_constraint"]) == (
        "gpu", "lab", "high", "h100")


def test_cpu_only_job_asks_for_no_gpu():
    params = submit_parameters(job(gpus_per_node=0), cluster(), "x")
    assert "gpus_per_node" not in params and "slurm_gres" not in params and params["tasks_per_node"] == 1


def test_local_executor_runs_in_this_process(tmp_path):
    assert run(Call("fractions:Fraction", {"numerator": 3, "denominator": 4}), tmp_path, job(), cluster()) == 0.75


def test_several_nodes_need_a_cluster(tmp_path):
    with pytest.raises(LaunchError, match="set nodes to 1, or run with --profile slurm"):
        run(Call("fractions:Fraction", {"numerator": 3}), tmp_path, job(nodes=2), cluster())


def rank_and_world() -> tuple[str, str]:
    return os.environ["RANK"], os.environ["WORLD_SIZE"]


def stopped_on_rank_one() -> None:
    if os.environ["RANK"] == "1":
        raise InterruptedRun(signal.SIGUSR2, "member", 0, 3)


def test_local_processes_return_rank_zeros_result(tmp_path):
    assert run(Call("test_launch:rank_and_world"), tmp_path, job(gpus_per_node=2), cluster()) == ("0", "2")


def test_an_error_in_any_process_is_raised_with_its_type(tmp_path):
    """The CLI turns InterruptedRun into exit 128 + signal, so its type must survive the process boundary."""
    with pytest.raises(InterruptedRun, match="stopped by SIGUSR2 in epoch 1 after batch 3") as stopped:
        run(Call("test_launch:stopped_on_rank_one"), tmp_path, job(gpus_per_node=2), cluster())
    assert stopped.value.signum == signal.SIGUSR2


def test_fine_tuning_stays_one_process():
    raw = {"name": "x", "dataset": {"name": "digits"}, "members": {"seeds": {"eq": [1, 2, 3, 4, 5]}},
           "gpu_jobs": {"adapt": {"gpus_per_node": 2}}}
    with pytest.raises(ConfigError, match="gpu_jobs.adapt.*fine-tuning runs in one process"):
        resolve(raw)


def test_profile_strings_are_read_as_scalars():
    """Snakemake hands nested --config values over as strings."""
    raw = {"name": "x", "dataset": {"name": "digits"}, "members": {"seeds": {"eq": [1, 2, 3, 4, 5]}},
           "cluster": {"executor": "slurm", "poll_s": "2", "partition": "null", "signal_delay_s": "120"},
           "gpu_jobs": {"pretrain": {"mem_gb": "8"}}}
    resolved = resolve(raw)
    assert resolved["cluster"]["poll_s"] == 2 and resolved["cluster"]["partition"] is None
    assert resolved["cluster"]["signal_delay_s"] == 120 and resolved["gpu_jobs"]["pretrain"]["mem_gb"] == 8


def test_every_section_is_read_through_the_schema_types():
    """Nested --config values arrive as strings in every section; a string the
    schema allows stays one (an account named 123456)."""
    raw = {"name": "x", "dataset": {"name": "digits", "image_size": "12"},
           "members": {"seeds": {"eq": ["1", "2", "3", "4", "5"]}},
           "pretrain": {"epochs": "3", "optimizer": {"lr": "0.5"}}, "cluster": {"account": "123456"}}
    resolved = resolve(raw)
    assert resolved["pretrain"]["epochs"] == 3 and resolved["pretrain"]["optimizer"]["lr"] == 0.5
    assert resolved["dataset"]["image_size"] == 12 and resolved["members"]["seeds"]["eq"] == [1, 2, 3, 4, 5]
    assert resolved["cluster"]["account"] == "123456"
    with pytest.raises(ConfigError, match="pretrain.epochs"):
        resolve({**raw, "pretrain": {"epochs": "three"}})


def test_the_waiter_reads_its_resources_through_the_schema():
    """What the profile's set-resources hand a waiter (strings; empty for null)."""
    site = resolve_cluster({"executor": "auto", "partition": "", "account": "123456", "poll_s": "2",
                            "signal_delay_s": "60"}, "slurm")
    assert site["executor"] == "slurm" and site["partition"] is None and site["account"] == "123456"
    assert site["poll_s"] == 2 and site["signal_delay_s"] == 60 and site["max_requeues"] == 30
    assert resolve_cluster({}, "local")["executor"] == "local"
    assert resolve_cluster({}, "dryrun")["executor"] == "local"
    with pytest.raises(ConfigError, match="cluster.poll_s"):
        resolve_cluster({"poll_s": "soon"}, "slurm")


def test_local_training_under_the_slurm_executor_is_refused():
    with pytest.raises(ConfigError, match="cluster.executor.*would train on the submitting host"):
        resolve_cluster({"executor": "local"}, "slurm")


def test_the_warning_must_fit_the_time_limit():
    raw = {"name": "x", "dataset": {"name": "digits"}, "members": {"seeds": {"eq": [1, 2, 3, 4, 5]}},
           "cluster": {"signal_delay_s": 120}, "gpu_jobs": {"pretrain": {"time_limit_min": 4}}}
    with pytest.raises(ConfigError, match=r"cluster.signal_delay_s.*50% of gpu_jobs.pretrain.time_limit_min.*to 6 or"):
        resolve(raw)
    raw["gpu_jobs"]["pretrain"]["time_limit_min"] = 6  # 120 s of 360: 33 %
    resolve(raw)
    with pytest.raises(ConfigError, match="gpu_jobs.adapt.time_limit_min"):
        check_signal_delay(30, {"adapt": job(time_limit_min=1)})


def test_pending_reasons_that_never_clear():
    assert hopeless("PartitionConfig") and hopeless("QOSMaxWallDurationPerJobLimit") and hopeless("AssocMaxGRESPerJob")
    assert not any(hopeless(r) for r in ("Priority", "Resources", "BeginTime", "Dependency", ""))


LATE_SIGNAL = """
import os, signal, sys, time
from multisym.cluster.stopping import StopSignal, hold_after_finish
if sys.argv[1] == "hold":
    hold_after_finish()
with StopSignal() as stop:
    stop.finish()
    os.kill(os.getpid(), signal.SIGUSR2)  # during the export
    time.sleep(0.1)
os.kill(os.getpid(), signal.SIGTERM)  # after it, before the process ends
time.sleep(0.1)
print("exported")
"""


@pytest.mark.parametrize("hold", ["hold", "no-hold"])
def test_a_finished_run_ignores_late_signals(hold):
    """A SLURM task (hold_after_finish) ignores SIGUSR2 and SIGTERM from its
    final state to its exit; in-process runs get their handlers back."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", LATE_SIGNAL, hold], capture_output=True, text=True)
    assert "ignored SIGUSR2 after training finished" in done.stderr
    if hold == "hold":
        assert done.returncode == 0 and "exported" in done.stdout, done.stderr
    else:
        assert done.returncode == -signal.SIGTERM
