"""Catalog-wide summaries: measurements.fits round trip and sources.csv statuses."""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.table import Table

from spxflow.columns import MEASUREMENT_COLUMNS, SPECTRUM_EXTRA_COLUMNS, empty_measurements
from spxflow.plots.demo_data import DEMO_RESULT_FLAGS, synthetic_measurements
from spxflow.summary import (
    EXTNAME,
    SOURCES_COLUMNS,
    build_sources_summary,
    read_measurements_fits,
    write_measurements_fits,
)


@pytest.fixture(scope="module")
def merged():
    a = synthetic_measurements(40, seed=1, source="src_a")
    b = synthetic_measurements(25, seed=2, source="src_b")
    df = pd.concat([a, b], ignore_index=True)
    df.loc[0, "name"] = "α Lyr (Vega)"
    df["config_hash"] = "c0ffee"
    df["code_version"] = "0.1.0"
    df["schema_version"] = "1.0"
    return df


@pytest.fixture(scope="module")
def fits_path(merged, tmp_path_factory):
    path = tmp_path_factory.mktemp("summary") / "measurements.fits"
    write_measurements_fits(merged, path, result_flags=DEMO_RESULT_FLAGS)
    return path


def test_every_schema_unit_parses_in_astropy():
    for col in MEASUREMENT_COLUMNS + SPECTRUM_EXTRA_COLUMNS:
        if col.unit:
            unit = u.Unit(col.unit)  # raises on an invalid unit string
            assert u.Unit(unit.to_string("fits"), format="fits") == unit, col.name


def test_round_trip_with_units(fits_path, merged):
    table = Table.read(fits_path, hdu=EXTNAME)
    expected = [c.name for c in MEASUREMENT_COLUMNS] + [c.name for c in SPECTRUM_EXTRA_COLUMNS]
    assert table.colnames == expected
    assert len(table) == len(merged)
    for col in MEASUREMENT_COLUMNS:
        if col.unit:
            assert table[col.name].unit == u.Unit(col.unit), col.name
        else:
            assert table[col.name].unit is None, col.name
    np.testing.assert_array_equal(table["flux_uJy"].value, merged["flux_uJy"].to_numpy())
    np.testing.assert_array_equal(table["result_flags"], merged["result_flags"].to_numpy())
    assert table["science_recommended"].dtype == bool
    assert list(table["science_recommended"]) == merged["science_recommended"].tolist()
    assert table["obs_id"][3] == merged["obs_id"][3]
    # Non-ASCII catalog names survive as backslash escapes (FITS strings are ASCII).
    assert table["name"][0] == "\\u03b1 Lyr (Vega)"


def test_column_comments_and_category_headers(fits_path):
    header = fits.getheader(fits_path, extname=EXTNAME)
    cards = list(header.cards)
    columns = list(MEASUREMENT_COLUMNS) + list(SPECTRUM_EXTRA_COLUMNS)
    seen = set()
    for i, col in enumerate(columns, start=1):
        key = f"TTYPE{i}"
        assert header[key] == col.name
        assert header.comments[key] == col.help
        pos = next(k for k, c in enumerate(cards) if c.keyword == key)
        before = cards[pos - 1]
        if col.category not in seen:
            assert (before.keyword, before.value) == ("COMMENT", f"#> {col.category}"), col.name
            seen.add(col.category)
        else:
            assert before.keyword != "COMMENT", col.name
    assert {"Identity", "Photometry", "Quality", "Provenance"} <= seen


def test_flag_bits_documented(fits_path):
    header = fits.getheader(fits_path, extname=EXTNAME)
    for name, (bit, help_text) in DEMO_RESULT_FLAGS.items():
        assert header[f"FLAG{bit:02d}"] == name
        assert header.comments[f"FLAG{bit:02d}"] == help_text


def test_descriptions_and_checksum(fits_path):
    table = read_measurements_fits(fits_path)
    assert table["flux_uJy"].description == "PSF-fit flux density (signed)"
    with fits.open(fits_path, checksum=True) as hdul:
        assert hdul[EXTNAME].verify_checksum() == 1


def test_empty_and_partial_tables(tmp_path):
    path = tmp_path / "empty.fits"
    write_measurements_fits(empty_measurements(), path, result_flags=DEMO_RESULT_FLAGS)
    table = Table.read(path)
    assert len(table) == 0 and table["flux_uJy"].unit == u.uJy
    # A table missing schema columns still gets all of them (filled), extras kept.
    partial = pd.DataFrame({"source": ["s"], "flux_uJy": [1.5], "my_note": ["hi"]})
    write_measurements_fits(partial, tmp_path / "partial.fits", result_flags=DEMO_RESULT_FLAGS)
    t2 = Table.read(tmp_path / "partial.fits", mask_invalid=False)
    assert t2["flux_uJy"][0] == 1.5 and np.isnan(t2["snr"][0]) and t2["detector"][0] == -1
    assert t2.colnames[-1] == "my_note"
    header = fits.getheader(tmp_path / "partial.fits", 1)
    assert any(c.keyword == "COMMENT" and c.value == "#> Other" for c in header.cards)


def test_failed_write_leaves_nothing(tmp_path, merged):
    path = tmp_path / "m.fits"
    bad = {"X": "not a (bit, help) tuple"}
    with pytest.raises((TypeError, ValueError)):
        write_measurements_fits(merged, path, result_flags=bad)
    assert list(tmp_path.iterdir()) == []


