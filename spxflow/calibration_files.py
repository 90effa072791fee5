"""The calibration index: ids, paths and checksums of every calibration product, hashed once.

Per-source jobs depend on this one small file instead of on every product (36 with QR2 and
QR3), and copy its entries into their provenance instead of hashing ~700 MB of FITS per source.
"""

from __future__ import annotations

import os

from spxflow.fileio import sha256_file
from spxflow.photometry import CalibrationSet


def calibration_index(paths: list[str]) -> dict:
    """``{"products": [{calibration_id, path, sha256}, ...]}`` sorted by (family, detector)."""
    cal = CalibrationSet.from_paths(paths)
    return {
        "products": [
            {
                "calibration_id": cal.ids[key],
                "path": os.path.relpath(path),
                "sha256": sha256_file(path),
            }
            for key, path in sorted(cal.files.items())
        ]
    }


def load_calibration(index: dict, source: str) -> CalibrationSet:
    """The products an index lists, checked to be on disk (the error says how to get them)."""
    paths = [p["path"] for p in index["products"]]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise FileNotFoundError(
            f"source {source}: calibration product(s) missing: {missing}; fetch them with "
            f"`snakemake {' '.join(missing)}`"
        )
    return CalibrationSet.from_paths(paths)
