"""SPHEREx QR2 Level-2 format constants shared by the simulator, the readers and the backends.

Everything here is a property of the archive's file format or of the instrument
(``../shared/spherex_format.md`` is the contract). Nothing here knows about the simulator's
injected truth.
"""

from __future__ import annotations

import math
import re

import numpy as np

DETECTORS = (1, 2, 3, 4, 5, 6)
NPIX = 2040  # active pixels per side (JACTIVE/KACTIVE)
PIXEL_SCALE_ARCSEC = 6.15
DETECTOR_FOV_DEG = 3.485

# HDU order of a Level-2 file and of an IRSA cutout (§1.2).
EXTNAMES = ("PRIMARY", "IMAGE", "FLAGS", "VARIANCE", "ZODI", "PSF", "WCS-WAVE")
VARIANCE_BUNIT = "(MJy / sr)^2"  # exact real string is unconfirmed (§1.2 [U])

# Whole-detector bandpass as SIA2 reports it (§3.1): em_min [m], em_max [m], em_res_power.
BANDS = {
    1: (7.4550e-07, 1.11670e-06, 39.1),
    2: (1.10330e-06, 1.64990e-06, 41.4),
    3: (1.63010e-06, 2.43460e-06, 40.6),
    4: (2.40270e-06, 3.84730e-06, 34.9),
    5: (3.81130e-06, 4.43000e-06, 111.6),
    6: (4.41150e-06, 5.00960e-06, 127.8),
}

# QR2 FLAGS bits (§1.4). Files carry them as MP_<NAME> cards; readers must prefer the cards.
FLAG_BITS: dict[str, tuple[int, str]] = {
    "TRANSIENT": (0, "Transient detected during SUR"),
    "OVERFLOW": (1, "Overflow detected during SUR"),
    "SUR_ERROR": (2, "Error in onboard processing"),
    "PHANTOM": (4, "Phantom pixel"),
    "REFERENCE": (5, "Reference pixel"),
    "NONFUNC": (6, "Permanently unusable"),
    "DICHROIC": (7, "Low efficiency due to dichroic"),
    "MISSING_DATA": (9, "Onboard data lost"),
    "HOT": (10, "Hot pixel"),
    "COLD": (11, "Anomalously low signal"),
    "FULLSAMPLE": (12, "Pixel full sample history is available"),
    "PHANMISS": (14, "Phantom correction was not applied"),
    "NONLINEAR": (15, "Nonlinearity correction cannot be applied reliably"),
    "PERSIST": (17, "Persistent charge above threshold"),
    "OUTLIER": (19, "Pixel flagged by Detect Outliers"),
    "SOURCE": (21, "Pixel mapped to a known source"),
    "GHOST": (22, "Affected by a bright source inside the exposure"),
    "GHOST_FPA": (23, "Affected by a bright source on another detector"),
    "GHOST_EXT": (24, "Pixel affected by a bright source outside FOV"),
    "BLOOM": (26, "Pixel part of a bloom artifact"),
    "SNOWBALL": (27, "Pixel part of a snowball artifact"),
    "HALO": (28, "Pixel part of a transient halo"),
}


def flag_mask(names, bits: dict[str, int] | None = None) -> int:
    """Bit mask for flag ``names``; ``bits`` maps name -> bit as read from a file's MP_* cards."""
    table = bits if bits is not None else {k: v[0] for k, v in FLAG_BITS.items()}
    mask = 0
    for name in names:
        if name not in table:
            raise KeyError(f"unknown FLAGS bit name {name!r}; known: {sorted(table)}")
        mask |= 1 << table[name]
    return mask


# PSF extension geometry (§1.6): 11x11 zones, x-fast plane order, 10x oversampled 101x101.
PSF_NZONE = 11
PSF_OVERSAMP = 10
PSF_SIZE = 101
PSF_CENTER = 50  # array index of the PSF centre (CRPIX 51)
PSF_ZONE_WIDTH = NPIX / PSF_NZONE


def psf_zone(x_parent: float, y_parent: float) -> tuple[int, int]:
    """Zone (ix, iy) of a 0-based parent-pixel position, from geometry alone."""
    ix = min(max(math.floor(x_parent / PSF_ZONE_WIDTH), 0), PSF_NZONE - 1)
    iy = min(max(math.floor(y_parent / PSF_ZONE_WIDTH), 0), PSF_NZONE - 1)
    return int(ix), int(iy)


