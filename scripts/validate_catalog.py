"""Rule `validate_catalog`: unpacks the snakemake object; the logic is spxflow.rules."""

from spxflow import rules
from spxflow.catalog import CatalogSettings
from spxflow.rulelog import rule_logging

snakemake = snakemake  # noqa: F821 (injected by Snakemake)

with rule_logging(snakemake.log[0], "validate_catalog", f"catalog {snakemake.input[0]}"):
    rules.validate_catalog(
        CatalogSettings(**snakemake.params.catalog), snakemake.input[0], snakemake.output[0]
    )
