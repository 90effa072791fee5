"""Rule `measure` (one per chunk): unpacks the snakemake object; the logic is spxflow.rules."""

from spxflow import rules
from spxflow.rulelog import rule_logging
from spxflow.settings import Runtime, Science

snakemake = snakemake  # noqa: F821 (injected by Snakemake)

chunk = snakemake.params.chunk
with rule_logging(snakemake.log[0], "measure", f"chunk {chunk}"):
    rules.measure(
        Science.from_params(snakemake.params.science),
        Runtime.from_config(snakemake.config),
        chunk,
        snakemake.params.targets,
        snakemake.params.neighbours,
        snakemake.input.discovery,
        snakemake.input.calibration_index,
        rules.per_source(snakemake.params.targets, snakemake.output, rules.MeasureOutputs),
        snakemake.output.record,
        threads=snakemake.threads,
    )
