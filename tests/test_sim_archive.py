"""SimulatedArchive: discovery tables, cutout files (format + truth), calibration, CLI.

Everything is read back with astropy only, as a client of the real archive would. These are the
QR2-layout tests (BRIGHT has no QR3 coverage); the R7/QR3 layout is tested in test_sim_r7.py.
QR2 pixels are on the QR2 gain scale: IMAGE x flxc (the QR3 l3_flux_corrections product) is the
true (R7-scale) sky, so flux checks multiply by it.
"""

from __future__ import annotations

import functools
import gzip
import io
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from spxflow.archive.base import ArchiveError, NoOverlapError
from spxflow.archive.simulated import SimulatedArchive
from spxflow.format import BANDS, EXTNAMES, FLAG_BITS, NPIX, SIA_COLUMN_NAMES
from spxflow.sim import sky, spectral_model
from spxflow.sim.sed import band_average
from spxflow.spectral import read_wcs_wave_hdu, wcs_wave_lookup

BRIGHT = (150.25, 45.30)
CONV = 23.5045


@pytest.fixture(scope="module")
def arch():
    return SimulatedArchive.from_config({})


@pytest.fixture(scope="module")
def clean():
    return SimulatedArchive.from_config({"noise": False, "field_stars": False})


@pytest.fixture(scope="module")
def bright_rows(arch):
    return arch.discover(*BRIGHT, 0.0)


def _open(data: bytes) -> fits.HDUList:
    return fits.open(io.BytesIO(data), memmap=False)


def _parent_grid(hdr, shape):
    x0, y0 = 1 - int(hdr["CRPIX1A"]), 1 - int(hdr["CRPIX2A"])
    return np.mgrid[y0 : y0 + shape[0], x0 : x0 + shape[1]]


@functools.cache
def _flxc(det: int) -> np.ndarray:
    """The l3_flux_corrections map of a detector, read from the calibration product."""
    arch = SimulatedArchive.from_config({})
    with _open(arch.calibration_bytes("qr3", "l3_flux_corrections", det)) as h:
        return h["IMAGE"].data.astype(np.float64)


# ------------------------------------------------------------------------------ discovery


def test_discovery_table_columns_and_values(bright_rows):
    df = bright_rows
    assert tuple(df.columns) == SIA_COLUMN_NAMES
    assert 95 <= len(df) <= 125
    assert df["t_min"].is_monotonic_increasing
    assert df["obs_publisher_did"].is_unique
    for _, row in df.head(12).iterrows():
        det = int(row["energy_bandpassname"][-1])
        assert row["obs_publisher_did"] == f"ivo://irsa.ipac/spherex_qr2?{row['obs_id']}/D{det}"
        assert (row["em_min"], row["em_max"], row["em_res_power"]) == BANDS[det]
        assert row["access_url"].startswith(
            "https://irsa.ipac.caltech.edu/ibe/data/spherex/qr2/level2/"
        )
        assert f"/{det}/level2_{row['obs_id']}D{det}_spx_l2b-v" in row["access_url"]
        key = json.loads(row["cloud_access"])["aws"]["key"]
        assert row["access_url"].endswith(key)
        pts = np.array(row["s_region"].split()[2:], dtype=float).reshape(-1, 2)
        assert len(pts) == 5 and np.array_equal(pts[0], pts[-1])
        assert (row["t_max"] - row["t_min"]) * 86400 == pytest.approx(115.118, abs=1e-3)
        assert row["t_exptime"] == 113.5826
    # Dichroic pairs share OBSID and time; every detector gets about one image per channel.
    pairs = df.groupby("obs_id")["energy_bandpassname"].apply(lambda s: "".join(sorted(s)))
    assert set(pairs) <= {"SPHEREx-D1SPHEREx-D4", "SPHEREx-D2SPHEREx-D5", "SPHEREx-D3SPHEREx-D6"}


def test_discover_many_matches_discover_and_is_fast_path(arch):
    positions = [("a", *BRIGHT), ("b", 35.5, 48.1), ("far", 270.0, 66.56)]
    many = arch.discover_many(positions, 0.0)
    assert set(many) == {"a", "b", "far"}
    pd.testing.assert_frame_equal(many["b"], arch.discover(35.5, 48.1, 0.0))
    assert len(many["far"]) > 1000  # ecliptic pole: far more coverage


