"""Simulator building blocks: spectral model, PSF + rendering convention, SEDs, survey, WCS."""

from __future__ import annotations

import numpy as np
import pytest

from spxflow.format import NPIX, psf_plane
from spxflow.sim import hashrng, sed, sky, spectral_model, survey
from spxflow.sim import wcs as simwcs
from spxflow.sim.psf_model import psf_cube, render_psf_native
from spxflow.spectral import wcs_wave_lookup


@pytest.mark.parametrize("det", [1, 2, 3, 4, 5, 6])
def test_wcs_wave_table_matches_cwave_within_1nm(det):
    xt, yt, values = spectral_model.wcs_wave_table(det)
    y, x = np.mgrid[0:NPIX:3, 0:NPIX:3]
    cw, cb = spectral_model.wave_band_parent0(det, x, y)
    lw, lb = wcs_wave_lookup(xt, yt, values, x + 1, y + 1)
    assert np.abs(lw - cw).max() < 1e-3  # µm
    assert np.abs(lb - cb).max() < 1e-3
    assert xt[0] == 1 and xt[-1] == NPIX and yt[0] == 1 and yt[-1] == NPIX


@pytest.mark.parametrize("det", [1, 2, 3, 4, 5, 6])
def test_wavelength_decreases_with_y_and_bows_in_x(det):
    top, bottom = spectral_model.WAVE_ENDS[det]
    lam, band = spectral_model.wave_band(det, np.array([1.0, 1.0, 1020.5]), [1, NPIX, NPIX])
    assert lam[0] == pytest.approx(top) and lam[1] == pytest.approx(bottom)
    assert 0.005 < (lam[1] - lam[2]) / lam[1] < 0.015  # ~1 % bowing, smallest at x≈1020
    r = lam / band
    assert (30 < r.min() < 45) if det <= 4 else (100 < r.min() < 135)


def test_dichroic_reduces_bandwidth_on_d3_low_y_and_d4_high_y():
    _, b3 = spectral_model.wave_band(3, [1020, 1020], [50, 600])
    _, b4 = spectral_model.wave_band(4, [1020, 1020], [1950, 1000])
    lam3, _ = spectral_model.wave_band(3, [1020, 1020], [50, 600])
    assert b3[0] / lam3[0] < 0.8 * b3[1] / lam3[1]
    assert b4[0] < b4[1]


@pytest.mark.parametrize("det", [1, 6])
def test_psf_cube_normalised_centred_and_zone_dependent(det):
    cube = psf_cube(det)
    assert cube.shape == (121, 101, 101) and cube.dtype == np.float32
    np.testing.assert_allclose(cube.sum(axis=(1, 2)), 1.0, atol=1e-5)
    assert all(np.unravel_index(p.argmax(), p.shape) == (50, 50) for p in cube)
    # Centroid of every plane at (50, 50): sample (i, j) sits at ((j-50)/10, (i-50)/10) px.
    j = np.arange(101) - 50
    assert np.abs((cube.sum(axis=1) * j).sum(axis=1)).max() < 1e-3
    # Zone dependence at the few-per-cent level: a PSF fit of a source rendered with corner
    # zone (10, 0) using the transposed zone (0, 10) is off by a few per cent.
    data = render_psf_native(cube[10], 0.2, -0.1)
    model = render_psf_native(cube[110], 0.2, -0.1)
    err = abs((data * model).sum() / (model * model).sum() - 1)
    assert 0.01 < err < 0.12


def test_render_convention_is_shift_consistent_and_flux_conserving():
    plane = psf_cube(3)[60]
    a = render_psf_native(plane, 0.3, -0.2, 11)
    b = render_psf_native(plane, -0.7, -0.2, 11)  # same source, reference pixel one to the right
    np.testing.assert_allclose(a[:, 1:], b[:, :-1], atol=1e-12)
    assert a.sum() == pytest.approx(1.0, abs=1e-6)
    # Integrating over pixels: a centred source puts the same flux left and right.
    c = render_psf_native(plane, 0.0, 0.0, 11)
    assert c[5, 4] == pytest.approx(c[5, 6], rel=0.1)
    # A half-pixel offset splits the flux evenly between two pixels (symmetric planes).
    d = render_psf_native(psf_cube(3)[0], 0.5, 0.0, 11)
    assert d[5, 5] == pytest.approx(d[5, 6], rel=0.05)


