# Config and catalog validation, wildcard constraints and every input/params function.
# Parsing only reads and validates: Snakemake parses this file for dry runs, --lint,
# --report and in every job it spawns, so nothing here writes a file or contacts an archive
# (re-runs are marked beforehand by `python -m spxflow rerun`).
from snakemake.utils import validate

from spxflow.catalog import CatalogSettings, neighbour_lists, read_catalog
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
IS_SIMULATED = config["archive"]["backend"] == "simulated"


wildcard_constraints:
    source=SLUG_REGEX,
    family="|".join(CALIBRATION_FAMILIES),
    detector="[1-6]",


def get_final_outputs():
    # Every user-facing product is requested, not just the manifest: Snakemake re-creates a
    # missing output only if something asks for it (the cutout index too: `spxflow rerun`
    # sets it aside to make the source's measure job run again).
    outputs = expand(
        [
            "results/cutouts/{source}.json",
            "results/spectra/{source}.csv",
            "results/provenance/{source}_provenance.json",
            "results/provenance/{source}_measurement_index.json",
            "results/plots/{source}_sed.png",
            "results/qa/{source}/{source}_qa_summary.png",
            "results/provenance/{source}_output_manifest.json",
        ],
        source=SOURCES,
    )
    outputs += ["results/summary/sources.csv", "results/summary/measurements.fits"]
    if IS_SIMULATED:
        outputs.append("results/validation/accuracy.csv")
    if config["qa_level"] == "full":
        outputs += expand(
            "results/qa/{source}/{source}_qa_manifest.json", source=SOURCES
        )
    return outputs


def get_calibration_release(wildcards):
    name = f"{wildcards.family}_D{wildcards.detector}_spx_{wildcards.token}.fits"
    return parse_calibration_file_name(name)[0]


def get_target(wildcards):
    return TARGETS[wildcards.source]


def get_neighbours(wildcards):
    return NEIGHBOURS[wildcards.source]


def get_all_measurements(wildcards=None):
    return expand("results/measurements/{source}.parquet", source=SOURCES)


def get_all_cutout_indexes(wildcards=None):
    return expand("results/cutouts/{source}.json", source=SOURCES)


def get_all_manifests(wildcards=None):
    return expand("results/provenance/{source}_output_manifest.json", source=SOURCES)


# Resources live in the rules, here scaled by the attempt (a job killed for memory or time is
# retried with more); profiles set only cluster-wide things.
def mem_mb_scaled(base):
    def mem_mb(wildcards, attempt):
        return base * attempt

    return mem_mb


def runtime_scaled(base):
    def runtime(wildcards, attempt):
        return base * attempt

    return runtime