def test_demo_catalog_sources_have_truth_and_coverage(arch):
    cat = pd.read_csv(Path(__file__).parents[1] / "resources" / "demo_catalog.csv")
    assert list(cat.columns) == ["Name", "RA_deg", "DEC_deg", "cutout_size_arcsec"]
    assert len(cat) == 6 and cat["Name"].str.contains(" ").any()
    assert cat["cutout_size_arcsec"].between(60, 90).all()
    found = arch.discover_many(list(cat[["Name", "RA_deg", "DEC_deg"]].itertuples(index=False)), 0)
    n_qr3 = 0
    for name, df in found.items():
        assert 95 <= (df["obs_collection"] == "spherex_qr2").sum() <= 130, name
        assert set(df["obs_collection"]) <= {"spherex_qr2", "spherex_qr3"}, name
        n_qr3 += (df["obs_collection"] == "spherex_qr3").sum()
        ra, dec = cat.set_index("Name").loc[name, ["RA_deg", "DEC_deg"]]
        assert arch.truth_sed(ra, dec, [1.0]) is not None
    assert n_qr3 > 50  # the 35-day QR3 slice covers at least one demo source
    truth = arch.truth
    t = truth.names.index("BlendTarget")
    n = truth.names.index("BlendNeighbour")
    sep = np.rad2deg(np.arccos(truth.vec[t] @ truth.vec[n])) * 3600
    assert 12 <= sep <= 15
    assert truth.seds[n].flux_ujy == pytest.approx(10 * truth.seds[t].flux_ujy)


# ------------------------------------------------------------------------------ cutout format


