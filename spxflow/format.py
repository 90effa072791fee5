"""SPHEREx QR2 Level-2 format constants shared by the simulator, the readers and the backends.

Everything here is a property of the archive's file format or of the instrument
(``../shared/spherex_format.md`` is the contract). Nothing here knows about the simulator's
injected truth.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

DETECTORS = (1, 2, 3, 4, 5, 6)
NPIX = 2040  # active pixels per side (JACTIVE/KACTIVE)
PIXEL_SCALE_ARCSEC = 6.15
DETECTOR_FOV_DEG = 3.485

# HDU order of a Level-2 file and of an IRSA cutout (§1.2).
EXTNAMES = ("PRIMARY", "IMAGE", "FLAGS", "VARIANCE", "ZODI", "PSF", "WCS-WAVE")
# R7 (QR3/DR1, §8.2): FLAGS is a RICE_1 tile-compressed image, PSF becomes the EPSF table.
R7_EXTNAMES = ("PRIMARY", "IMAGE", "FLAGS", "VARIANCE", "ZODI", "EPSF", "WCS-WAVE")
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
    # ES v2.0 (QR3 era) adds these; no QR2 header shows them (§1.4 [U]).
    "CROSSTALK": (20, "Electronic crosstalk"),
    "STREAK": (25, "Pixel part of a satellite streak"),
    "SATELLITE_HALO": (29, "Pixel part of a satellite halo"),
}


def flag_mask(names, bits: dict[str, int] | None = None) -> int:
    """Bit mask for flag ``names``; ``bits`` maps name -> bit as read from a file's own cards
    (QR2 ``MP_<NAME> = bit``, R7 ``MSKNnnnn = 'NAME'``)."""
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


# --- Releases (§0, §8) ------------------------------------------------------------------------
# QR2 (pipeline 6.x, QR2 layout) and QR3 (pipeline "R7" 7.0.x, R7 layout) are consecutive time
# slices of the survey, not reprocessings of each other. A release is named by its IBE path
# segment (``…/ibe/data/spherex/<release>/…``); DR1 will be another R7 release.
@dataclass(frozen=True)
class Release:
    name: str  # "qr2", "qr3": the IBE/S3 path segment
    collections: tuple[str, ...]  # SIA2/TAP science collections (wide, deep)
    calibration_collection: str
    layout: str  # "qr2" (PSF cube, int32 FLAGS) or "r7" (EPSF table, RICE_1 FLAGS)
    version: str  # pipeline VERSION the simulator writes (real files: 6.4-6.5.x / 7.0.x)


RELEASES: dict[str, Release] = {
    "qr2": Release("qr2", ("spherex_qr2", "spherex_qr2_deep"), "spherex_qr2_cal", "qr2", "6.5.6"),
    "qr3": Release("qr3", ("spherex_qr3", "spherex_qr3_deep"), "spherex_qr3_cal", "r7", "7.0.5"),
}
QR3_START_MJD = 61241.0  # 2026-07-20T00:00 UTC, first day of the QR3 time slice (§8.0)
R7_MIN_VERSION = 7  # pipeline VERSION major >= 7 carries EPSF (§8.0)
_COLLECTIONS = {c for r in RELEASES.values() for c in (*r.collections, r.calibration_collection)}
_RELEASE_PATH_RE = re.compile(r"/spherex/(?P<release>[a-z]+\d*)/")


def release_of_collection(collection: str) -> str:
    """Release of a SIA2/TAP collection name (``spherex_qr3_deep`` -> ``qr3``)."""
    for rel in RELEASES.values():
        if collection in rel.collections or collection == rel.calibration_collection:
            return rel.name
    raise ValueError(f"unknown SPHEREx collection {collection!r}; known: {sorted(_COLLECTIONS)}")


def release_of_path(url_or_key: str) -> str:
    """Release named by an IBE URL or S3 key (``…/spherex/qr3/level2/…`` -> ``qr3``)."""
    text = "/" + str(url_or_key).split("?", 1)[0].lstrip("/")
    m = _RELEASE_PATH_RE.search(text)
    if m is None and text.split("/")[1] in RELEASES:  # an S3 key: 'qr3/level2/...'
        return text.split("/")[1]
    if m is None or m["release"] not in RELEASES:
        raise ValueError(f"{url_or_key!r} names no known SPHEREx release ({sorted(RELEASES)})")
    return m["release"]


def layout_of_version(version: str) -> str:
    """File layout implied by a pipeline VERSION: 'r7' for >= 7.0, else 'qr2' (§8.0)."""
    try:
        major = int(str(version).strip().split(".")[0])
    except ValueError:
        raise ValueError(f"pipeline VERSION {version!r} is not 'major.minor...'") from None
    return "r7" if major >= R7_MIN_VERSION else "qr2"


# --- Calibration products (§4, §8.6) ----------------------------------------------------------
# HDUs each family must carry.
CALIBRATION_HDUS: dict[str, tuple[str, ...]] = {
    "spectral_wcs": ("CWAVE", "CBAND", "WCS-WAVE"),
    "solid_angle_pixel_map": ("IMAGE",),
    "epsf": ("EPSF",),
    "l3_flux_corrections": ("IMAGE",),
}
CALIBRATION_FAMILIES = tuple(CALIBRATION_HDUS)
# release -> family -> token; ``CALIBRATION_TOKEN_OVERRIDES`` holds per-detector exceptions.
CALIBRATION_TOKENS: dict[str, dict[str, str]] = {
    "qr2": {
        "spectral_wcs": "cal-wcs-v4-2025-254",
        "solid_angle_pixel_map": "cal-sapm-v2-2025-164",
    },
    "qr3": {
        "spectral_wcs": "cal-swcs-v5-2026-191",
        "solid_angle_pixel_map": "cal-sapm-v3-2026-191",
        "epsf": "cal-epsf-v1-2026-191",
        "l3_flux_corrections": "cal-flxc-v1-2026-191",
    },
}
# The lexically latest epsf token 404s for other detectors: pick per detector (§8.6).
CALIBRATION_TOKEN_OVERRIDES: dict[tuple[str, str, int], str] = {
    ("qr3", "epsf", 3): "cal-epsf-v2-2026-191",
}


def calibration_token(release: str, family: str, detector: int) -> str:
    try:
        token = CALIBRATION_TOKENS[release][family]
    except KeyError:
        known = {r: sorted(f) for r, f in CALIBRATION_TOKENS.items()}
        raise KeyError(
            f"no calibration family {family!r} in release {release!r}; known: {known}"
        ) from None
    return CALIBRATION_TOKEN_OVERRIDES.get((release, family, int(detector)), token)


def calibration_products(releases) -> list[tuple[str, str, int]]:
    """Every (release, family, detector) product of ``releases``, in a stable order."""
    return [
        (rel, family, det)
        for rel in sorted(set(releases))
        for family in CALIBRATION_TOKENS[rel]
        for det in DETECTORS
    ]


def calibration_file_name(release: str, family: str, detector: int) -> str:
    return f"{family}_D{detector}_spx_{calibration_token(release, family, detector)}.fits"


def calibration_key(release: str, family: str, detector: int) -> str:
    """Path after ``/ibe/data/spherex/``, which is also the S3 key."""
    token = calibration_token(release, family, detector)
    name = calibration_file_name(release, family, detector)
    return f"{release}/{family}/{token}/{detector}/{name}"


def calibration_id(release: str, family: str, detector: int) -> str:
    """Stable id of a calibration product, recorded in provenance and spectra."""
    return f"{family}/{calibration_token(release, family, detector)}/D{detector}"


_CAL_NAME_RE = re.compile(
    r"^(?P<family>[a-z0-9_]+)_D(?P<det>[1-6])_spx_(?P<token>[A-Za-z0-9.-]+)\.fits$"
)


def parse_calibration_file_name(name: str) -> tuple[str, str, int]:
    """(release, family, detector) of a calibration file name; ValueError names the bad value."""
    m = _CAL_NAME_RE.match(name)
    if m:
        det = int(m["det"])
        for rel, families in CALIBRATION_TOKENS.items():
            if m["family"] in families and m["token"] == calibration_token(rel, m["family"], det):
                return rel, m["family"], det
    raise ValueError(
        f"{name!r} is not a known calibration product (<family>_D<n>_spx_<token>.fits with "
        f"the tokens of {sorted(CALIBRATION_TOKENS)})"
    )


# --- EPSF table (§8.4) ------------------------------------------------------------------------
EPSF_SIZE = 33
EPSF_OVERSAMP = 5
EPSF_CENTER = 16  # array index of the PSF centre on both axes
EPSF_LATTICE = {1: (21, 21), 2: (21, 21), 3: (11, 41), 4: (21, 21), 5: (21, 21), 6: (21, 21)}


def epsf_zone_centers(nbins: int) -> np.ndarray:
    """0-based zone centres along one axis: a uniform tiling of [-0.5, 2039.5]."""
    return (np.arange(nbins) + 0.5) * NPIX / nbins - 0.5


def epsf_zone(x_parent: float, y_parent: float, nbinx: int, nbiny: int) -> tuple[int, int]:
    """Zone (ix, iy) containing a 0-based parent pixel position (= the nearest zone centre)."""
    ix = min(max(math.floor((x_parent + 0.5) * nbinx / NPIX), 0), nbinx - 1)
    iy = min(max(math.floor((y_parent + 0.5) * nbiny / NPIX), 0), nbiny - 1)
    return int(ix), int(iy)


# --- Level-2 names and processing tokens (§1.1, §8.1) ----------------------------------------
# Tokens: 'l2b-v21-2025-354', 'l2b_retry-v27-2026-223'.
TOKEN_RE = r"l2b(?:_[a-z]+)?-v\d+-\d{4}-\d{3}"
_L2_RE = re.compile(
    r"^level2_(?P<obsid>\d{4}W\d{2}_\d[A-Z]_\d{4}_[1-4])D(?P<det>[1-6])"
    rf"_spx_(?P<token>{TOKEN_RE})\.fits$"
)
_TOKEN_PARTS = re.compile(r"^l2b(?:_(?P<kind>[a-z]+))?-v(?P<v>\d+)-(?P<y>\d{4})-(?P<d>\d{3})$")


def parse_level2_file_name(name: str) -> tuple[str, int, str]:
    """(obsid, detector, token) of a Level-2 file name; ValueError names the bad value."""
    m = _L2_RE.match(name)
    if not m:
        raise ValueError(f"not a SPHEREx Level-2 file name: {name!r}")
    return m["obsid"], int(m["det"]), m["token"]


def token_rank(token: str) -> tuple[int, int, int, int]:
    """Sort key of a processing token, newest last: (year, day, retry, version).

    The same exposure can exist under 'l2b-…' and 'l2b_retry-…' (§8.8): keep the newest
    processing date, a retry breaking ties (as spherex-timelapse does)."""
    m = _TOKEN_PARTS.match(str(token))
    if not m:
        raise ValueError(f"not a SPHEREx processing token: {token!r}")
    return int(m["y"]), int(m["d"]), int(m["kind"] == "retry"), int(m["v"])


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
