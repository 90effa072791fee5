"""Rule `source_products`: unpacks the snakemake object; the logic is spxflow.rules."""

from spxflow import rules
from spxflow.rulelog import rule_logging
from spxflow.settings import Runtime, Science

snakemake = snakemake  # noqa: F821 (injected by Snakemake)

source = snakemake.wildcards.source
with rule_logging(snakemake.log[0], "source_products", f"source {source}"):
    rules.source_products(
        Science.from_params(snakemake.params.science),
        snakemake.params.plots,
        Runtime.from_config(snakemake.config),
        source,
        snakemake.params.target,
        snakemake.params.neighbours,
        rules.ProductInputs(**dict(snakemake.input.items())),
        rules.ProductOutputs(**dict(snakemake.output.items())),
    )
