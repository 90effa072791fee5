"""Rule `check`: unpacks the snakemake object; the logic is spxflow.rules."""

from spxflow import rules
from spxflow.rulelog import rule_logging

snakemake = snakemake  # noqa: F821 (injected by Snakemake)

with rule_logging(snakemake.log[0], "check", "all manifests"):
    rules.check(snakemake.params.provenance_dir, snakemake.params.qa_dir, snakemake.params.report)
