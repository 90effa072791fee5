"""Rule `summary`: thin wrapper; the logic is in spxflow.stages."""

from spxflow import stages
from spxflow.rulelog import rule_logging

snakemake = snakemake  # noqa: F821 (injected by Snakemake)

with rule_logging(snakemake.log[0], "summary", "all sources"):
    stages.summarize(
        snakemake.input.catalog,
        snakemake.input.measurements,
        snakemake.output.sources,
        snakemake.output.fits,
    )
