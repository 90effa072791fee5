"""Cross-release check: median QR3/QR2 flux ratio at overlapping wavelengths, and its error."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from spxflow.crossrelease import (
    XREL_KEYS,
    cross_release_bins,
    cross_release_check,
    describe_cross_release,
    release_counts,
    releases_of,
)
from spxflow.plots.demo_data import synthetic_measurements, truth_sed

EDGES = [1.1, 1.64, 2.42, 3.83, 4.42]  # detector boundaries (µm), D1..D6


def spectrum(
    rng, n, release, *, factor=1.0, lo=0.75, hi=5.0, snr=20.0, sed=truth_sed, bandwidth=None
):
    """``n`` clean detections of one release: flux = factor * sed + noise at S/N ~ ``snr``;
    bandwidth wavelength / 40 unless given."""
    wl = rng.uniform(lo, hi, n)
    true = sed(wl) * factor
    err = true / snr * rng.uniform(0.7, 1.5, n)
    flux = true + rng.normal(0, 1, n) * err
    return pd.DataFrame(
        {
            "release": release,
            "detector": (np.digitize(wl, EDGES) + 1).astype("int16"),
            "wavelength_um": wl,
            "bandwidth_um": wl / 40 if bandwidth is None else bandwidth,
            "flux_uJy": flux,
            "flux_err_uJy": err,
            "snr": flux / err,
            "detection_status": "detected",
            "science_recommended": True,
            "calibration_scale": "r7",
        }
    )


def pair(seed=0, n=150, qr2_factor=1.0, **kw):
    rng = np.random.default_rng(seed)
    qr3 = spectrum(rng, n, "qr3", **kw)
    qr2 = spectrum(rng, n, "qr2", factor=qr2_factor, **kw)
    return pd.concat([qr3, qr2], ignore_index=True)


def assert_empty(result):
    assert set(result) == set(XREL_KEYS)
    assert result["xrel_n_bins"] == 0
    for key in ("xrel_ratio", "xrel_ratio_err", "xrel_wave_min_um", "xrel_wave_max_um"):
        assert np.isnan(result[key]), key


def test_equal_spectra_give_unit_ratio():
    r = cross_release_check(pair(seed=1))
    assert set(r) == set(XREL_KEYS)
    assert r["xrel_n_bins"] > 20
    assert 0 < r["xrel_ratio_err"] < 0.02
    assert abs(r["xrel_ratio"] - 1.0) < 3 * r["xrel_ratio_err"]
    assert r["xrel_scales"] == "qr3:r7,qr2:r7"
    assert 0.75 <= r["xrel_wave_min_um"] < r["xrel_wave_max_um"] <= 5.0


def test_scaled_qr2_gives_the_scale():
    # QR2 brighter by 1/0.97 -> QR3/QR2 = 0.97.
    r = cross_release_check(pair(seed=2, n=400, qr2_factor=1 / 0.97, snr=40.0))
    assert r["xrel_ratio"] == pytest.approx(0.97, abs=3 * r["xrel_ratio_err"])
    assert abs(r["xrel_ratio"] - 1.0) > 3 * r["xrel_ratio_err"]  # the offset is detected


def test_error_shrinks_with_more_bins():
    """Same rows per bin over a wider range: more bins, a smaller error, ~1/sqrt(n_bins)."""
    n_bins, errs = [], []
    for hi in (1.1, 1.6, 2.4, 5.0):
        n = int(100 * (hi - 0.75))
        results = [
            cross_release_check(pair(seed=seed, n=n, hi=hi, bandwidth=0.03, snr=10.0))
            for seed in range(8)
        ]
        n_bins.append(np.median([r["xrel_n_bins"] for r in results]))
        errs.append(np.median([r["xrel_ratio_err"] for r in results]))
    assert np.all(np.diff(n_bins) > 0) and np.all(np.diff(errs) < 0), (n_bins, errs)
    expected = np.sqrt(n_bins[0] / n_bins[-1])
    assert 0.7 * expected < errs[-1] / errs[0] < 1.3 * expected, (n_bins, errs)
    # More bins from denser sampling of the same range shrink it too.
    assert (
        cross_release_check(pair(seed=3, n=600))["xrel_ratio_err"]
        < (cross_release_check(pair(seed=3, n=100))["xrel_ratio_err"])
    )


def test_non_overlapping_wavelengths_give_nan():
    rng = np.random.default_rng(4)
    df = pd.concat(
        [spectrum(rng, 60, "qr3", lo=0.8, hi=1.0), spectrum(rng, 60, "qr2", lo=3.0, hi=3.7)]
    )
    r = cross_release_check(df)
    assert_empty(r)
    assert r["xrel_scales"] == "qr3:r7,qr2:r7"
    assert describe_cross_release(r, release_counts(df)).startswith("no overlapping releases")
    # Same wavelengths but different detectors do not overlap either (bins are per detector).
    df2 = pair(seed=4, n=40, lo=1.3, hi=1.4)
    df2.loc[df2["release"] == "qr2", "detector"] = 3
    assert_empty(cross_release_check(df2))


def test_lone_release_gives_nan():
    df = pair(seed=5)
    qr2 = df[df["release"] == "qr2"]
    assert_empty(cross_release_check(qr2))
    assert_empty(cross_release_check(df[df["release"] == "qr3"]))
    # An old table without a release column is all QR2.
    old = qr2.drop(columns=["release", "calibration_scale"])
    assert (releases_of(old) == "qr2").all()
    r = cross_release_check(old)
    assert_empty(r)
    assert r["xrel_scales"] == "qr2:qr2"
    assert describe_cross_release(r, release_counts(old)) == (
        "no overlapping releases (only QR2 measurements)"
    )
    assert_empty(cross_release_check(df.iloc[:0]))


def test_only_usable_rows_count():
    df = pair(seed=6)
    base = cross_release_check(df)
    nondet = df.copy()
    nondet["detection_status"] = "non-detection"
    assert_empty(cross_release_check(nondet))
    notrec = df.copy()
    notrec["science_recommended"] = False
    assert_empty(cross_release_check(notrec))
    # Corrupt rows that must be ignored: failed, NaN flux, zero error, not recommended.
    bad = df.sample(40, random_state=1).copy()
    bad["flux_uJy"] *= 50
    bad.iloc[:10, bad.columns.get_loc("detection_status")] = "failed"
    bad.iloc[10:20, bad.columns.get_loc("flux_err_uJy")] = 0.0
    bad.iloc[20:30, bad.columns.get_loc("science_recommended")] = False
    bad.iloc[30:, bad.columns.get_loc("flux_uJy")] = np.nan
    r = cross_release_check(pd.concat([df, bad], ignore_index=True))
    assert r["xrel_ratio"] == base["xrel_ratio"] and r["xrel_n_bins"] == base["xrel_n_bins"]


def test_calibration_scales():
    df = pair(seed=7, qr2_factor=1 / 0.97)
    # QR2 left on its own scale: still computed, and the scales are reported.
    native = df.copy()
    native.loc[native["release"] == "qr2", "calibration_scale"] = "qr2"
    r = cross_release_check(native)
    assert r["xrel_n_bins"] > 0 and r["xrel_scales"] == "qr3:r7,qr2:qr2"
    assert "calibration scales differ" in describe_cross_release(r)
    # Mixed QR2 scales: only the QR2 rows on the common (R7) scale are compared.
    mixed = df.copy()
    odd = (mixed["release"] == "qr2") & (mixed.index % 3 == 0)
    mixed.loc[odd, "calibration_scale"] = "qr2"
    mixed.loc[odd, "flux_uJy"] *= 2.0  # would pull the ratio if these rows were used
    r = cross_release_check(mixed)
    assert r["xrel_scales"] == "qr3:r7,qr2:r7"
    assert r["xrel_ratio"] == pytest.approx(0.97, abs=3 * r["xrel_ratio_err"])
    # No calibration_scale column: each release on its own scale.
    assert cross_release_check(df.drop(columns="calibration_scale"))["xrel_scales"] == (
        "qr3:r7,qr2:qr2"
    )


def test_single_bin_gets_an_error():
    df = pair(seed=8, n=30, lo=1.300, hi=1.330)  # narrower than one resolution element
    r = cross_release_check(df)
    assert r["xrel_n_bins"] == 1
    bins, _ = cross_release_bins(df)
    row = bins[bins["both"]].iloc[0]
    assert r["xrel_ratio"] == pytest.approx(row["ratio"])
    assert r["xrel_ratio_err"] == pytest.approx(1.2533 * row["ratio_err"])
    assert row["n_qr2"] == row["n_qr3"] == 30


def test_bins_follow_the_method():
    df = pair(seed=9, n=200)
    bins, scales = cross_release_bins(df)
    assert scales == "qr3:r7,qr2:r7"
    # Bin width = median bandwidth of the detector's rows; both releases share the bins.
    for det, b in bins.groupby("detector"):
        rows = df[df["detector"] == det]
        width = np.median(rows["bandwidth_um"])
        np.testing.assert_allclose(b["wave_hi_um"] - b["wave_lo_um"], width)
        assert b["wave_lo_um"].min() == pytest.approx(rows["wavelength_um"].min())
        assert (b["wave_min_um"] >= b["wave_lo_um"] - 1e-12).all()
        assert (b["wave_max_um"] <= b["wave_hi_um"] + 1e-12).all()
    # Inverse-variance-weighted means, recomputed by hand for one bin.
    b = bins[bins["both"]].iloc[0]
    sel = (
        (df["detector"] == b["detector"])
        & (df["wavelength_um"] >= b["wave_lo_um"])
        & (df["wavelength_um"] < b["wave_hi_um"])
    )
    for rel in ("qr2", "qr3"):
        rows = df[sel & (df["release"] == rel)]
        w = 1 / rows["flux_err_uJy"] ** 2
        assert b[f"flux_{rel}"] == pytest.approx((w * rows["flux_uJy"]).sum() / w.sum())
        assert b[f"err_{rel}"] == pytest.approx(1 / np.sqrt(w.sum()))
    assert b["ratio"] == pytest.approx(b["flux_qr3"] / b["flux_qr2"])
    assert bins["n_qr2"].sum() == (df["release"] == "qr2").sum()
    assert bins["n_qr3"].sum() == (df["release"] == "qr3").sum()


def pulls(n_real=200, *, n, seed=10, **kw) -> np.ndarray:
    """(ratio - true) / error of ``n_real`` noisy realisations (true QR3/QR2 ratio 0.97)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_real):
        qr3 = spectrum(rng, n, "qr3", **kw)
        qr2 = spectrum(rng, n, "qr2", factor=1 / 0.97, **kw)
        r = cross_release_check(pd.concat([qr3, qr2], ignore_index=True))
        if r["xrel_n_bins"]:
            out.append((r["xrel_ratio"] - 0.97) / r["xrel_ratio_err"])
    assert len(out) > 0.9 * n_real
    return np.array(out)


