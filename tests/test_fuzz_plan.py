"""Configs generated from the schema, planned: each is either planned (a dry
run of ``figures`` through Snakemake's API, in this process) or refused
before any job starts with a ConfigError or UserError naming the full key
path; no other exception gets through. A planned config puts every output
and log under ``results/<name>/`` or ``logs/<name>/``, whatever its scale
name, dataset keys or imported members say; hostile names (``..``, absolute
paths, slashes, shell metacharacters) are refused by validation and so
never planned. Four go through the command line as a user runs them:
``multisym validate`` exits 2 and ``snakemake -n`` 1, with the key in the
message and no traceback.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from multisym.errors import UserError
from multisym.config_schema import key_path
from test_fuzz_config import CASES, assert_names_a_mutated_key, set_key

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW_FILES = ("Snakefile", "config.yaml", "workflow", "profiles", "envs", "config")
BASE = yaml.safe_load((ROOT / "config.yaml").read_text())
HOSTILE = ["..", ".", "/tmp/elsewhere", "a/b", "../up", "x;touch pwned", "$(touch pwned)", "name with space", ""]
# the values of a config that become part of a path
PATH_KEYS = [("name",), ("transfer", "datasets", 0, "key")]
PLANNED = {"planned": 0, "refused": 0}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz-plan")
    for name in WORKFLOW_FILES:
        source = ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, folder / name)
    return folder


def plan(folder: Path, config: dict) -> None:
    """A dry run of ``figures`` with ``config`` as the scale file, in this process."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, DAGSettings, OutputSettings, ResourceSettings

    path = folder / "fuzz.yaml"
    path.write_text(yaml.safe_dump(config))
    with SnakemakeApi(OutputSettings()) as api:
        workflow = api.workflow(resource_settings=ResourceSettings(cores=1),
                                config_settings=ConfigSettings(configfiles=[path]),
                                snakefile=folder / "Snakefile", workdir=folder)
        workflow.dag(dag_settings=DAGSettings(targets={"figures"})).execute_workflow(executor="dryrun")


def planned_paths(log: str) -> list[str]:
    """Every output and log path a dry run printed."""
    paths = []
    for line in log.splitlines():
        match = re.match(r"\s*(output|log): (.*)$", line)
        if match:
            paths += [part.strip() for part in match.group(2).split(",") if part.strip()]
    return paths


def check_planned(folder: Path, config: dict, mutated: list[tuple], capfd) -> None:
    capfd.readouterr()
    try:
        plan(folder, config)
    except UserError as error:  # ConfigError is one
        PLANNED["refused"] += 1
        assert_names_a_mutated_key(error, mutated)
        return
    PLANNED["planned"] += 1
    log = capfd.readouterr().err
    paths = planned_paths(log)
    assert paths, log[-2000:]
    name = config["name"]
    inside = (f"results/{name}/", f"logs/{name}/")
    escaped = [p for p in paths if not p.startswith(inside) or ".." in Path(p).parts]
    assert not escaped, f"planned outside results/{name}/ and logs/{name}/: {escaped[:5]}"


@seed(20261207)
@settings(max_examples=50, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_generated_configs_plan_or_fail_naming_a_key(workdir, capfd, data):
    config = copy.deepcopy(BASE)
    kind = data.draw(st.sampled_from(["hostile", "bad value", "valid name"]))
    if kind == "hostile":
        path = data.draw(st.sampled_from(PATH_KEYS))
        value = data.draw(st.sampled_from(HOSTILE))
    elif kind == "valid name":
        path, value = ("name",), data.draw(st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,12}", fullmatch=True))
    else:
        _, path, value = data.draw(st.sampled_from([c for c in CASES if c[0] == "config.yaml"]))
    set_key(config, path, value)
    check_planned(workdir, config, [path], capfd)


def test_every_planned_output_of_the_default_stays_in_its_folders(workdir, capfd):
    check_planned(workdir, copy.deepcopy(BASE), [], capfd)
    print(f"\nplanned through Snakemake's API: {PLANNED}")


CLI_CASES = [(("name",), ".."), (("transfer", "datasets", 0, "key"), "../up"), (("pretrain", "epochs"), 0),
             (("dataset", "splits", "val"), "half")]


@pytest.mark.parametrize("path, value", CLI_CASES, ids=[key_path(p) for p, _ in CLI_CASES])
def test_the_command_line_refuses_a_bad_value_without_a_traceback(workdir, path, value):
    config = copy.deepcopy(BASE)
    set_key(config, path, value)
    key = key_path(path)
    file = workdir / f"bad-{path[-1]}.yaml"
    file.write_text(yaml.safe_dump(config))
    validate = subprocess.run([sys.executable, "-c", "from multisym.cli import main; main()", "validate",
                               "--config", str(file)], capture_output=True, text=True, cwd=workdir)
    dry = subprocess.run([str(Path(sys.executable).parent / "snakemake"), "-n", "figures", f"--configfile={file}"],
                         capture_output=True, text=True, cwd=workdir)
    for done, status in ((validate, 2), (dry, 1)):
        output = done.stdout + done.stderr
        assert done.returncode == status, output
        assert f"config key '{key}'" in output and "Traceback" not in output, output
    assert not (workdir / "results").exists() or not any((workdir / "results").iterdir())


def test_a_missing_imported_checkpoint_is_named_by_its_key(workdir, capfd):
    config = copy.deepcopy(BASE)
    config["members"]["imported"] = [{"mode": "base", "seed": 99, "path": "no/such/checkpoint.pth"}]
    with pytest.raises(UserError, match=r"config key 'members\.imported\[0\]\.path': no/such/checkpoint\.pth"):
        plan(workdir, config)
