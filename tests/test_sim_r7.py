"""The simulated archive's QR3 (R7 layout) files, discovery rows and calibration products.

Files are read back with astropy (as a client would) and compared with the simulator's own
rendering. Spec: shared/spherex_format.md §8.
"""

from __future__ import annotations

import functools
import gzip
import io
import json

import numpy as np
import pytest
from astropy.io import fits
from scipy.ndimage import map_coordinates

from spxflow.archive.base import ArchiveError
from spxflow.archive.simulated import SimulatedArchive
from spxflow.format import (
    EPSF_LATTICE,
    FLAG_BITS,
    QR3_START_MJD,
    calibration_id,
    epsf_zone,
    epsf_zone_centers,
)
from spxflow.sim import render, spectral_model, survey

AGN = (35.5, 48.1)  # the demo AGN: covered by QR2 and by the 35-day QR3 slice
NEP = (270.0, 66.56)  # ecliptic pole: wide + deep duplicates
CONV = 23.5045
R7_HDUS = ["PRIMARY", "IMAGE", "FLAGS", "VARIANCE", "ZODI", "EPSF", "WCS-WAVE"]


@pytest.fixture(scope="module")
def arch():
    return SimulatedArchive.from_config({})


@pytest.fixture(scope="module")
def clean():
    return SimulatedArchive.from_config({"noise": False, "field_stars": False})


@pytest.fixture(scope="module")
def agn_rows(arch):
    return arch.discover(*AGN, 0.0)


def _open(data: bytes, **kw) -> fits.HDUList:
    return fits.open(io.BytesIO(data), memmap=False, **kw)


def _qr3(rows, det=None, retry=False):
    sel = rows["obs_collection"] == "spherex_qr3"
    sel &= rows["obs_publisher_did"].str.endswith("/retry") == retry
    if det is not None:
        sel &= rows["energy_bandpassname"] == f"SPHEREx-D{det}"
    return rows[sel]


def _origin(hdr):
    return 1 - int(hdr["CRPIX1A"]), 1 - int(hdr["CRPIX2A"])


@functools.cache
def _cal(release: str, family: str, det: int, hdu: str) -> np.ndarray:
    arch = SimulatedArchive.from_config({})
    with _open(arch.calibration_bytes(release, family, det)) as h:
        return np.array(h[hdu].data)


# ------------------------------------------------------------------------------ file layout


def test_rice_codec_is_available():
    from astropy.io.fits.hdu.compressed._codecs import Rice1

    codec = Rice1(blocksize=32, bytepix=4, tilesize=7)
    row = np.array([0, 1 << 21, 5, 0, 1 << 29, 3, 2], dtype=np.int32)
    np.testing.assert_array_equal(codec.decode(np.frombuffer(codec.encode(row), np.uint8)), row)


