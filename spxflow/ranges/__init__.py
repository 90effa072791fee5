"""Byte-range reads of whole Level-2 files in an object store (IRSA's public S3 copy).

``RangeClient`` talks to the store; ``read_window`` reads one measurement window of one file
in 2-3 rounds of parallel range GETs, with ``LayoutCache`` (per file) and ``ConstantCache``
(per release, detector and calibration token) sparing repeated header reads. docs/s3.md.
"""

from spxflow.ranges.client import (
    ForbiddenLocation,
    ObjectChanged,
    ObjectUnavailable,
    RangeClient,
    Ranged,
    RangeReadError,
    key_from_url,
)
from spxflow.ranges.layout import ConstantCache, LayoutCache
from spxflow.ranges.level2 import WindowRead, read_window

__all__ = [
    "ConstantCache",
    "ForbiddenLocation",
    "LayoutCache",
    "ObjectChanged",
    "ObjectUnavailable",
    "RangeClient",
    "RangeReadError",
    "Ranged",
    "WindowRead",
    "key_from_url",
    "read_window",
]