def test_psf_plane_geometry_is_x_fast():
    assert psf_plane(0, 0) == 0
    assert psf_plane(300, 0) == 1
    assert psf_plane(0, 300) == 11
    assert psf_plane(2039, 2039) == 120


def test_sed_band_average_and_line_flux():
    flat = sed.SED("faint", 5.0)
    assert sed.band_average(flat, np.array([1.0, 4.0]), np.array([0.03, 0.04])) == pytest.approx(
        [5.0, 5.0]
    )
    agn = sed.SED("agn", 400.0, 2.0, alpha=1.0, redshift=0.05, line_ew_um=0.08)
    lam = np.linspace(1.85, 2.10, 20001)
    excess = np.trapezoid(sed.monochromatic(agn, lam) - sed.continuum(agn, lam), lam)
    paa = sed.lines(agn)[0]
    assert excess == pytest.approx(paa[1], rel=1e-3)
    # In a band centred on Paα the line raises the flux well above the continuum.
    on = sed.band_average(agn, paa[0], paa[0] / 40.6)
    assert on > 1.5 * sed.continuum(agn, paa[0])
    star = sed.SED("star", 1000.0, 1.0, temp_k=5000.0)
    assert sed.band_average(star, 1.0, 1e-6) == pytest.approx(1000.0, rel=1e-6)
    with pytest.raises(ValueError, match="family"):
        sed.SED("galaxy", 1.0)


def test_hashrng_is_deterministic_and_independent():
    idx = np.arange(200000)
    a = hashrng.normal(1, 0, idx)
    assert np.array_equal(a, hashrng.normal(1, 0, idx))
    assert abs(a.mean()) < 0.01 and abs(a.std() - 1) < 0.01
    b = hashrng.normal(2, 0, idx)
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.01
    assert np.array_equal(hashrng.normal(1, 0, idx[5:9]), a[5:9])


def test_survey_coverage_mid_latitude_and_poles():
    for ra, dec in [(150.25, 45.30), (10.68, 41.27)]:
        pos, slew, step, det, x0, y0 = survey.find_images(ra, dec, 0.0, 1)
        assert 95 <= len(pos) <= 125
        counts = np.bincount(det, minlength=7)[1:]
        assert counts.min() >= 12  # every detector, about one per channel
        assert np.all((x0 >= -0.5) & (x0 <= NPIX - 0.5) & (y0 >= -0.5) & (y0 <= NPIX - 0.5))
    assert len(survey.find_images(270.0, 66.56, 0.0, 1)[0]) > 1000  # NEP
    assert len(survey.find_images(150.25, 45.30, 0.0, 2)[0]) > 190  # passes add coverage


def test_obsid_round_trip_times_and_pairs():
    pos, slew, step, det, _, _ = survey.find_images(35.5, 48.1, 0.0, 1)
    infos = [
        survey.image_info(int(a), int(s), int(d)) for a, s, d in zip(slew, step, det, strict=True)
    ]
    for info in infos[:20]:
        assert survey.parse_obsid(info.obsid, info.detector, 1) == info
        assert (info.mjd_end - info.mjd_beg) * 86400 == pytest.approx(115.118, abs=1e-3)
    by_obsid = {}
    for info in infos:
        by_obsid.setdefault(info.obsid, []).append(info)
    for group in by_obsid.values():
        assert sorted(i.detector for i in group) in ([1, 4], [2, 5], [3, 6])
        assert len({i.mjd_beg for i in group}) == 1
    i1 = survey.image_info(1000, 1, 1)
    i2 = survey.image_info(1000, 2, 1)
    assert (i2.mjd_beg - i1.mjd_beg) * 86400 == pytest.approx(128.9, abs=1e-3)
    with pytest.raises(KeyError):
        survey.parse_obsid("2031W05_1A_0001_1", 1, 1)  # after the configured pass
    with pytest.raises(KeyError):
        survey.parse_obsid(i1.obsid[:9] + "B" + i1.obsid[10:], 1, 1)  # wrong letter


