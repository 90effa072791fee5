"""Rule `qa_full`: unpacks the snakemake object; the logic is spxflow.rules."""

from spxflow import rules
from spxflow.rulelog import rule_logging
from spxflow.settings import Runtime, Science

snakemake = snakemake  # noqa: F821 (injected by Snakemake)

source = snakemake.wildcards.source
with rule_logging(snakemake.log[0], "qa_full", f"source {source}"):
    rules.qa_full(
        Science.from_params(snakemake.params.science),
        Runtime.from_config(snakemake.config),
        source,
        snakemake.params.target,
        snakemake.params.neighbours,
        snakemake.params.cutout_dir,
        snakemake.input.measurements,
        snakemake.input.stamps,
        snakemake.input.calibration_index,
        snakemake.output.pngs,
        snakemake.output.manifest,
        threads=snakemake.threads,
    )
