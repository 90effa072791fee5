"""Header cards of simulated Level-2 HDUs (spec §1.3-§1.8), as 80-character card images.

Per-image cards are built once per image (``image_common_cards``) and only the CRPIX pairs and
the SIM* truth cards change per cutout.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from spxflow.format import (
    FLAG_BITS,
    NPIX,
    PSF_NZONE,
    RELEASES,
    psf_zone_centers,
    psf_zone_widths,
)
from spxflow.sim import hashrng, survey
from spxflow.sim.fitsout import card
from spxflow.sim.psf_model import detector_fwhm_arcsec
from spxflow.sim.wcs import CRPIX, sip_cards

PIPELINE_VERSION = RELEASES["qr2"].version  # "6.5.6"
ERRATUM_VERSION = "6.5.4"  # pre-fix QR2 files with the transposed PSF zone cards
ORBIT_RADIUS_KM = 7037.0
ORBIT_PERIOD_S = 2.0 * math.pi * math.sqrt(ORBIT_RADIUS_KM**3 / 398600.4418)

_READOUT = [
    ("TSAMP", survey.TSAMP, "[s] Time per frame"),
    ("KOVR_A", 25000, "[adu] Overflow limit, A"),
    ("KOVR_R", 25000, "[adu] Overflow limit, R"),
    ("KOVR_P", 25000, "[adu] Overflow limit, P"),
    ("OVRDLY", 5, "Overflow delay"),
    ("SURLIM", survey.SURLIM, "Number of SUR frames"),
    ("SURDLY", survey.SURDLY, "SUR delay frames"),
    ("TRANDLY", 7, "Transient delay frames"),
    ("TCUT", 38, "Transient cut"),
    ("KEN_A", 10, ""),
    ("KEN_R", 10, ""),
    ("KEN_P", 10, ""),
    ("KSN_A", 5, ""),
    ("KSN_R", 5, ""),
    ("KSN_P", 5, ""),
    ("NSKIP", 32, "Frames skipped"),
    ("NVISITROW", 4, ""),
    ("NVISITCOL", 1, ""),
    ("MPHAN", 4, ""),
    ("NCHANNEL", 32, "Readout channels"),
    ("WCHANNEL", 64, "Channel width [pixels]"),
    ("JREF", 8, "Reference rows"),
    ("KREF", 8, "Reference columns"),
    ("JACTIVE", NPIX, "Active rows"),
    ("KACTIVE", NPIX, "Active columns"),
]

_CALIB_FAMILIES = (
    "dichroic",
    "gain_factors",
    "nonfunc",
    "spectral_wcs",
    "nonlinear_pars",
    "readnoise_pars",
    "abs_gain_matrix",
    "average_psf",
    "dark",
    "sip",
    "solid_angle_pixel_map",
)


def _uuid(*parts) -> str:
    h = f"{hashrng.key_of(*parts):016x}{hashrng.key_of('u2', *parts):016x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


@functools.cache
def history_cards(detector: int, release: str = "qr2") -> tuple[str, ...]:
    cards = [
        card("COMMENT", "TELAPSE starts prior to MJD-BEG: includes discarded frames."),
        card("COMMENT", "XPOSURE is the SUR integration time (SURLIM-SURDLY frames)."),
    ]
    for i in range(1, 24):
        cards.append(card("HISTORY", f"SSDC-MS-{i:03d} v{1 + (i * 7) % 5}"))
    for fam in _CALIB_FAMILIES:
        if fam == "average_psf" and release != "qr2":
            fam = "epsf"  # R7 files carry the EPSF table instead of the PSF cube
        cards.append(card("HISTORY", f"[CALIB] {fam} {_uuid('calib', fam, detector)}"))
    return tuple(cards)


def _spacecraft(mjd: float) -> tuple[np.ndarray, np.ndarray]:
    """Geocentric position [km] / velocity [km/s] of a circular polar orbit (illustrative)."""
    phase = 2 * math.pi * ((mjd - survey.T0_MJD) * 86400.0 / ORBIT_PERIOD_S)
    node = math.radians(40.6 + 0.9856 * (mjd - survey.T0_MJD) + 90.0)
    inc = math.radians(97.9)
    p = np.array(
        [math.cos(phase), math.sin(phase) * math.cos(inc), math.sin(phase) * math.sin(inc)]
    )
    v = np.array(
        [-math.sin(phase), math.cos(phase) * math.cos(inc), math.cos(phase) * math.sin(inc)]
    )
    rot = np.array(
        [[math.cos(node), -math.sin(node), 0], [math.sin(node), math.cos(node), 0], [0, 0, 1]]
    )
    speed = 2 * math.pi * ORBIT_RADIUS_KM / ORBIT_PERIOD_S
    return rot @ p * ORBIT_RADIUS_KM, rot @ v * speed


def _expidn(info: survey.ImageInfo) -> int:
    period, large, step = info.obsid.rsplit("_", 2)
    year_week, half_letter = period.split("_")
    year, week = year_week.split("W")
    letter = ord(half_letter[1]) - ord("A") + 1
    return int(f"{year}{week}{half_letter[0]}{letter:02d}{large}{step}{info.detector}")


def wcs_cards(info: survey.ImageInfo) -> list[str]:
    """Primary TAN-SIP WCS + WCS 'A' + WCS 'W' with full-frame CRPIX (shifted per cutout)."""
    cd = info.cd
    cards = [
        card("WCSAXES", 2, "Number of coordinate axes"),
        card("CRPIX1", CRPIX, "Pixel coordinate of reference point"),
        card("CRPIX2", CRPIX, "Pixel coordinate of reference point"),
        card("PC1_1", float(cd[0, 0]), "Coordinate transformation matrix element"),
        card("PC1_2", float(cd[0, 1]), "Coordinate transformation matrix element"),
        card("PC2_1", float(cd[1, 0]), "Coordinate transformation matrix element"),
        card("PC2_2", float(cd[1, 1]), "Coordinate transformation matrix element"),
        card("CDELT1", 1.0, "[deg] Coordinate increment at reference point"),
        card("CDELT2", 1.0, "[deg] Coordinate increment at reference point"),
        card("CUNIT1", "deg", "Units of coordinate increment and value"),
        card("CUNIT2", "deg", "Units of coordinate increment and value"),
        card("CTYPE1", "RA---TAN-SIP", "TAN (gnomonic) projection + SIP distortions"),
        card("CTYPE2", "DEC--TAN-SIP", "TAN (gnomonic) projection + SIP distortions"),
        card("CRVAL1", info.ra0, "[deg] Coordinate value at reference point"),
        card("CRVAL2", info.dec0, "[deg] Coordinate value at reference point"),
        card("LONPOLE", 180.0, "[deg] Native longitude of celestial pole"),
        card("LATPOLE", info.dec0, "[deg] Native latitude of celestial pole"),
        card("RADESYS", "ICRS", "Equatorial coordinate system"),
    ]
    cards += [card(k, v, c) for k, v, c in sip_cards(info.sip)]
    cards += [
        card("WCSAXESA", 2, "Number of coordinate axes"),
        card("WCSNAMEA", "0-based active pixel coordinates"),
        card("CRPIX1A", 1.0, "Pixel coordinate of reference point"),
        card("CRPIX2A", 1.0, "Pixel coordinate of reference point"),
        card("CDELT1A", 1.0, "Coordinate increment at reference point"),
        card("CDELT2A", 1.0, "Coordinate increment at reference point"),
        card("CUNIT1A", "pixel", "Units of coordinate increment and value"),
        card("CUNIT2A", "pixel", "Units of coordinate increment and value"),
        card("CTYPE1A", "LINEAR", "Linear axis"),
        card("CTYPE2A", "LINEAR", "Linear axis"),
        card("CRVAL1A", 0.0, "Coordinate value at reference point"),
        card("CRVAL2A", 0.0, "Coordinate value at reference point"),
        card("LATPOLEA", 90.0, "[deg] Native latitude of celestial pole"),
        card("WCSAXESW", 2, "Two output axes: wavelength and bandwidth"),
        card("WCSNAMEW", "Approximated per-pixel wavelength and bandwidth"),
        card("CNAME1W", "Wavelength"),
        card("CNAME2W", "Bandwidth"),
        card("CRPIX1W", 1.0, "Pixel coordinate of reference point"),
        card("CRPIX2W", 1.0, "Pixel coordinate of reference point"),
        card("CDELT1W", 1, "Coordinate increment at reference point"),
        card("CDELT2W", 1, "Coordinate increment at reference point"),
        card("CUNIT1W", "um", "Units of coordinate increment and value"),
        card("CUNIT2W", "um", "Units of coordinate increment and value"),
        card("CTYPE1W", "WAVE-TAB", "Bilinear lookup table, FITS Paper 3, Sect 6.1"),
        card("CTYPE2W", "WAVE-TAB", "Bilinear lookup table, FITS Paper 3, Sect 6.1"),
        card("CRVAL1W", 1, "Coordinate value at reference point"),
        card("CRVAL2W", 1, "Coordinate value at reference point"),
        card("PV1_3W", 1, "Index of wavelength in VALUES array"),
        card("PV2_3W", 2, "Index of bandwidth in VALUES array"),
        card("PS1_0W", "WCS-WAVE", "Name of lookup table extension"),
        card("PS2_0W", "WCS-WAVE", "Name of lookup table extension"),
        card("PS1_1W", "VALUES", "Name of column with lookup table values"),
        card("PS2_1W", "VALUES", "Name of column with lookup table values"),
        card("PS1_2W", "X", "Name of column with X index values"),
        card("PS2_2W", "Y", "Name of column with Y index values"),
    ]
    return cards


def time_cards(info: survey.ImageInfo) -> list[str]:
    return [
        card("TIMESYS", "UTC", "Time scale"),
        card("MJDREF", 0.0, "[d] MJD of fiducial time"),
        card("DATE-OBS", survey.iso_ms(info.mjd_beg), "Start of observation (UTC)"),
        card("MJD-OBS", info.mjd_beg, "[d] Start of observation"),
        card("DATE-BEG", survey.iso_ms(info.mjd_beg), "Start of exposure (UTC)"),
        card("MJD-BEG", info.mjd_beg, "[d] Start of exposure"),
        card("DATE-AVG", survey.iso_ms(info.mjd_avg), "Midpoint of exposure (UTC)"),
        card("MJD-AVG", info.mjd_avg, "[d] Midpoint of exposure"),
        card("DATE-END", survey.iso_ms(info.mjd_end), "End of exposure (UTC)"),
        card("MJD-END", info.mjd_end, "[d] End of exposure"),
        card("XPOSURE", survey.XPOSURE, "[s] exposure (integration) time"),
        card("TELAPSE", survey.TELAPSE, "[s] elapsed time start to stop"),
    ]


def identity_cards(info: survey.ImageInfo, extname: str, exttype: str, bunit: str) -> list[str]:
    return [
        card("EXTNAME", extname, "extension name"),
        card("EXTTYPE", exttype, "extension type"),
        card("BUNIT", bunit, "physical units of the array values"),
        card("DETECTOR", info.detector, "1-3: SWIR, 4-6: MWIR"),
        card("OBSID", info.obsid, "Observation ID"),
        card("EXPIDN", _expidn(info), "Exposure ID"),
        card("DATE", survey.iso_ms(info.processing_mjd), "HDU creation time (UTC)"),
    ]


def flag_cards() -> list[str]:
    """QR2 bit cards ``MP_<NAME> = bit`` (R7 files use ``r7.mskn_cards`` instead)."""
    return [card(f"MP_{name}", bit, comment) for name, (bit, comment) in FLAG_BITS.items()]


def count_cards(counts: dict[str, int]) -> list[str]:
    return [card(f"L2 N_{name}", int(v)) for name, v in counts.items()]


def image_extra_cards(info: survey.ImageInfo, counts: dict[str, int], omega: tuple) -> list[str]:
    """Survey, spacecraft and QA cards of the IMAGE header (spec §1.3)."""
    lam, beta = survey.vec_to_radec(survey.equ_to_ecl(survey.radec_to_vec(info.ra0, info.dec0)))
    pos0, vel0 = _spacecraft(info.mjd_beg)
    pos1, vel1 = _spacecraft(info.mjd_avg)
    pos2, vel2 = _spacecraft(info.mjd_end)
    sub = pos1 / np.linalg.norm(pos1)
    cards = [card(k, v, c) for k, v, c in _READOUT]
    cards += [
        card("SPS_TARGET", info.sps_target, "Survey planning target id"),
        card("SPS_FLAGS", "all_sky", "Survey planning flags"),
        card("OBS_IN_SBAND", "False", ""),
        card("NON_SURVEY", "False", ""),
        card("SGT_LAT_MIDPT", round(math.degrees(math.asin(sub[2])), 4), "[deg]"),
        card("SGT_LON_MIDPT", round(math.degrees(math.atan2(sub[1], sub[0])) % 360, 4), "[deg]"),
        card("SGT_MIN_GCD2SAA", 41.2, "[deg]"),
        card("SPS_ELON", round(float(lam), 6), "[deg] planned boresight ecliptic longitude"),
        card("SPS_ELAT", round(float(beta), 6), "[deg] planned boresight ecliptic latitude"),
        card("SPS_EPA", info.sps_epa, "PA of FP y axis at planned boresight, E of ecl N"),
        card("L1DQAFLG", "Pass", "Level 1 data quality"),
    ]
    for tag, (p, v) in (("_START", (pos0, vel0)), ("", (pos1, vel1)), ("_END", (pos2, vel2))):
        for axis, val in zip("XYZ", p, strict=True):
            cards.append(card(f"{axis}_SC{tag}", round(float(val), 4), "[km] geocentric"))
        for axis, val in zip("XYZ", v, strict=True):
            cards.append(card(f"V{axis}_SC{tag}", round(float(val), 6), "[km/s] geocentric"))
    cards += [
        card("XYZ_SC_SYSTEM", "GEOCENTER", ""),
        card("VXYZ_SC_SYSTEM", "GEOCENTER", ""),
        card("NBLMPIX", 0, "Number of bloom pixels"),
        card("NHALOPIX", 0, "Number of halo pixels"),
        card("NSNOWPIX", counts.get("SNOW_NS", 0), "Number of snowball pixels"),
        card("PSTHRESH", 0.1, ""),
        card("DETCOORD", "sky", "MWIR pixels flipped on X to match SWIR view"),
        card("OMEGA_MEDIAN", round(omega[0], 4), "[arcsec2] median pixel solid angle"),
        card("OMEGA_STDDEV", round(omega[1], 4), "[arcsec2] pixel solid angle std"),
        card("FINAST", 0, "Final status"),
        card("DAXIS", 2, "Dispersion axis"),
        card("CONTRAST", 1.0, ""),
        card("MATCH_NSTARS", 400 + info.slew % 300, ""),
        card("QS_NMATCH_VAR", 0.02, ""),
        card("ASTRONETSOLVED", True, ""),
        card("PXSRCMSK", round(100.0 * counts["SOURCE"] / NPIX**2, 2), "[%] SOURCE pixels"),
        card("PSF_FWHM", round(detector_fwhm_arcsec(info.detector), 4), "[arcsec] median"),
        card("L2DQAFLG", "Pass", "Level 2 data quality"),
        card("REFCAT.VERSION", "SPHEREx_RefCat_v0.73", ""),
    ]
    return cards


def sim_cards(simflux: float, simwave: float, simsrc: str, xpix, ypix, zscale, version) -> list:
    """Injected-truth cards (read only by the simulator, validation and tests)."""
    return [
        card("SIMFLUX", float(simflux), "[uJy] true flux of SIMSRC in this image"),
        card("SIMWAVE", float(simwave), "[um] CWAVE at SIMSRC parent pixel"),
        card("SIMSRC", simsrc, "truth source nearest the cutout centre"),
        card("SIMXPIX", float(xpix), "0-based parent x of SIMSRC"),
        card("SIMYPIX", float(ypix), "0-based parent y of SIMSRC"),
        card("SIMZSCAL", float(zscale), "true zodi / ZODI model"),
        card("SIMVERS", version, "simulator version"),
    ]


def psf_cards(erratum: bool) -> list[str]:
    """PSF extension header (after the structure cards), spec §1.6. ``erratum`` writes the
    pre-6.5.6 transposed zone order (data stay x-fast)."""
    cards = [
        card("WCSAXES", 2, "Number of coordinate axes"),
        card("CRPIX1", 51.0, "Pixel coordinate of reference point"),
        card("CRPIX2", 51.0, "Pixel coordinate of reference point"),
        card("CDELT1", 0.615, "[arcsec] Pixel scale"),
        card("CDELT2", 0.615, "[arcsec] Pixel scale"),
        card("CUNIT1", "arcsec", "Units of coordinate increment and value"),
        card("CUNIT2", "arcsec", "Units of coordinate increment and value"),
        card("CTYPE1", "XANG", "Coordinate type code"),
        card("CTYPE2", "YANG", "Coordinate type code"),
        card("CRVAL1", 0.0, "[arcsec] Coordinate value at reference point"),
        card("CRVAL2", 0.0, "[arcsec] Coordinate value at reference point"),
        card("CNAME1", "Relative offset in detector X from center of PSF, in arcseconds"),
        card("CNAME2", "Relative offset in detector Y from center of PSF, in arcseconds"),
        card("MJDREF", 0.0, "[d] MJD of fiducial time"),
        card("OVERSAMP", 10),
    ]
    ctr = psf_zone_centers()
    wid = psf_zone_widths()
    for k in range(PSF_NZONE * PSF_NZONE):
        if erratum:
            ix, iy = k // PSF_NZONE, k % PSF_NZONE
        else:
            ix, iy = k % PSF_NZONE, k // PSF_NZONE
        n = k + 1
        cards += [
            card(f"XCTR_{n}", round(float(ctr[ix]), 6), f"X pixel at center of zone ({ix}, {iy})"),
            card(f"YCTR_{n}", round(float(ctr[iy]), 6), f"Y pixel at center of zone ({ix}, {iy})"),
            card(
                f"XWID_{n}",
                round(float(wid[ix]), 6),
                f"[pixel] Zone ({ix}, {iy}) width along X axis",
            ),
            card(
                f"YWID_{n}",
                round(float(wid[iy]), 6),
                f"[pixel] Zone ({ix}, {iy}) width along Y axis",
            ),
        ]
    cards += [card("BUNIT", ""), card("EXTNAME", "PSF", "extension name")]
    return cards
