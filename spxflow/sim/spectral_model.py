"""Parametric per-pixel wavelength/bandwidth model of each detector (CWAVE, CBAND, WCS-WAVE).

The model (all coordinates 1-based parent pixels ``psi1`` = x, ``psi2`` = y):

* edge wavelength ``lam_edge(y)`` runs linearly from the detector's y=1 value to its y=2040 value
  (wavelength decreases with y on every detector, spec §1.7);
* iso-wavelength lines bow: ``lam = lam_edge(y) * (1 - b + b q^2)`` with
  ``q = (x - 1020.5) / 1019.5``, i.e. smallest at x≈1020 and ``b`` (about 1 %) larger at the edges;
* bandwidth ``band = lam / R * f_dichroic(y)`` with the detector's resolving power R and a reduced
  bandwidth in the dichroic regions (D3 y <= 140, D4 y >= 1801).

CWAVE/CBAND are this model evaluated at every pixel; the WCS-WAVE table is the same model sampled
at the control points of §1.8, so its bilinear lookup agrees with CWAVE to < 1 nm (checked in
tests). Linear-in-y edge values make the table exact along y; the residual comes from the
quadratic bowing along x and stays below 1 nm on every detector.

Releases (spec §8.5): QR3 (``cal-swcs-v5``) equals QR2 (``cal-wcs-v4``) on D1-D4; on D5 and D6
every wavelength is shifted by ``+0.0064 µm`` and the bandwidths are unchanged. Every function
takes ``release`` (default 'qr2').
"""

from __future__ import annotations

import functools

import numpy as np

from spxflow.format import NPIX

# (lambda at y=1, lambda at y=2040) at the x edges [µm] (spec §1.7).
WAVE_ENDS = {
    1: (1.126, 0.745),
    2: (1.668, 1.086),
    3: (2.430, 1.616),
    4: (3.860, 2.398),
    5: (4.436, 3.792),
    6: (5.018, 4.395),
}
BOWING = {1: 0.013, 2: 0.012, 3: 0.011, 4: 0.009, 5: 0.007, 6: 0.007}
RESOLVING_POWER = {1: 39.1, 2: 41.4, 3: 40.6, 4: 34.9, 5: 111.6, 6: 127.8}
# Release -> detector -> wavelength offset [µm] relative to QR2 (bandwidth unchanged).
WAVE_SHIFT_UM = {"qr2": {}, "qr3": {5: 0.0064, 6: 0.0064}}


def wave_shift(detector: int, release: str = "qr2") -> float:
    try:
        return WAVE_SHIFT_UM[release].get(int(detector), 0.0)
    except KeyError:
        raise ValueError(
            f"release must be one of {sorted(WAVE_SHIFT_UM)}, got {release!r}"
        ) from None


def _grid(step_points: int) -> np.ndarray:
    return np.rint(np.linspace(1, NPIX, step_points)).astype(np.int32)


def control_points(detector: int) -> tuple[np.ndarray, np.ndarray]:
    """1-based X, Y control points of the WCS-WAVE table (grid sizes of §1.8)."""
    nine = _grid(9)  # 1, 256, 511, 766, 1021, 1275, 1530, 1785, 2040
    eleven = _grid(11)  # 1, 205, 409, ..., 2040
    if detector in (1, 6):
        return nine, nine
    if detector in (2, 5):
        return eleven, eleven
    if detector == 3:
        low = np.array([1, 36, 71, 105, 140], dtype=np.int32)
        high = np.rint(np.linspace(141, NPIX, 9)).astype(np.int32)
        return nine, np.concatenate([low, high])
    if detector == 4:
        x = _grid(13)
        low = np.rint(np.linspace(1, 1800, 13)).astype(np.int32)
        high = np.array([1801, 1841, 1881, 1921, 1960, 2000, 2040], dtype=np.int32)
        return x, np.concatenate([low, high])
    raise ValueError(f"detector must be 1..6, got {detector!r}")


def dichroic_factor(detector: int, psi2) -> np.ndarray:
    """Bandwidth reduction factor (1 outside the dichroic regions)."""
    y = np.asarray(psi2, dtype=float)
    f = np.ones_like(y)
    if detector == 3:
        low = y < 140.5
        f = np.where(low, 0.55 + 0.30 * ((np.clip(y, 1, 140) - 1) / 139.0) ** 2, f)
    elif detector == 4:
        high = y > 1800.5
        f = np.where(high, 0.85 - 0.30 * ((np.clip(y, 1801, NPIX) - 1801) / 239.0) ** 2, f)
    return f


def wave_band(detector: int, psi1, psi2, release: str = "qr2") -> tuple[np.ndarray, np.ndarray]:
    """(central wavelength, bandwidth) in µm at 1-based parent pixel coordinates."""
    if detector not in WAVE_ENDS:
        raise ValueError(f"detector must be 1..6, got {detector!r}")
    x = np.asarray(psi1, dtype=float)
    y = np.asarray(psi2, dtype=float)
    top, bottom = WAVE_ENDS[detector]
    lam_edge = top + (bottom - top) * (y - 1.0) / (NPIX - 1.0)
    q = (x - (NPIX + 1) / 2.0) / ((NPIX - 1) / 2.0)
    b = BOWING[detector]
    lam = lam_edge * (1.0 - b + b * q * q)
    band = lam / RESOLVING_POWER[detector] * dichroic_factor(detector, y)
    return lam + wave_shift(detector, release), band


def wave_band_parent0(detector: int, x0, y0, release: str = "qr2") -> tuple[np.ndarray, np.ndarray]:
    """Same as ``wave_band`` for 0-based parent pixels (the CWAVE/CBAND array index)."""
    x1 = np.asarray(x0, dtype=float) + 1
    return wave_band(detector, x1, np.asarray(y0, dtype=float) + 1, release)


def cwave_cband(detector: int, release: str = "qr2") -> tuple[np.ndarray, np.ndarray]:
    """Full CWAVE and CBAND planes (2040x2040 float32, numpy [y, x]); for calibration files."""
    y, x = np.mgrid[1 : NPIX + 1, 1 : NPIX + 1].astype(np.float64)
    lam, band = wave_band(detector, x, y, release)
    return lam.astype(np.float32), band.astype(np.float32)


@functools.cache
def wcs_wave_table(
    detector: int, release: str = "qr2"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X int32, Y int32, VALUES float32 [iy, ix, 2]) of the WCS-WAVE table."""
    xt, yt = control_points(detector)
    gx, gy = np.meshgrid(xt.astype(float), yt.astype(float))
    lam, band = wave_band(detector, gx, gy, release)
    values = np.stack([lam, band], axis=-1).astype(np.float32)
    for arr in (xt, yt, values):
        arr.setflags(write=False)
    return xt, yt, values
