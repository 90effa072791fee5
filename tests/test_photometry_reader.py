"""The lean reader equals astropy on the same files; bad files become flagged rows."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from spxflow.archive.simulated import SimulatedArchive
from spxflow.format import FLAG_BITS, psf_plane, psf_zone
from spxflow.photometry import PhotometrySettings, measure_cutouts
from spxflow.photometry.celestial import TanSip
from spxflow.photometry.cutout import read_cutout
from spxflow.photometry.result_flags import bit, describe
from tests.photometry_data import calibration, fetch

RA, DEC = 100.20, -10.00


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reader")
    paths = fetch(SimulatedArchive(), RA, DEC, tmp / "cut", limit=18)
    return tmp, paths


@pytest.fixture(scope="module")
def cal(data):
    # Only the measuring tests need the products; the reader tests do not wait for them.
    return calibration(SimulatedArchive(), data[0] / "cal")


def test_reader_equals_astropy(data):
    _, paths = data
    for path in paths:
        c = read_cutout(path, RA, DEC)
        assert (c.layout, c.psf_model) == ("qr2", "cube")
        with fits.open(path) as hdul:
            assert c.version == hdul[0].header["VERSION"]
            fh = hdul["FLAGS"].header
            assert c.flag_bits == {k[3:]: fh[k] for k in fh if k.startswith("MP_")}
            np.testing.assert_array_equal(c.image, hdul["IMAGE"].data)
            np.testing.assert_array_equal(c.flags, hdul["FLAGS"].data)
            np.testing.assert_array_equal(c.variance, hdul["VARIANCE"].data)
            h = hdul["IMAGE"].header
            x, y = WCS(h).all_world2pix(RA, DEC, 0, tolerance=1e-10, maxiter=50)
            assert c.x == pytest.approx(float(x), abs=1e-6)
            assert c.y == pytest.approx(float(y), abs=1e-6)
            assert c.origin == (1 - h["CRPIX1A"], 1 - h["CRPIX2A"])
            assert c.plane == psf_plane(c.x_parent, c.y_parent)
            np.testing.assert_array_equal(c.psf, hdul["PSF"].data[c.plane])
            assert c.mjd == h["MJD-AVG"] and c.exptime_s == h["XPOSURE"]
            assert c.detector == h["DETECTOR"] and c.obs_id == h["OBSID"]
            row = hdul["WCS-WAVE"].data[0]
            np.testing.assert_array_equal(c.wcs_wave[0], np.ravel(row["X"]))
            np.testing.assert_array_equal(
                c.wcs_wave[2].ravel(), np.asarray(row["VALUES"], float).ravel()
            )


def test_tan_sip_round_trip_and_astropy_forward(data):
    _, paths = data
    h = fits.getheader(paths[0], "IMAGE")
    w = TanSip.from_header(dict(h))
    xs, ys = np.meshgrid(np.linspace(-50, 60, 7), np.linspace(-40, 70, 7))
    ra, dec = w.pixel_to_world(xs, ys)
    ra_a, dec_a = WCS(h).all_pix2world(xs, ys, 0)
    np.testing.assert_allclose(ra, ra_a, atol=1e-10)
    np.testing.assert_allclose(dec, dec_a, atol=1e-10)
    x2, y2 = w.world_to_pixel(ra, dec)
    np.testing.assert_allclose(x2, xs, atol=1e-8)
    np.testing.assert_allclose(y2, ys, atol=1e-8)


def test_gzip_cutout_reads_the_same(data):
    tmp, paths = data
    gz = tmp / "gz.fits"
    gz.write_bytes(gzip.compress(open(paths[0], "rb").read()))
    a, b = read_cutout(paths[0], RA, DEC), read_cutout(gz, RA, DEC)
    np.testing.assert_array_equal(a.image, b.image)
    assert (a.x, a.y, a.plane) == (b.x, b.y, b.plane)


def _header_plane(path, x_parent, y_parent) -> int:
    """The plane a client would pick from the PSF zone cards (nearest XCTR_k/YCTR_k)."""
    h = fits.getheader(path, "PSF")
    d = [(h[f"XCTR_{k}"] - x_parent) ** 2 + (h[f"YCTR_{k}"] - y_parent) ** 2 for k in range(1, 122)]
    return int(np.argmin(d))


def test_erratum_file_uses_the_geometric_plane(tmp_path):
    """Pre-6.5.6 files carry transposed zone cards; the plane must come from geometry."""
    settings = PhotometrySettings()
    fixed = SimulatedArchive(field_stars=False)
    erratum = SimulatedArchive(field_stars=False, psf_header_erratum=True)
    cal = calibration(fixed, tmp_path / "cal")
    rows = fixed.discover(RA, DEC).to_dict(orient="records")
    # Images where the target's zone is off the diagonal, so the transposition matters.
    chosen = []
    for row in rows:
        res = fixed.fetch_cutout(row, RA, DEC, 60, tmp_path / "probe")
        c = read_cutout(res.path, RA, DEC)
        ix, iy = psf_zone(c.x_parent, c.y_parent)
        if ix != iy:
            chosen.append(row)
        if len(chosen) == 4:
            break
    assert chosen
    a = [fixed.fetch_cutout(r, RA, DEC, 60, tmp_path / "fixed").path for r in chosen]
    b = [erratum.fetch_cutout(r, RA, DEC, 60, tmp_path / "erratum").path for r in chosen]
    da = measure_cutouts(a, RA, DEC, [], cal, settings)
    db = measure_cutouts(b, RA, DEC, [], cal, settings)
    for pa, pb, ra_, rb_ in zip(a, b, da.itertuples(), db.itertuples(), strict=True):
        geometric = psf_plane(rb_.x_parent, rb_.y_parent)
        assert _header_plane(pa, rb_.x_parent, rb_.y_parent) == geometric  # fixed header agrees
        assert _header_plane(pb, rb_.x_parent, rb_.y_parent) != geometric  # erratum does not
        assert rb_.psf_plane == geometric
        assert rb_.flux_uJy == ra_.flux_uJy  # same pixels, same plane -> same number


def test_bad_inputs_become_flagged_rows_not_exceptions(data, cal):
    tmp, paths = data
    good = paths[0]
    bad = tmp / "bad"
    bad.mkdir()
    # Missing HDU.
    with fits.open(good) as hdul:
        del hdul["VARIANCE"]
        hdul.writeto(bad / "no_variance.fits")
    # All pixels masked (NONFUNC everywhere).
    with fits.open(good) as hdul:
        hdul["FLAGS"].data[:] = 1 << 6
        hdul.writeto(bad / "all_masked.fits")
    raw = open(good, "rb").read()
    # Truncated file.
    (bad / "truncated.fits").write_bytes(raw[: len(raw) // 3])
    # NaN WCS (astropy refuses to write NaN cards, so the card image is patched).
    i = raw.index(b"CRVAL1  =")
    nan_card = b"CRVAL1  =                  NaN".ljust(80)
    (bad / "nan_wcs.fits").write_bytes(raw[:i] + nan_card + raw[i + 80 :])
    # Not a FITS file at all.
    (bad / "garbage.fits").write_bytes(b"<html>503 Service Unavailable</html>")
    shutil.copy(good, bad / "good.fits")
    names = ["no_variance", "all_masked", "truncated", "nan_wcs", "garbage", "good"]
    df = measure_cutouts([bad / f"{n}.fits" for n in names], RA, DEC, [], cal, PhotometrySettings())
    got = dict(zip(names, df.to_dict(orient="records"), strict=True))
    expect = {
        "no_variance": "READ_FAILED",
        "all_masked": "ALL_MASKED",
        "truncated": "READ_FAILED",
        "nan_wcs": "BAD_WCS",
        "garbage": "READ_FAILED",
    }
    for name, flag in expect.items():
        row = got[name]
        assert row["result_flags"] & bit(flag), (name, describe(row["result_flags"]))
        assert row["detection_status"] == "failed" and not row["science_recommended"]
        assert row["failure_reason"], name
        assert np.isnan(row["flux_uJy"])
    assert got["good"]["detection_status"] == "detected"
    # Target outside the cutout: a position 0.2 deg away.
    off = measure_cutouts([good], RA + 0.2, DEC, [], cal, PhotometrySettings())
    assert off.loc[0, "result_flags"] & bit("OFF_CUTOUT")
    assert "outside" in off.loc[0, "failure_reason"]


def test_remapped_mp_bits_are_measured_by_the_cards(data):
    """A QR2 file whose MP_* cards (long HIERARCH names included) disagree with the spec
    table is measured by its own cards: swapping bits in the data and the cards changes
    nothing, while the spec table would mask the SOURCE pixels."""
    tmp, paths = data
    spec = {name: b for name, (b, _) in FLAG_BITS.items()}
    perm = {spec["NONFUNC"]: spec["SOURCE"], spec["SOURCE"]: spec["NONFUNC"]}
    perm |= {spec["SUR_ERROR"]: spec["OUTLIER"], spec["OUTLIER"]: spec["SUR_ERROR"]}
    a, b = tmp / "mp_a.fits", tmp / "mp_b.fits"
    with fits.open(paths[0]) as hdul:
        f = hdul["FLAGS"].data.astype(np.int64) & 0xFFFFFFFF
        f[3:6, 3:6] |= (1 << spec["NONFUNC"]) | (1 << spec["SUR_ERROR"])
        hdul["FLAGS"].data = f.astype(np.uint32).view(np.int32)
        hdul.writeto(a)
        g = np.zeros_like(f)
        for bit_ in range(32):
            g |= ((f >> bit_) & 1) << perm.get(bit_, bit_)
        hdul["FLAGS"].data = g.astype(np.uint32).view(np.int32)
        for key in [k for k in hdul["FLAGS"].header if k.startswith("MP_")]:
            value = hdul["FLAGS"].header[key]
            hdul["FLAGS"].header[key] = perm.get(value, value)
        hdul.writeto(b)
    cb = read_cutout(b, RA, DEC)
    assert cb.flag_bits["NONFUNC"] == spec["SOURCE"]
    assert cb.flag_bits["SUR_ERROR"] == spec["OUTLIER"]  # a HIERARCH MP_ long name
    assert (cb.flags & (1 << spec["NONFUNC"])).any()  # SOURCE pixels now sit on bit 6
    settings = PhotometrySettings(qr2_psf="cube")
    da = measure_cutouts([a], RA, DEC, [], None, settings)
    db = measure_cutouts([b], RA, DEC, [], None, settings)
    for col in ("flux_uJy", "flux_err_uJy", "n_pix_used", "result_flags"):
        if col in da:
            assert da.loc[0, col] == db.loc[0, col], col
