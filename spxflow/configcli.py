"""Typed values for `snakemake --config key=value` overrides.

Snakemake hands some command-line values to the workflow as strings (``cutout_size_arcsec=45``
may arrive as ``'45'``, nested values always do). Before schema validation, strings whose schema
type is boolean, integer or number are parsed as YAML scalars, so that commands such as
``--config max_live_cutout_gb=null`` work; anything that still does not fit fails validation
by name.
"""

from __future__ import annotations

import yaml

_TYPED = {"boolean", "integer", "number", "null"}


def _types(schema: dict) -> set[str]:
    t = schema.get("type", [])
    return {t} if isinstance(t, str) else set(t)


def coerce_cli_strings(config: dict, schema: dict) -> dict:
    """Parse string values in place where the schema wants a non-string scalar."""
    props = schema.get("properties", {})
    for key, value in list(config.items()):
        sub = props.get(key)
        if sub is None:
            continue
        types = _types(sub)
        if isinstance(value, dict) and "object" in types:
            coerce_cli_strings(value, sub)
        elif isinstance(value, str) and types & _TYPED and "string" not in types:
            try:
                config[key] = yaml.safe_load(value)
            except yaml.YAMLError:
                pass  # left as is: validation names the key
    return config
