"""Rule `discovery`: thin wrapper; the logic is in spxflow.stages."""

from spxflow import stages
from spxflow.rulelog import rule_logging

snakemake = snakemake  # noqa: F821 (injected by Snakemake)

with rule_logging(snakemake.log[0], "discovery", f"source {snakemake.wildcards.source}"):
    stages.discover_source(
        snakemake.config, snakemake.wildcards.source, snakemake.params.target, snakemake.output[0]
    )
