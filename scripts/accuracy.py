"""Rule `accuracy`: unpacks the snakemake object; the logic is spxflow.rules."""

from spxflow import rules
from spxflow.rulelog import rule_logging

snakemake = snakemake  # noqa: F821 (injected by Snakemake)

with rule_logging(snakemake.log[0], "accuracy", "all sources"):
    rules.accuracy(
        rules.recorded_files(snakemake.input.measured, "measurements"),
        rules.recorded_files(snakemake.input.measured, "cutout_index"),
        snakemake.output[0],
    )