def test_world_pixel_round_trip_and_astropy_agreement():
    from astropy.io import fits
    from astropy.wcs import WCS

    from spxflow.sim.headers import wcs_cards

    info = survey.image_info(5000, 3, 5)
    hdr = fits.Header.fromstring("".join(wcs_cards(info)))
    w = WCS(hdr)
    x = np.array([0.0, 1019.5, 2039.0, 300.2])
    y = np.array([0.0, 1019.5, 2039.0, 1700.7])
    ra, dec = info.pixel_to_world(x, y)
    ra_a, dec_a = w.all_pix2world(x, y, 0)
    np.testing.assert_allclose(ra, ra_a, atol=1e-9)
    np.testing.assert_allclose(dec, dec_a, atol=1e-9)
    xb, yb, front = info.world_to_pixel(ra, dec)
    np.testing.assert_allclose(xb, x, atol=1e-6)
    np.testing.assert_allclose(yb, y, atol=1e-6)
    assert w.sip is not None and w.sip.a_order == 3 and hdr["A_0_0"] != 0
    assert simwcs.detector_sip(5).a[0, 0] == hdr["A_0_0"]


def test_field_stars_are_deterministic_modest_and_avoid_truth():
    truth = sky.load_truth(str(_truth_path()))
    i = truth.names.index("BrightStar")
    ra, dec = truth.ra[i], truth.dec[i]
    a = sky.field_stars(ra, dec, 0.3, 7, truth)
    b = sky.field_stars(ra, dec, 0.3, 7, truth)
    assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))
    area = np.pi * (0.3 * 60) ** 2
    bright = (a[3] > 100).sum() / area
    assert 0.1 < bright < 0.6  # ~1 star above the 5σ limit per few arcmin²
    sep = np.rad2deg(np.arccos(np.clip(survey.radec_to_vec(a[1], a[2]) @ truth.vec[i], -1, 1)))
    assert sep.min() * 3600 > sky.FIELD_STAR_EXCLUSION_ARCSEC
    c = sky.field_stars(ra, dec, 0.3, 8, truth)
    assert len(c[0]) != len(a[0]) or not np.array_equal(c[1], a[1])


def test_solid_angle_statistics():
    y, x = np.mgrid[0:NPIX:7, 0:NPIX:7]
    om = sky.solid_angle(3, x, y)
    assert np.median(om) == pytest.approx(37.86, abs=0.01)
    assert om.std() == pytest.approx(0.20, abs=0.01)


def _truth_path():
    from spxflow.archive.simulated import DEFAULT_TRUTH_TABLE

    return DEFAULT_TRUTH_TABLE


@pytest.mark.parametrize(("ra", "dec"), [(35.5, 48.1), (93.0, 66.0), (359.999, -0.5)])
def test_discovery_is_complete_against_brute_force(ra, dec):
    """The analytic candidate search finds exactly the frames a scan of the whole pass finds."""
    slew = np.repeat(np.arange(survey.SLEWS_PER_PASS), survey.STEPS)
    step = np.tile(np.arange(1, survey.STEPS + 1), survey.SLEWS_PER_PASS)
    found = set()
    for pair, dets in survey.PAIR_DETECTORS.items():
        ra0, dec0, pa = survey.pointing(slew, step, pair)
        cd = simwcs.cd_matrix(pa)
        near = np.abs(dec0 - dec) < 4  # cheap pre-cut (a detector is 3.5° wide)
        for det in dets:
            x, y, front = simwcs.world_to_pixel(
                ra, dec, ra0[near], dec0[near], cd[near], simwcs.detector_sip(det)
            )
            inside = front & (np.abs(x - 1019.5) <= 1020) & (np.abs(y - 1019.5) <= 1020)
            hits = zip(
                slew[near][inside], step[near][inside], [det] * int(inside.sum()), strict=True
            )
            found |= set(hits)
    _, s2, st2, d2, _, _ = survey.find_images(ra, dec, 0.0, 1)
    assert set(zip(s2, st2, d2, strict=True)) == found
    assert len(found) > 80


# ------------------------------------------------------------------------------ releases (R7)


