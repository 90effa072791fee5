"""Rule `summary`: unpacks the snakemake object; the logic is spxflow.rules."""

from spxflow import rules
from spxflow.rulelog import rule_logging

snakemake = snakemake  # noqa: F821 (injected by Snakemake)

with rule_logging(snakemake.log[0], "summary", "all sources"):
    rules.summary(
        snakemake.input.catalog,
        rules.recorded_files(snakemake.input.measured, "measurements"),
        snakemake.output.sources,
        snakemake.output.fits,
    )
