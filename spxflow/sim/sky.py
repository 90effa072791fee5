"""The simulated sky: truth-table sources, deterministic field stars, zodiacal light, airglow,
and the per-pixel solid-angle map. Every quantity is a pure function of sky position or of
parent-pixel coordinates, so overlapping cutouts (and different images) agree.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import erf

from spxflow.format import NPIX
from spxflow.sim import hashrng
from spxflow.sim.sed import FAMILIES, SED
from spxflow.sim.survey import ecliptic_latitude, radec_to_vec

TRUTH_COLUMNS = (
    "name",
    "ra",
    "dec",
    "sed",
    "flux_ujy",
    "ref_um",
    "temp_k",
    "alpha",
    "redshift",
    "line_ew_um",
)
TRUTH_MATCH_ARCSEC = 3.0  # truth_sed / SIMSRC association radius
FIELD_STAR_EXCLUSION_ARCSEC = 30.0
CELL_DEG = 0.1
# Field stars: N(>F) = STAR_DENSITY * (F / 100 µJy)^-STAR_SLOPE per arcmin², F at 1 µm.
STAR_DENSITY_PER_ARCMIN2 = 0.25
STAR_SLOPE = 0.7
STAR_FMIN_UJY = 20.0
STAR_FMAX_UJY = 3.0e5


@dataclass(frozen=True)
class TruthTable:
    names: tuple[str, ...]
    ra: np.ndarray
    dec: np.ndarray
    seds: tuple[SED, ...]
    vec: np.ndarray  # unit vectors (n, 3)

    def __len__(self) -> int:
        return len(self.names)

    def nearest(self, ra: float, dec: float) -> tuple[int, float]:
        """(index, separation arcsec) of the nearest truth source; (-1, inf) if empty."""
        if not len(self):
            return -1, math.inf
        v = radec_to_vec(ra, dec)
        cosd = np.clip(self.vec @ v, -1.0, 1.0)
        i = int(np.argmax(cosd))
        return i, float(np.rad2deg(np.arccos(cosd[i])) * 3600.0)


def _num(row, key: str, default: float, where: str) -> float:
    val = row.get(key, default)
    if val is None or (isinstance(val, float) and math.isnan(val)) or val == "":
        return default
    try:
        out = float(val)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: column {key!r} is not a number: {val!r}") from None
    if not math.isfinite(out):
        raise ValueError(f"{where}: column {key!r} is not finite: {val!r}")
    return out


@functools.cache
def load_truth(path: str) -> TruthTable:
    """Read and validate the truth table CSV (errors name the file, row and column)."""
    df = pd.read_csv(path, comment="#", dtype={"name": str, "sed": str})
    missing = [c for c in ("name", "ra", "dec", "sed", "flux_ujy") if c not in df.columns]
    if missing:
        raise ValueError(f"truth table {path}: missing columns {missing}")
    names, ras, decs, seds = [], [], [], []
    for i, row in enumerate(df.to_dict("records")):
        where = f"truth table {path} row {i + 2} ({row.get('name')!r})"
        ra = _num(row, "ra", math.nan, where)
        dec = _num(row, "dec", math.nan, where)
        if not (0.0 <= ra < 360.0 and -90.0 <= dec <= 90.0):
            raise ValueError(f"{where}: ra/dec out of range: {ra}, {dec}")
        family = str(row["sed"]).strip()
        if family not in FAMILIES:
            raise ValueError(f"{where}: unknown sed family {family!r}; known: {FAMILIES}")
        sed = SED(
            family=family,
            flux_ujy=_num(row, "flux_ujy", math.nan, where),
            ref_um=_num(row, "ref_um", 1.0, where),
            temp_k=_num(row, "temp_k", 5800.0, where),
            alpha=_num(row, "alpha", 0.0, where),
            redshift=_num(row, "redshift", 0.0, where),
            line_ew_um=_num(row, "line_ew_um", 0.0, where),
        )
        names.append(str(row["name"]))
        ras.append(ra)
        decs.append(dec)
        seds.append(sed)
    if len(set(names)) != len(names):
        raise ValueError(f"truth table {path}: duplicate names")
    ra_a, dec_a = np.array(ras, dtype=float), np.array(decs, dtype=float)
    vec = radec_to_vec(ra_a, dec_a).reshape(-1, 3)
    return TruthTable(tuple(names), ra_a, dec_a, tuple(seds), vec)


# ---------------------------------------------------------------------------------------------
# Field stars: Poisson numbers of stars per 0.1° cell, generated from (seed, cell) only.


def _band_cells(iband: int) -> int:
    centre = -90.0 + (iband + 0.5) * CELL_DEG
    return max(1, int(math.floor(360.0 * math.cos(math.radians(centre)) / CELL_DEG)))


def _cell_stars(seed: int, iband: int, ira: int):
    n_ra = _band_cells(iband)
    ra_lo = ira * 360.0 / n_ra
    ra_w = 360.0 / n_ra
    dec_lo = -90.0 + iband * CELL_DEG
    s_lo, s_hi = math.sin(math.radians(dec_lo)), math.sin(math.radians(dec_lo + CELL_DEG))
    area_arcmin2 = math.radians(ra_w) * (s_hi - s_lo) * (180 / math.pi * 60) ** 2
    rng = np.random.default_rng([seed & 0xFFFFFFFF, 0x5EA, iband, ira])
    mean = STAR_DENSITY_PER_ARCMIN2 * (STAR_FMIN_UJY / 100.0) ** (-STAR_SLOPE) * area_arcmin2
    n = int(rng.poisson(mean))
    ra = ra_lo + ra_w * rng.random(n)
    dec = np.rad2deg(np.arcsin(s_lo + (s_hi - s_lo) * rng.random(n)))
    flux = STAR_FMIN_UJY * rng.random(n) ** (-1.0 / STAR_SLOPE)
    flux = np.minimum(flux, STAR_FMAX_UJY)
    temp = rng.uniform(3300.0, 9000.0, n)
    ids = (iband * 100000 + ira) * 10000 + np.arange(n)
    return ids, ra, dec, flux, temp


def field_stars(ra_c: float, dec_c: float, radius_deg: float, seed: int, truth: TruthTable):
    """Field stars within ``radius_deg`` of (ra_c, dec_c): (ids, ra, dec, flux_1um_ujy, temp_k).

    Stars closer than ``FIELD_STAR_EXCLUSION_ARCSEC`` to any truth source are removed, so
    truth sources stay isolated unless the table itself puts them close together.
    """
    n_band = int(round(180.0 / CELL_DEG))
    b_lo = max(0, int(math.floor((dec_c - radius_deg + 90.0) / CELL_DEG)))
    b_hi = min(n_band - 1, int(math.floor((dec_c + radius_deg + 90.0) / CELL_DEG)))
    parts = []
    for iband in range(b_lo, b_hi + 1):
        n_ra = _band_cells(iband)
        dec_edge = max(abs(-90.0 + iband * CELL_DEG), abs(-90.0 + (iband + 1) * CELL_DEG))
        cosd = math.cos(math.radians(min(dec_edge, 89.999)))
        half = radius_deg / cosd if cosd > 0 else 360.0
        if half >= 180.0:
            cells = range(n_ra)
        else:
            lo = int(math.floor((ra_c - half) / (360.0 / n_ra)))
            hi = int(math.floor((ra_c + half) / (360.0 / n_ra)))
            cells = sorted({c % n_ra for c in range(lo, hi + 1)})
        for ira in cells:
            parts.append(_cell_stars(seed, iband, ira))
    if not parts:
        z = np.zeros(0)
        return z.astype(np.int64), z, z, z, z
    ids, ra, dec, flux, temp = (np.concatenate(c) for c in zip(*parts, strict=True))
    v = radec_to_vec(ra, dec).reshape(-1, 3)
    near = (v @ radec_to_vec(ra_c, dec_c)) >= math.cos(math.radians(radius_deg))
    if len(truth):
        cos_ex = math.cos(math.radians(FIELD_STAR_EXCLUSION_ARCSEC / 3600.0))
        near &= ~np.any((v @ truth.vec.T) >= cos_ex, axis=1)
    return ids[near], ra[near], dec[near], flux[near], temp[near]


# ---------------------------------------------------------------------------------------------
# Diffuse light.

_ZODI_UM = np.array([0.70, 1.00, 1.25, 1.60, 2.20, 3.00, 3.50, 4.00, 4.50, 5.10])
_ZODI_MJYSR = np.array([0.13, 0.15, 0.18, 0.20, 0.15, 0.09, 0.07, 0.10, 0.17, 0.26])


def zodi_model(wave_um, ra, dec) -> np.ndarray:
    """Zodiacal-light model [MJy/sr]: high-latitude spectrum times an ecliptic-latitude factor
    (3.5x on the ecliptic, spec §5 [U])."""
    beta = ecliptic_latitude(ra, dec)
    spectrum = np.interp(wave_um, _ZODI_UM, _ZODI_MJYSR)
    return spectrum * (1.0 + 2.5 * np.exp(-((beta / 30.0) ** 2)))


HEI_UM = 1.0830


def airglow(detector: int, wave_um, band_um, amplitude: float) -> np.ndarray:
    """Airglow [MJy/sr] on D1/D2: He I 1.083 µm line through the top-hat bandpass plus a weak
    continuum; zero on D3-D6."""
    if detector not in (1, 2):
        return np.zeros(np.shape(wave_um))
    sigma = 0.002 * math.sqrt(2.0)
    lo = (wave_um - 0.5 * band_um - HEI_UM) / sigma
    hi = (wave_um + 0.5 * band_um - HEI_UM) / sigma
    frac = 0.5 * (erf(hi) - erf(lo))
    return amplitude * (0.25 * frac * 0.028 / band_um + 0.015)


# ---------------------------------------------------------------------------------------------
# Solid-angle pixel map (calibration product; arcsec²): smooth, median 37.86, sigma 0.20.

OMEGA_MEDIAN = 37.86
OMEGA_STDDEV = 0.20


def _omega_shape(detector: int, x0, y0):
    qx = (np.asarray(x0, dtype=float) - (NPIX - 1) / 2) / (NPIX / 2)
    qy = (np.asarray(y0, dtype=float) - (NPIX - 1) / 2) / (NPIX / 2)
    tilt = 0.15 * (detector - 3.5)
    return qx * qx + 0.7 * qy * qy + 0.25 * qx * qy + tilt * qx - 0.1 * qy


@functools.cache
def _omega_norm(detector: int) -> tuple[float, float]:
    # Every 4th pixel: the map is smooth, so this matches the full-frame statistics to ~1e-4.
    y, x = np.mgrid[1:NPIX:4, 1:NPIX:4]
    s = _omega_shape(detector, x, y)
    return float(np.median(s)), float(np.std(s))


def solid_angle(detector: int, x0, y0) -> np.ndarray:
    """Pixel solid angle [arcsec²] at 0-based parent pixels."""
    med, std = _omega_norm(detector)
    return OMEGA_MEDIAN + OMEGA_STDDEV * (_omega_shape(detector, x0, y0) - med) / std


def solid_angle_map(detector: int) -> np.ndarray:
    y, x = np.mgrid[0:NPIX, 0:NPIX]
    return solid_angle(detector, x, y).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Flux-correction map (QR3 calibration product l3_flux_corrections; dimensionless).
# One calibration scale: the simulated sky is on the R7 (QR3) gain scale and the factors bring
# pre-QR3 data to it (R7 = QR2 x flxc), so QR2 pixels are written as R7-scale pixels / flxc.
# Smooth per detector (D1 median 0.970 with a row dependence spanning about 0.875-0.983, D2 0.985,
# D3 0.992, D4 1.012, D5 1.007, D6 1.004) plus ~1e-4 "wild" pixels with factors in [0.5, 2].
# An instrument property: seed-independent.

FLXC_MEDIAN = {1: 0.970, 2: 0.985, 3: 0.992, 4: 1.012, 5: 1.007, 6: 1.004}
FLXC_WILD_RATE = 1e-4


def _flxc_rows(detector: int, y0) -> np.ndarray:
    y = np.asarray(y0, dtype=float)
    t = y / (NPIX - 1)
    if detector == 1:  # a steep deficit on the first rows (0.875 at y=0), then a slow decline
        return 0.983 - 0.026 * t - 0.108 * np.exp(-y / 40.0)
    sign = 1.0 if detector % 2 else -1.0
    return 1.0 + sign * 0.006 * (t - 0.5) + 0.002 * np.cos(np.pi * t * (detector - 1))


def _flxc_cols(x0) -> np.ndarray:
    q = (np.asarray(x0, dtype=float) - (NPIX - 1) / 2) / ((NPIX - 1) / 2)
    return 0.002 * q * q - 0.001 * q


@functools.cache
def flux_correction_map(detector: int) -> np.ndarray:
    """The detector's l3_flux_corrections map (2040x2040 float32 [y, x], read-only, cached).

    Separable smooth part (rows + columns, shifted to the detector's median) plus wild pixels
    drawn from a generator seeded by the detector (cheap: no per-pixel hashing)."""
    axis = np.arange(NPIX)
    smooth = np.add.outer(_flxc_rows(detector, axis), _flxc_cols(axis))
    smooth += FLXC_MEDIAN[detector] - float(np.median(smooth[::4, ::4]))
    rng = np.random.default_rng([hashrng.key_of("flxc_wild", detector) & 0xFFFFFFFF, detector])
    n_wild = int(rng.binomial(NPIX * NPIX, FLXC_WILD_RATE))
    wild = rng.choice(NPIX * NPIX, size=n_wild, replace=False)
    flat = smooth.reshape(-1)
    flat[wild] = 2.0 ** rng.uniform(-1.0, 1.0, n_wild)
    out = smooth.astype(np.float32)
    out.setflags(write=False)
    return out
