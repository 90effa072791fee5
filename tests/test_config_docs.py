"""config.yaml, its JSON schema (the home of every default) and config/README.md agree."""

import copy
from pathlib import Path

import pytest
import yaml

from spxflow.config import ConfigError, config_defaults, config_schema, validate_config

REPO = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((REPO / "config/config.yaml").read_text())
DOCS = (REPO / "config/README.md").read_text()


def leaf_keys(d, prefix=""):
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            yield from leaf_keys(v, key + ".")
        else:
            yield key


def test_default_config_is_valid():
    validate_config(copy.deepcopy(CONFIG))


def _schema_blocks(schema, path=()):
    yield path, schema
    for key, sub in schema.get("properties", {}).items():
        if sub.get("type") == "object" or "properties" in sub:
            yield from _schema_blocks(sub, (*path, key))


BLOCKS = {".".join(p) or "(top)": block for p, block in _schema_blocks(config_schema())}


@pytest.mark.parametrize("path", sorted(BLOCKS))
def test_every_schema_block_is_closed_and_every_key_has_a_default(path):
    block = BLOCKS[path]
    assert block.get("additionalProperties") is False, f"{path}: additionalProperties not false"
    for key, sub in block["properties"].items():
        assert "default" in sub, f"{path}.{key} has no default in the schema"


def test_config_yaml_is_not_a_second_home_for_the_defaults():
    # config.yaml states the few choices a user makes first; every other value comes from the
    # schema (`python -m spxflow config-defaults` prints them all).
    allowed = {"catalog", "qa_level", "cleanup", "archive.backend", "sources_per_job"}
    assert set(leaf_keys(CONFIG)) <= allowed


@pytest.mark.parametrize("key", sorted(leaf_keys(config_defaults())))
def test_every_config_key_is_documented(key):
    if key.startswith("catalog_options.columns."):
        key = "catalog_options.columns."
    assert f"`{key}" in DOCS, f"config key {key} missing from config/README.md"


@pytest.mark.parametrize(
    "patch, path",
    [
        ({"cleanup": "sometimes"}, "cleanup"),
        ({"qa_level": "verbose"}, "qa_level"),
        ({"archive": {"backend": "mast"}}, "archive.backend"),
        ({"unknown_key": 1}, "unknown_key"),
        ({"archive": {"irsa": {"timout_s": 5}}}, "archive.irsa.timout_s"),
        ({"archive": {"simulated": {"sead": 5}}}, "archive.simulated.sead"),
        ({"catalog_options": {"columns": {"nam": "x"}}}, "catalog_options.columns.nam"),
        ({"photometry": {"fit_half_size": 5}}, "photometry.fit_half_size"),
        ({"plots": {"units": "fnu"}}, "plots.units"),
        ({"archive": {"irsa": {"max_concurrent_per_host": 8}}}, "archive.irsa.max_concurrent"),
        ({"update": True}, "spxflow rerun --update"),
        ({"retry_failed": True}, "spxflow rerun --retry-failed"),
    ],
)
def test_bad_config_is_rejected_naming_the_key(patch, path):
    bad = {**copy.deepcopy(CONFIG), **patch}
    with pytest.raises(ConfigError, match=path.replace(".", r"\.")):
        validate_config(bad)


def test_every_output_column_is_documented():
    from spxflow.columns import MEASUREMENT_COLUMNS, SPECTRUM_EXTRA_COLUMNS

    for c in MEASUREMENT_COLUMNS + SPECTRUM_EXTRA_COLUMNS:
        assert f"| `{c.name}` |" in DOCS


@pytest.mark.parametrize("path", sorted(REPO.glob(".test/config-*/config.yaml")), ids=str)
def test_every_dry_run_matrix_config_is_valid(path):
    validate_config({**copy.deepcopy(CONFIG), **yaml.safe_load(path.read_text())})
