"""Rule `check`: thin wrapper; the logic is in spxflow.stages."""

from spxflow import stages
from spxflow.rulelog import rule_logging

snakemake = snakemake  # noqa: F821 (injected by Snakemake)

with rule_logging(snakemake.log[0], "check", "all manifests"):
    stages.check_manifests("results/provenance", "results/qa", "results/check/check_report.json")