def test_qr3_cutout_has_the_r7_hdu_list(arch, agn_rows):
    row = _qr3(agn_rows).iloc[0]
    data = arch.cutout_bytes(row["obs_publisher_did"], *AGN, 90.0)
    with _open(data) as h:
        h.verify("exception")
        assert [x.name for x in h] == R7_HDUS
        assert h[0].header["VERSION"] == "7.0.5" and h[0].data is None
        assert isinstance(h["FLAGS"], fits.CompImageHDU)
        assert isinstance(h["EPSF"], fits.BinTableHDU)
        img, flg = h["IMAGE"], h["FLAGS"]
        assert img.data.dtype == np.dtype(">f4") and img.data.shape == (15, 15)
        assert flg.data.dtype.kind == "i" and flg.data.shape == img.data.shape
        for name in ("VARIANCE", "ZODI"):
            assert h[name].data.dtype == np.dtype(">f4") and h[name].data.shape == (15, 15)
        assert img.header["OBSID"] == row["obs_id"] and "PSF" not in [x.name for x in h]
        assert img.header["MJD-BEG"] == row["t_min"] >= QR3_START_MJD
        assert any("[CALIB] epsf" in str(c) for c in img.header["HISTORY"])
        for key in ("CRPIX1", "CRPIX2A", "CRPIX1W", "A_0_0", "MJD-AVG", "CTYPE2W"):
            assert flg.header[key] == img.header[key], key
    with _open(data, disable_image_compression=True) as raw:
        t = raw["FLAGS"].header  # the BINTABLE that holds the compressed image
        assert t["XTENSION"] == "BINTABLE" and t["ZIMAGE"] is True and t["ZCMPTYPE"] == "RICE_1"
        assert (t["ZBITPIX"], t["ZNAXIS"], t["ZNAXIS1"], t["ZNAXIS2"]) == (32, 2, 15, 15)
        assert (t["ZTILE1"], t["ZTILE2"]) == (15, 1)  # one image row per tile
        assert (t["ZNAME1"], t["ZVAL1"], t["ZNAME2"], t["ZVAL2"]) == ("BLOCKSIZE", 32, "BYTEPIX", 4)
        assert (t["NAXIS1"], t["NAXIS2"], t["TTYPE1"]) == (8, 15, "COMPRESSED_DATA")
        assert t["TFORM1"].startswith("1PB(") and t["PCOUNT"] > 0 and t["EXTNAME"] == "FLAGS"
        assert not [k for k in t if k.startswith("MP_")]
        named = {int(k[4:]): t[k] for k in t if k.startswith("MSKN")}
        assert named == {bit: name for name, (bit, _) in FLAG_BITS.items()}
        assert (
            named[0] == "TRANSIENT" and named[20] == "CROSSTALK" and named[29] == "SATELLITE_HALO"
        )


def test_flags_decompress_to_the_rendered_plane(clean, arch, agn_rows):
    row = _qr3(agn_rows, det=3).iloc[0]
    info = arch.image_info(row["obs_publisher_did"])
    box = render.cutout_box(info, *AGN, 300.0)
    planes = render.render_planes(info, box, *AGN, arch.cfg)
    data = arch.cutout_bytes(row["obs_publisher_did"], *AGN, 300.0)
    with _open(data) as h:
        np.testing.assert_array_equal(h["FLAGS"].data, planes["FLAGS"])
        np.testing.assert_array_equal(h["IMAGE"].data, planes["IMAGE"])
        np.testing.assert_array_equal(h["FLAGS"].section[3:7, 10:20], planes["FLAGS"][3:7, 10:20])
        assert ((h["FLAGS"].data & (1 << 21)) != 0).any()  # SOURCE bits survive compression
    # The reader's hot path: decode each tile straight from the heap with astropy's codec.
    from astropy.io.fits.hdu.compressed._codecs import Rice1

    with _open(data, disable_image_compression=True) as raw:
        tab = raw["FLAGS"]
        width = tab.header["ZNAXIS1"]
        codec = Rice1(blocksize=32, bytepix=4, tilesize=width)
        rows = [
            codec.decode(np.asarray(cell, dtype=np.uint8)) for cell in tab.data["COMPRESSED_DATA"]
        ]
        np.testing.assert_array_equal(np.stack(rows), planes["FLAGS"])
    # Gzip stream (cached compressed tail) decodes to the plain file.
    z = SimulatedArchive.from_config({"gzip": True}).cutout_bytes(row["access_url"], *AGN, 300.0)
    assert z[:2] == b"\x1f\x8b" and gzip.decompress(z) == data


# ------------------------------------------------------------------------------ EPSF table


