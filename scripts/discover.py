"""Rule `discover` (one per batch of chunks): unpacks the snakemake object; the logic is
spxflow.rules."""

from spxflow import rules
from spxflow.rulelog import rule_logging
from spxflow.settings import Runtime, Science

snakemake = snakemake  # noqa: F821 (injected by Snakemake)

batch = snakemake.params.batch
with rule_logging(snakemake.log[0], "discover", f"batch {batch}"):
    rules.discover(
        Science.from_params(snakemake.params.science),
        Runtime.from_config(snakemake.config),
        batch,
        snakemake.params.chunks,
        snakemake.params.targets,
        snakemake.output.table,
        snakemake.output.record,
    )
