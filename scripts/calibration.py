"""Rule `calibration`: unpacks the snakemake object; the logic is spxflow.rules."""

from spxflow import rules
from spxflow.rulelog import rule_logging
from spxflow.settings import ArchiveScience, Runtime

snakemake = snakemake  # noqa: F821 (injected by Snakemake)

family, detector = snakemake.wildcards.family, int(snakemake.wildcards.detector)
release = snakemake.params.release
with rule_logging(snakemake.log[0], "calibration", f"{release} {family} D{detector}"):
    rules.calibration(
        ArchiveScience.from_params(snakemake.params.archive),
        Runtime.from_config(snakemake.config),
        release,
        family,
        detector,
        snakemake.output[0],
    )
