"""The launcher's pieces that need no cluster: submitit parameters from the
config, in-process runs, refusals; the site settings as the profile passes them."""

from __future__ import annotations

import pytest

from multisym.config import resolve, section_defaults
from multisym.launch import Call, LaunchError, run, submit_parameters


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


def test_multi_gpu_jobs_are_refused_until_ddp_exists(tmp_path):
    with pytest.raises(LaunchError, match="not built yet"):
        run(Call("fractions:Fraction", {"numerator": 3}), tmp_path, job(gpus_per_node=4), cluster(executor="slurm"))


def test_profile_strings_are_read_as_scalars():
    """Snakemake hands nested --config values over as strings."""
    raw = {"name": "x", "dataset": {"name": "digits"}, "members": {"seeds": {"eq": [1, 2, 3, 4, 5]}},
           "cluster": {"executor": "slurm", "poll_s": "2", "partition": "null", "signal_delay_s": "120"},
           "gpu_jobs": {"pretrain": {"mem_gb": "8"}}}
    resolved = resolve(raw)
    assert resolved["cluster"]["poll_s"] == 2 and resolved["cluster"]["partition"] is None
    assert resolved["cluster"]["signal_delay_s"] == 120 and resolved["gpu_jobs"]["pretrain"]["mem_gb"] == 8
