"""The lean reader equals astropy on R7 (QR3/DR1) cutouts: RICE_1 FLAGS, EPSF table, MSKN bits.

The R7 files are written here with astropy from QR2 cutouts of the simulated archive (spec §8.2:
IMAGE, FLAGS as a RICE_1 CompImageHDU with MSKN cards, VARIANCE, ZODI, EPSF BINTABLE, WCS-WAVE),
so the reader is checked against an independent writer and an independent reader.
"""

from __future__ import annotations

import gzip
import inspect
import pickle
import struct

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from spxflow.archive.simulated import SimulatedArchive
from spxflow.format import (
    EPSF_LATTICE,
    EPSF_SIZE,
    FLAG_BITS,
    NPIX,
    epsf_zone,
    epsf_zone_centers,
    flag_mask,
    parse_level2_file_name,
)
from spxflow.photometry.cutout import CutoutError, read_cutout
from spxflow.photometry.epsf import EpsfError, EpsfLibrary
from spxflow.photometry.fitsread import FitsReadError, Header, open_buffer, read_rows, scan
from spxflow.photometry.rice import read_compressed_image, read_compressed_rows
from spxflow.photometry.settings import PhotometrySettings

RA, DEC = 150.25, 45.30
SIZE_ARCSEC = 200.0  # ~33x33 px: enough rows for row windows and several tiles
SPEC_BITS = {name: bit for name, (bit, _) in FLAG_BITS.items()}


# --- writers (astropy) ---------------------------------------------------------------------
def epsf_array(k: int) -> np.ndarray:
    """A distinct, off-centre Gaussian per row, so a wrong row or a transposed read shows."""
    yy, xx = np.mgrid[0:EPSF_SIZE, 0:EPSF_SIZE].astype(float)
    s = 2.5 + 0.004 * k
    a = np.exp(-((xx - 16.0 - 0.3) ** 2 / (2 * s * s) + (yy - 16.0 + 0.2) ** 2 / (3 * s * s)))
    return a / a.sum()


def epsf_table(nbinx: int, nbiny: int, detector: int) -> fits.BinTableHDU:
    """The §8.4 EPSF table: x-fast rows over a uniform tiling of [-0.5, 2039.5]."""
    iy, ix = np.divmod(np.arange(nbinx * nbiny), nbinx)
    n = len(ix)
    cols = [
        fits.Column("BINX", "J", array=ix),
        fits.Column("BINY", "J", array=iy),
        fits.Column("XCENTER", "E", unit="pixel", array=epsf_zone_centers(nbinx)[ix]),
        fits.Column("YCENTER", "E", unit="pixel", array=epsf_zone_centers(nbiny)[iy]),
        fits.Column("XWIDTH", "E", unit="pixel", array=np.full(n, NPIX / nbinx)),
        fits.Column("YWIDTH", "E", unit="pixel", array=np.full(n, NPIX / nbiny)),
        fits.Column("NSTAR", "J", array=100 + np.arange(n) % 37),
        fits.Column("NEFF_MEAN", "E", array=np.full(n, 3.37)),
        fits.Column("CWAVE", "E", unit="um", array=np.linspace(1.1, 1.6, n)),
        fits.Column("CBAND", "E", unit="um", array=np.full(n, 0.03)),
        fits.Column(
            "EPSF", f"{EPSF_SIZE**2}D", dim=f"({EPSF_SIZE},{EPSF_SIZE})",
            array=np.stack([epsf_array(k) for k in range(n)]),
        ),
    ]  # fmt: skip
    hdu = fits.BinTableHDU.from_columns(cols, name="EPSF")
    h = hdu.header
    h["DETECTOR"] = str(detector)  # a string in the EPSF header (§8.8-3)
    h["OVSMPX"] = h["OVSMPY"] = 5
    h["DETCOORD"] = "sky"
    h["ORDERING"] = "x-fast then y"
    return hdu