def psf_plane(x_parent: float, y_parent: float) -> int:
    """0-based PSF plane index for a 0-based parent-pixel position (x-fast: iy*11 + ix)."""
    ix, iy = psf_zone(x_parent, y_parent)
    return iy * PSF_NZONE + ix


def psf_zone_centers() -> np.ndarray:
    """0-based zone centres (XCTR) along one axis."""
    return (np.arange(PSF_NZONE) + 0.5) * PSF_ZONE_WIDTH


def psf_zone_widths() -> np.ndarray:
    """Zone widths (XWID) along one axis; the outer zones reach the -0.5/2039.5 pixel edges."""
    w = np.full(PSF_NZONE, PSF_ZONE_WIDTH)
    w[0] += 0.5
    w[-1] -= 0.5
    return w


# Units (§4): 1 arcsec^2 = 2.35045e-11 sr and 1 MJy = 1e12 uJy.
UJY_PER_MJYSR_ARCSEC2 = 23.5045
DEFAULT_PIXEL_OMEGA_ARCSEC2 = PIXEL_SCALE_ARCSEC**2

# Calibration products (§4): family -> (QR2 token, HDU names).
CALIBRATION_FAMILIES = {
    "spectral_wcs": ("cal-wcs-v4-2025-254", ("CWAVE", "CBAND", "WCS-WAVE")),
    "solid_angle_pixel_map": ("cal-sapm-v2-2025-164", ("IMAGE",)),
}


def calibration_file_name(family: str, detector: int) -> str:
    token = CALIBRATION_FAMILIES[family][0]
    return f"{family}_D{detector}_spx_{token}.fits"


def calibration_id(family: str, detector: int) -> str:
    """Stable id of a calibration product, recorded in provenance and spectra."""
    return f"{family}/{CALIBRATION_FAMILIES[family][0]}/D{detector}"


_L2_RE = re.compile(
    r"^level2_(?P<obsid>\d{4}W\d{2}_\d[A-Z]_\d{4}_[1-4])D(?P<det>[1-6])"
    r"_spx_(?P<token>l2b-v\d{2}-\d{4}-\d{3})\.fits$"
)


def parse_level2_file_name(name: str) -> tuple[str, int, str]:
    """(obsid, detector, token) of a Level-2 file name; ValueError names the bad value."""
    m = _L2_RE.match(name)
    if not m:
        raise ValueError(f"not a SPHEREx Level-2 file name: {name!r}")
    return m["obsid"], int(m["det"]), m["token"]


# SIA2 response columns of spherex_qr2, in the order of a real response (§3.1): name, unit.
SIA_COLUMNS: tuple[tuple[str, str | None], ...] = (
    ("s_ra", "deg"),
    ("s_dec", "deg"),
    ("facility_name", None),
    ("instrument_name", None),
    ("dataproduct_subtype", None),
    ("calib_level", None),
    ("dataproduct_type", None),
    ("energy_bandpassname", None),
    ("energy_emband", None),
    ("obs_id", None),
    ("s_resolution", "arcsec"),
    ("em_min", "m"),
    ("em_max", "m"),
    ("em_res_power", None),
    ("proposal_title", None),
    ("access_url", None),
    ("access_format", None),
    ("access_estsize", "kbyte"),
    ("t_exptime", "s"),
    ("s_region", None),
    ("obs_collection", None),
    ("obs_intent", None),
    ("algorithm_name", None),
    ("facility_keywords", None),
    ("instrument_keywords", None),
    ("environment_photometric", None),
    ("proposal_id", None),
    ("proposal_pi", None),
    ("proposal_project", None),
    ("target_name", None),
    ("target_type", None),
    ("target_standard", None),
    ("target_moving", None),
    ("target_keywords", None),
    ("obs_release_date", None),
    ("s_xel1", None),
    ("s_xel2", None),
    ("s_pixel_scale", "arcsec"),
    ("position_timedependent", None),
    ("t_min", "d"),
    ("t_max", "d"),
    ("t_resolution", "s"),
    ("t_xel", None),
    ("obs_publisher_did", None),
    ("s_fov", "deg"),
    ("em_xel", None),
    ("pol_states", None),
    ("pol_xel", None),
    ("cloud_access", None),
    ("o_ucd", None),
    ("upload_row_id", None),
)
SIA_COLUMN_NAMES = tuple(name for name, _ in SIA_COLUMNS)