def test_cutout_hdus_dtypes_units_and_cards(arch, bright_rows):
    row = bright_rows.iloc[0]
    with _open(arch.cutout_bytes(row["obs_publisher_did"], *BRIGHT, 60.0)) as h:
        h.verify("exception")
        assert [x.name for x in h] == list(EXTNAMES)
        assert h[0].header["VERSION"] == "6.5.6" and h[0].data is None
        img, flg, var, zod = (h[n] for n in ("IMAGE", "FLAGS", "VARIANCE", "ZODI"))
        assert img.data.dtype == np.dtype(">f4") and flg.data.dtype == np.dtype(">i4")
        assert var.data.dtype == np.dtype(">f4") and zod.data.dtype == np.dtype(">f4")
        assert img.data.shape == (10, 10) == flg.data.shape == var.data.shape == zod.data.shape
        assert u.Unit(img.header["BUNIT"]) == u.MJy / u.sr
        assert u.Unit(var.header["BUNIT"]) == (u.MJy / u.sr) ** 2
        assert u.Unit(zod.header["BUNIT"]) == u.MJy / u.sr
        assert flg.header["BUNIT"] == "" and flg.header["EXTTYPE"] == "MASK"
        hd = img.header
        assert hd["CTYPE1"] == "RA---TAN-SIP" and hd["A_ORDER"] == 3 and hd["BP_ORDER"] == 3
        assert hd["A_0_0"] != 0 and hd["B_0_0"] != 0 and hd["A_1_0"] != 0
        assert hd["CDELT1"] == 1.0 and abs(
            np.linalg.det([[hd["PC1_1"], hd["PC1_2"]], [hd["PC2_1"], hd["PC2_2"]]])
        ) == (pytest.approx((6.15 / 3600) ** 2))
        assert hd["CTYPE1A"] == "LINEAR" and hd["CTYPE1W"] == "WAVE-TAB"
        assert hd["PS1_0W"] == "WCS-WAVE" and hd["PS2_2W"] == "Y"
        assert "EXPTIME" not in hd and "LTV1" not in hd
        assert hd["MJD-BEG"] == hd["MJD-OBS"] == row["t_min"] and hd["MJD-END"] == row["t_max"]
        assert hd["MJD-AVG"] == pytest.approx(0.5 * (hd["MJD-BEG"] + hd["MJD-END"]))
        assert hd["XPOSURE"] == 113.5826 and hd["TELAPSE"] == 118.1873 and hd["TSAMP"] == 1.5349
        assert hd["DATE-OBS"].startswith("20") and len(hd["DATE-AVG"]) == 23
        assert hd["FINAST"] == 0 and hd["L2DQAFLG"] == "Pass" and hd["DETCOORD"] == "sky"
        assert hd["OMEGA_MEDIAN"] == pytest.approx(37.86) and hd["OMEGA_STDDEV"] == 0.2
        assert 4.5 < hd["PSF_FWHM"] < 7.0 and 0 < hd["PXSRCMSK"] < 100
        assert hd["OBSID"] == row["obs_id"] and hd["DETECTOR"] == int(
            row["energy_bandpassname"][-1]
        )
        assert hd["L2 N_NONFUNC"] > 0 and hd["L2 N_DICHROIC"] >= 0
        for name, (bit, _) in FLAG_BITS.items():
            assert flg.header[f"MP_{name}"] == bit
        raw = h["FLAGS"].header.tostring()
        assert "HIERARCH MP_TRANSIENT = 0" in raw and "MP_HOT  =" in raw
        for name in ("FLAGS", "VARIANCE", "ZODI"):
            for key in ("CRPIX1", "CRPIX2A", "CRPIX1W", "A_0_0", "MJD-AVG", "CTYPE2W", "CRVAL1"):
                assert h[name].header[key] == hd[key], (name, key)
        assert hd["SIMSRC"] == "BrightStar" and hd["SIMFLUX"] > 1000 and hd["SIMVERS"]
        # PSF cube, whole, x-fast headers.
        psf = h["PSF"]
        assert psf.data.shape == (121, 101, 101) and psf.data.dtype == np.dtype(">f4")
        np.testing.assert_allclose(psf.data.sum(axis=(1, 2)), 1.0, atol=1e-5)
        assert psf.header["OVERSAMP"] == 10 and psf.header["CRPIX1"] == 51.0
        assert psf.header["XCTR_2"] == pytest.approx(278.181818)
        assert psf.header["YCTR_2"] == pytest.approx(92.727273)
        assert psf.header["XWID_1"] == pytest.approx(185.954545)
        assert psf.header["XWID_11"] == pytest.approx(184.954545)
        assert "zone (1, 0)" in psf.header.comments["XCTR_2"]
        assert len(psf.header) == 509
        ww = h["WCS-WAVE"]
        nx, ny = (len(v) for v in spectral_model.control_points(hd["DETECTOR"]))
        assert [c.format for c in ww.columns] == [f"{nx}J", f"{ny}J", f"{2 * nx * ny}E"]
        assert ww.columns["VALUES"].dim == f"(2,{nx},{ny})" and ww.header["NAXIS2"] == 1
        assert ww.data[0]["VALUES"].shape == (ny, nx, 2)


def test_psf_header_erratum_mode(bright_rows):
    arch = SimulatedArchive.from_config({"psf_header_erratum": True, "field_stars": False})
    row = bright_rows.iloc[0]
    with _open(arch.cutout_bytes(row["obs_publisher_did"], *BRIGHT, 30.0)) as h:
        assert h[0].header["VERSION"] == "6.5.4"
        ph = h["PSF"].header
        # Transposed header: card 2 describes zone (0, 1) although the data are x-fast.
        assert ph["XCTR_2"] == pytest.approx(92.727273)
        assert ph["YCTR_2"] == pytest.approx(278.181818)
        assert "zone (0, 1)" in ph.comments["XCTR_2"]
        good = SimulatedArchive.from_config({"field_stars": False})
        with _open(good.cutout_bytes(row["obs_publisher_did"], *BRIGHT, 30.0)) as g:
            np.testing.assert_array_equal(g["PSF"].data, h["PSF"].data)


