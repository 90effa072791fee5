"""Calibration products the photometry uses (spec §4): CWAVE/CBAND and the solid-angle map.

Each product is a 2040x2040 float32 plane per detector (16 MB); they are memory-mapped at the
data offsets found by the lean reader, so a measure job touches only the pages under its
cutouts.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import numpy as np

from spxflow.format import CALIBRATION_FAMILIES, DETECTORS
from spxflow.photometry.fitsread import FitsReadError, open_buffer, scan

_NAME_RE = re.compile(r"^(?P<family>[a-z_]+)_D(?P<det>[1-6])_spx_(?P<token>[A-Za-z0-9.-]+)\.fits$")


@dataclass
class CalibrationSet:
    """Calibration planes by (family, detector); missing products give ``None``."""

    files: dict[tuple[str, int], str] = field(default_factory=dict)
    ids: dict[tuple[str, int], str] = field(default_factory=dict)
    _maps: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_paths(cls, paths) -> CalibrationSet:
        out = cls()
        for p in paths:
            m = _NAME_RE.match(os.path.basename(str(p)))
            if not m or m["family"] not in CALIBRATION_FAMILIES:
                raise ValueError(
                    f"{p}: not a calibration product name (<family>_D<n>_spx_<token>.fits "
                    f"with family in {sorted(CALIBRATION_FAMILIES)})"
                )
            key = (m["family"], int(m["det"]))
            out.files[key] = str(p)
            out.ids[key] = f"{m['family']}/{m['token']}/D{m['det']}"
        return out

    @classmethod
    def from_archive(cls, archive, directory) -> CalibrationSet:
        """Fetch every product (each family, each detector) from ``archive`` into
        ``directory`` and load them (validation campaigns, tests, benchmarks; the workflow
        fetches them with its own rules)."""
        paths = [
            archive.fetch_calibration(family, det, directory).path
            for family in CALIBRATION_FAMILIES
            for det in DETECTORS
        ]
        return cls.from_paths(paths)

    def calibration_id(self, family: str, detector: int) -> str:
        return self.ids.get((family, int(detector)), "")

    def _plane(self, family: str, detector: int, extname: str) -> np.ndarray | None:
        key = (family, int(detector), extname)
        if key not in self._maps:
            path = self.files.get((family, int(detector)))
            arr = None
            if path is not None:
                with open_buffer(path) as buf:
                    hdus = {h.name: h for h in scan(buf)}
                if extname not in hdus:
                    raise FitsReadError(f"{path}: no {extname} HDU")
                h = hdus[extname]
                arr = np.memmap(path, dtype=h.dtype, mode="r", offset=h.data_start, shape=h.shape)
            self._maps[key] = arr
        return self._maps[key]

    def cwave_cband(self, detector: int, yy, xx):
        """(CWAVE, CBAND) µm at 0-based parent pixels, or None without the product."""
        cw = self._plane("spectral_wcs", detector, "CWAVE")
        cb = self._plane("spectral_wcs", detector, "CBAND")
        if cw is None or cb is None:
            return None
        return _take(cw, yy, xx), _take(cb, yy, xx)

    def solid_angle(self, detector: int, yy, xx):
        """Pixel solid angle [arcsec²] at 0-based parent pixels, or None."""
        sa = self._plane("solid_angle_pixel_map", detector, "IMAGE")
        return None if sa is None else _take(sa, yy, xx)


def _take(plane: np.ndarray, yy, xx) -> np.ndarray:
    ny, nx = plane.shape
    yy = np.clip(np.asarray(yy, dtype=np.int64), 0, ny - 1)
    xx = np.clip(np.asarray(xx, dtype=np.int64), 0, nx - 1)
    return np.asarray(plane[yy, xx], dtype=np.float64)
