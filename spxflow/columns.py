"""One schema definition for the measurement table.

Used to build per-source measurement tables, the spectrum CSV and the catalog-wide FITS summary
(units, ≤47-character help text as FITS column comments, Astra-style ``#>`` category headers).
"""

from __future__ import annotations

from dataclasses import dataclass

SCHEMA_VERSION = "1.1"  # 1.1: release-aware columns (R7 format)


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str  # numpy/pandas dtype: "str", "int16", "int32", "int64", "float64", "bool"
    unit: str | None
    help: str  # ≤ 47 characters (fits a FITS header card comment)
    category: str


def _cols(category: str, *specs: tuple[str, str, str | None, str]) -> list[Column]:
    return [Column(n, d, u, h, category) for n, d, u, h in specs]


MEASUREMENT_COLUMNS: tuple[Column, ...] = tuple(
    _cols(
        "Identity",
        ("source", "str", None, "Source slug (file-safe catalog name)"),
        ("name", "str", None, "Catalog name as given"),
        ("measurement_id", "str", None, "Hash of this measurement's science inputs"),
        ("obs_id", "str", None, "SPHEREx OBSID of the Level-2 image"),
        ("detector", "int16", None, "Detector number (1-3 SWIR, 4-6 MWIR)"),
        ("image_id", "str", None, "obs_publisher_did of the Level-2 image"),
        ("file_name", "str", None, "Level-2 file the cutout was cut from"),
        ("release", "str", None, "Survey release of the image (qr2, qr3)"),
        ("processing_version", "str", None, "Pipeline VERSION of the Level-2 file"),
    )
    + _cols(
        "Position",
        ("ra_deg", "float64", "deg", "Catalog right ascension (ICRS)"),
        ("dec_deg", "float64", "deg", "Catalog declination (ICRS)"),
        ("x_cutout", "float64", "pix", "Target x in the cutout (0-based)"),
        ("y_cutout", "float64", "pix", "Target y in the cutout (0-based)"),
        ("x_parent", "float64", "pix", "Target x in the parent frame (0-based)"),
        ("y_parent", "float64", "pix", "Target y in the parent frame (0-based)"),
        ("psf_plane", "int16", None, "PSF cube plane or ePSF table row (0-based)"),
    )
    + _cols(
        "Spectral",
        ("wavelength_um", "float64", "um", "Fit-weighted central wavelength"),
        ("bandwidth_um", "float64", "um", "Fit-weighted bandwidth"),
        ("wavelength_source", "str", None, "cwave (calibration) or wcs-wave (lookup)"),
    )
    + _cols(
        "Time",
        ("mjd", "float64", "d", "MJD-AVG (UTC) mid-exposure"),
        ("exptime_s", "float64", "s", "XPOSURE integration time"),
    )
    + _cols(
        "Photometry",
        ("flux_uJy", "float64", "uJy", "PSF-fit flux density (signed)"),
        ("flux_err_uJy", "float64", "uJy", "1-sigma flux error from the covariance"),
        ("snr", "float64", None, "flux_uJy / flux_err_uJy"),
        ("bkg_MJy_sr", "float64", "MJy/sr", "Fitted background at the target"),
        ("bkg_dx_MJy_sr", "float64", "MJy/sr", "Background slope per pixel along x"),
        ("bkg_dy_MJy_sr", "float64", "MJy/sr", "Background slope per pixel along y"),
        ("chi2_red", "float64", None, "Reduced chi-square of the fit"),
        ("n_pix", "int32", None, "Pixels used in the fit"),
        ("masked_frac", "float64", None, "Fraction of fit-window pixels masked"),
        ("psf_masked_frac", "float64", None, "PSF-weighted fraction of masked pixels"),
        ("cond_number", "float64", None, "1-norm condition no. of scaled normal matrix"),
        ("resid_core", "float64", None, "Core (2.5 px) residual / model flux"),
        ("n_neighbors", "int16", None, "Neighbours fitted jointly"),
        ("neighbor_corr", "float64", None, "Largest |corr| of target and a neighbour"),
        ("pix_to_uJy", "float64", "uJy sr / MJy", "uJy per MJy/sr at the target pixel"),
        ("zodi_subtracted", "bool", None, "ZODI model subtracted (never: fitted bkg)"),
        ("psf_model", "str", None, "cube (QR2 PSF plane) or epsf (R7 ePSF)"),
    )
    + _cols(
        "Quality",
        ("result_flags", "int64", None, "Result flag bits (see FLAGnn cards)"),
        ("detection_status", "str", None, "detected, non-detection or negative"),
        ("science_recommended", "bool", None, "True if fit is clean enough for science"),
        ("failure_reason", "str", None, "Why no valid flux was measured, if so"),
    )
    + _cols(
        "Calibration",
        ("calib_spectral_wcs", "str", None, "Spectral WCS calibration id used"),
        ("calib_sapm", "str", None, "Solid-angle pixel map calibration id"),
        ("calib_epsf", "str", None, "ePSF library calibration id, if used"),
        ("calib_flux_correction", "str", None, "l3_flux_corrections id, if applied"),
        ("flux_correction", "float64", None, "Flux-correction factor at the target pixel"),
        ("calibration_scale", "str", None, "Flux scale: r7, or qr2 (QR2 left native)"),
    )
)

MEASUREMENT_COLUMN_NAMES = tuple(c.name for c in MEASUREMENT_COLUMNS)
# Columns every measurement table and spectrum must carry, by contract (issue #4).
REQUIRED_COLUMNS = (
    "source",
    "obs_id",
    "detector",
    "measurement_id",
    "wavelength_um",
    "bandwidth_um",
    "mjd",
    "flux_uJy",
    "flux_err_uJy",
    "snr",
    "detection_status",
    "science_recommended",
    "result_flags",
)
# Spectrum CSV = measurement columns + run identity columns.
SPECTRUM_EXTRA_COLUMNS: tuple[Column, ...] = tuple(
    _cols(
        "Provenance",
        ("config_hash", "str", None, "Hash of the science configuration"),
        ("code_version", "str", None, "spxflow version"),
        ("schema_version", "str", None, "Measurement schema version"),
    )
)

DETECTION_STATUSES = ("detected", "non-detection", "negative", "failed")

assert all(len(c.help) <= 47 for c in MEASUREMENT_COLUMNS + SPECTRUM_EXTRA_COLUMNS)
assert set(REQUIRED_COLUMNS) <= set(MEASUREMENT_COLUMN_NAMES)


def empty_measurements():
    """An empty measurement DataFrame with the schema's columns and dtypes."""
    import pandas as pd

    return pd.DataFrame(
        {
            c.name: pd.Series(dtype=object if c.dtype == "str" else c.dtype)
            for c in MEASUREMENT_COLUMNS
        }
    )
