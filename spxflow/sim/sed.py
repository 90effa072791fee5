"""Source spectral energy distributions (flux density F_nu in µJy vs wavelength in µm).

Families:

* ``star``  — blackbody of ``temp_k`` (Rayleigh-Jeans tail at long wavelengths);
* ``agn``   — power law ``F_nu ∝ λ^alpha`` plus Paschen α/β and Brackett α/γ emission lines
  (Gaussians, FWHM 2000 km/s) at redshift ``redshift``; ``line_ew_um`` is the rest-frame
  equivalent width of Paα, the other lines follow fixed ratios;
* ``tde``   — red, dust-echo-like continuum: blackbody of ``temp_k`` (about 1500 K) plus 10 %
  of a flat blue component;
* ``faint`` — flat ``F_nu`` (a non-detection when ``flux_ujy`` is far below the noise).

Every family is normalised so that the continuum equals ``flux_ujy`` at ``ref_um``.
What an image sees (``band_average``) is the mean of F_nu over a **top-hat** in wavelength of
full width ``band`` centred on ``wave`` (CWAVE/CBAND of the source's parent pixel): the continuum
by 8-point Gauss-Legendre quadrature, the lines exactly (error functions).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import erf

HC_OVER_K_UM_K = 14387.77  # hc/k in µm K
LINE_FWHM_KMS = 2000.0
# Rest wavelengths [µm] and flux ratios relative to Paα (integrated F_nu dλ).
AGN_LINES = {
    "Paa": (1.8756, 1.00),
    "Pab": (1.2822, 0.45),
    "Brg": (2.1661, 0.09),
    "Bra": (4.0523, 0.25),
}
FAMILIES = ("star", "agn", "tde", "faint")
_GL_X, _GL_W = np.polynomial.legendre.leggauss(8)


@dataclass(frozen=True)
class SED:
    family: str
    flux_ujy: float
    ref_um: float = 1.0
    temp_k: float = 5800.0
    alpha: float = 0.0
    redshift: float = 0.0
    line_ew_um: float = 0.0

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"unknown SED family {self.family!r}; known: {FAMILIES}")
        if not (math.isfinite(self.flux_ujy) and self.flux_ujy >= 0):
            raise ValueError(f"flux_ujy must be finite and >= 0, got {self.flux_ujy!r}")
        if not (math.isfinite(self.ref_um) and self.ref_um > 0):
            raise ValueError(f"ref_um must be > 0, got {self.ref_um!r}")


def _bb_shape(lam, temp_k):
    x = HC_OVER_K_UM_K / (np.asarray(lam, dtype=float) * temp_k)
    return lam ** (-3.0) / np.expm1(np.minimum(x, 700.0))


def continuum(sed: SED, lam) -> np.ndarray:
    """Continuum F_nu [µJy] at wavelengths ``lam`` [µm]."""
    lam = np.asarray(lam, dtype=float)
    if sed.family == "star":
        return sed.flux_ujy * _bb_shape(lam, sed.temp_k) / _bb_shape(sed.ref_um, sed.temp_k)
    if sed.family == "agn":
        return sed.flux_ujy * (lam / sed.ref_um) ** sed.alpha
    if sed.family == "tde":
        shape = _bb_shape(lam, sed.temp_k) / _bb_shape(sed.ref_um, sed.temp_k)
        return sed.flux_ujy * (0.9 * shape + 0.1)
    return np.full(lam.shape, sed.flux_ujy)


def lines(sed: SED) -> list[tuple[float, float, float]]:
    """Observed (centre µm, integrated flux µJy·µm, sigma µm) of the emission lines."""
    if sed.family != "agn" or sed.line_ew_um <= 0:
        return []
    z1 = 1.0 + sed.redshift
    paa_obs = AGN_LINES["Paa"][0] * z1
    paa_flux = sed.line_ew_um * z1 * float(continuum(sed, paa_obs))
    out = []
    for rest, ratio in AGN_LINES.values():
        centre = rest * z1
        sigma = centre * LINE_FWHM_KMS / 299792.458 / 2.3548
        out.append((centre, paa_flux * ratio, sigma))
    return out


def monochromatic(sed: SED, lam) -> np.ndarray:
    """Intrinsic F_nu [µJy] at ``lam`` [µm] including the lines' intrinsic profiles."""
    lam = np.asarray(lam, dtype=float)
    out = continuum(sed, lam)
    for centre, flux, sigma in lines(sed):
        out = out + flux * np.exp(-0.5 * ((lam - centre) / sigma) ** 2) / (
            sigma * math.sqrt(2 * math.pi)
        )
    return out


def band_average(sed: SED, wave, band) -> np.ndarray:
    """Mean F_nu [µJy] over top-hat bandpasses [wave - band/2, wave + band/2] (µm)."""
    wave = np.asarray(wave, dtype=float)
    band = np.asarray(band, dtype=float)
    if np.any(band <= 0):
        return monochromatic(sed, wave)
    nodes = wave[..., None] + 0.5 * band[..., None] * _GL_X
    cont = 0.5 * np.sum(continuum(sed, nodes) * _GL_W, axis=-1)
    lo = wave - 0.5 * band
    hi = wave + 0.5 * band
    for centre, flux, sigma in lines(sed):
        s2 = sigma * math.sqrt(2.0)
        frac = 0.5 * (erf((hi - centre) / s2) - erf((lo - centre) / s2))
        cont = cont + flux * frac / band
    return cont


def blackbody_band_average(flux_ujy, temp_k, ref_um, wave, band) -> np.ndarray:
    """Vectorised ``band_average`` for many blackbody stars at once (field stars)."""
    flux = np.asarray(flux_ujy, dtype=float)
    temp = np.asarray(temp_k, dtype=float)
    wave = np.asarray(wave, dtype=float)
    band = np.asarray(band, dtype=float)
    nodes = wave[..., None] + 0.5 * band[..., None] * _GL_X
    shape = _bb_shape(nodes, temp[..., None]) / _bb_shape(ref_um, temp)[..., None]
    return flux * 0.5 * np.sum(shape * _GL_W, axis=-1)
