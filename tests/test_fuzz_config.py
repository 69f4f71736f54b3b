"""Configs generated from the schema: every value a key must not take, unknown
keys beside every key, and random combinations of both, applied to each scale
file. Each config is either accepted or refused with a ConfigError whose
message names the full key path of what is wrong (``transfer.datasets[0].key``);
no other exception gets through (it would reach the user as a traceback).

The mutations are derived from the schema itself, so a key added to it is
fuzzed without editing this file. Hypothesis draws the combinations with a
fixed seed, so CI runs the same cases every time.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from multisym import config
from multisym.config_schema import key_path

ROOT = Path(__file__).resolve().parent.parent
BASES = {path.name: yaml.safe_load(path.read_text())
         for path in [ROOT / "config.yaml", *sorted((ROOT / "config").glob("*.yaml"))]}
SCHEMA = config.load_schema()
UNKNOWN = "no_such_key"
VALIDATIONS = {"single": 0, "combined": 0, "accepted": 0, "refused": 0}


def _resolved(schema: dict) -> dict:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = {**SCHEMA["$defs"][name], **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def _get(config_: dict, path: tuple):
    node = config_
    for part in path:
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                return None
        elif not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def leaves(schema: dict, base: dict, path: tuple = ()):
    """(key path, schema) of every key the base config reaches, objects included,
    with list entries taken from the base (members, transfer sets, ...)."""
    schema = _resolved(schema)
    if path:
        yield path, schema
    value = _get(base, path) if path else base
    if "properties" in schema:
        for key, sub in schema["properties"].items():
            yield from leaves(sub, base, path + (key,))
    items = schema.get("items")
    if isinstance(items, dict) and isinstance(value, list):
        for index in range(min(len(value), 2)):
            yield from leaves(items, base, path + (index,))


def bad_values(schema: dict) -> list:
    """Values the schema refuses for one key: of another type, out of range,
    outside its enum, empty where it needs content, against its pattern."""
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else list(types)
    values = []
    if types and "object" not in types:
        values.append({"nested": 1})
    if types and "array" not in types:
        values.append([1, "two"])
    if types and "string" not in types:
        values.append("not-a-number")
    if types and not {"number", "integer", "boolean"} & set(types):
        values.append(7)
    if "integer" in types and "number" not in types:
        values.append(2.5)
    for bound, step in (("minimum", -1), ("exclusiveMinimum", 0), ("maximum", 1), ("exclusiveMaximum", 0)):
        if bound in schema:
            values.append(schema[bound] + step)
    if "enum" in schema:
        values.append("not-one-of-them")
    if "minItems" in schema or "minLength" in schema:
        values.append([] if "array" in types else "")
    if "pattern" in schema:
        values += ["..", "/abs", "a/b", "x;rm -rf"]
    return values


def set_key(config_: dict, path: tuple, value) -> None:
    node = config_
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value


def mutations(base: dict) -> list[tuple[tuple, object]]:
    found = []
    for path, schema in leaves(SCHEMA, base):
        if _get(base, path[:-1]) is None and len(path) > 1:
            continue
        found += [(path, value) for value in bad_values(schema)]
        if "properties" in schema and schema.get("additionalProperties") is False \
                and isinstance(_get(base, path), dict):
            found.append((path + (UNKNOWN,), 1))
    found.append(((UNKNOWN,), 1))
    return found


CASES = [(name, path, value) for name, base in BASES.items() for path, value in mutations(base)]


def assert_names_a_mutated_key(error: Exception, paths: list[tuple]) -> None:
    """The message names one of the mutated keys, or a key above one (a oneOf
    or a whole-section rule reports where the alternatives part)."""
    named = set(re.findall(r"config key '([^']+)'", str(error)))
    assert named, f"no key named in: {error}"
    wanted = {key_path(path[:n]) for path in paths for n in range(1, len(path) + 1)}
    assert named & wanted, f"mutated {[key_path(p) for p in paths]}, message names {sorted(named)}: {error}"


def check(mutated: dict, paths: list[tuple]) -> None:
    """Accepted, or refused naming one of the mutated keys."""
    try:
        config.resolve(mutated)
    except config.ConfigError as error:
        VALIDATIONS["refused"] += 1
        assert_names_a_mutated_key(error, paths)
    else:
        VALIDATIONS["accepted"] += 1


@pytest.mark.parametrize("name, path, value", CASES, ids=[f"{n}:{key_path(p)}={v!r}"[:90] for n, p, v in CASES])
def test_one_bad_value_is_refused_naming_its_key(name, path, value):
    mutated = copy.deepcopy(BASES[name])
    set_key(mutated, path, value)
    VALIDATIONS["single"] += 1
    check(mutated, [path])
    assert not isinstance(value, str) or value != ".." or path[-1] != "name" or VALIDATIONS["refused"]


@seed(20261207)
@settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_combinations_are_refused_naming_a_key(data):
    name = data.draw(st.sampled_from(sorted(BASES)))
    chosen = data.draw(st.lists(st.sampled_from([c for c in CASES if c[0] == name]), min_size=2, max_size=4,
                                unique_by=lambda c: key_path(c[1])))
    mutated = copy.deepcopy(BASES[name])
    applied = []
    for _, path, value in chosen:
        if _get(mutated, path[:-1]) is None and len(path) > 1:
            continue  # an earlier mutation replaced its parent
        if any(path[:len(done)] == done for done in applied):
            continue
        set_key(mutated, path, value)
        applied.append(path)
    VALIDATIONS["combined"] += 1
    check(mutated, applied)


def test_enough_configs_were_generated():
    """The count the issue asks of every CI run, over both tests above (this
    file runs in one worker: pytest-xdist's --dist=loadfile)."""
    total = VALIDATIONS["single"] + VALIDATIONS["combined"]
    print(f"\nfuzzed configs through validation: {total} ({VALIDATIONS['single']} single, "
          f"{VALIDATIONS['combined']} combined; {VALIDATIONS['refused']} refused, {VALIDATIONS['accepted']} accepted)")
    if VALIDATIONS["single"] < len(CASES):
        pytest.skip("run as part of the whole file")
    assert total >= 1000
