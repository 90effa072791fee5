"""Rule `accuracy`: thin wrapper; the logic is in spxflow.stages."""

from spxflow import stages
from spxflow.rulelog import rule_logging

snakemake = snakemake  # noqa: F821 (injected by Snakemake)

with rule_logging(snakemake.log[0], "accuracy", "all sources"):
    stages.accuracy(snakemake.input.measurements, snakemake.input.indexes, snakemake.output[0])