def test_psf_cube_is_the_per_position_model_at_the_qr2_zone_centres():
    from spxflow.format import psf_zone_centers
    from spxflow.sim.psf_model import epsf_zone_psf, optical_psf

    c = psf_zone_centers()
    cube = psf_cube(4)
    for ix, iy in [(0, 0), (3, 7), (10, 2)]:
        np.testing.assert_array_equal(
            cube[iy * 11 + ix], optical_psf(4, c[ix], c[iy]).astype(np.float32)
        )
    # The R7 zones use the same model at their own (finer) lattice centres.
    from spxflow.format import epsf_zone_centers

    e = epsf_zone_psf(3, 4, 30)
    np.testing.assert_array_equal(
        e, optical_psf(3, epsf_zone_centers(11)[4], epsf_zone_centers(41)[30])
    )
    assert e.sum() == pytest.approx(1.0) and not e.flags.writeable


def test_release_windows_tokens_and_retries():
    from spxflow.format import QR3_START_MJD
    from spxflow.sim import timeline

    w = timeline.release_windows(1, ("qr2", "qr3"), 35.0)
    assert w["qr2"] == (0, survey.SLEWS_PER_PASS)
    lo, hi = w["qr3"]
    assert lo // survey.SLEWS_PER_PASS == 2  # QR3 lies in pass index 2
    assert timeline.slew_mjd(lo) >= QR3_START_MJD > timeline.slew_mjd(lo - 1)
    assert timeline.slew_mjd(hi - 1) < QR3_START_MJD + 35 <= timeline.slew_mjd(hi)
    # Many QR2 passes stop at the QR3 start; QR3 does not depend on passes.
    w8 = timeline.release_windows(8, ("qr2", "qr3"), 35.0)
    assert w8["qr2"] == (0, lo) and w8["qr3"] == (lo, hi)
    assert timeline.release_windows(1, ("qr3",), 10.0)["qr3"][1] < hi
    assert list(timeline.release_of_slew([lo - 1, lo])) == ["qr2", "qr3"]
    # Tokens: QR3 l2b-v27 from day 222, retries one day later; QR2 unchanged.
    assert timeline.slew_meta(lo)[2] == "l2b-v27-2026-222"
    assert timeline.slew_meta(0)[2].startswith("l2b-v21-2025-")
    slews = np.arange(lo, hi)
    retry = timeline.has_retry(slews)
    assert 0.08 < retry.mean() < 0.12
    assert not timeline.has_retry(np.arange(0, 5000)).any()  # QR2 has no retry copies
    a = int(slews[retry][0])
    plain, again = timeline.slew_meta(a), timeline.slew_meta(a, True)
    assert again[2] == "l2b_retry-v27-2026-223" and plain[2] == "l2b-v27-2026-222"
    assert again[3] == pytest.approx(plain[3] + 1.0) and again[:2] == plain[:2]
    with pytest.raises(ValueError, match="retry"):
        timeline.slew_meta(0, True)
    with pytest.raises(ValueError, match="releases"):
        timeline.check_releases(["qr9"])


def test_find_images_serves_only_the_configured_releases():
    from spxflow.format import QR3_START_MJD
    from spxflow.sim import timeline

    ra, dec = 35.5, 48.1  # scanned in both slices
    qr2 = survey.find_images(ra, dec, 0.0, 1, ("qr2",))
    qr3 = survey.find_images(ra, dec, 0.0, 1, ("qr3",), 35.0)
    both = survey.find_images(ra, dec, 0.0, 1, ("qr2", "qr3"), 35.0)
    assert len(qr2[0]) > 90 and len(qr3[0]) > 90 and len(both[0]) == len(qr2[0]) + len(qr3[0])
    assert set(timeline.release_of_slew(qr2[1])) == {"qr2"}
    t3 = timeline.slew_mjd(qr3[1])
    assert ((t3 >= QR3_START_MJD) & (t3 < QR3_START_MJD + 35)).all()
    short = survey.find_images(ra, dec, 0.0, 1, ("qr3",), 5.0)
    assert len(short[0]) < len(qr3[0]) and (timeline.slew_mjd(short[1]) < QR3_START_MJD + 5).all()
    # QR2 with 3 passes stops where QR3 begins.
    three = survey.find_images(ra, dec, 0.0, 3, ("qr2",))
    assert (timeline.slew_mjd(three[1]) < QR3_START_MJD).all() and len(three[0]) > len(qr2[0])
    # parse_obsid follows the same slices; retry copies only where they exist.
    info = survey.image_info(int(qr3[1][0]), int(qr3[2][0]), int(qr3[3][0]))
    assert info.release == "qr3" and info.version == "7.0.5" and info.layout == "r7"
    assert info.key.startswith(f"qr3/level2/{info.planning_period}/{info.token}/")
    assert survey.parse_obsid(info.obsid, info.detector, 1, ("qr2", "qr3")) == info
    with pytest.raises(KeyError):
        survey.parse_obsid(info.obsid, info.detector, 1, ("qr2",))
    plain = [i for i in range(len(qr3[1])) if not timeline.has_retry(qr3[1][i])][0]
    p = survey.image_info(int(qr3[1][plain]), int(qr3[2][plain]), int(qr3[3][plain]))
    with pytest.raises(KeyError, match="retry"):
        survey.parse_obsid(p.obsid, p.detector, 1, ("qr3",), retry=True)


