"""The workflow configuration: its schema (the one home of every default) and validation.

``workflow/schemas/config.schema.yaml`` holds every key, its type and its default. The
Snakefile and the ``python -m spxflow`` commands both call :func:`validate_config`, which
fills the defaults in place and fails on the first bad or unknown key, naming its path.
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"

# Keys that once existed, with what replaces them (a plain "unknown key" would not say).
REMOVED_KEYS = {
    "update": "re-query discovery with `python -m spxflow rerun --update` before snakemake",
    "retry_failed": "retry failed cutouts with `python -m spxflow rerun --retry-failed` "
    "before snakemake",
}


class ConfigError(ValueError):
    """The configuration does not match the schema; the message names the key's path."""


@cache
def config_schema() -> dict:
    with open(SCHEMA_PATH, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def _block_schema(path: tuple[str, ...]) -> dict:
    schema = config_schema()
    for key in path:
        schema = schema["properties"][key]
    return schema


def block_defaults(*path: str) -> dict:
    """``{key: default}`` of the schema block at ``path`` (e.g. ``"archive", "irsa"``)."""
    return config_defaults(_block_schema(path))


def config_defaults(schema: dict | None = None) -> dict:
    """Every default of ``schema`` (default: the whole config schema), nested blocks filled."""
    schema = config_schema() if schema is None else schema
    out = {}
    for key, sub in schema.get("properties", {}).items():
        if "properties" in sub:
            out[key] = {**copy.deepcopy(sub.get("default", {})), **config_defaults(sub)}
        elif "default" in sub:
            out[key] = copy.deepcopy(sub["default"])
    return out


def _with_defaults(validator_class):
    # jsonschema's documented recipe: set defaults before validating the properties, so that a
    # block filled with its default ({}) gets its own keys' defaults in turn.
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if "default" in sub:
                    instance.setdefault(key, copy.deepcopy(sub["default"]))
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_Validator = _with_defaults(jsonschema.Draft7Validator)


def _key_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


def validate_config(config: dict) -> dict:
    """Fill the schema's defaults into ``config`` in place and validate it.

    Raises ``ConfigError`` naming the path of the first unknown, removed or invalid key.
    """
    for key, hint in REMOVED_KEYS.items():
        if key in config:
            raise ConfigError(f"config key {key!r} was removed: {hint}")
    errors = sorted(_Validator(config_schema()).iter_errors(config), key=lambda e: e.path)
    if not errors:
        return config
    error = errors[0]
    if error.validator == "additionalProperties":
        known = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(known))
        prefix = _key_path(error)
        names = ", ".join(k if prefix == "(top level)" else f"{prefix}.{k}" for k in unknown)
        raise ConfigError(f"unknown config key {names}; known here: {', '.join(known)}")
    raise ConfigError(f"config key {_key_path(error)}: {error.message}")


def completed_config(config: dict | None = None) -> dict:
    """A validated deep copy of ``config`` with every default filled (for library callers)."""
    return validate_config(copy.deepcopy(dict(config or {})))