def test_sources_summary_statuses():
    catalog = pd.DataFrame(
        {
            "source": ["ok_src", "empty_src", "broken", "missing", "all_failed"],
            "name": ["OK", "Empty", "Broken", "Missing", "All failed"],
            "ra_deg": [1.0, 2.0, 3.0, 4.0, 5.0],
            "dec_deg": [-1.0, -2.0, -3.0, -4.0, -5.0],
        }
    )
    ok = synthetic_measurements(30, seed=4, source="ok_src")
    dead = synthetic_measurements(4, seed=5, source="all_failed")
    dead["detection_status"] = "failed"
    dead["science_recommended"] = False
    tables = {"ok_src": ok, "empty_src": empty_measurements(), "broken": None, "all_failed": dead}
    out = build_sources_summary(catalog, tables, failures={"broken": "photometry crashed"})
    assert list(out.columns) == list(SOURCES_COLUMNS)
    assert list(out["source"]) == list(catalog["source"])
    by = out.set_index("source")
    assert list(by["status"]) == ["ok", "no-coverage", "failed", "failed", "failed"]
    measured = ok["detection_status"] != "failed"
    assert by.loc["ok_src", "n_images"] == 30
    assert by.loc["ok_src", "n_measured"] == measured.sum()
    assert by.loc["ok_src", "n_recommended"] == ok["science_recommended"].sum()
    assert by.loc["ok_src", "n_detected"] == (ok["detection_status"] == "detected").sum()
    assert by.loc["ok_src", "median_snr"] == pytest.approx(ok.loc[measured, "snr"].median())
    assert by.loc["empty_src", "n_images"] == 0
    assert by.loc["broken", "failure_reason"] == "photometry crashed"
    assert pd.isna(by.loc["broken", "n_images"])
    assert by.loc["missing", "failure_reason"] == "no measurement table"
    assert "all 4 measurement(s) failed" in by.loc["all_failed", "failure_reason"]
    assert by.loc["ok_src", "failure_reason"] == ""


def test_sources_summary_releases(tmp_path):
    from spxflow.crossrelease import XREL_KEYS, cross_release_check
    from spxflow.fileio import write_csv_atomic

    catalog = pd.DataFrame(
        {
            "source": ["both", "old", "qr3_only", "empty_src", "broken"],
            "ra_deg": [1.0, 2.0, 3.0, 4.0, 5.0],
            "dec_deg": [0.0, 0.0, 0.0, 0.0, 0.0],
        }
    )
    both = synthetic_measurements(150, seed=1, source="both", qr2_flux_factor=1 / 0.97)
    old = synthetic_measurements(40, seed=2, source="old", releases=("qr2",))
    old = old.drop(columns=["release", "calibration_scale"])  # results from before releases
    qr3 = synthetic_measurements(30, seed=3, source="qr3_only", releases=("qr3",))
    tables = {"both": both, "old": old, "qr3_only": qr3, "empty_src": empty_measurements()}
    out = build_sources_summary(catalog, tables, failures={})
    assert list(out.columns) == list(SOURCES_COLUMNS)
    assert {"n_qr2", "n_qr3", *XREL_KEYS} <= set(out.columns)
    # The columns of before keep their order, the release-aware ones come after them.
    assert list(out.columns[:11]) == [
        "source",
        "name",
        "ra_deg",
        "dec_deg",
        "n_images",
        "n_measured",
        "n_recommended",
        "n_detected",
        "median_snr",
        "status",
        "failure_reason",
    ]
    by = out.set_index("source")
    assert by.loc["both", "n_qr2"] == (both["release"] == "qr2").sum() > 0
    assert by.loc["both", "n_qr3"] == (both["release"] == "qr3").sum() > 0
    assert (by["n_qr2"] + by["n_qr3"]).dropna().equals(by["n_images"].dropna())
    expected = cross_release_check(both)
    assert expected["xrel_n_bins"] > 0
    for key in XREL_KEYS:
        assert by.loc["both", key] == expected[key], key
    assert by.loc["both", "xrel_ratio"] == pytest.approx(0.97, abs=4 * expected["xrel_ratio_err"])
    assert (by.loc["old", "n_qr2"], by.loc["old", "n_qr3"]) == (40, 0)
    assert (by.loc["qr3_only", "n_qr2"], by.loc["qr3_only", "n_qr3"]) == (0, 30)
    for src in ("old", "qr3_only", "empty_src"):
        assert by.loc[src, "xrel_n_bins"] == 0 and np.isnan(by.loc[src, "xrel_ratio"]), src
    assert by.loc["old", "xrel_scales"] == "qr2:qr2"
    assert by.loc["qr3_only", "xrel_scales"] == "qr3:r7"
    assert by.loc["empty_src", "xrel_scales"] == ""
    # No table: unknown, not zero.
    assert pd.isna(by.loc["broken", "n_qr2"]) and pd.isna(by.loc["broken", "xrel_n_bins"])
    assert np.isnan(by.loc["broken", "xrel_ratio"])
    assert str(out["xrel_n_bins"].dtype) == "Int64" and out["xrel_ratio"].dtype == "float64"
    # As the summary rule writes it.
    path = tmp_path / "sources.csv"
    write_csv_atomic(path, out, float_format="%.6g")
    back = pd.read_csv(path, keep_default_na=False, na_values=[""]).set_index("source")
    assert back.loc["both", "xrel_n_bins"] == expected["xrel_n_bins"]
    assert back.loc["both", "xrel_ratio"] == pytest.approx(expected["xrel_ratio"], rel=1e-5)
    assert back.loc["both", "xrel_scales"] == "qr3:r7,qr2:r7"
