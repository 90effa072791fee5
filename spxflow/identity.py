"""Hashes that identify science inputs: config hashes and measurement ids.

A measurement id depends only on science inputs (source, image, cutout size, science config,
photometry code major.minor) and never on QA level, worker counts, paths or cleanup policy.
"""

from __future__ import annotations

import hashlib
import json


def stable_hash(obj, length: int = 16) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def major_minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def science_config_hash(photometry_settings: dict, photometry_version: str) -> str:
    """Hash of the science configuration recorded in every spectrum row."""
    return stable_hash(
        {"photometry": photometry_settings, "photometry_version": major_minor(photometry_version)}
    )


def measurement_id(
    source: str, image_id: str, cutout_size_arcsec: float, config_hash: str, photometry_version: str
) -> str:
    return stable_hash(
        {
            "source": source,
            "image": image_id,
            "size": round(float(cutout_size_arcsec), 6),
            "config": config_hash,
            "code": major_minor(photometry_version),
        }
    )