def write_epsf_library(path, detector: int, lattice=None):
    nbinx, nbiny = lattice or EPSF_LATTICE[detector]
    primary = fits.PrimaryHDU()
    cards = {"DETECTOR": detector, "VERSION": "7.0.0b6.post2+g6b3a1a7", "NBINX": nbinx}
    cards |= {"NBINY": nbiny, "NBINS": nbinx * nbiny, "PSFNX": 33, "PSFNY": 33}
    for k, v in cards.items():
        primary.header[k] = v
    fits.HDUList([primary, epsf_table(nbinx, nbiny, detector)]).writeto(path, overwrite=True)
    return path


def mskn_cards(bits: dict[str, int]) -> list[tuple[str, str]]:
    return [(f"MSKN{b:04d}", name) for name, b in sorted(bits.items(), key=lambda kv: kv[1])]


def r7_from_qr2(
    qr2, out, version="7.0.5", bits=None, flags=None, tile_shape=None, lattice=None, epsf=None
):
    """An R7 cutout with the pixels, WCS and WCS-WAVE of a QR2 cutout (§8.2 HDU order)."""
    with fits.open(qr2) as src:
        det = int(src["IMAGE"].header["DETECTOR"])
        nbinx, nbiny = lattice or EPSF_LATTICE[det]
        primary = fits.PrimaryHDU()
        if version is not None:
            primary.header["VERSION"] = version
        fh = src["FLAGS"].header.copy()
        for k in [k for k in fh if k.startswith("MP_")]:
            del fh[k]
        for k, v in mskn_cards(bits or SPEC_BITS):
            fh[k] = v
        data = src["FLAGS"].data if flags is None else flags
        ny, nx = data.shape
        flags_hdu = fits.CompImageHDU(
            np.asarray(data, dtype=np.int32), header=fh, name="FLAGS",
            compression_type="RICE_1", tile_shape=tile_shape or (1, nx),
        )  # fmt: skip
        hdul = fits.HDUList([
            primary,
            fits.ImageHDU(src["IMAGE"].data, src["IMAGE"].header, name="IMAGE"),
            flags_hdu,
            fits.ImageHDU(src["VARIANCE"].data, src["VARIANCE"].header, name="VARIANCE"),
            fits.ImageHDU(src["ZODI"].data, src["ZODI"].header, name="ZODI"),
            epsf if epsf is not None else epsf_table(nbinx, nbiny, det),
            fits.BinTableHDU(src["WCS-WAVE"].data, src["WCS-WAVE"].header, name="WCS-WAVE"),
        ])  # fmt: skip
        hdul.writeto(out, overwrite=True)
    return out


@pytest.fixture(scope="module")
def qr2_paths(tmp_path_factory):
    """QR2 cutouts by detector: D3 (whose ePSF lattice is 11x41), D2 and D4 (21x21)."""
    tmp = tmp_path_factory.mktemp("r7src")
    archive = SimulatedArchive()
    paths = {}
    for url in archive.discover(RA, DEC).access_url:
        det = parse_level2_file_name(url.rsplit("/", 1)[1])[1]
        if det in (2, 3, 4) and det not in paths:
            paths[det] = tmp / f"qr2_D{det}.fits"
            paths[det].write_bytes(archive.cutout_bytes(url, RA, DEC, SIZE_ARCSEC))
    return paths


