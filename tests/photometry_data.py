"""Simulated cutouts and calibration for the photometry tests."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from spxflow.archive.simulated import SimulatedArchive
from spxflow.photometry import CalibrationSet

PIX_DEG = 6.15 / 3600.0


def calibration(archive: SimulatedArchive, directory: Path) -> CalibrationSet:
    return CalibrationSet.from_archive(archive, directory)


def fetch(archive, ra, dec, directory: Path, size_arcsec=60.0, limit=None) -> list[str]:
    rows = archive.discover(ra, dec).to_dict(orient="records")
    if limit:
        # Spread the subset over all detectors.
        rows = sorted(rows, key=lambda r: (r["obs_publisher_did"][-1], r["t_min"]))
        step = max(1, len(rows) // limit)
        rows = rows[::step][:limit]
    results = archive.fetch_cutouts(rows, ra, dec, size_arcsec, directory)
    return [r.path for r in results if r.status == "ok"]


def truth_table(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path
