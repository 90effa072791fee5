"""Rule `qa_full`: thin wrapper; the logic is in spxflow.stages."""

from spxflow import stages
from spxflow.rulelog import rule_logging

snakemake = snakemake  # noqa: F821 (injected by Snakemake)

with rule_logging(snakemake.log[0], "qa_full", f"source {snakemake.wildcards.source}"):
    stages.full_qa(
        snakemake.config,
        snakemake.wildcards.source,
        snakemake.params.target,
        snakemake.params.neighbours,
        snakemake.params.cutout_dir,
        snakemake.input,
        snakemake.output,
        threads=snakemake.threads,
    )