@pytest.fixture(scope="module")
def r7_paths(qr2_paths, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("r7")
    return {det: r7_from_qr2(p, tmp / f"r7_D{det}.fits") for det, p in qr2_paths.items()}


def _nearest_row(table, x, y) -> int:
    d = (table["XCENTER"] - x) ** 2 + (table["YCENTER"] - y) ** 2
    return int(np.argmin(d))


def assert_equals_astropy(c, path, ra=RA, dec=DEC):
    """Pixels, flags, the chosen ePSF row, the bit names and the WCS, all via astropy."""
    with fits.open(path) as hdul:
        assert isinstance(hdul["FLAGS"], fits.CompImageHDU)
        np.testing.assert_array_equal(c.image, hdul["IMAGE"].data)
        np.testing.assert_array_equal(c.variance, hdul["VARIANCE"].data)
        np.testing.assert_array_equal(c.flags, hdul["FLAGS"].data)
        h = hdul["IMAGE"].header
        w = WCS(h)
        x, y = w.all_world2pix(ra, dec, 0, tolerance=1e-10, maxiter=50)
        assert c.x == pytest.approx(float(x), abs=1e-6)
        assert c.y == pytest.approx(float(y), abs=1e-6)
        xs = np.array([0.0, c.x, c.image.shape[1] - 1.0, 3.3])
        ys = np.array([0.0, c.y, 1.7, c.image.shape[0] - 1.0])
        ra_a, dec_a = w.all_pix2world(xs, ys, 0)
        ra_l, dec_l = c.wcs.pixel_to_world(xs, ys)
        np.testing.assert_allclose(ra_l, ra_a, atol=1e-10)
        np.testing.assert_allclose(dec_l, dec_a, atol=1e-10)
        assert c.origin == (1 - h["CRPIX1A"], 1 - h["CRPIX2A"])
        table = hdul["EPSF"].data
        row = _nearest_row(table, c.x_parent, c.y_parent)
        assert c.plane == row
        nbinx, nbiny = table["BINX"].max() + 1, table["BINY"].max() + 1
        ix, iy = epsf_zone(c.x_parent, c.y_parent, nbinx, nbiny)
        assert (table["BINX"][row], table["BINY"][row]) == (ix, iy)
        assert c.psf.dtype == np.float64 and c.psf.shape == (EPSF_SIZE, EPSF_SIZE)
        np.testing.assert_array_equal(c.psf, table[row]["EPSF"])
        fh = hdul["FLAGS"].header
        cards = {fh[k]: int(k[4:]) for k in fh if k.startswith("MSKN")}
        assert c.flag_bits == cards
        assert c.mjd == h["MJD-AVG"] and c.detector == h["DETECTOR"]
        assert c.version == hdul[0].header.get("VERSION", "")
        wave = hdul["WCS-WAVE"].data[0]
        np.testing.assert_array_equal(c.wcs_wave[0], np.ravel(wave["X"]))
        np.testing.assert_array_equal(
            c.wcs_wave[2].ravel(), np.asarray(wave["VALUES"], float).ravel()
        )
    assert (c.layout, c.psf_model) == ("r7", "epsf")


def test_r7_reader_equals_astropy(r7_paths):
    assert 3 in r7_paths, "the D3 11x41 lattice must be covered"
    for path in r7_paths.values():
        assert_equals_astropy(read_cutout(path, RA, DEC), path)


def test_r7_gzip_reads_the_same(r7_paths, tmp_path):
    path = next(iter(r7_paths.values()))
    gz = tmp_path / "r7.fits"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    a, b = read_cutout(path, RA, DEC), read_cutout(gz, RA, DEC)
    np.testing.assert_array_equal(a.flags, b.flags)
    np.testing.assert_array_equal(a.psf, b.psf)
    assert (a.plane, a.x, a.y) == (b.plane, b.x, b.y)


def test_qr2_and_r7_read_the_same_pixels(qr2_paths, r7_paths):
    for det, p in qr2_paths.items():
        a, b = read_cutout(p, RA, DEC), read_cutout(r7_paths[det], RA, DEC)
        assert (a.layout, a.psf_model, a.version) == ("qr2", "cube", "6.5.6")
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.flags, b.flags)
        assert a.flag_bits == b.flag_bits == SPEC_BITS  # MP_* and MSKN* give the same table
        assert (a.x, a.y, a.origin) == (b.x, b.y, b.origin)


# --- RICE_1 tiles --------------------------------------------------------------------------
def _random_flags(ny, nx, seed=3):
    rng = np.random.default_rng(seed)
    f = rng.integers(0, 2**31 - 1, size=(ny, nx)) & rng.integers(0, 2**31 - 1, size=(ny, nx))
    f = f.astype(np.int32)
    f[5:9] = 0
    f[:, 3] = -5  # sign bit set
    return f


@pytest.mark.parametrize("tile_shape", [(1, 47), (4, 7), (3, 47), (53, 47), (1, 16)])
def test_compressed_rows_equal_astropy_section(tmp_path, tile_shape):
    f = _random_flags(53, 47)
    path = tmp_path / "c.fits"
    hdu = fits.CompImageHDU(f, compression_type="RICE_1", tile_shape=tile_shape, name="FLAGS")
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path)
    with fits.open(path) as hdul, open_buffer(path) as buf:
        flags = {h.name: h for h in scan(buf)}["FLAGS"]
        np.testing.assert_array_equal(read_compressed_image(buf, flags), hdul["FLAGS"].data)
        for y0, y1 in [(0, 1), (3, 11), (50, 53), (10, 10), (0, 53), (7, 8)]:
            np.testing.assert_array_equal(
                read_compressed_rows(buf, flags, y0, y1), hdul["FLAGS"].section[y0:y1, :]
            )
        with pytest.raises(FitsReadError, match="outside"):
            read_compressed_rows(buf, flags, 50, 54)


