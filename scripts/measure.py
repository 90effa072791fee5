"""Rule `measure`: unpacks the snakemake object; the logic is spxflow.rules."""

from spxflow import rules
from spxflow.rulelog import rule_logging
from spxflow.settings import Runtime, Science

snakemake = snakemake  # noqa: F821 (injected by Snakemake)

source = snakemake.wildcards.source
with rule_logging(snakemake.log[0], "measure", f"source {source}"):
    rules.measure(
        Science.from_params(snakemake.params.science),
        Runtime.from_config(snakemake.config),
        source,
        snakemake.params.target,
        snakemake.params.neighbours,
        snakemake.input.calibration_index,
        rules.MeasureOutputs(**dict(snakemake.output.items())),
        threads=snakemake.threads,
    )
