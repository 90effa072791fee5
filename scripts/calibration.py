"""Rule `calibration`: thin wrapper; the logic is in spxflow.stages."""

from spxflow import stages
from spxflow.rulelog import rule_logging

snakemake = snakemake  # noqa: F821 (injected by Snakemake)

with rule_logging(
    snakemake.log[0], "calibration", f"{snakemake.wildcards.family} D{snakemake.wildcards.detector}"
):
    stages.fetch_calibration(
        snakemake.config,
        snakemake.wildcards.family,
        int(snakemake.wildcards.detector),
        snakemake.output[0],
    )
