"""Simulator FITS writer: the fast card path is byte-identical to ``astropy.io.fits.Card``."""

from __future__ import annotations

import struct
import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.io.fits.verify import VerifyWarning

from spxflow.sim import fitsout

_KEY_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"


def _astropy_image(key: str, value, comment: str) -> str:
    """What ``fitsout.card`` wrote before the fast path (Card for everything)."""
    if key in ("COMMENT", "HISTORY"):
        return fits.Card(key, value).image
    if len(key) > 8 or " " in key:
        key = f"HIERARCH {key}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VerifyWarning)
        return fits.Card(key, value, comment).image


def _floats(rng: np.random.Generator) -> list[float]:
    bits = rng.integers(0, 2**63, 3000, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, 3000)
    raw = [struct.unpack("<d", struct.pack("<Q", int(b)))[0] for b in bits]  # every exponent
    mags = 10.0 ** rng.uniform(-325, 308.2, 3000) * rng.choice([-1.0, 1.0], 3000)
    subnormal = [
        struct.unpack("<d", struct.pack("<Q", int(m)))[0] for m in rng.integers(1, 2**52, 300)
    ]
    special = [0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1.7976931348623157e308,
               -1.7976931348623157e308, 1e16, 1e-5, 1e-4, 0.1, 1 / 3, -2 / 3, 1e21, 1e22,
               123456789012345678.0, 1020.5, -1019.5, 0.615, 1e100]  # fmt: skip
    rounded = [
        round(float(v), int(d)) for v, d in zip(mags[:500], rng.integers(0, 8, 500), strict=True)
    ]
    out = raw + mags.tolist() + subnormal + special + rounded
    return [v for v in out if np.isfinite(v)]


def _ints(rng: np.random.Generator) -> list[int]:
    small = rng.integers(-(2**63), 2**63 - 1, 500, dtype=np.int64).tolist()
    big = [
        int(x) * 10 ** int(k)
        for x, k in zip(rng.integers(-999, 999, 200), rng.integers(0, 40, 200), strict=True)
    ]
    return [0, 1, -1, 2040, 10**19, 10**20, -(10**19), 10**60] + small + big


def _strings(rng: np.random.Generator) -> list[str]:
    chars = [chr(c) for c in range(32, 127)]
    out = ["", " ", "'", "''", "a'b", "O'Neil's", "  lead", "trail  ", "MJy / sr", "a: 1", "x"]
    for n in rng.integers(0, 80, 400):
        out.append("".join(rng.choice(chars, n)))
    out += ["'" * 40, "q" * 68, "q" * 69, "q" * 70, "'" * 34 + "x"]
    return out


def _comments(rng: np.random.Generator) -> list[str]:
    chars = [chr(c) for c in range(32, 127)]
    out = ["", " ", "   ", "[deg] Coordinate value at reference point", "trailing  ", "/ slash"]
    for n in rng.integers(0, 90, 60):
        out.append("".join(rng.choice(chars, n)))
    return out + ["c" * 47, "c" * 48, "c" * 49, "c" * 70]


def _keys(rng: np.random.Generator) -> list[str]:
    out = ["A", "NAXIS1", "CRPIX1A", "DATE-OBS", "A_0_0", "SIMFLUX", "PV1_3W", "XCTR_121"]
    for n in rng.integers(1, 9, 60):
        out.append("".join(rng.choice(list(_KEY_CHARS), n)))
    return out


def test_fast_card_is_byte_identical_to_astropy_card():
    rng = np.random.default_rng(2024)
    keys, comments = _keys(rng), _comments(rng)
    values = [True, False] + _floats(rng) + _ints(rng) + _strings(rng)
    fast = 0
    for i, value in enumerate(values):
        key = keys[i % len(keys)]
        comment = comments[(i * 7) % len(comments)]
        got = fitsout._fast_card(key, value, comment)
        want = _astropy_image(key, value, comment)
        if got is not None:
            fast += 1
            assert got == want, (key, value, comment)
            assert len(got) == 80
        assert fitsout._card(key, value, comment) == want, (key, value, comment)
    assert fast > 0.95 * len(values)  # only long strings, ": " strings and blank comments fall back


@pytest.mark.parametrize(
    ("key", "value", "comment"),
    [
        ("L2 N_SOURCE", 5, ""),  # HIERARCH
        ("REFCAT.VERSION", "SPHEREx_RefCat_v0.73", ""),
        ("OMEGA_MEDIAN", 38.1234, "[arcsec2] median pixel solid angle"),
        ("COMMENT", "TELAPSE starts prior to MJD-BEG: includes discarded frames.", ""),
        ("HISTORY", "SSDC-MS-001 v2", ""),
        ("CNAME1", "Relative offset in detector X from center of PSF, in arcseconds", ""),
        ("WCSNAMEW", "x" * 90, "long string: CONTINUE"),
        ("lower", 1.5, "lower-case key"),
        ("DP1", "AXIS.1: 2", "record-valued"),
        ("NPFLOAT", np.float64(0.1), "numpy scalar"),
        ("NPINT", np.int32(7), ""),
        ("NPBOOL", np.bool_(True), ""),
        ("BLANKC", 1.0, "   "),
        ("NEGZERO", -0.0, "signed zero, uncached"),
    ],
)
def test_card_falls_back_to_astropy_for_everything_else(key, value, comment):
    assert fitsout.card(key, value, comment) == _astropy_image(key, value, comment)


def test_card_rejects_what_astropy_rejects():
    for value in (float("nan"), float("inf")):
        assert fitsout._fast_card("BAD", value, "") is None
        with pytest.raises(ValueError):
            fitsout.card("BAD", value)
    with pytest.raises(ValueError):
        fitsout.card("BAD", "tab\there")
