"""Calibration products of the simulated archive (spec §4, §8.6), as FITS bytes.

Products (``calibration_bytes``): ``spectral_wcs`` (CWAVE, CBAND, WCS-WAVE of the release),
``solid_angle_pixel_map`` (IMAGE; sapm v3 equals v2 in value), ``epsf`` (QR3: primary with the
lattice cards + the EPSF table the L2 files carry) and ``l3_flux_corrections`` (QR3: IMAGE =
``sky.flux_correction_map``, the factors QR2 pixels were divided by). Tokens, file names and
ids are ``spxflow.format``'s.
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from spxflow.format import (
    CALIBRATION_TOKENS,
    DETECTORS,
    EPSF_LATTICE,
    EPSF_SIZE,
    RELEASES,
    calibration_token,
)
from spxflow.sim import r7, sky, spectral_model
from spxflow.sim.fitsout import card, data_bytes, header_bytes, image_structure_cards
from spxflow.sim.fitsout import primary_cards as _primary_cards
from spxflow.sim.render import wcs_wave_bytes

CAL_VERSION = {"qr2": RELEASES["qr2"].version, "qr3": r7.EPSF_CAL_VERSION}


def _image_ext(name: str, arr: np.ndarray, bunit: str, comment: str, detector: int) -> bytes:
    cards = image_structure_cards(arr) + [
        card("EXTNAME", name, "extension name"),
        card("BUNIT", bunit, comment),
        card("DETECTOR", int(detector)),
    ]
    return header_bytes(cards) + data_bytes(arr)


def _token_date(token: str) -> str:
    """DATE card of a product: noon of the YYYY-DDD day at the end of its token."""
    year, day = (int(v) for v in token.rsplit("-", 2)[-2:])
    t = dt.datetime(year, 1, 1, 12) + dt.timedelta(days=day - 1)
    return t.strftime("%Y-%m-%dT%H:%M:%S.000")


def check_product(release: str, family: str, detector) -> int:
    """Validated detector of (release, family, detector); ValueError names what is wrong."""
    if release not in CALIBRATION_TOKENS:
        raise ValueError(f"unknown release {release!r}; known: {sorted(CALIBRATION_TOKENS)}")
    if family not in CALIBRATION_TOKENS[release]:
        raise ValueError(
            f"unknown calibration family {family!r} in release {release!r}; "
            f"known: {sorted(CALIBRATION_TOKENS[release])}"
        )
    if isinstance(detector, bool) or detector not in DETECTORS:
        raise ValueError(f"calibration detector must be 1..6, got {detector!r}")
    return int(detector)


def calibration_bytes(release: str, family: str, detector: int) -> bytes:
    """FITS bytes of one calibration product (ValueError for an unknown product)."""
    det = check_product(release, family, detector)
    token = calibration_token(release, family, det)
    extra = [
        card("DETECTOR", det),
        card("CALFAM", family),
        card("CALTOKEN", token),
        card("DATE", _token_date(token), "file creation date (UTC)"),
    ]
    if family == "epsf":
        nbx, nby = EPSF_LATTICE[det]
        extra += [
            card("NBINX", nbx, "number of zones along x"),
            card("NBINY", nby, "number of zones along y"),
            card("NBINS", nbx * nby, "number of zones"),
            card("PSFNX", EPSF_SIZE, "ePSF array size along x"),
            card("PSFNY", EPSF_SIZE, "ePSF array size along y"),
            card("REFERENC", "doi", ""),
            card("COMMENT", "Combined ePSF bin product"),
        ]
    parts = [header_bytes(_primary_cards(CAL_VERSION[release], extra))]
    if family == "spectral_wcs":
        cwave, cband = spectral_model.cwave_cband(det, release)
        parts.append(_image_ext("CWAVE", cwave, "um", "micron", det))
        parts.append(_image_ext("CBAND", cband, "um", "micron", det))
        parts.append(wcs_wave_bytes(det, release))
    elif family == "solid_angle_pixel_map":
        parts.append(
            _image_ext("IMAGE", sky.solid_angle_map(det), "arcsec2", "pixel solid angle", det)
        )
    elif family == "epsf":
        parts.append(r7.epsf_hdu_bytes(det))
    else:  # l3_flux_corrections
        parts.append(_image_ext("IMAGE", sky.flux_correction_map(det), "", "R7 / pre-R7 gain", det))
    return b"".join(parts)
