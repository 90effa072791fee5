"""Spectral WCS evaluation: the WCS-WAVE -TAB lookup (§1.8) and CWAVE/CBAND indexing."""

from __future__ import annotations

import numpy as np


def wcs_wave_lookup(x_tab, y_tab, values, psi1, psi2):
    """Bilinear lookup of (wavelength, bandwidth) in a WCS-WAVE table.

    ``x_tab``/``y_tab`` are the 1-based parent-pixel control points, ``values`` the table as
    numpy ``[iy, ix, k]`` (k=0 wavelength, k=1 bandwidth, µm), and ``psi1``/``psi2`` 1-based
    parent-pixel coordinates (``x_cut + 1 - CRPIX1W + CRVAL1W``). Positions outside the grid are
    clamped to its edge. Returns two arrays (wavelength_um, bandwidth_um).
    """
    x_tab = np.asarray(x_tab, dtype=float)
    y_tab = np.asarray(y_tab, dtype=float)
    values = np.asarray(values, dtype=float).reshape(len(y_tab), len(x_tab), 2)
    psi1 = np.clip(np.asarray(psi1, dtype=float), x_tab[0], x_tab[-1])
    psi2 = np.clip(np.asarray(psi2, dtype=float), y_tab[0], y_tab[-1])
    i = np.clip(np.searchsorted(x_tab, psi1, side="right") - 1, 0, len(x_tab) - 2)
    j = np.clip(np.searchsorted(y_tab, psi2, side="right") - 1, 0, len(y_tab) - 2)
    tx = (psi1 - x_tab[i]) / (x_tab[i + 1] - x_tab[i])
    ty = (psi2 - y_tab[j]) / (y_tab[j + 1] - y_tab[j])
    out = (
        values[j, i] * ((1 - tx) * (1 - ty))[..., None]
        + values[j, i + 1] * (tx * (1 - ty))[..., None]
        + values[j + 1, i] * ((1 - tx) * ty)[..., None]
        + values[j + 1, i + 1] * (tx * ty)[..., None]
    )
    return out[..., 0], out[..., 1]


def read_wcs_wave_hdu(hdu):
    """(x_tab, y_tab, values[iy, ix, 2]) from an astropy WCS-WAVE BinTableHDU."""
    row = hdu.data[0]
    x_tab = np.asarray(row["X"], dtype=float).ravel()
    y_tab = np.asarray(row["Y"], dtype=float).ravel()
    values = np.asarray(row["VALUES"], dtype=float).reshape(len(y_tab), len(x_tab), 2)
    return x_tab, y_tab, values
