"""Parts of the R7 (QR3/DR1) Level-2 layout (spec §8.2-§8.4): the EPSF table and the RICE_1
tile-compressed FLAGS with ``MSKNnnnn`` bit-name cards.

EPSF table (per detector, cached; the L2 extension and the ``epsf`` calibration product carry the
same bytes). Row ``k = BINY * NBINX + BINX`` (x fastest) is zone (BINX, BINY) of the
``format.EPSF_LATTICE`` grid (21x21, D3 11x41), centred at ``format.epsf_zone_centers``. Its
``EPSF`` array (33x33 float64, numpy ``[y, x]``) is an *effective* PSF at 5x oversampling:

    EPSF[i, j] ∝ ∫ over the native pixel centred at offset ((j-16)/5, (i-16)/5) px of the
                 continuous optical PSF of the zone (``psf_model.epsf_zone_params``)

computed with ``render_analytic_native`` (one 11x11 stamp per 5x5 sub-pixel phase,
interleaved) and normalised to sum 1 on the 33x33 grid (native-pixel fraction = 25 x sample).
Because QR3 pixels render every source with the same smooth zone PSF, point-sampling the table
at native pixel centres reproduces them; integrating it over pixels again does not.

FLAGS: a BINTABLE with one RICE_1 tile per image row (``ZTILE1`` = width, ``ZTILE2`` = 1,
BLOCKSIZE 32, BYTEPIX 4), encoded with astropy's own codec so astropy's ``CompImageHDU``
decodes it bit-exactly. Bit names are ``MSKNnnnn = 'NAME'`` cards; there are no ``MP_*`` cards.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from astropy.io.fits.hdu.compressed._codecs import Rice1  # private; checked in the R7 tests

from spxflow.format import (
    EPSF_CENTER,
    EPSF_LATTICE,
    EPSF_OVERSAMP,
    EPSF_SIZE,
    FLAG_BITS,
    NPIX,
    epsf_zone_centers,
)
from spxflow.sim import diskcache, hashrng
from spxflow.sim.fitsout import BLOCK, card, header_bytes
from spxflow.sim.psf_model import (
    STAMP_SIZE,
    epsf_zone_params,
    render_analytic_native,
    render_psf_native,
)
from spxflow.sim.spectral_model import wave_band_parent0

EPSF_CAL_VERSION = "7.0.0b6.post2+g6b3a1a7"  # calibration files carry dev tags (§8.0)
EPSF_SOURCE_DATE = "20260507"  # 'Calibration source file: epsf_<det>_20260507.fits'
RICE_BLOCKSIZE = 32
RICE_BYTEPIX = 4
EPSF_DTYPE = np.dtype(
    [
        ("BINX", ">i4"),
        ("BINY", ">i4"),
        ("XCENTER", ">f4"),
        ("YCENTER", ">f4"),
        ("XWIDTH", ">f4"),
        ("YWIDTH", ">f4"),
        ("NSTAR", ">i4"),
        ("NEFF_MEAN", ">f4"),
        ("CWAVE", ">f4"),
        ("CBAND", ">f4"),
        ("EPSF", ">f8", (EPSF_SIZE, EPSF_SIZE)),
    ]
)
_EPSF_UNITS = {"XCENTER": "pixel", "YCENTER": "pixel", "XWIDTH": "pixel", "YWIDTH": "pixel"}
_EPSF_UNITS |= {"CWAVE": "um", "CBAND": "um"}
_EPSF_FORMS = {"i4": "J", "f4": "E"}


def _phase_maps() -> tuple[np.ndarray, np.ndarray]:
    """For each ePSF index j: (sub-pixel phase p in -2..2, native stamp column c) such that
    offset (j-16)/5 = (c - 5) + p/5, i.e. the stamp rendered with dx = -p/5."""
    d = np.arange(EPSF_SIZE) - EPSF_CENTER
    p = (d + 2) % EPSF_OVERSAMP - 2
    c = (d - p) // EPSF_OVERSAMP + STAMP_SIZE // 2
    return p, c


def _interleave(render) -> np.ndarray:
    """33x33 ePSF (sum 1) from ``render(dx, dy)`` 11x11 pixel stamps at the 5x5 phases."""
    p, c = _phase_maps()
    stamps = np.empty((EPSF_OVERSAMP, EPSF_OVERSAMP, STAMP_SIZE, STAMP_SIZE))
    for py in range(-2, 3):
        for px in range(-2, 3):
            stamps[py + 2, px + 2] = render(-px / EPSF_OVERSAMP, -py / EPSF_OVERSAMP)
    out = stamps[p[:, None] + 2, p[None, :] + 2, c[:, None], c[None, :]]
    return out / out.sum()


def epsf_of_plane(plane: np.ndarray) -> np.ndarray:
    """The 33x33 ePSF (float64, sum 1) of an optical PSF plane (see module docstring)."""
    return _interleave(lambda dx, dy: render_psf_native(plane, dx, dy, STAMP_SIZE))


def epsf_of_params(params) -> np.ndarray:
    """The 33x33 ePSF (float64, sum 1) of the continuous zone PSF QR3 pixels are drawn with."""
    return _interleave(lambda dx, dy: render_analytic_native(params, dx, dy, STAMP_SIZE))


# The code epsf_table's values come from (its key in the disk cache; see spxflow.sim.diskcache).
_EPSF_SOURCES = [
    Path(__file__),
    *(Path(__file__).with_name(n) for n in ("psf_model.py", "spectral_model.py", "hashrng.py")),
    Path(__file__).parents[1] / "format.py",
]


@functools.cache
def epsf_table(detector: int) -> np.ndarray:
    """The detector's EPSF table as a big-endian structured array (rows x-fast), read-only;
    from the disk cache when ``diskcache.set_dir`` was given one (2.5-4 s to build)."""
    version = diskcache.version_of(_EPSF_SOURCES)
    return diskcache.cached("epsf_table", detector, version, lambda: _build_epsf_table(detector))


def _build_epsf_table(detector: int) -> np.ndarray:
    nbx, nby = EPSF_LATTICE[detector]
    xc, yc = epsf_zone_centers(nbx), epsf_zone_centers(nby)
    rows = np.zeros(nbx * nby, dtype=EPSF_DTYPE)
    key = hashrng.key_of("epsf_nstar", detector)
    nstar = 60 + (hashrng.hash64(key, 0, np.arange(len(rows))) % np.uint64(120)).astype(np.int64)
    for iy in range(nby):
        for ix in range(nbx):
            k = iy * nbx + ix
            epsf = epsf_of_params(epsf_zone_params(detector, ix, iy))
            # N_eff of a pixel-centred source: 1 / sum(native fraction^2), fraction = 25 x sample.
            native = EPSF_OVERSAMP**2 * epsf[EPSF_CENTER % 5 :: 5, EPSF_CENTER % 5 :: 5]
            wave, band = wave_band_parent0(detector, xc[ix], yc[iy], "qr3")
            rows[k] = (
                ix,
                iy,
                xc[ix],
                yc[iy],
                NPIX / nbx,
                NPIX / nby,
                nstar[k],
                1.0 / float((native**2).sum()),
                float(wave),
                float(band),
                epsf,
            )
    return rows


def epsf_header_cards(detector: int, nrows: int) -> list[str]:
    cards = [
        card("XTENSION", "BINTABLE", "binary table extension"),
        card("BITPIX", 8, "array data type"),
        card("NAXIS", 2, "number of array dimensions"),
        card("NAXIS1", EPSF_DTYPE.itemsize, "length of dimension 1"),
        card("NAXIS2", nrows, "length of dimension 2"),
        card("PCOUNT", 0, "number of group parameters"),
        card("GCOUNT", 1, "number of groups"),
        card("TFIELDS", len(EPSF_DTYPE.names), "number of table fields"),
    ]
    for n, name in enumerate(EPSF_DTYPE.names, start=1):
        sub = EPSF_DTYPE[name]
        cards.append(card(f"TTYPE{n}", name))
        if sub.shape:
            cards.append(card(f"TFORM{n}", f"{EPSF_SIZE * EPSF_SIZE}D"))
            cards.append(card(f"TDIM{n}", f"({EPSF_SIZE},{EPSF_SIZE})"))
        else:
            cards.append(card(f"TFORM{n}", _EPSF_FORMS[sub.str[1:]]))
        if name in _EPSF_UNITS:
            cards.append(card(f"TUNIT{n}", _EPSF_UNITS[name]))
    cards += [
        card("EXTNAME", "EPSF", "extension name"),
        card("DETECTOR", str(detector), "detector number"),  # a string here (§8.8-3)
        card("OVSMPX", EPSF_OVERSAMP, "oversampling factor in x"),
        card("OVSMPY", EPSF_OVERSAMP, "oversampling factor in y"),
        card("MAXIT", 10, "EPSFBuilder maximum iterations"),
        card("SMOOTH", "quartic", "EPSFBuilder smoothing kernel"),
        card("JUNKCLN", 1),
        card("KEEPNAT", 3.5),
        card("KEEPOS", 17.5),
        card("DETCOORD", "sky", "MWIR pixels flipped on X to match SWIR view"),
        card("ORDERING", "x-fast then y", "row = BINY*NBINX + BINX"),
        card("BINSRC", "filename"),
        card("GEOMSRC", "uniform active-pixel tiling"),
        card("NEFFSRC", "stats table exact filename match"),
        card("WVMSRC", "stats table exact filename match"),
        card("CWAVESRC", "spectral_wcs CWAVE"),
        card("CBANDSRC", "spectral_wcs CBAND"),
        card("HISTORY", "Headers standardized by SSDC on 2026-07-10"),
    ]
    if detector != 3:  # the D3 v2 product has no such card (§8.4)
        name = f"epsf_{detector}_{EPSF_SOURCE_DATE}.fits"
        cards.append(card("HISTORY", f"Calibration source file: {name}"))
    return cards


@functools.cache
def epsf_hdu_bytes(detector: int) -> bytes:
    """Bytes of the EPSF BINTABLE HDU (L2 extension and calibration product alike)."""
    table = epsf_table(detector)
    raw = table.tobytes()
    return header_bytes(epsf_header_cards(detector, len(table))) + raw + b"\0" * (-len(raw) % BLOCK)


def mskn_cards() -> list[str]:
    """R7 bit-name cards ``MSKNnnnn = 'NAME'`` (bit number in the keyword), by bit."""
    bits = sorted(FLAG_BITS.items(), key=lambda kv: kv[1][0])
    return [card(f"MSKN{bit:04d}", name, comment) for name, (bit, comment) in bits]


def rice_flags_hdu_bytes(flags: np.ndarray, cards: list[str]) -> bytes:
    """FLAGS as a RICE_1 tile-compressed image in a BINTABLE, one tile per row; ``cards`` are
    the image header cards (EXTNAME first) that follow the compression cards."""
    flags = np.ascontiguousarray(flags, dtype=np.int32)
    h, w = flags.shape
    codec = Rice1(blocksize=RICE_BLOCKSIZE, bytepix=RICE_BYTEPIX, tilesize=w)
    tiles = [codec.encode(row) for row in flags]
    sizes = np.array([len(t) for t in tiles], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    descriptors = np.stack([sizes, offsets], axis=1).astype(">i4").tobytes()
    heap = b"".join(tiles)
    head = [
        card("XTENSION", "BINTABLE", "binary table extension"),
        card("BITPIX", 8, "array data type"),
        card("NAXIS", 2, "number of array dimensions"),
        card("NAXIS1", 8, "width of table in bytes"),
        card("NAXIS2", h, "number of rows in table"),
        card("PCOUNT", len(heap), "number of group parameters"),
        card("GCOUNT", 1, "number of groups"),
        card("TFIELDS", 1, "number of fields in each row"),
        card("TTYPE1", "COMPRESSED_DATA", "label for field 1"),
        card("TFORM1", f"1PB({int(sizes.max())})", "data format of field: variable length array"),
        card("ZIMAGE", True, "extension contains compressed image"),
        card("ZTENSION", "IMAGE", "Image extension"),
        card("ZBITPIX", 32, "data type of original image"),
        card("ZNAXIS", 2, "dimension of original image"),
        card("ZNAXIS1", w, "length of original image axis"),
        card("ZNAXIS2", h, "length of original image axis"),
        card("ZPCOUNT", 0, "number of parameters"),
        card("ZGCOUNT", 1, "number of groups"),
        card("ZTILE1", w, "size of tiles to be compressed"),
        card("ZTILE2", 1, "size of tiles to be compressed"),
        card("ZCMPTYPE", "RICE_1", "compression algorithm"),
        card("ZNAME1", "BLOCKSIZE", "compression block size"),
        card("ZVAL1", RICE_BLOCKSIZE, "pixels per block"),
        card("ZNAME2", "BYTEPIX", "bytes per pixel (1, 2, 4, or 8)"),
        card("ZVAL2", RICE_BYTEPIX, "bytes per pixel (1, 2, 4, or 8)"),
    ]
    data = descriptors + heap
    return header_bytes(head + cards) + data + b"\0" * (-len(data) % BLOCK)