def test_heap_at_theap_after_a_gap(tmp_path):
    """The heap may start after a gap (THEAP > table size); astropy and the reader agree."""
    f = _random_flags(20, 31)
    plain = tmp_path / "plain.fits"
    hdu = fits.CompImageHDU(f, compression_type="RICE_1", tile_shape=(1, 31), name="FLAGS")
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(plain)
    raw = plain.read_bytes()
    with open_buffer(plain) as buf:
        h = {x.name: x for x in scan(buf)}["FLAGS"]
        start, table = h.data_start, int(h.header["NAXIS1"]) * int(h.header["NAXIS2"])
        pcount, hstart = int(h.header["PCOUNT"]), h.data_start - len(h.header._text)
    gap = 1000
    header = bytearray(raw[hstart:start])
    for key, value in (("PCOUNT", pcount + gap), ("THEAP", table + gap)):
        card = f"{key:<8}= {value:>20}".ljust(80).encode()
        i = header.find(f"{key:<8}=".encode())
        if i < 0:  # THEAP is new: put it where END is, END moves on (room in the block)
            i = header.find(b"END     ")
            header[i + 80 : i + 160] = b"END".ljust(80)
        header[i : i + 80] = card
    data = raw[start : start + table] + b"\0" * gap + raw[start + table : start + table + pcount]
    data += b"\0" * (-len(data) % 2880)
    out = tmp_path / "theap.fits"
    out.write_bytes(raw[:hstart] + bytes(header) + data)
    with fits.open(out) as hdul, open_buffer(out) as buf:
        fh = {x.name: x for x in scan(buf)}["FLAGS"]
        assert fh.header["THEAP"] == table + gap
        np.testing.assert_array_equal(hdul["FLAGS"].data, f)
        np.testing.assert_array_equal(read_compressed_image(buf, fh), f)
        np.testing.assert_array_equal(read_compressed_rows(buf, fh, 4, 9), f[4:9])


def test_unsupported_compression_is_a_clear_read_failure(qr2_paths, tmp_path):
    qr2 = qr2_paths[min(qr2_paths)]
    with fits.open(qr2) as src:
        flags = src["FLAGS"].data
    for kind, data, expect in [
        ("GZIP_1", flags, "ZCMPTYPE = 'GZIP_1'"),
        ("RICE_1", flags.astype(np.int16), "ZBITPIX = 16"),
    ]:
        path = tmp_path / f"bad_{kind}_{data.dtype}.fits"
        r7_from_qr2(qr2, path)
        with fits.open(path) as hdul:
            new = fits.CompImageHDU(data, hdul["FLAGS"].header, name="FLAGS", compression_type=kind)
            hdul[2] = new
            hdul.writeto(path, overwrite=True)
        with pytest.raises(CutoutError) as err:
            read_cutout(path, RA, DEC)
        assert err.value.flag == "READ_FAILED"
        assert path.name in str(err.value) and expect in str(err.value), str(err.value)


@pytest.mark.parametrize("damage", ["short_tile", "garbage_tile", "tile_outside"])
def test_corrupt_tiles_are_read_failures(r7_paths, tmp_path, damage):
    """A damaged tile gives READ_FAILED naming the file (not a codec or mmap exception)."""
    src = r7_paths[min(r7_paths)]
    raw = bytearray(src.read_bytes())
    with open_buffer(src) as buf:
        h = {x.name: x for x in scan(buf)}["FLAGS"]
        desc = h.data_start + 3 * 8  # tile 3's descriptor
        heap = h.data_start + int(h.header.get("THEAP", 8 * int(h.header["NAXIS2"])))
    nbytes, offset = struct.unpack(">ii", raw[desc : desc + 8])
    if damage == "short_tile":
        raw[desc : desc + 4] = struct.pack(">i", 3)
    elif damage == "garbage_tile":
        raw[heap + offset : heap + offset + nbytes] = b"\xff" * nbytes
    else:
        raw[desc + 4 : desc + 8] = struct.pack(">i", 10**8)
    path = tmp_path / f"{damage}.fits"
    path.write_bytes(bytes(raw))
    with pytest.raises(CutoutError) as err:
        read_cutout(path, RA, DEC)
    assert err.value.flag == "READ_FAILED"
    assert path.name in str(err.value) and "FLAGS: tile 3" in str(err.value), str(err.value)


