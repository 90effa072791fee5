"""What a source's provenance and measurement index record."""

from __future__ import annotations

import platform

import numpy as np
import pandas as pd

from spxflow import __version__
from spxflow.columns import SCHEMA_VERSION

# Measurement-index columns: enough to find every measurement's image again.
INDEX_COLUMNS = [
    "measurement_id",
    "image_id",
    "obs_id",
    "detector",
    "release",
    "file_name",
    "detection_status",
    "result_flags",
]


def software_versions() -> dict:
    import astropy
    import numba

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "astropy": astropy.__version__,
        "numba": numba.__version__,
        "pandas": pd.__version__,
    }


def provenance(source, target, neighbours, science, cutout_index, calibration_index) -> dict:
    """Inputs, calibration entries (copied from the calibration index), settings, versions."""
    return {
        "source": source,
        "name": target["name"],
        "ra_deg": target["ra_deg"],
        "dec_deg": target["dec_deg"],
        "cutout_size_arcsec": target["cutout_size_arcsec"],
        "neighbours": neighbours,
        "archive": science.archive.to_params(),
        "n_images": cutout_index["n_images"],
        "n_cutouts_ok": cutout_index["n_ok"],
        "n_cutouts_failed": cutout_index["n_failed"],
        "n_images_by_release": cutout_index.get("n_by_release", {}),
        "n_duplicates_dropped": cutout_index.get("n_duplicates", 0),
        "calibration": [dict(p) for p in calibration_index["products"]],
        "photometry_settings": science.photometry.science_dict(),
        "photometry_version": science.photometry_version,
        "zodi_subtracted": False,
        "config_hash": science.config_hash,
        "code_version": __version__,
        "schema_version": SCHEMA_VERSION,
        "software": software_versions(),
    }


def json_records(df: pd.DataFrame) -> list[dict]:
    return [
        {k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()}
        for r in df.to_dict(orient="records")
    ]


def measurement_index(source: str, config_hash: str, rows_sha256: str, df: pd.DataFrame) -> dict:
    return {
        "source": source,
        "config_hash": config_hash,
        "rows_sha256": rows_sha256,
        "measurements": json_records(df[INDEX_COLUMNS]),
    }


def spectrum_table(df: pd.DataFrame, config_hash: str) -> pd.DataFrame:
    """The spectrum CSV's rows: the measurements plus what identifies how they were made."""
    spectrum = df.copy()
    spectrum["config_hash"] = config_hash
    spectrum["code_version"] = __version__
    spectrum["schema_version"] = SCHEMA_VERSION
    return spectrum
