"""Calibration products the photometry uses (spec §4, §8.6), by (release, family, detector).

Each image uses the CWAVE/CBAND and solid-angle maps of its own release. QR3 adds two products
that also serve QR2 images: ``l3_flux_corrections`` (per-pixel factors that put QR2 fluxes on
the R7 scale) and ``epsf`` (the R7 ePSF library, for ``photometry.qr2_psf: epsf``).

The 2040x2040 float32 planes are memory-mapped at the data offsets found by the lean reader,
so a measure job touches only the pages under its cutouts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from spxflow.format import calibration_id, calibration_products
from spxflow.format import parse_calibration_file_name as parse_name
from spxflow.photometry.fitsread import FitsReadError, open_buffer, scan

# QR3 products that correct or model QR2 images.
CORRECTING_RELEASE = "qr3"


@dataclass
class CalibrationSet:
    """Calibration products by (release, family, detector); missing products give ``None``."""

    files: dict[tuple[str, str, int], str] = field(default_factory=dict)
    ids: dict[tuple[str, str, int], str] = field(default_factory=dict)
    _maps: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_paths(cls, paths) -> CalibrationSet:
        out = cls()
        for p in paths:
            try:
                key = parse_name(os.path.basename(str(p)))
            except ValueError as exc:
                raise ValueError(f"{p}: {exc}") from None
            out.files[key] = str(p)
            out.ids[key] = calibration_id(*key)
        return out

    @classmethod
    def from_archive(cls, archive, directory, releases=("qr2", "qr3")) -> CalibrationSet:
        """Fetch every product of ``releases`` from ``archive`` into ``directory`` and load
        them (validation campaigns, tests, benchmarks; the workflow has its own rules)."""
        paths = [
            archive.fetch_calibration(rel, family, det, directory).path
            for rel, family, det in calibration_products(releases)
        ]
        return cls.from_paths(paths)

    def calibration_id(self, release: str, family: str, detector: int) -> str:
        return self.ids.get((release, family, int(detector)), "")

    def _plane(self, release: str, family: str, detector: int, extname: str):
        key = (release, family, int(detector), extname)
        if key not in self._maps:
            path = self.files.get((release, family, int(detector)))
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

    def cwave_cband(self, release: str, detector: int, yy, xx):
        """(CWAVE, CBAND) µm at 0-based parent pixels, or None without the product."""
        cw = self._plane(release, "spectral_wcs", detector, "CWAVE")
        cb = self._plane(release, "spectral_wcs", detector, "CBAND")
        if cw is None or cb is None:
            return None
        return _take(cw, yy, xx), _take(cb, yy, xx)

    def solid_angle(self, release: str, detector: int, yy, xx):
        """Pixel solid angle [arcsec²] at 0-based parent pixels, or None."""
        sa = self._plane(release, "solid_angle_pixel_map", detector, "IMAGE")
        return None if sa is None else _take(sa, yy, xx)

    def flux_correction(self, detector: int, yy, xx):
        """QR2 -> R7 flux factors at 0-based parent pixels, or None without the product."""
        fc = self._plane(CORRECTING_RELEASE, "l3_flux_corrections", detector, "IMAGE")
        return None if fc is None else _take(fc, yy, xx)

    def epsf_library(self, detector: int):
        """The R7 ePSF library of a detector (``EpsfLibrary``), or None without the product."""
        key = (CORRECTING_RELEASE, "epsf", int(detector), "EPSF")
        if key not in self._maps:
            from spxflow.photometry.epsf import EpsfLibrary

            path = self.files.get(key[:3])
            self._maps[key] = None if path is None else EpsfLibrary.from_path(path)
        return self._maps[key]

    def releases(self) -> list[str]:
        return sorted({k[0] for k in self.files})


def _take(plane: np.ndarray, yy, xx) -> np.ndarray:
    ny, nx = plane.shape
    yy = np.clip(np.asarray(yy, dtype=np.int64), 0, ny - 1)
    xx = np.clip(np.asarray(xx, dtype=np.int64), 0, nx - 1)
    return np.asarray(plane[yy, xx], dtype=np.float64)
