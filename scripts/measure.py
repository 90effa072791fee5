"""Rule `measure`: thin wrapper; the logic is in spxflow.stages."""

from spxflow import stages
from spxflow.rulelog import rule_logging

snakemake = snakemake  # noqa: F821 (injected by Snakemake)

with rule_logging(snakemake.log[0], "measure", f"source {snakemake.wildcards.source}"):
    stages.process_source(
        snakemake.config,
        snakemake.wildcards.source,
        snakemake.params.target,
        snakemake.params.neighbours,
        snakemake.input.calibration,
        snakemake.output,
        threads=snakemake.threads,
    )
