"""The workflow's JSON schema (``workflow/schemas/config.schema.yaml``, read
here through the package's link to it): every key's type, description,
allowed values and default. A config, or one of its sections, is validated
against it with each missing key's default filled in; every error names its
key and says what is allowed. Snakemake hands nested ``--config`` values
over as strings, which are read back through the schema's types
(``coerce``).
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")


@functools.cache
def _parsed_schema() -> dict:
    with open(SCHEMA_PATH) as handle:
        return yaml.safe_load(handle)


def load_schema() -> dict:
    """The schema, parsed once per process (parsing it is most of a
    validation's cost); each caller gets its own copy to change."""
    return copy.deepcopy(_parsed_schema())


def validator_filling_defaults():
    """A Draft 2020-12 validator that inserts each property's default before
    validating it (defaults of nested objects are filled in turn)."""
    base = jsonschema.Draft202012Validator
    validate_properties = base.VALIDATORS["properties"]

    def properties_with_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, subschema in properties.items():
                if key not in instance and "default" in subschema:
                    instance[key] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(base, {"properties": properties_with_defaults})


def key_path(parts) -> str:
    """A key as a user writes it: ``("transfer", "datasets", 0, "key")`` is
    ``transfer.datasets[0].key``. Every error about a config value names its
    key this way."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def describe(error: jsonschema.ValidationError) -> str:
    key = key_path(error.absolute_path) or "<top level>"
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        where = f"of '{key}'" if error.absolute_path else "at the top level"
        return "\n  - ".join(f"config key '{key_path([*error.absolute_path, name])}': unknown key; the keys "
                             f"{where} are {allowed}" for name in unknown)
    if error.validator == "required":
        return f"config key '{key}': {error.message}; a scale file must set it"
    hint = ""
    if "enum" in schema:
        hint = f"; allowed values: {schema['enum']}"
    description = schema.get("description")
    if description:
        hint += f" ({' '.join(str(description).split())})"
    return f"config key '{key}': {error.message}{hint}"


JSON_TYPES = {"integer": int, "number": (int, float), "boolean": bool, "null": type(None),
              "array": list, "object": dict, "string": str}


def _subschema(schema: dict, root: dict) -> dict:
    """``schema`` with a local ``$ref`` followed."""
    while isinstance(schema, dict) and "$ref" in schema:
        schema = root["$defs"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema if isinstance(schema, dict) else {}


def _types(schema: dict, root: dict) -> set[str]:
    schema = _subschema(schema, root)
    declared = schema.get("type", [])
    types = {declared} if isinstance(declared, str) else set(declared)
    for branch in schema.get("oneOf", []) + schema.get("anyOf", []):
        types |= _types(branch, root)
    if not types and "enum" in schema:
        types = {name for value in schema["enum"] for name in JSON_TYPES if _is_type(value, name)}
    return types


def _is_type(value, name: str) -> bool:
    if name in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, JSON_TYPES[name])


def _part(schema: dict, root: dict, key: str):
    """``schema[key]`` (``properties`` or ``items``), or that of the first
    ``oneOf`` branch that has one."""
    branches = [schema, *(_subschema(branch, root) for branch in schema.get("oneOf", []))]
    return next((branch[key] for branch in branches if key in branch), {})


def coerce(value, schema: dict, root: dict):
    """``value`` with every string that stands where the schema admits no
    string read as YAML, when that gives a value of an admitted type.

    Snakemake reads nested ``--config`` values (``--config 'pretrain={epochs:
    5}'``) and a profile's ``config:`` entries with YAML's base loader, so
    every scalar inside arrives as a string ("5", "null", "true"); this puts
    them back to what the schema asks for. A string where a string is allowed
    stays a string (an account named ``123456`` included)."""
    schema = _subschema(schema, root)
    if isinstance(value, str):
        allowed = _types(schema, root)
        if "null" in allowed and value.strip() in ("null", "Null", "NULL", "~"):
            return None
        if not allowed or "string" in allowed:
            return value
        try:
            parsed = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            return value
        if any(_is_type(parsed, name) for name in allowed):
            return coerce(parsed, schema, root) if isinstance(parsed, (dict, list)) else parsed
        return value
    if isinstance(value, dict):
        properties, extra = _part(schema, root, "properties"), schema.get("additionalProperties")
        return {key: coerce(item, properties.get(key, extra if isinstance(extra, dict) else {}), root)
                for key, item in value.items()}
    if isinstance(value, list):
        return [coerce(item, _part(schema, root, "items"), root) for item in value]
    return value


def parse_command_line_scalars(config: dict, schema: dict) -> None:
    """Every section through the schema's types (see ``coerce``)."""
    for key, value in list(config.items()):
        if key in schema["properties"]:
            config[key] = coerce(value, schema["properties"][key], schema)



def section_defaults(section: str) -> dict:
    """A top-level section as the schema's defaults alone make it."""
    schema = load_schema()
    instance: dict = {}
    validator_filling_defaults()({"$defs": schema["$defs"], **schema["properties"][section]}).validate(instance)
    return instance

