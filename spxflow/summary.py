"""Catalog-wide summaries: ``results/summary/sources.csv`` and ``measurements.fits``.

The FITS file holds every measurement of every source in one binary table (HDU
``MEASUREMENTS``) described by the one schema in ``spxflow.columns``: TUNITn from the column
units, the ≤47-character help as the comment of each TTYPEn card, Astra-style category headers
(``COMMENT #> Photometry``) just before the first column of each category, and one
``FLAGnn = 'NAME' / help`` card per result-flag bit.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import pandas as pd

from spxflow import __version__
from spxflow.columns import (
    DETECTION_STATUSES,
    MEASUREMENT_COLUMNS,
    SCHEMA_VERSION,
    SPECTRUM_EXTRA_COLUMNS,
    Column,
)
from spxflow.crossrelease import XREL_KEYS, cross_release_check, empty_result, releases_of
from spxflow.fileio import atomic_path

EXTNAME = "MEASUREMENTS"
SOURCES_COLUMNS = (
    "source",
    "name",
    "ra_deg",
    "dec_deg",
    "n_images",
    "n_measured",
    "n_recommended",
    "n_detected",
    "median_snr",
    "status",
    "failure_reason",
    # Release-aware columns (appended, so the older columns keep their positions).
    "n_qr2",
    "n_qr3",
    *XREL_KEYS,
)
COUNT_COLUMNS = ("n_images", "n_measured", "n_recommended", "n_detected", "n_qr2", "n_qr3")
XREL_FLOAT_COLUMNS = ("xrel_ratio", "xrel_ratio_err", "xrel_wave_min_um", "xrel_wave_max_um")


# --- sources.csv ---------------------------------------------------------------------------
def build_sources_summary(
    catalog: pd.DataFrame,
    measurement_tables: Mapping[str, pd.DataFrame | None],
    failures: Mapping[str, str],
) -> pd.DataFrame:
    """One row per catalog source (catalog order) with ``SOURCES_COLUMNS``.

    status: ``failed`` if the source is in ``failures`` (its reason is kept), has no
    measurement table (missing or None) or every image failed; ``no-coverage`` if its table
    is empty (no Level-2 image covers the position); ``ok`` otherwise. ``n_images`` counts
    table rows (one per discovered image), ``n_measured`` rows with a flux (status not
    ``failed``); ``median_snr`` is over measured rows with a finite S/N. Counts of sources
    without a table are empty (unknown), not zero.

    Releases: ``n_qr2`` / ``n_qr3`` count table rows (images) per release (a table without a
    ``release`` column is all QR2); the ``xrel_*`` columns are
    ``crossrelease.cross_release_check`` of the table (``xrel_n_bins`` 0 and NaN values
    without overlapping releases; empty without a table).
    """
    rows = []
    for rec in catalog.to_dict(orient="records"):
        source = str(rec["source"])
        table = measurement_tables.get(source)
        row = {
            "source": source,
            "name": rec.get("name", source),
            "ra_deg": float(rec["ra_deg"]),
            "dec_deg": float(rec["dec_deg"]),
            "n_images": pd.NA,
            "n_measured": pd.NA,
            "n_recommended": pd.NA,
            "n_detected": pd.NA,
            "median_snr": np.nan,
            "status": "ok",
            "failure_reason": "",
            "n_qr2": pd.NA,
            "n_qr3": pd.NA,
            **empty_result(),
            "xrel_n_bins": pd.NA,
        }
        if table is not None:
            row.update(_table_counts(table))
            row.update(cross_release_check(table))
        if source in failures:
            row["status"], row["failure_reason"] = "failed", str(failures[source])
        elif table is None:
            row["status"], row["failure_reason"] = "failed", "no measurement table"
        elif len(table) == 0:
            row["status"] = "no-coverage"
            row["failure_reason"] = "no SPHEREx Level-2 image covers the position"
        elif row["n_measured"] == 0:
            row["status"] = "failed"
            row["failure_reason"] = f"all {len(table)} measurement(s) failed: " + _top_reason(table)
        rows.append(row)
    out = pd.DataFrame(rows, columns=list(SOURCES_COLUMNS))
    for col in (*COUNT_COLUMNS, "xrel_n_bins"):
        out[col] = out[col].astype("Int64")
    for col in ("median_snr", *XREL_FLOAT_COLUMNS):
        out[col] = out[col].astype("float64")
    out["xrel_scales"] = out["xrel_scales"].fillna("").astype(str)
    return out


def _table_counts(table: pd.DataFrame) -> dict:
    status = table["detection_status"].astype(str)
    measured = status != "failed"
    snr = pd.to_numeric(table.loc[measured, "snr"], errors="coerce")
    snr = snr[np.isfinite(snr)]
    release = releases_of(table)
    return {
        "n_qr2": int((release == "qr2").sum()),
        "n_qr3": int((release == "qr3").sum()),
        "n_images": len(table),
        "n_measured": int(measured.sum()),
        "n_recommended": int(table["science_recommended"].fillna(False).astype(bool).sum()),
        "n_detected": int((status == "detected").sum()),
        "median_snr": float(snr.median()) if len(snr) else np.nan,
    }


def _top_reason(table: pd.DataFrame) -> str:
    reasons = table.get("failure_reason")
    if reasons is None:
        return "unknown reason"
    reasons = reasons.fillna("").astype(str)
    reasons = reasons[reasons != ""]
    if reasons.empty:
        return "unknown reason"
    counts = reasons.value_counts()
    return f"{counts.index[0]} ({int(counts.iloc[0])}x)"


# --- measurements.fits ---------------------------------------------------------------------
def write_measurements_fits(
    measurements: pd.DataFrame,
    out_path: str | os.PathLike,
    *,
    result_flags: Mapping[str, tuple[int, str]] | None = None,
) -> None:
    """Write all measurements as one FITS binary table, atomically.

    Columns: the schema's (``MEASUREMENT_COLUMNS``, in order, missing ones filled with
    NaN / -1 / '' / False), then ``SPECTRUM_EXTRA_COLUMNS`` and any other columns present
    (category 'Other'). ``result_flags`` is ``{name: (bit, help)}``; default: the photometry's
    ``RESULT_FLAGS``. Strings are ASCII (FITS); non-ASCII characters of e.g. catalog names are
    written as backslash escapes (the spectra CSVs keep them verbatim).
    """
    from astropy.io import fits

    table, columns = _to_table(measurements)
    hdu = fits.table_to_hdu(table)
    header = hdu.header
    header["EXTNAME"] = (EXTNAME, "spxflow forced-photometry measurements")
    _describe_columns(header, columns)
    header["SCHEMA"] = (SCHEMA_VERSION, "spxflow measurement schema version")
    header["SPXFLOW"] = (__version__, "spxflow version that wrote this file")
    header["NSOURCES"] = (
        int(measurements["source"].nunique()) if "source" in measurements else 0,
        "Distinct sources in the table",
    )
    header["NMEAS"] = (len(measurements), "Measurements (one per Level-2 image)")
    header.add_comment("detection_status values: " + ", ".join(DETECTION_STATUSES))
    _document_flags(header, result_flags)
    primary = fits.PrimaryHDU()
    primary.header["ORIGIN"] = ("spxflow", "SPHEREx forced photometry workflow")
    primary.header["SPXFLOW"] = (__version__, "spxflow version")
    with atomic_path(out_path, suffix=".part") as tmp:
        fits.HDUList([primary, hdu]).writeto(tmp, overwrite=True)
        # astropy regroups commentary cards placed among the column cards when it writes a
        # new table HDU, but keeps them when updating an existing file in place.
        with fits.open(tmp, mode="update") as hdul:
            _insert_category_headers(hdul[EXTNAME].header, columns)
            # A fixed comment instead of the update time keeps the file byte-reproducible.
            for h in hdul:
                h.add_checksum(when="HDU checksum")


def read_measurements_fits(path: str | os.PathLike):
    """``astropy.table.Table`` of a measurements.fits with each column's description set from
    its TTYPEn comment (units come from TUNITn via ``Table.read``)."""
    from astropy.io import fits
    from astropy.table import Table

    table = Table.read(path, hdu=EXTNAME)
    header = fits.getheader(path, extname=EXTNAME)
    for i in range(1, header.get("TFIELDS", 0) + 1):
        name = header[f"TTYPE{i}"]
        if name in table.colnames:
            table[name].description = header.comments[f"TTYPE{i}"]
    return table


def _schema_columns(df: pd.DataFrame) -> list[Column]:
    known = {c.name for c in MEASUREMENT_COLUMNS + SPECTRUM_EXTRA_COLUMNS}
    extras = [c for c in SPECTRUM_EXTRA_COLUMNS if c.name in df.columns]
    others = [
        Column(name, _dtype_name(df[name]), None, "", "Other")
        for name in df.columns
        if name not in known
    ]
    return list(MEASUREMENT_COLUMNS) + extras + others


def _dtype_name(s: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(s):
        return "bool"
    if pd.api.types.is_integer_dtype(s):
        return "int64"
    if pd.api.types.is_numeric_dtype(s):
        return "float64"
    return "str"


def _to_table(df: pd.DataFrame):
    from astropy.table import Table

    columns = _schema_columns(df)
    table = Table()
    n = len(df)
    for col in columns:
        s = df[col.name] if col.name in df.columns else pd.Series([None] * n, index=df.index)
        table[col.name] = _column_values(s, col.dtype)
        if col.unit:
            table[col.name].unit = col.unit
        table[col.name].description = col.help
    return table, columns


def _column_values(s: pd.Series, dtype: str) -> np.ndarray:
    if dtype == "str":
        text = [_ascii(v) for v in s.tolist()]
        width = max([len(t) for t in text] + [1])  # FITS needs a non-zero string width
        return np.array(text, dtype=f"S{width}")
    if dtype == "bool":
        return s.astype("boolean").fillna(False).to_numpy(dtype=bool)
    if dtype.startswith("int"):
        fill = 0 if s.name == "result_flags" else -1
        return pd.to_numeric(s, errors="coerce").fillna(fill).to_numpy(dtype=dtype)
    return pd.to_numeric(s, errors="coerce").to_numpy(dtype="float64")


def _ascii(v) -> bytes:
    if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
        return b""
    return str(v).encode("ascii", "backslashreplace")


def _describe_columns(header, columns: list[Column]) -> None:
    """TTYPEn comments from the schema help."""
    for i, col in enumerate(columns, start=1):
        key = f"TTYPE{i}"
        assert header[key] == col.name, (header[key], col.name)
        header.comments[key] = col.help[:47]


def _insert_category_headers(header, columns: list[Column]) -> None:
    """Astra-style ``COMMENT #> Category`` card before the first column of each category."""
    previous = None
    for i, col in enumerate(columns, start=1):
        if col.category != previous:
            header.insert(f"TTYPE{i}", ("COMMENT", f"#> {col.category}"))
            previous = col.category


def _document_flags(header, result_flags) -> None:
    table = result_flags
    if table is None:
        try:
            from spxflow.photometry.result_flags import RESULT_FLAGS as table
        except ImportError:
            table = None
    if table is None:
        header.add_comment("result_flags bit names unavailable (photometry not importable)")
        return
    header.add_comment("result_flags bits: FLAGnn = bit name / meaning")
    for name, (bit, help_text) in sorted(table.items(), key=lambda kv: kv[1][0]):
        value = str(name)
        # Fixed-format card: 10 + max(len('value'), 20) + 3 chars before the comment.
        room = 80 - 10 - max(len(value) + 2, 20) - 3
        header[f"FLAG{int(bit):02d}"] = (value, str(help_text)[: max(room, 0)])