def test_crpix_shifts_and_overlapping_cutouts_agree(arch, bright_rows):
    row = bright_rows.iloc[3]
    did = row["obs_publisher_did"]
    ra, dec = BRIGHT
    big = _open(arch.cutout_bytes(did, ra, dec, 180.0))
    small = _open(arch.cutout_bytes(did, ra + 40 / 3600, dec - 25 / 3600, 90.0))
    hb, hs = big["IMAGE"].header, small["IMAGE"].header
    ob = (1 - hb["CRPIX1A"], 1 - hb["CRPIX2A"])
    os_ = (1 - hs["CRPIX1A"], 1 - hs["CRPIX2A"])
    for h in (hb, hs):
        origin = 1 - h["CRPIX1A"]
        assert h["CRPIX1"] + origin == 1020.5 and h["CRPIX1W"] == h["CRPIX1A"]
        assert h["CRPIX2"] + (1 - h["CRPIX2A"]) == 1020.5 and h["CRPIX2W"] == h["CRPIX2A"]
    dx, dy = int(os_[0] - ob[0]), int(os_[1] - ob[1])
    assert (dx, dy) != (0, 0)
    ny, nx = small["IMAGE"].data.shape
    for name in ("IMAGE", "FLAGS", "VARIANCE", "ZODI"):
        np.testing.assert_array_equal(
            small[name].data, big[name].data[dy : dy + ny, dx : dx + nx], err_msg=name
        )
    # Both WCSs put the source at the same parent pixel.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        xb, yb = WCS(hb).all_world2pix(ra, dec, 0)
        xs, ys = WCS(hs).all_world2pix(ra, dec, 0)
    assert xb + ob[0] == pytest.approx(xs + os_[0], abs=1e-6)
    assert yb + ob[1] == pytest.approx(ys + os_[1], abs=1e-6)
    # ... which is where the simulator rendered it (SIM*PIX: 0-based parent pixels).
    assert (xb + ob[0], yb + ob[1]) == pytest.approx((hb["SIMXPIX"], hb["SIMYPIX"]), abs=1e-6)


def test_edge_clipping_and_no_overlap(arch, bright_rows):
    row = bright_rows.iloc[5]
    info = arch.image_info(row["obs_publisher_did"])
    # A position just off the left frame edge: clipped, not refused.
    ra, dec = info.pixel_to_world(-3.0, 1000.0)
    with _open(arch.cutout_bytes(row["obs_publisher_did"], float(ra), float(dec), 60.0)) as h:
        assert h["IMAGE"].data.shape == (10, 3)  # columns -7..2 requested, 0..2 kept
        assert h["IMAGE"].header["CRPIX1A"] == 1.0
    ra, dec = info.pixel_to_world(-30.0, 1000.0)
    with pytest.raises(NoOverlapError):
        arch.cutout_bytes(row["obs_publisher_did"], float(ra), float(dec), 60.0)
    with pytest.raises(NoOverlapError):
        arch.cutout_bytes(row["obs_publisher_did"], (BRIGHT[0] + 180) % 360, -BRIGHT[1], 60.0)


