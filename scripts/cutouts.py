"""Rule `cutouts`: thin wrapper; the logic is in spxflow.stages."""

from spxflow import stages
from spxflow.rulelog import rule_logging

snakemake = snakemake  # noqa: F821 (injected by Snakemake)

with rule_logging(snakemake.log[0], "cutouts", f"source {snakemake.wildcards.source}"):
    stages.fetch_source_cutouts(
        snakemake.config,
        snakemake.wildcards.source,
        snakemake.params.target,
        snakemake.input[0],
        snakemake.output.cutouts,
        snakemake.output.index,
    )
