"""Rule `validate_catalog`: thin wrapper; the logic is in spxflow.stages."""

from spxflow import stages
from spxflow.rulelog import rule_logging

snakemake = snakemake  # noqa: F821 (injected by Snakemake)

with rule_logging(snakemake.log[0], "validate_catalog", f"catalog {snakemake.input[0]}"):
    stages.validate_catalog_file(snakemake.input[0], snakemake.config, snakemake.output[0])
