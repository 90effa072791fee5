"""config.yaml, its JSON schema and config/README.md stay in agreement."""

from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

REPO = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((REPO / "config/config.yaml").read_text())
SCHEMA = str(REPO / "workflow/schemas/config.schema.yaml")
DOCS = (REPO / "config/README.md").read_text()


def leaf_keys(d, prefix=""):
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            yield from leaf_keys(v, key + ".")
        else:
            yield key


def test_default_config_is_valid():
    validate(dict(CONFIG), SCHEMA)


@pytest.mark.parametrize("key", sorted(leaf_keys(CONFIG)))
def test_every_config_key_is_documented(key):
    if key.startswith("catalog_options.columns."):
        key = "catalog_options.columns."
    assert f"`{key}" in DOCS, f"config key {key} missing from config/README.md"


@pytest.mark.parametrize(
    "patch",
    [
        {"cleanup": "sometimes"},
        {"qa_level": "verbose"},
        {"archive": {"backend": "mast"}},
        {"unknown_key": 1},
        {"archive": {"backend": "irsa", "irsa": {"max_concurrent_per_host": 8}}},
    ],
)
def test_bad_config_is_rejected_naming_the_key(patch):
    bad = {**CONFIG, **patch}
    with pytest.raises(WorkflowError):
        validate(bad, SCHEMA)


def test_every_output_column_is_documented():
    from spxflow.columns import MEASUREMENT_COLUMNS, SPECTRUM_EXTRA_COLUMNS

    for c in MEASUREMENT_COLUMNS + SPECTRUM_EXTRA_COLUMNS:
        assert f"| `{c.name}` |" in DOCS