@pytest.mark.parametrize(
    "kw",
    [
        {"n": 150, "snr": 20.0},  # ~37 bins, curved SED with a line
        {"n": 400, "snr": 10.0},  # ~70 bins, several rows per bin
        {"n": 30, "snr": 10.0, "lo": 0.75, "hi": 1.1},  # ~12 bins in one detector
    ],
)
def test_error_is_honest(kw):
    """Pull std ~1 within 20 % over many noisy realisations."""
    p = pulls(**kw)
    assert abs(np.mean(p)) < 0.2
    assert 0.8 < np.std(p) < 1.2, np.std(p)


def test_error_is_conservative_for_a_handful_of_bins():
    """With ~3-5 bins, 1.2533 sigma / sqrt(n) and max(scatter, propagated) overestimate a
    little (the median of few values is more efficient than 1/1.2533): never too small."""
    p = pulls(n=12, snr=8.0, lo=0.75, hi=1.1)
    assert 0.6 < np.std(p) < 1.05, np.std(p)


def test_demo_data_releases():
    df = synthetic_measurements(150, seed=1)
    counts = release_counts(df)
    assert set(counts) == {"qr2", "qr3"} and sum(counts.values()) == 150
    r = cross_release_check(df)
    assert r["xrel_n_bins"] > 0 and abs(r["xrel_ratio"] - 1) < 4 * r["xrel_ratio_err"]
    off = cross_release_check(synthetic_measurements(150, seed=1, qr2_flux_factor=1 / 0.9))
    assert off["xrel_ratio"] == pytest.approx(0.9, abs=4 * off["xrel_ratio_err"])
    assert set(synthetic_measurements(20, seed=1, releases=("qr3",))["release"]) == {"qr3"}
    text = describe_cross_release(r, counts)
    assert text.startswith("QR3/QR2 median flux ratio") and f"over {r['xrel_n_bins']} bin" in text
