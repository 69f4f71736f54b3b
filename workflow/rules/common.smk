# Shared logic: the validated config, the member table, wildcard constraints and
# every input function. Stage files hold rules only.
import json
import re

from multisym.config import resolve
from multisym.layout import Layout
from multisym.members import by_folder, member_table

config = resolve(config)
LAYOUT = Layout(config["name"])
MEMBERS = member_table(config)
MEMBER_BY_FOLDER = by_folder(MEMBERS)


wildcard_constraints:
    member="|".join(re.escape(folder) for folder in MEMBER_BY_FOLDER),


def env(name):
    """Conda environment file for a rule (paths in rules are relative to rules/)."""
    return f"../../envs/{name}.yaml"


def dataset_json(wildcards):
    return json.dumps(config["dataset"], sort_keys=True)


def member_settings_json(wildcards):
    return json.dumps(MEMBER_BY_FOLDER[wildcards.member].settings, sort_keys=True)


def member_run_dir(wildcards):
    return LAYOUT.member_dir(wildcards.member)


def config_json(wildcards):
    return json.dumps(config, sort_keys=True)


def member_models(members):
    return [LAYOUT.member_model(m.folder) for m in members]


def all_member_models(wildcards):
    return member_models(MEMBERS)