def test_read_rows_plain_and_compressed(r7_paths, qr2_paths):
    for path in (r7_paths[min(r7_paths)], qr2_paths[min(qr2_paths)]):
        with fits.open(path) as hdul, open_buffer(path) as buf:
            hdus = {x.name: x for x in scan(buf)}
            for name in ("FLAGS", "IMAGE"):
                ref = hdul[name].data
                for y0, y1 in [(0, 1), (4, 9), (len(ref) - 2, len(ref))]:
                    np.testing.assert_array_equal(read_rows(buf, hdus[name], y0, y1), ref[y0:y1])


# --- layout and VERSION -----------------------------------------------------------------------
def test_version_must_agree_with_the_hdus(qr2_paths, tmp_path):
    qr2 = qr2_paths[min(qr2_paths)]
    r7_old = r7_from_qr2(qr2, tmp_path / "r7_old_version.fits", version="6.5.6")
    with pytest.raises(CutoutError) as err:
        read_cutout(r7_old, RA, DEC)
    msg = str(err.value)
    assert err.value.flag == "READ_FAILED"
    assert "r7_old_version.fits" in msg and "EPSF" in msg and "'6.5.6'" in msg, msg
    qr2_new = tmp_path / "qr2_new_version.fits"
    with fits.open(qr2) as hdul:
        hdul[0].header["VERSION"] = "7.0.5"
        hdul.writeto(qr2_new)
    with pytest.raises(CutoutError) as err:
        read_cutout(qr2_new, RA, DEC)
    msg = str(err.value)
    assert "qr2_new_version.fits" in msg and "PSF" in msg and "'7.0.5'" in msg, msg
    # No VERSION at all: the HDUs decide.
    c = read_cutout(r7_from_qr2(qr2, tmp_path / "r7_noversion.fits", version=None), RA, DEC)
    assert (c.layout, c.version) == ("r7", "")


def test_no_psf_hdu_is_a_read_failure(r7_paths, tmp_path):
    path = tmp_path / "no_epsf.fits"
    with fits.open(next(iter(r7_paths.values()))) as hdul:
        del hdul["EPSF"]
        hdul.writeto(path)
    with pytest.raises(CutoutError) as err:
        read_cutout(path, RA, DEC)
    assert err.value.flag == "READ_FAILED"
    assert "no_epsf.fits" in str(err.value) and "neither a PSF" in str(err.value)


# --- flag bits from the file's own cards ---------------------------------------------------
def _permute_bits(flags: np.ndarray, perm: dict[int, int]) -> np.ndarray:
    f = flags.astype(np.int64) & 0xFFFFFFFF
    out = np.zeros_like(f)
    for b in range(32):
        out |= ((f >> b) & 1) << perm.get(b, b)
    return out.astype(np.uint32).view(np.int32)


