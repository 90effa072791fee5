# Config and catalog validation, wildcard constraints and every input/params function.
import os

import yaml
from snakemake.utils import validate

from spxflow.catalog import CatalogSettings, neighbour_lists, read_catalog
from spxflow.configcli import coerce_cli_strings
from spxflow.format import CALIBRATION_FAMILIES, DETECTORS, calibration_file_name
from spxflow.identity import archive_science_config
from spxflow.photometry import PHOTOMETRY_VERSION, PhotometrySettings
from spxflow.slug import SLUG_REGEX
from spxflow.stages import prepare_retry, refresh_discovery

with open(os.path.join(workflow.basedir, "workflow/schemas/config.schema.yaml")) as _fh:
    coerce_cli_strings(config, yaml.safe_load(_fh))
validate(config, "../schemas/config.schema.yaml")

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
ARCHIVE_SCIENCE = archive_science_config(config)
PHOTOMETRY_SCIENCE = PhotometrySettings.from_config(
    config.get("photometry", {})
).science_dict()
CALIBRATION_FILES = [
    f"resources/calibration/{calibration_file_name(family, det)}"
    for family in CALIBRATION_FAMILIES
    for det in DETECTORS
]
CALIBRATION_INDEX = "resources/calibration/calibration_index.json"
IS_SIMULATED = config["archive"]["backend"] == "simulated"

if config.get("retry_failed"):
    # Before the DAG is built, so that exactly the sources with failed cutouts re-run.
    prepare_retry(SOURCES, "results")

if config.get("update"):
    # Re-query now, before the DAG is built, so that exactly the sources whose image list
    # changed re-run.
    refresh_discovery(config, CATALOG, "results")


wildcard_constraints:
    source=SLUG_REGEX,
    family="|".join(CALIBRATION_FAMILIES),
    detector="[1-6]",


def get_final_outputs():
    # Every user-facing product is requested, not just the manifest: Snakemake re-creates a
    # missing output only if something asks for it (the cutout index too: retry_failed and
    # update set it aside to make the source's measure job run again).
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


def mem_mb_scaled(base):
    def mem_mb(wildcards, attempt):
        return base * attempt

    return mem_mb


def runtime_scaled(base):
    def runtime(wildcards, attempt):
        return base * attempt

    return runtime
