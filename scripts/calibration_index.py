"""Rule `calibration_index`: unpacks the snakemake object; the logic is spxflow.rules."""

from spxflow import rules
from spxflow.rulelog import rule_logging

snakemake = snakemake  # noqa: F821 (injected by Snakemake)

with rule_logging(snakemake.log[0], "calibration_index", "all products"):
    rules.calibration_index(list(snakemake.input), snakemake.output[0])