def test_remapped_mskn_bits_are_measured_by_the_cards(qr2_paths, tmp_path):
    """Swap NONFUNC<->SOURCE and HOT<->OUTLIER in the data and the MSKN cards: the reader
    must give the same good-pixel mask as for the unpermuted file."""
    qr2 = qr2_paths[min(qr2_paths)]
    with fits.open(qr2) as src:
        flags = src["FLAGS"].data.copy()
    flags[2:5, 2:5] |= 1 << SPEC_BITS["NONFUNC"]  # make sure a masked bit is set
    swaps = {"NONFUNC": "SOURCE", "HOT": "OUTLIER"}
    perm = {}
    for a, b in swaps.items():
        perm[SPEC_BITS[a]], perm[SPEC_BITS[b]] = SPEC_BITS[b], SPEC_BITS[a]
    bits = {n: perm.get(b, b) for n, b in SPEC_BITS.items()}
    a = read_cutout(r7_from_qr2(qr2, tmp_path / "a.fits", flags=flags), RA, DEC)
    b = read_cutout(
        r7_from_qr2(qr2, tmp_path / "b.fits", flags=_permute_bits(flags, perm), bits=bits),
        RA, DEC,
    )  # fmt: skip
    assert b.flag_bits == bits and b.flag_bits != SPEC_BITS
    names = PhotometrySettings().mask_flags
    good_a = (a.flags & flag_mask([n for n in names if n in a.flag_bits], a.flag_bits)) == 0
    good_b = (b.flags & flag_mask([n for n in names if n in b.flag_bits], b.flag_bits)) == 0
    np.testing.assert_array_equal(good_a, good_b)
    spec = flag_mask([n for n in names if n in SPEC_BITS])
    assert not np.array_equal((b.flags & spec) == 0, good_b)  # the spec table would differ


# --- EPSF table and library ------------------------------------------------------------------
@pytest.mark.parametrize("detector", [2, 3])
def test_epsf_library_rows_equal_astropy(tmp_path, detector):
    path = write_epsf_library(
        tmp_path / f"epsf_D{detector}_spx_cal-epsf-v1-2026-191.fits", detector
    )
    lib = EpsfLibrary.from_path(path)
    assert lib.shape == EPSF_LATTICE[detector] and lib.detector == detector
    rng = np.random.default_rng(detector)
    points = [(-0.5, -0.5), (2039.4, 2039.4), (1020.0, 1019.5), *rng.uniform(-0.5, 2039.5, (40, 2))]
    with fits.open(path) as hdul:
        table = hdul["EPSF"].data
        for x, y in points:
            row, arr = lib.row_for(x, y)
            assert row == _nearest_row(table, x, y)
            np.testing.assert_array_equal(arr, table[row]["EPSF"])
            assert lib.row_for(x, y)[1] is arr  # cached
    clone = pickle.loads(pickle.dumps(lib))
    np.testing.assert_array_equal(clone.row_for(5.0, 7.0)[1], lib.row_for(5.0, 7.0)[1])
    clone.close()
    lib.close()


def test_epsf_zone_edges_follow_the_closed_form(tmp_path):
    """On an exact zone edge two centres tie; the row is the closed-form zone's."""
    lib = EpsfLibrary.from_path(write_epsf_library(tmp_path / "e.fits", 2))
    edge = NPIX / 21 - 0.5  # between zone 0 and zone 1
    row, _ = lib.row_for(edge, 100.0)
    assert (lib.lattice.binx[row], lib.lattice.biny[row]) == epsf_zone(edge, 100.0, 21, 21)


def test_epsf_rows_in_any_order_are_found_by_their_centres(tmp_path):
    """IRSA picks the nearest centre, so a consistent table in another row order still works."""
    t = epsf_table(21, 21, 2)
    order = np.random.default_rng(0).permutation(len(t.data))
    shuffled = fits.BinTableHDU(t.data[order], t.header, name="EPSF")
    path = tmp_path / "shuffled.fits"
    fits.HDUList([fits.PrimaryHDU(), shuffled]).writeto(path)
    lib = EpsfLibrary.from_path(path)
    for x, y in [(3.0, 2000.0), (1500.0, 700.0)]:
        row, arr = lib.row_for(x, y)
        ix, iy = epsf_zone(x, y, 21, 21)
        assert (lib.lattice.binx[row], lib.lattice.biny[row]) == (ix, iy)
        np.testing.assert_array_equal(arr, epsf_array(iy * 21 + ix))


def _broken_table(kind: str, detector: int) -> fits.BinTableHDU:
    t = epsf_table(*EPSF_LATTICE[detector], detector)
    if kind == "centre":
        t.data["XCENTER"] += 0.5
    elif kind == "binx":
        t.data["BINX"] = (t.data["BINX"] + 1) % EPSF_LATTICE[detector][0]
    elif kind == "missing":
        t = fits.BinTableHDU(t.data[:-1], t.header, name="EPSF")
    return t


