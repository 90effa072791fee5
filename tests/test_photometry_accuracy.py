"""Photometric accuracy against injected truth: bias, pulls, chi-square, quality flags."""

from __future__ import annotations

import numpy as np
import pytest

from spxflow.archive.simulated import SimulatedArchive
from spxflow.photometry import PhotometrySettings, measure_cutouts
from spxflow.photometry.result_flags import bit
from spxflow.validation import accuracy_metrics, run_campaign, truth_from_cutout
from tests.photometry_data import PIX_DEG, calibration, fetch, truth_table


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    joined, meas = run_campaign(tmp_path_factory.mktemp("campaign"), n_sources=10, seed=11)
    return joined, meas


def test_campaign_covers_detectors_and_snr_range(campaign):
    joined, _ = campaign
    snr = joined["truth_flux_uJy"] / joined["flux_err_uJy"]
    assert len(joined) >= 1000
    assert set(joined["detector"]) == {1, 2, 3, 4, 5, 6}
    assert snr.min() < 5 and snr.max() > 1000


def test_accuracy_against_injected_truth(campaign):
    joined, _ = campaign
    m = accuracy_metrics(joined)
    print(m)
    assert abs(m["bias_snr_gt50"]) < 0.005
    assert abs(m["mean_bias_snr_gt50"]) < 0.005
    assert 0.93 <= m["pull_std"] <= 1.07
    assert abs(m["pull_mean"]) < 0.1
    assert 0.95 <= m["chi2_red_median"] <= 1.05
    assert m["recommended_frac_snr_gt20"] >= 0.95
    for det in range(1, 7):
        d = accuracy_metrics(joined[joined["detector"] == det])
        assert 0.85 <= d["pull_std"] <= 1.15, (det, d)


def test_wavelengths_follow_the_calibration(campaign):
    joined, _ = campaign
    # PSF-weighted CWAVE vs CWAVE at the source's pixel: within a fraction of a bandwidth.
    d = (joined["wavelength_um"] - joined["truth_wavelength_um"]).abs()
    assert (d < 0.1 * joined["bandwidth_um"]).mean() > 0.99
    assert (joined["wavelength_source"] == "cwave").all()


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A target with a 10x brighter neighbour 1.5 px north, and a very bright isolated star."""
    tmp = tmp_path_factory.mktemp("pair")
    t_ra, t_dec = 215.30, 20.40
    n_dec = t_dec + 1.5 * PIX_DEG
    b_ra, b_dec = 40.0, -30.0
    csv = truth_table(
        tmp / "truth.csv",
        [
            {"name": "T", "ra": t_ra, "dec": t_dec, "sed": "star", "flux_ujy": 2000, "ref_um": 1.0,
             "temp_k": 5500},
            {"name": "N", "ra": t_ra, "dec": n_dec, "sed": "star", "flux_ujy": 20000,
             "ref_um": 1.0, "temp_k": 5500},
            {"name": "B", "ra": b_ra, "dec": b_dec, "sed": "star", "flux_ujy": 200000,
             "ref_um": 1.0, "temp_k": 7000},
        ],
    )  # fmt: skip
    archive = SimulatedArchive(truth_table=csv, seed=3)
    cal = calibration(archive, tmp / "cal")
    target = fetch(archive, t_ra, t_dec, tmp / "t", limit=40)
    bright = fetch(archive, b_ra, b_dec, tmp / "b", limit=40)
    return cal, (t_ra, t_dec, n_dec, target), (b_ra, b_dec, bright)


def test_close_bright_neighbour_is_fitted_jointly_and_flagged_blended(pair):
    cal, (ra, dec, n_dec, paths), _ = pair
    settings = PhotometrySettings()
    df = measure_cutouts(paths, ra, dec, [(ra, n_dec)], cal, settings)
    truth = np.array([truth_from_cutout(p)["flux_uJy"] for p in paths])
    ok = (df["detection_status"] != "failed").to_numpy()
    assert ok.sum() >= 30
    pull = ((df["flux_uJy"] - truth) / df["flux_err_uJy"]).to_numpy()[ok]
    assert abs(np.median(pull)) < 0.5
    assert np.mean(np.abs(pull) < 3) > 0.9
    assert (df.loc[ok, "n_neighbors"] == 1).all()
    assert (df.loc[ok, "result_flags"] & bit("BLENDED") > 0).all()
    assert not df.loc[ok, "science_recommended"].any()
    # Without the neighbour in the fit the target is badly overestimated.
    alone = measure_cutouts(paths, ra, dec, [], cal, settings)
    assert np.median((alone["flux_uJy"].to_numpy() - truth)[ok] / truth[ok]) > 0.5


def test_bright_well_fit_source_is_recommended(pair):
    cal, _, (ra, dec, paths) = pair
    df = measure_cutouts(paths, ra, dec, [], cal, PhotometrySettings())
    truth = np.array([truth_from_cutout(p)["flux_uJy"] for p in paths])
    bright = df[(df["snr"] > 1000) & (df["psf_masked_frac"] < 0.4)]
    assert len(bright) >= 5, df["snr"].describe()
    print(bright[["detector", "snr", "chi2_red", "resid_core", "result_flags"]])
    assert bright["science_recommended"].all()
    ratio = bright["flux_uJy"].to_numpy() / truth[bright.index]
    assert np.all(np.abs(ratio - 1) < 0.01)