@pytest.mark.parametrize("det", [1, 4, 5, 6])
def test_qr3_spectral_wcs_shifts_d5_d6_only(det):
    y, x = np.mgrid[0:NPIX:97, 0:NPIX:97]
    l2, b2 = spectral_model.wave_band_parent0(det, x, y, "qr2")
    l3, b3 = spectral_model.wave_band_parent0(det, x, y, "qr3")
    np.testing.assert_array_equal(b3, b2)
    shift = 0.0064 if det in (5, 6) else 0.0
    np.testing.assert_allclose(l3 - l2, shift, atol=1e-12)
    t2, t3 = spectral_model.wcs_wave_table(det, "qr2"), spectral_model.wcs_wave_table(det, "qr3")
    np.testing.assert_array_equal(t2[0], t3[0])
    np.testing.assert_allclose(t3[2][..., 0] - t2[2][..., 0], shift, atol=2e-6)


def test_flux_correction_maps():
    for det, med in sky.FLXC_MEDIAN.items():
        m = sky.flux_correction_map(det)
        assert m.shape == (NPIX, NPIX) and m.dtype == np.float32 and not m.flags.writeable
        assert float(np.median(m)) == pytest.approx(med, abs=5e-4)
        wild = np.abs(m - med) > 0.3
        assert 3e-5 < wild.mean() < 3e-4 and m.min() >= 0.5 and m.max() <= 2.0
    rows = np.median(sky.flux_correction_map(1), axis=1)
    assert rows.min() == pytest.approx(0.875, abs=0.005) and 0.975 < rows.max() < 0.985


def test_sip_polys_are_bit_identical_to_the_per_term_sum():
    """``wcs.sip_polys`` (shared powers, no x1.0 factors) equals the plain per-term sum."""

    def plain(coef, u, v):
        out = np.zeros(np.broadcast(u, v).shape)
        for p, q in simwcs._TERMS:
            if coef[p, q] != 0.0:
                out = out + coef[p, q] * (u**p) * (v**q)
        return out

    rng = np.random.default_rng(5)
    sips = [simwcs.detector_sip(d) for d in (1, 4)]
    coefs = [m for s in sips for m in (s.a, s.b, s.ap, s.bp)]
    coefs.append(np.where(rng.uniform(size=(4, 4)) < 0.5, 0.0, rng.normal(size=(4, 4))))
    samples = [
        (rng.uniform(-1100, 1100, (13, 13)), rng.uniform(-1100, 1100, (13, 13))),
        (rng.uniform(-1e4, 1e4, 7), rng.uniform(-1e4, 1e4, 7)),
        (np.float64(-0.0), np.float64(3.25)),
        (np.asarray(12.5), np.asarray(-1019.5)),
        (rng.normal(size=(3, 1)) * 1e-3, rng.normal(size=(1, 4)) * 1e3),
        (np.array([0.0, -0.0, 1e-310, -5e-324]), np.array([-0.0, 0.0, 2.0, 1e90])),
    ]
    for coef in coefs:
        for u, v in samples:
            got = simwcs.sip_polys((coef, coef), u, v)
            want = plain(coef, u, v)
            for g in got:
                assert np.shape(g) == np.shape(want)
                assert np.asarray(g).tobytes() == np.asarray(want).tobytes()
            assert simwcs.sip_poly(coef, u, v).tobytes() == np.asarray(want).tobytes()