@pytest.mark.parametrize("det", [2, 3])
def test_epsf_table_shape_ordering_and_centres(arch, det):
    nbx, nby = EPSF_LATTICE[det]
    with _open(arch.calibration_bytes("qr3", "epsf", det)) as h:
        p, e = h[0].header, h["EPSF"]
        assert p["DETECTOR"] == det and isinstance(p["DETECTOR"], int)
        assert p["VERSION"] == "7.0.0b6.post2+g6b3a1a7"
        assert (p["NBINX"], p["NBINY"], p["NBINS"], p["PSFNX"], p["PSFNY"]) == (
            nbx,
            nby,
            nbx * nby,
            33,
            33,
        )
        hd = e.header
        assert hd["NAXIS1"] == 8752 and hd["NAXIS2"] == nbx * nby and hd["TFIELDS"] == 11
        assert hd["DETECTOR"] == str(det) and hd["OVSMPX"] == hd["OVSMPY"] == 5
        assert hd["DETCOORD"] == "sky" and hd["ORDERING"] == "x-fast then y"
        assert hd["TDIM11"] == "(33,33)" and hd["TFORM11"] == "1089D"
        history = " ".join(str(c) for c in hd["HISTORY"])
        assert (f"Calibration source file: epsf_{det}_20260507.fits" in history) == (det != 3)
        t = e.data
        assert e.columns.names == [
            "BINX",
            "BINY",
            "XCENTER",
            "YCENTER",
            "XWIDTH",
            "YWIDTH",
            "NSTAR",
            "NEFF_MEAN",
            "CWAVE",
            "CBAND",
            "EPSF",
        ]
        k = np.arange(nbx * nby)
        np.testing.assert_array_equal(t["BINX"], k % nbx)
        np.testing.assert_array_equal(t["BINY"], k // nbx)
        np.testing.assert_allclose(t["XCENTER"], epsf_zone_centers(nbx)[k % nbx], rtol=1e-6)
        np.testing.assert_allclose(t["YCENTER"], epsf_zone_centers(nby)[k // nbx], rtol=1e-6)
        np.testing.assert_allclose(t["XWIDTH"], 2040 / nbx, rtol=1e-6)
        np.testing.assert_allclose(t["YWIDTH"], 2040 / nby, rtol=1e-6)
        arr = t["EPSF"]
        assert arr.shape == (nbx * nby, 33, 33) and arr.dtype == np.dtype(">f8")
        np.testing.assert_allclose(arr.sum(axis=(1, 2)), 1.0, rtol=1e-12)
        assert all(np.unravel_index(a.argmax(), a.shape) == (16, 16) for a in arr[::37])
        assert (t["NSTAR"] > 0).all() and (t["NEFF_MEAN"] > 1.5).all()
        cw, cb = spectral_model.wave_band_parent0(det, t["XCENTER"], t["YCENTER"], "qr3")
        np.testing.assert_allclose(t["CWAVE"], cw, rtol=1e-6)
        np.testing.assert_allclose(t["CBAND"], cb, rtol=1e-6)
    if det == 3:
        assert (t["XCENTER"][0], t["YCENTER"][0]) == pytest.approx((92.2273, 24.3780), abs=1e-4)
    else:
        assert t["XCENTER"][0] == pytest.approx(48.0714, abs=1e-4)


def test_l2_epsf_extension_is_the_calibration_product(arch, agn_rows):
    row = _qr3(agn_rows).iloc[0]
    det = int(row["energy_bandpassname"][-1])
    with _open(arch.cutout_bytes(row["access_url"], *AGN, 30.0)) as h:
        l2 = h["EPSF"]
        with _open(arch.calibration_bytes("qr3", "epsf", det)) as c:
            assert l2.header.tostring() == c["EPSF"].header.tostring()
            assert l2.data.tobytes() == c["EPSF"].data.tobytes()


def test_epsf_samples_are_pixel_integrals_of_the_zone_psf():
    from spxflow.sim.psf_model import epsf_zone_params, render_analytic_native
    from spxflow.sim.r7 import epsf_table

    t = epsf_table(5)
    k = 7 * 21 + 13
    params = epsf_zone_params(5, 13, 7)
    scale = None
    for px, py in [(0, 0), (2, -1), (-2, 2)]:
        # A source offset by -p/5 px from a pixel centre: stamp pixel (r, c) is the integral
        # over the pixel at offset (c - 5 + p/5, ...), i.e. ePSF index 16 + 5 (c - 5) + p.
        stamp = render_analytic_native(params, -px / 5, -py / 5, 11)
        cols = 16 + 5 * (np.arange(3, 8) - 5) + px
        rows = 16 + 5 * (np.arange(3, 8) - 5) + py
        got = t["EPSF"][k][np.ix_(rows, cols)]
        ratio = stamp[3:8, 3:8] / got
        scale = ratio[2, 2] if scale is None else scale
        np.testing.assert_allclose(ratio, scale, rtol=1e-9)
    assert scale == pytest.approx(25.0, rel=0.01)  # sum 1 on the 5x grid: fraction = 25 x sample


# ------------------------------------------------------------------------------ pixel truth


def _source_only(h, det):
    hd = h["IMAGE"].header
    ny, nx = h["IMAGE"].data.shape
    x0, y0 = _origin(hd)
    yy, xx = np.mgrid[y0 : y0 + ny, x0 : x0 + nx]
    src = h["IMAGE"].data - hd["SIMZSCAL"] * h["ZODI"].data.astype(np.float64)
    omega = _cal("qr3", "solid_angle_pixel_map", det, "IMAGE")[yy, xx]
    ok = (h["FLAGS"].data & (1 << 6)) == 0
    return src * omega * CONV, xx, yy, ok


def test_point_sampled_epsf_reproduces_qr3_pixels_integrated_again_does_not(clean, agn_rows):
    """QR3 pixels = flux x 25 x ePSF sampled at native pixel centres (<1 % in the core); the
    ePSF integrated over pixels a second time is measurably wrong."""
    rows = _qr3(agn_rows)
    rows = rows[rows["energy_bandpassname"].isin(["SPHEREx-D3", "SPHEREx-D4", "SPHEREx-D5"])]
    checked = 0
    for _, row in rows.iloc[::7].iterrows():
        with _open(clean.cutout_bytes(row["obs_publisher_did"], *AGN, 60.0)) as h:
            hd = h["IMAGE"].header
            det, sx, sy, flux = hd["DETECTOR"], hd["SIMXPIX"], hd["SIMYPIX"], hd["SIMFLUX"]
            ujy, xx, yy, ok = _source_only(h, det)
            epsf = h["EPSF"].data["EPSF"]
        nbx, nby = EPSF_LATTICE[det]
        ix, iy = epsf_zone(sx, sy, nbx, nby)
        arr = epsf[iy * nbx + ix].astype(np.float64)

        def sample(dx, dy, arr=arr):
            coords = np.array([16 + 5 * dy.ravel(), 16 + 5 * dx.ravel()])
            return 25 * map_coordinates(arr, coords, order=3, mode="constant").reshape(dx.shape)

        model = flux * sample(xx - sx, yy - sy)
        # Core: pixels above a quarter of the peak (2-4 px of these ~0.9 px FWHM sources) to
        # < 1 % each; the whole source (pixels above 3 % of the peak) to < 1 % in total.
        core = (model > 0.25 * model.max()) & ok
        assert core.sum() >= 1
        err = np.abs(ujy[core] / model[core] - 1)
        assert err.max() < 0.01, (row["obs_publisher_did"], err.max())
        body = (model > 0.03 * model.max()) & ok
        assert np.abs(ujy[body] - model[body]).sum() < 0.01 * model[body].sum()
        # Integrate the (already pixel-integrated) ePSF over the pixel again: 5x5 sub-samples.
        sub = (np.arange(5) - 2) / 5
        again = np.mean([flux * sample(xx - sx + a, yy - sy + b) for a in sub for b in sub], axis=0)
        peak = np.unravel_index(np.where(core, model, 0).argmax(), model.shape)
        assert abs(ujy[peak] / again[peak] - 1) > 0.03
        checked += 1
    assert checked >= 3


def test_qr2_pixels_times_flxc_are_the_r7_scale_render(arch, agn_rows):
    rows = agn_rows[agn_rows["obs_collection"] == "spherex_qr2"]
    for _, row in rows.iloc[::20].iterrows():
        info = arch.image_info(row["obs_publisher_did"])
        box = render.cutout_box(info, *AGN, 120.0)
        r7 = render.render_planes(info, box, *AGN, arch.cfg, calibrated=False)
        with _open(arch.cutout_bytes(row["obs_publisher_did"], *AGN, 120.0)) as h:
            assert h[0].header["VERSION"] == "6.5.6" and "PSF" in [x.name for x in h]
            x0, y0 = _origin(h["IMAGE"].header)
            ny, nx = h["IMAGE"].data.shape
            flxc = _cal("qr3", "l3_flux_corrections", info.detector, "IMAGE")
            f = flxc[y0 : y0 + ny, x0 : x0 + nx].astype(np.float64)
            np.testing.assert_allclose(h["IMAGE"].data * f, r7["IMAGE"], rtol=2e-7)
            np.testing.assert_allclose(h["VARIANCE"].data * f * f, r7["VARIANCE"], rtol=4e-7)
            np.testing.assert_array_equal(h["FLAGS"].data, r7["FLAGS"])
            np.testing.assert_array_equal(h["ZODI"].data, r7["ZODI"])
            assert h["IMAGE"].header["SIMFLUX"] == pytest.approx(r7["sim"][0], rel=1e-12)


def test_each_release_uses_its_own_spectral_wcs(clean):
    rows = clean.discover(*AGN, 0.0)
    for coll in ("spherex_qr2", "spherex_qr3"):
        rel = coll.split("_")[1]
        sel = rows[(rows["obs_collection"] == coll) & (rows["energy_bandpassname"] == "SPHEREx-D5")]
        row = sel.iloc[0]
        with _open(clean.cutout_bytes(row["obs_publisher_did"], *AGN, 30.0)) as h:
            hd = h["IMAGE"].header
            px, py = round(hd["SIMXPIX"]), round(hd["SIMYPIX"])
            cwave = _cal(rel, "spectral_wcs", 5, "CWAVE")
            assert hd["SIMWAVE"] == pytest.approx(float(cwave[py, px]), abs=1e-6)
            vals = h["WCS-WAVE"].data[0]["VALUES"]
            with _open(clean.calibration_bytes(rel, "spectral_wcs", 5)) as c:
                np.testing.assert_array_equal(vals, c["WCS-WAVE"].data[0]["VALUES"])
    d = _cal("qr3", "spectral_wcs", 5, "CWAVE") - _cal("qr2", "spectral_wcs", 5, "CWAVE")
    np.testing.assert_allclose(d[::50, ::50], 0.0064, atol=2e-6)
    np.testing.assert_array_equal(
        _cal("qr3", "spectral_wcs", 5, "CBAND"), _cal("qr2", "spectral_wcs", 5, "CBAND")
    )
    np.testing.assert_array_equal(
        _cal("qr3", "spectral_wcs", 1, "CWAVE"), _cal("qr2", "spectral_wcs", 1, "CWAVE")
    )


# ------------------------------------------------------------------------------ discovery


def test_retry_copies_are_separate_rows_with_identical_pixels(arch, agn_rows):
    retry = _qr3(agn_rows, retry=True)
    assert len(retry) >= 2
    for _, r in retry.iterrows():
        did = r["obs_publisher_did"]
        assert did.endswith("/retry") and did.startswith("ivo://irsa.ipac/spherex_qr3?")
        orig = agn_rows[agn_rows["obs_publisher_did"] == did[: -len("/retry")]]
        assert len(orig) == 1
        o = orig.iloc[0]
        assert o["obs_id"] == r["obs_id"] and o["t_min"] == r["t_min"]
        assert "/l2b_retry-v27-2026-" in r["access_url"] and "/l2b-v27-2026-" in o["access_url"]
        t_r, t_o = (u.rsplit("_spx_", 1)[1][:-5] for u in (r["access_url"], o["access_url"]))
        assert int(t_r[-3:]) == int(t_o[-3:]) + 1
        key = json.loads(r["cloud_access"])["aws"]["key"]
        assert r["access_url"].endswith(key) and key.startswith("qr3/level2/")
    r = retry.iloc[0]
    o = agn_rows[agn_rows["obs_publisher_did"] == r["obs_publisher_did"][:-6]].iloc[0]
    with _open(arch.cutout_bytes(r["access_url"], *AGN, 60.0)) as hr:
        with _open(arch.cutout_bytes(o["access_url"], *AGN, 60.0)) as ho:
            for name in ("IMAGE", "FLAGS", "VARIANCE", "ZODI"):
                np.testing.assert_array_equal(hr[name].data, ho[name].data, err_msg=name)
            assert hr["IMAGE"].header["DATE"] != ho["IMAGE"].header["DATE"]
    info = arch.image_info(r["obs_publisher_did"])
    assert (
        info.retry
        and info.token.startswith("l2b_retry-")
        and info == arch.image_info(r["access_url"])
    )
    assert info.file_name == r["access_url"].rsplit("/", 1)[1]


def test_deep_duplicates_share_the_file(arch):
    rows = arch.discover(*NEP, 0.0)
    colls = set(rows["obs_collection"])
    assert colls == {"spherex_qr2", "spherex_qr2_deep", "spherex_qr3", "spherex_qr3_deep"}
    for rel in ("qr2", "qr3"):
        wide = rows[rows["obs_collection"] == f"spherex_{rel}"]
        deep = rows[rows["obs_collection"] == f"spherex_{rel}_deep"]
        assert wide["obs_publisher_did"].is_unique and deep["obs_publisher_did"].is_unique
        assert set(deep["obs_publisher_did"]) == set(wide["obs_publisher_did"])  # all |β| > 60
        m = wide.merge(deep, on="obs_publisher_did", suffixes=("", "_d"))
        assert (m["access_url"] == m["access_url_d"]).all() and (m["t_min"] == m["t_min_d"]).all()
    # Mixed field near |β| = 60: only frames centred at |β| >= 60 are also "deep".
    lon, lat = np.radians(100.0), np.radians(60.5)
    ecl = np.array([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)])
    ra, dec = (float(c) for c in survey.vec_to_radec(survey.ecl_to_equ(ecl)))
    mixed = arch.discover(ra, dec, 0.0)
    wide = mixed[mixed["obs_collection"] == "spherex_qr2"]
    deep_dids = set(mixed.loc[mixed["obs_collection"] == "spherex_qr2_deep", "obs_publisher_did"])
    assert 0 < len(deep_dids) < len(wide)
    for _, row in wide.iloc[::9].iterrows():
        info = arch.image_info(row["obs_publisher_did"])
        beta = float(survey.ecliptic_latitude(info.ra0, info.dec0))
        assert (row["obs_publisher_did"] in deep_dids) == (abs(beta) >= 60.0)


def test_qr3_discovery_only_within_the_time_slice(agn_rows):
    qr3 = agn_rows[agn_rows["obs_collection"] == "spherex_qr3"]
    qr2 = agn_rows[agn_rows["obs_collection"] == "spherex_qr2"]
    assert len(qr3) > 90 and len(qr2) > 90
    assert qr3["t_min"].between(QR3_START_MJD, QR3_START_MJD + 35).all()
    assert (qr2["t_min"] < QR3_START_MJD).all()
    assert (qr3["access_estsize"] == 65536).all() and (qr2["access_estsize"] == 71638).all()
    assert qr3["access_url"].str.contains("/ibe/data/spherex/qr3/level2/2026W").all()
    short = SimulatedArchive(qr3_days=10).discover(*AGN, 0.0)
    s3 = short[short["obs_collection"] == "spherex_qr3"]
    assert len(s3) < len(qr3) and (s3["t_min"] < QR3_START_MJD + 10).all()
    only3 = SimulatedArchive(releases=["qr3"]).discover(*AGN, 0.0)
    assert set(only3["obs_collection"]) == {"spherex_qr3"}
    assert len(only3) == len(qr3)
    only2 = SimulatedArchive.from_config({"releases": ["qr2"], "passes": 3}).discover(*AGN, 0.0)
    assert (
        set(only2["obs_collection"]) == {"spherex_qr2"} and (only2["t_min"] < QR3_START_MJD).all()
    )
    # An archive without QR3 does not serve QR3 images.
    with pytest.raises(ArchiveError):
        SimulatedArchive(releases=["qr2"]).cutout_bytes(qr3.iloc[0]["access_url"], *AGN, 30.0)
    with pytest.raises(ArchiveError, match="qr3 image"):
        SimulatedArchive().image_info(qr3.iloc[0]["obs_publisher_did"].replace("qr3?", "qr2?"))
    for bad in ({"releases": ["qr4"]}, {"releases": "qr3"}, {"qr3_days": 0}, {"qr3_days": 400}):
        with pytest.raises(ValueError):
            SimulatedArchive.from_config(bad)


# ------------------------------------------------------------------------------ calibration


def test_calibration_tokens_and_paths(arch, tmp_path):
    cal = arch.fetch_calibration("qr3", "epsf", 3, tmp_path)
    assert cal.path.endswith("/epsf_D3_spx_cal-epsf-v2-2026-191.fits")
    assert (cal.release, cal.family, cal.detector) == ("qr3", "epsf", 3)
    assert cal.calibration_id == calibration_id("qr3", "epsf", 3) == "epsf/cal-epsf-v2-2026-191/D3"
    d1 = arch.fetch_calibration("qr3", "epsf", 1, tmp_path / "e1.fits")
    assert d1.path.endswith("e1.fits") and d1.calibration_id == "epsf/cal-epsf-v1-2026-191/D1"
    with fits.open(cal.path) as h:
        assert [x.name for x in h] == ["PRIMARY", "EPSF"] and h["EPSF"].header["NAXIS2"] == 451
    fc = arch.fetch_calibration("qr3", "l3_flux_corrections", 1, tmp_path)
    assert fc.path.endswith("l3_flux_corrections_D1_spx_cal-flxc-v1-2026-191.fits")
    with fits.open(fc.path) as h:
        m = h["IMAGE"].data
        assert m.shape == (2040, 2040) and np.median(m) == pytest.approx(0.970, abs=1e-3)
    sw = arch.fetch_calibration("qr3", "spectral_wcs", 5, tmp_path)
    assert sw.path.endswith("spectral_wcs_D5_spx_cal-swcs-v5-2026-191.fits")
    with fits.open(sw.path) as h:
        assert [x.name for x in h] == ["PRIMARY", "CWAVE", "CBAND", "WCS-WAVE"]
    np.testing.assert_array_equal(
        _cal("qr3", "solid_angle_pixel_map", 2, "IMAGE"),
        _cal("qr2", "solid_angle_pixel_map", 2, "IMAGE"),
    )
    with pytest.raises(ArchiveError, match="family"):
        arch.fetch_calibration("qr2", "l3_flux_corrections", 1, tmp_path)


def test_fetch_cutout_writes_valid_qr3_and_retry_files(arch, agn_rows, tmp_path):
    # Needs the R7-aware spxflow.archive.validate.cutout_problem (EPSF instead of PSF).
    rows = [_qr3(agn_rows).iloc[0], _qr3(agn_rows, retry=True).iloc[0]]
    results = arch.fetch_cutouts(rows, *AGN, 60.0, tmp_path)
    for row, res in zip(rows, results, strict=True):
        assert res.status == "ok", res.reason
        assert res.file_name == row["access_url"].rsplit("/", 1)[1] and res.size_bytes > 3e6
    assert results[0].file_name != results[1].file_name
