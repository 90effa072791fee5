# Config and catalog validation, wildcard constraints and every input/params function.
# Parsing only reads and validates: Snakemake parses this file for dry runs, --lint,
# --report and in every job it spawns, so nothing here writes a file or contacts an archive
# (re-runs are marked beforehand by `python -m spxflow rerun`).
from snakemake.io import report as report_flag
from snakemake.utils import validate

from spxflow.catalog import CatalogSettings, neighbour_lists, read_catalog
from spxflow.chunks import (
    chunk_sources,
    discovery_batches,
    discovery_table,
    missing_outputs,
    record_path,
    record_then_outputs,
    stage_outputs,
)
from spxflow.config import config_schema, validate_config
from spxflow.configcli import coerce_cli_strings
from spxflow.format import (
    CALIBRATION_FAMILIES,
    calibration_file_name,
    parse_calibration_file_name,
)
from spxflow.settings import Science, calibration_needed
from spxflow.slug import SLUG_REGEX

# The schema fills every default (their one home) and names any unknown key by its path.
coerce_cli_strings(config, config_schema())
validate_config(config)

CATALOG_SETTINGS = CatalogSettings.from_config(config)
CATALOG = read_catalog(config["catalog"], CATALOG_SETTINGS)
validate(CATALOG, "../schemas/catalog.schema.yaml")
SOURCES = CATALOG["source"].tolist()
TARGETS = {
    row.source: {
        "name": row.name,
        "ra_deg": float(row.ra_deg),
        "dec_deg": float(row.dec_deg),
        "cutout_size_arcsec": float(row.cutout_size_arcsec),
    }
    for row in CATALOG.itertuples(index=False)
}
NEIGHBOURS = neighbour_lists(CATALOG, CATALOG_SETTINGS.neighbour_radius_arcsec)
# What changes a measured number, as plain values for params: (a change re-runs the jobs
# that use it; runtime knobs are read by the jobs from the config and re-run nothing).
SCIENCE = Science.from_config(config).to_params()
CALIBRATION_FILES = [
    f"resources/calibration/{calibration_file_name(*product)}"
    for product in calibration_needed(Science.from_config(config))
]
CALIBRATION_INDEX = "resources/calibration/calibration_index.json"
# Chunk id -> its sources: one measure, products (and full-QA) job per chunk.
CHUNKS = chunk_sources(SOURCES, config["sources_per_job"])
# Batch id -> its chunks: one discover job per batch.
BATCHES = discovery_batches(
    CHUNKS, config["sources_per_job"], config["discovery_batch_sources"]
)
BATCH_OF = {chunk: batch for batch, chunks in BATCHES.items() for chunk in chunks}
IS_SIMULATED = config["archive"]["backend"] == "simulated"


wildcard_constraints:
    source=SLUG_REGEX,
    family="|".join(CALIBRATION_FAMILIES),
    detector="[1-6]",


def get_final_outputs():
    # The chunk records, plus every per-source output gone missing from a finished chunk:
    # Snakemake re-creates a missing output only if something asks for it (`spxflow rerun`
    # sets a cutout index aside to make the source's measure job run again).
    stages = ["measure", "source_products"]
    if config["qa_level"] == "full":
        stages.append("qa_full")
    outputs = [record_path(stage, chunk) for stage in stages for chunk in CHUNKS]
    for stage in stages:
        outputs += missing_outputs(stage, CHUNKS)
    outputs += ["results/summary/sources.csv", "results/summary/measurements.fits"]
    if IS_SIMULATED:
        outputs.append("results/validation/accuracy.csv")
    return outputs


def get_calibration_release(wildcards):
    name = f"{wildcards.family}_D{wildcards.detector}_spx_{wildcards.token}.fits"
    return parse_calibration_file_name(name)[0]


def chunk_targets(sources):
    return {s: TARGETS[s] for s in sources}


def chunk_neighbours(sources):
    return {s: NEIGHBOURS[s] for s in sources}


def get_records(stage):
    return [record_path(stage, chunk) for chunk in CHUNKS]


def report_outputs(paths, sources, caption, figure):
    # One report entry per source's figure, filed under the source.
    return [
        report_flag(
            path,
            caption=caption,
            category="Sources",
            subcategory=source,
            labels={"source": source, "figure": figure},
        )
        for path, source in zip(paths, sources)
    ]


# Resources live in the rules, here scaled by the attempt (a job killed for memory or time is
# retried with more); profiles set only cluster-wide things.
def mem_mb_scaled(base):
    def mem_mb(wildcards, attempt):
        return base * attempt

    return mem_mb


def runtime_scaled(base, sources=1):
    # A chunk job's time is its sources' times added up.
    def runtime(wildcards, attempt):
        return base * sources * attempt

    return runtime
