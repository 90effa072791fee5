"""Assembling a source's measurement table: measured rows, rows for failed fetches and rows
carried over from an earlier run, in the schema of ``spxflow.columns``."""

from __future__ import annotations

import pandas as pd

from spxflow.columns import MEASUREMENT_COLUMN_NAMES, MEASUREMENT_COLUMNS, empty_measurements
from spxflow.format import parse_level2_file_name
from spxflow.identity import measurement_id
from spxflow.photometry.result_flags import RESULT_FLAGS


def failure_rows(entries: list[dict], target: dict) -> pd.DataFrame:
    """One row per image whose cutout could not be fetched, with the reason."""
    rows = []
    for e in entries:
        # a window whose file could not be read says which flag (READ_FAILED, BAD_WCS)
        bit = RESULT_FLAGS[e.get("flag") or "FETCH_FAILED"][0]
        obsid, det, _ = parse_level2_file_name(e["file_name"])
        rows.append(
            {
                "obs_id": obsid,
                "detector": det,
                "image_id": e["image_id"],
                "file_name": e["file_name"],
                "ra_deg": target["ra_deg"],
                "dec_deg": target["dec_deg"],
                "result_flags": 1 << bit,
                "detection_status": "failed",
                "science_recommended": False,
                "failure_reason": f"{'window' if e.get('pixels') else 'cutout'} "
                f"{e['status']}: {e['reason']}",
                "release": e.get("release", ""),
                "zodi_subtracted": False,
            }
        )
    return pd.DataFrame(rows)


def coerce_schema(df: pd.DataFrame) -> pd.DataFrame:
    """Schema column order and dtypes (missing values as NaN / empty strings)."""
    out = {}
    for col in MEASUREMENT_COLUMNS:
        s = df[col.name] if col.name in df.columns else pd.Series([None] * len(df), index=df.index)
        if col.dtype == "str":
            out[col.name] = s.fillna("").astype(str).astype(object)
        elif col.dtype == "bool":
            out[col.name] = s.fillna(False).astype(bool)
        elif col.dtype.startswith("int"):
            out[col.name] = (
                pd.to_numeric(s, errors="coerce")
                .fillna(-1 if col.name != "result_flags" else 0)
                .astype(col.dtype)
            )
        else:
            out[col.name] = pd.to_numeric(s, errors="coerce").astype("float64")
    return pd.DataFrame(out, columns=list(MEASUREMENT_COLUMN_NAMES))


def assemble(
    parts: list[pd.DataFrame],
    source: str,
    target: dict,
    image_ids: dict[str, str],
    config_hash: str,
    photometry_version: str,
) -> pd.DataFrame:
    """One table from measured, failed and carried parts: identity columns and measurement
    ids set, schema dtypes, sorted by wavelength, time and image."""
    parts = [p for p in parts if p is not None and len(p)]
    df = pd.concat(parts, ignore_index=True) if parts else empty_measurements()
    df["image_id"] = df["file_name"].map(image_ids).fillna(df.get("image_id", ""))
    df["source"] = source
    df["name"] = target["name"]
    df["ra_deg"] = target["ra_deg"]
    df["dec_deg"] = target["dec_deg"]
    df["measurement_id"] = [
        measurement_id(source, img, target["cutout_size_arcsec"], config_hash, photometry_version)
        for img in df["image_id"]
    ]
    df = coerce_schema(df)
    df = df.sort_values(["wavelength_um", "mjd", "image_id"], kind="mergesort", na_position="last")
    return df.reset_index(drop=True)
