"""Rule `calibration_index`: thin wrapper; the logic is in spxflow.stages."""

from spxflow import stages
from spxflow.rulelog import rule_logging

snakemake = snakemake  # noqa: F821 (injected by Snakemake)

with rule_logging(snakemake.log[0], "calibration_index", "all products"):
    stages.write_calibration_index(list(snakemake.input), snakemake.output[0])