@pytest.mark.parametrize("kind", ["centre", "binx", "missing"])
def test_epsf_lattice_errors_are_read_failures(qr2_paths, tmp_path, kind):
    det = min(qr2_paths)
    path = r7_from_qr2(qr2_paths[det], tmp_path / f"bad_{kind}.fits", epsf=_broken_table(kind, det))
    lib_path = tmp_path / "lib.fits"
    fits.HDUList([fits.PrimaryHDU(), _broken_table(kind, det)]).writeto(lib_path)
    with pytest.raises(CutoutError) as err:
        read_cutout(path, RA, DEC)
    assert err.value.flag == "READ_FAILED" and f"bad_{kind}.fits" in str(err.value)
    with pytest.raises(EpsfError, match="lib.fits"):
        EpsfLibrary.from_path(lib_path).row_for(1000.0, 1000.0)


# --- header cards --------------------------------------------------------------------------
def test_header_reads_hierarch_cards_like_astropy(qr2_paths):
    qr2 = qr2_paths[min(qr2_paths)]
    with open_buffer(qr2) as buf:
        lean = {h.name: h for h in scan(buf)}["FLAGS"].header
    ref = fits.getheader(qr2, "FLAGS")
    for key in ("MP_SUR_ERROR", "MP_MISSING_DATA", "MP_GHOST", "MP_GHOST_FPA", "L2 N_SOURCE"):
        assert lean[key] == ref[key], key
    assert lean["HIERARCH MP_SATELLITE_HALO"] == ref["MP_SATELLITE_HALO"]
    assert set(lean.keys_starting("MP_")) == {k for k in ref if k.startswith("MP_")}
    assert {k for k in lean} >= {k for k in ref if k.startswith("MP_")}
    # A short name written behind HIERARCH is found, and a prefix is not a match.
    card = b"HIERARCH MP_HOT = 10 / Hot pixel".ljust(80) + b"END".ljust(80)
    h = Header(card + b" " * (2880 - len(card)))
    assert h["MP_HOT"] == 10 and "MP_HO" not in h and list(h) == ["MP_HOT"]


# --- the simulator's own R7 cutouts and ePSF library ----------------------------------------
QR3_RA, QR3_DEC = 270.0, 66.5  # near the ecliptic pole: scanned within the QR3 time slice


@pytest.fixture(scope="module")
def simulated_qr3(tmp_path_factory):
    if "releases" not in inspect.signature(SimulatedArchive).parameters:
        pytest.skip("the simulated archive does not serve QR3 (R7) yet")
    archive = SimulatedArchive(releases=["qr2", "qr3"])
    rows = archive.discover(QR3_RA, QR3_DEC)
    urls = rows.loc[rows["obs_collection"] == "spherex_qr3", "access_url"].drop_duplicates()
    assert len(urls), "the simulated archive has no QR3 rows at the ecliptic pole"
    tmp = tmp_path_factory.mktemp("simqr3")
    paths = {}
    for url in urls:
        det = parse_level2_file_name(url.rsplit("/", 1)[1])[1]
        if det not in paths:
            paths[det] = tmp / f"qr3_D{det}.fits"
            paths[det].write_bytes(archive.cutout_bytes(url, QR3_RA, QR3_DEC, SIZE_ARCSEC))
    return archive, paths, tmp


def test_simulated_qr3_cutouts_equal_astropy(simulated_qr3):
    _, paths, _ = simulated_qr3
    for path in paths.values():
        c = read_cutout(path, QR3_RA, QR3_DEC)
        assert c.version.startswith("7.")
        assert_equals_astropy(c, path, QR3_RA, QR3_DEC)


def test_simulated_epsf_library_equals_the_l2_table(simulated_qr3):
    archive, paths, tmp = simulated_qr3
    for det, path in paths.items():
        lib = EpsfLibrary.from_path(archive.fetch_calibration("qr3", "epsf", det, tmp).path)
        c = read_cutout(path, QR3_RA, QR3_DEC)
        assert lib.shape == EPSF_LATTICE[det] and lib.detector == det
        row, arr = lib.row_for(c.x_parent, c.y_parent)
        assert row == c.plane
        np.testing.assert_array_equal(arr, c.psf)  # the L2 extension is the library
        lib.close()
