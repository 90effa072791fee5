"""Minimal, fast and deterministic FITS writer (header cards + big-endian data blocks).

Why not ``astropy.io.fits.HDUList.writeto``: a cutout is written ~50 times per second and most
of it (PSF cube, WCS-WAVE, constant cards) is identical for a detector, so the bytes of those
parts are built once and cached. Card images are formatted as ``astropy.io.fits.Card`` formats
them (byte for byte; the common cards by ``_fast_card``, the rest by ``Card`` itself) so the
text is standard; the result reads cleanly with astropy and fitsio.
"""

from __future__ import annotations

import functools
import math
import re
import warnings

import numpy as np
from astropy.io import fits
from astropy.io.fits.card import _format_value  # astropy's value formatter, no config lookups
from astropy.io.fits.verify import VerifyWarning

BLOCK = 2880


def card(key: str, value=None, comment: str = "") -> str:
    """80-character card image. Keys longer than 8 characters or with spaces become HIERARCH."""
    if isinstance(value, float) and (value == 0.0 or value != value):
        return _card(key, value, comment)  # the cache cannot tell -0.0 from 0.0, nor NaNs apart
    return _cached_card(key, value, comment)


_FAST_KEY = re.compile(r"[A-Z0-9_-]{1,8}\Z")  # a standard keyword, never HIERARCH or RVKC
_PRINTABLE = re.compile(r"[ -~]*\Z")  # what Card accepts in values and comments
_SPECIAL_KEYS = frozenset(("COMMENT", "HISTORY", "CONTINUE", "END"))


def _fast_card(key: str, value, comment: str) -> str | None:
    """The image ``fits.Card(key, value, comment).image`` would produce, built directly for a
    standard key with a bool/int/finite float/short str value and a str comment; None for
    anything else (the caller falls back to ``fits.Card``).

    Why: a measurement window's header has ~20 cards with unique float values, and ``Card``
    costs ~0.1 ms each, mostly astropy config lookups. This mirrors ``Card._format_image`` for
    the plain case: ``KEYWORD= <_format_value(value)> / comment`` padded to 80, an over-long
    card cut at 80 (comment truncated) unless it is a string needing CONTINUE cards.
    tests/test_sim_fitsout.py checks it against ``fits.Card`` on many values."""
    kind = type(value)  # exact types: subclasses (np.float64, enums) take the Card path
    if kind is float:
        if not math.isfinite(value):
            return None  # Card raises
    elif kind is str:
        if ": " in value or not _PRINTABLE.match(value):
            return None  # possible record-valued card, or Card raises
    elif kind is not int and kind is not bool:
        return None
    if (
        type(comment) is not str
        or key in _SPECIAL_KEYS
        or not _FAST_KEY.match(key)
        or not _PRINTABLE.match(comment)
        or comment.isspace()  # Card drops an all-blank comment (strip_header_whitespace)
    ):
        return None
    text = _format_value(value)
    image = f"{key:8}= {text} / {comment}" if comment else f"{key:8}= {text}"
    if len(image) <= 80:
        return f"{image:80}"
    if kind is str and len(text) > 70:
        return None  # a long string: CONTINUE cards
    return image[:80]


def _card(key: str, value, comment: str) -> str:
    fast = _fast_card(key, value, comment)
    if fast is not None:
        return fast
    if key in ("COMMENT", "HISTORY"):
        return fits.Card(key, value).image
    if len(key) > 8 or " " in key:
        key = f"HIERARCH {key}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VerifyWarning)  # over-long comments are truncated
        return fits.Card(key, value, comment).image


# Why: astropy formats ~0.06 ms per card and each cutout writes ~60-80 per-cutout cards whose
# values (structure cards, CRPIX of a box, compression cards) mostly repeat; ``typed`` keeps
# True/1/1.0 apart. A hit is still ~3x cheaper than ``_fast_card``.
_cached_card = functools.lru_cache(maxsize=65536, typed=True)(_card)


def header_bytes(cards: list[str]) -> bytes:
    text = "".join(cards) + "END".ljust(80)
    pad = (-len(text)) % BLOCK
    return (text + " " * pad).encode("ascii")


def data_bytes(array: np.ndarray) -> bytes:
    """Big-endian data padded with zeros to a multiple of 2880 bytes."""
    arr = np.ascontiguousarray(array)
    raw = arr.astype(arr.dtype.newbyteorder(">"), copy=False).tobytes()
    return raw + b"\0" * ((-len(raw)) % BLOCK)


_BITPIX = {np.dtype(np.float32): -32, np.dtype(np.int32): 32, np.dtype(np.float64): -64}


def primary_cards(version: str, extra: list[str] | None = None) -> list[str]:
    return [
        card("SIMPLE", True, "conforms to FITS standard"),
        card("BITPIX", 8, "array data type"),
        card("NAXIS", 0, "number of array dimensions"),
        card("EXTEND", True),
        card("VERSION", version, "SSDC pipelines version"),
        *(extra or []),
    ]


def image_structure_cards(array: np.ndarray) -> list[str]:
    """XTENSION ... GCOUNT cards of an IMAGE extension for ``array`` (numpy axis order)."""
    cards = [
        card("XTENSION", "IMAGE", "Image extension"),
        card("BITPIX", _BITPIX[array.dtype], "array data type"),
        card("NAXIS", array.ndim, "number of array dimensions"),
    ]
    for i, n in enumerate(reversed(array.shape), start=1):
        cards.append(card(f"NAXIS{i}", int(n)))
    cards += [
        card("PCOUNT", 0, "number of parameters"),
        card("GCOUNT", 1, "number of groups"),
    ]
    return cards


def image_hdu_bytes(array: np.ndarray, cards: list[str]) -> bytes:
    """Bytes of an IMAGE extension: structure cards + ``cards`` + data."""
    return header_bytes(image_structure_cards(array) + cards) + data_bytes(array)


def wcs_wave_hdu_bytes(x_tab: np.ndarray, y_tab: np.ndarray, values: np.ndarray) -> bytes:
    """The WCS-WAVE BINTABLE (1 row: X nJ, Y mJ, VALUES (2, nx, ny) E), spec §1.8."""
    nx, ny = len(x_tab), len(y_tab)
    cards = [
        card("XTENSION", "BINTABLE", "binary table extension"),
        card("BITPIX", 8, "array data type"),
        card("NAXIS", 2, "number of array dimensions"),
        card("NAXIS1", 4 * (nx + ny + 2 * nx * ny), "length of dimension 1"),
        card("NAXIS2", 1, "length of dimension 2"),
        card("PCOUNT", 0, "number of group parameters"),
        card("GCOUNT", 1, "number of groups"),
        card("TFIELDS", 3, "number of table fields"),
        card("TTYPE1", "X"),
        card("TFORM1", f"{nx}J"),
        card("TDIM1", f"({nx})"),
        card("TTYPE2", "Y"),
        card("TFORM2", f"{ny}J"),
        card("TDIM2", f"({ny})"),
        card("TTYPE3", "VALUES"),
        card("TFORM3", f"{2 * nx * ny}E"),
        card("TDIM3", f"(2,{nx},{ny})"),
        card("EXTNAME", "WCS-WAVE", "extension name"),
    ]
    row = (
        np.asarray(x_tab, dtype=">i4").tobytes()
        + np.asarray(y_tab, dtype=">i4").tobytes()
        + np.asarray(values, dtype=">f4").reshape(ny, nx, 2).tobytes()
    )
    return header_bytes(cards) + row + b"\0" * ((-len(row)) % BLOCK)