def test_spectral_wcs_lookup_and_astropy_w(arch, bright_rows):
    row = bright_rows.iloc[7]
    h = _open(arch.cutout_bytes(row["obs_publisher_did"], *BRIGHT, 120.0))
    hd = h["IMAGE"].header
    det = hd["DETECTOR"]
    yy, xx = _parent_grid(hd, h["IMAGE"].data.shape)
    xt, yt, values = read_wcs_wave_hdu(h["WCS-WAVE"])
    lw, lb = wcs_wave_lookup(xt, yt, values, xx + 1, yy + 1)
    cal = _open(arch.calibration_bytes("qr2", "spectral_wcs", det))
    cw = cal["CWAVE"].data[yy, xx]
    assert np.abs(lw - cw).max() < 1e-3
    assert np.array_equal(cal["WCS-WAVE"].data[0]["VALUES"], h["WCS-WAVE"].data[0]["VALUES"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        w = WCS(hd, fobj=h, key="W")
    w.sip = None
    lam, band = w.wcs_pix2world(np.array([3.0, 10.0]), np.array([4.0, 11.0]), 0)
    ref = wcs_wave_lookup(xt, yt, values, xx[[4, 11], [3, 10]] + 1, yy[[4, 11], [3, 10]] + 1)
    np.testing.assert_allclose(lam, ref[0], atol=1e-6)
    np.testing.assert_allclose(band, ref[1], atol=1e-6)


# ------------------------------------------------------------------------------ truth and units


def test_units_chain_recovers_injected_flux_exactly_without_noise(clean, bright_rows):
    for k in (0, 9, 30, 61):
        row = bright_rows.iloc[k]
        with _open(clean.cutout_bytes(row["obs_publisher_did"], *BRIGHT, 120.0)) as h:
            hd = h["IMAGE"].header
            det = hd["DETECTOR"]
            yy, xx = _parent_grid(hd, h["IMAGE"].data.shape)
            omega = sky.solid_angle(det, xx, yy)
            image = h["IMAGE"].data * _flxc(det)[yy, xx]  # QR2 gains -> the true (R7) scale
            resid = image - hd["SIMZSCAL"] * h["ZODI"].data.astype(float)
            bg = np.nanmedian(resid[np.hypot(xx - hd["SIMXPIX"], yy - hd["SIMYPIX"]) > 7])
            ok = np.isfinite(resid) & (h["FLAGS"].data & (1 << 6) == 0)
            near = np.hypot(xx - hd["SIMXPIX"], yy - hd["SIMYPIX"]) <= 6
            flux = np.sum(((resid - bg) * omega * CONV)[ok & near])
            tol = 0.01 if (ok | ~near).all() else 0.1  # a dead pixel on the core loses flux
            assert flux == pytest.approx(hd["SIMFLUX"], rel=tol)


def test_units_chain_with_noise_within_errors(arch, bright_rows):
    pulls = []
    for k in range(0, len(bright_rows), 7):
        row = bright_rows.iloc[k]
        with _open(arch.cutout_bytes(row["obs_publisher_did"], *BRIGHT, 120.0)) as h:
            hd = h["IMAGE"].header
            yy, xx = _parent_grid(hd, h["IMAGE"].data.shape)
            omega = sky.solid_angle(hd["DETECTOR"], xx, yy)
            bad = h["FLAGS"].data & (1 | 4 | 64 | 2048 | 1 << 17 | 1 << 19) != 0
            r = np.hypot(xx - hd["SIMXPIX"], yy - hd["SIMYPIX"])
            flxc = _flxc(hd["DETECTOR"])[yy, xx]
            resid = h["IMAGE"].data * flxc - h["ZODI"].data.astype(float)
            bg = np.median(resid[(r > 7) & ~bad])
            sel = (r <= 6) & ~bad
            if (bad & (r <= 2)).any():
                continue  # a masked pixel on the core: not a plain-sum case
            flux = np.sum(((resid - bg) * omega * CONV)[sel])
            sigma = np.sqrt(np.sum((h["VARIANCE"].data * (flxc * omega * CONV) ** 2)[sel]))
            pulls.append((flux - hd["SIMFLUX"]) / max(sigma, 1e-3 * hd["SIMFLUX"]))
    pulls = np.array(pulls)
    assert len(pulls) >= 8
    assert np.abs(pulls).max() < 5


def test_same_source_same_true_flux_at_same_wavelength(clean, bright_rows):
    sed = clean.truth.seds[clean.truth.names.index("BrightStar")]
    for k in range(0, len(bright_rows), 13):
        row = bright_rows.iloc[k]
        with _open(clean.cutout_bytes(row["obs_publisher_did"], *BRIGHT, 30.0)) as h:
            hd = h["IMAGE"].header
            px, py = round(hd["SIMXPIX"]), round(hd["SIMYPIX"])
            lam, band = spectral_model.wave_band_parent0(hd["DETECTOR"], px, py)
            assert hd["SIMWAVE"] == pytest.approx(float(lam), abs=1e-9)
            assert hd["SIMFLUX"] == pytest.approx(float(band_average(sed, lam, band)), rel=1e-9)
            assert hd["SIMFLUX"] == pytest.approx(
                clean.truth_sed(*BRIGHT, np.array([lam]), bandwidth_um=band)[0], rel=1e-9
            )
    assert clean.truth_sed(BRIGHT[0] + 0.01, BRIGHT[1], [1.0]) is None


def test_empty_position_has_zero_simflux(clean, bright_rows):
    row = bright_rows.iloc[2]
    with _open(
        clean.cutout_bytes(row["obs_publisher_did"], BRIGHT[0] + 0.05, BRIGHT[1], 30.0)
    ) as h:
        assert h["IMAGE"].header["SIMSRC"] == "none" and h["IMAGE"].header["SIMFLUX"] == 0.0


# ------------------------------------------------------------------------------ determinism, noise


def test_same_seed_byte_identical_and_gzip(arch, bright_rows, tmp_path):
    did = bright_rows.iloc[1]["obs_publisher_did"]
    a = arch.cutout_bytes(did, *BRIGHT, 60.0)
    b = SimulatedArchive.from_config({}).cutout_bytes(did, *BRIGHT, 60.0)
    assert a == b
    c = SimulatedArchive.from_config({"seed": 1}).cutout_bytes(did, *BRIGHT, 60.0)
    assert c != a
    z = SimulatedArchive.from_config({"gzip": True}).cutout_bytes(did, *BRIGHT, 60.0)
    assert z[:2] == b"\x1f\x8b" and gzip.decompress(z) == a
    (tmp_path / "c.fits.gz").write_bytes(z)
    with fits.open(tmp_path / "c.fits.gz") as h:  # astropy reads the (multi-member) gzip file
        assert [x.name for x in h] == list(EXTNAMES)
        np.testing.assert_array_equal(h["PSF"].data, _open(a)["PSF"].data)


def test_different_images_have_independent_noise(arch, clean, bright_rows):
    def noise(did):
        n = _open(arch.cutout_bytes(did, *BRIGHT, 300.0))
        c = _open(clean.cutout_bytes(did, *BRIGHT, 300.0))
        good = n["FLAGS"].data & (1 | 64 | 2048 | 1 << 17 | 1 << 19 | 1 << 21) == 0
        return (n["IMAGE"].data - c["IMAGE"].data), good, n["VARIANCE"].data

    a, ga, va = noise(bright_rows.iloc[0]["obs_publisher_did"])
    b, gb, _ = noise(bright_rows.iloc[1]["obs_publisher_did"])  # the dichroic partner
    m = ga & gb
    # Field stars differ between the two runs; only compare pixel noise where both are clean.
    assert abs(np.corrcoef(a[m], b[m])[0, 1]) < 0.1
    pull = a[ga] / np.sqrt(va[ga])
    assert 0.9 < np.std(pull) < 1.1


def test_flags_incidence_and_dichroic_rows(arch):
    df = arch.discover(*BRIGHT, 0.0)
    d3 = df[df["energy_bandpassname"] == "SPHEREx-D3"].iloc[0]
    info = arch.image_info(d3["obs_publisher_did"])
    ra, dec = info.pixel_to_world(1000.0, 20.0)
    with _open(arch.cutout_bytes(d3["obs_publisher_did"], float(ra), float(dec), 600.0)) as h:
        f = h["FLAGS"].data
        yy, _ = _parent_grid(h["IMAGE"].header, f.shape)
        dich = (f & (1 << 7)) != 0
        assert np.array_equal(dich, yy < 53)
        n = f.size
        for name, lo, hi in (("TRANSIENT", 0.002, 0.01), ("OUTLIER", 0.01, 0.025)):
            frac = ((f & (1 << FLAG_BITS[name][0])) != 0).sum() / n
            assert lo < frac < hi, name
        nonfunc = (f & 64) != 0
        assert np.isnan(h["VARIANCE"].data[nonfunc]).all()


def test_overflow_flag_on_saturated_star():
    arch = SimulatedArchive.from_config({"field_stars": False})
    ra, dec = 120.30, 50.00
    row = arch.discover(ra, dec).query("energy_bandpassname == 'SPHEREx-D1'").iloc[0]
    with _open(arch.cutout_bytes(row["obs_publisher_did"], ra, dec, 60.0)) as h:
        f = h["FLAGS"].data
        assert ((f & 2) != 0).any() and ((f & (1 << 21)) != 0).any()
        assert np.nanmax(h["IMAGE"].data) > 50.0  # values kept


# ------------------------------------------------------------------------------ errors, files, CLI


@pytest.mark.parametrize(
    ("ra", "dec", "size", "match"),
    [
        (10.0, 95.0, 60.0, "dec"),
        (float("nan"), 10.0, 60.0, "ra"),
        (10.0, 10.0, 0.0, "size"),
        (10.0, 10.0, -5.0, "size"),
        (10.0, 10.0, 2041 * 6.15, "size"),
        (10.0, 10.0, float("inf"), "size"),
    ],
)
def test_bad_inputs_raise_value_error(arch, bright_rows, ra, dec, size, match):
    with pytest.raises(ValueError, match=match):
        arch.cutout_bytes(bright_rows.iloc[0]["obs_publisher_did"], ra, dec, size)


def test_unknown_image_ids(arch, bright_rows):
    for bad in (
        "ivo://irsa.ipac/spherex_qr2?2030W01_1A_0001_1/D1",
        "ivo://irsa.ipac/spherex_qr2?garbage/D1",
        "not an id",
        bright_rows.iloc[0]["access_url"].replace("l2b-v21", "l2b-v99"),
    ):
        with pytest.raises(ArchiveError):
            arch.cutout_bytes(bad, *BRIGHT, 60.0)
    with pytest.raises(ValueError, match="dec"):
        arch.discover(10.0, -91.0, 0.0)
    url = bright_rows.iloc[0]["access_url"]
    assert arch.cutout_bytes(url, *BRIGHT, 30.0) == arch.cutout_bytes(
        bright_rows.iloc[0]["obs_publisher_did"], *BRIGHT, 30.0
    )
    with pytest.raises(ValueError, match="unknown key"):
        SimulatedArchive.from_config({"sead": 1})


def test_fetch_cutout_and_calibration(arch, bright_rows, tmp_path):
    row = bright_rows.iloc[4]
    res = arch.fetch_cutout(row, *BRIGHT, 60.0, tmp_path)
    assert res.status == "ok" and res.path.endswith(row["access_url"].rsplit("/", 1)[1])
    assert res.size_bytes > 5e6 and len(res.sha256) == 64
    assert sorted(p.name for p in tmp_path.iterdir()) == [res.file_name]
    far = arch.fetch_cutout(row, (BRIGHT[0] + 180) % 360, 0.0, 60.0, tmp_path)
    assert far.status == "no_overlap" and far.path is None
    cal = arch.fetch_calibration("qr2", "solid_angle_pixel_map", 2, tmp_path)
    assert cal.path.endswith("solid_angle_pixel_map_D2_spx_cal-sapm-v2-2025-164.fits")
    assert (cal.release, cal.family, cal.detector) == ("qr2", "solid_angle_pixel_map", 2)
    assert cal.calibration_id == "solid_angle_pixel_map/cal-sapm-v2-2025-164/D2"
    with fits.open(cal.path) as h:
        sapm = h["IMAGE"].data
        assert sapm.shape == (NPIX, NPIX) and sapm.dtype == np.dtype(">f4")
        assert u.Unit(h["IMAGE"].header["BUNIT"]) == u.arcsec**2
        assert np.median(sapm) == pytest.approx(37.86, abs=0.01)
        assert sapm.std() == pytest.approx(0.2, abs=0.01)
    cal = arch.fetch_calibration("qr2", "spectral_wcs", 5, tmp_path / "sw.fits")
    with fits.open(cal.path) as h:
        assert [x.name for x in h] == ["PRIMARY", "CWAVE", "CBAND", "WCS-WAVE"]
        assert h["CWAVE"].data.shape == (NPIX, NPIX) and u.Unit(h["CWAVE"].header["BUNIT"]) == u.um
        assert h["CWAVE"].data[0, 0] > h["CWAVE"].data[-1, 0]
    for bad in (("qr2", "dark", 1), ("qr2", "epsf", 1), ("qr4", "epsf", 1), ("qr3", "epsf", 7)):
        with pytest.raises(ArchiveError):
            arch.calibration_bytes(*bad)


def test_cli_discover_and_cutout(bright_rows, tmp_path):
    cmd = [sys.executable, "-m", "spxflow.archive.simulated"]
    out = subprocess.run(
        [*cmd, "discover", *map(str, BRIGHT)], capture_output=True, text=True, check=True
    )
    table = pd.read_csv(io.StringIO(out.stdout))
    assert list(table.columns) == list(SIA_COLUMN_NAMES) and len(table) == len(bright_rows)
    dest = tmp_path / "c.fits"
    did = bright_rows.iloc[0]["obs_publisher_did"]
    subprocess.run([*cmd, "cutout", did, *map(str, BRIGHT), "60", str(dest)], check=True)
    with fits.open(dest) as h:
        assert [x.name for x in h] == list(EXTNAMES)
    bad = subprocess.run([*cmd, "cutout", "nope", "1", "2", "60", str(dest)], capture_output=True)
    assert bad.returncode != 0 and b"unknown image id" in bad.stderr
