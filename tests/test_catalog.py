"""Catalog validation: every hostile row is rejected or slugged safely, with its row named."""

import numpy as np
import pandas as pd
import pytest

from spxflow.catalog import (
    CatalogError,
    CatalogSettings,
    near_duplicates,
    neighbour_lists,
    read_catalog,
    validate_catalog,
)
from spxflow.slug import SLUG_REGEX, safe_slug

SETTINGS = CatalogSettings.from_config({})


def frame(rows):
    return pd.DataFrame(rows, columns=["Name", "RA_deg", "DEC_deg"]).astype(str)


@pytest.mark.parametrize(
    "name, slug",
    [
        ("../etc/passwd", "etc_passwd"),
        ("a/b", "a_b"),
        ("NGC 1068", "NGC_1068"),
        ("$(rm -rf ~)", "rm_-rf"),
        ("'quoted\"", "quoted"),
        (".hidden", "hidden"),
        ("M31", "M31"),
    ],
)
def test_safe_slug_removes_path_and_shell_characters(name, slug):
    import re

    out = safe_slug(name)
    assert out == slug
    assert re.fullmatch(SLUG_REGEX, out)
    assert "/" not in out and ".." not in out and not out.startswith(".")


def test_slug_of_nothing_usable_is_an_error():
    with pytest.raises(ValueError, match="no characters usable"):
        safe_slug("$()")


def test_valid_catalog_round_trip(tmp_path):
    p = tmp_path / "cat.csv"
    p.write_text(
        "Name,RA_deg,DEC_deg,cutout_size_arcsec\nNGC 1068,40.67,-0.01,90\nM31,10.68,41.27,\n"
    )
    t = read_catalog(p, SETTINGS)
    assert t["source"].tolist() == ["NGC_1068", "M31"]
    assert t["cutout_size_arcsec"].tolist() == [90.0, 60.0]
    assert t["row"].tolist() == [1, 2]


@pytest.mark.parametrize(
    "rows, message",
    [
        ([["a", "1", "95"]], r"row 1 \('a'\): DEC_deg='95' is not in \[-90, 90\]"),
        ([["a", "nan", "0"]], r"row 1 \('a'\): RA_deg='nan'"),
        ([["a", "1", "x"]], r"DEC_deg='x'"),
        ([["a", "1", "0"], ["a", "2", "0"]], r"row 2: duplicate name 'a' \(first at row 1\)"),
        ([["", "1", "0"]], r"row 1: empty Name"),
        ([["a/b", "1", "0"], ["a b", "2", "0"]], r"row 2: name 'a b' becomes file name 'a_b'"),
        ([["$()", "1", "0"]], r"row 1: source name '\$\(\)' has no characters"),
    ],
)
def test_hostile_rows_are_rejected_with_row_numbers(rows, message):
    with pytest.raises(CatalogError, match=message):
        validate_catalog(frame(rows), SETTINGS)


def test_all_problems_reported_at_once():
    with pytest.raises(CatalogError) as err:
        validate_catalog(frame([["a", "1", "95"], ["b", "inf", "0"], ["", "1", "1"]]), SETTINGS)
    assert "3 problem(s)" in str(err.value)


def test_missing_columns_and_sizes():
    with pytest.raises(CatalogError, match=r"missing required column\(s\) \['DEC_deg'\]"):
        validate_catalog(pd.DataFrame({"Name": ["a"], "RA_deg": ["1"]}), SETTINGS)
    raw = pd.DataFrame(
        {
            "Name": ["a", "b"],
            "RA_deg": ["1", "2"],
            "DEC_deg": ["0", "0"],
            "cutout_size_arcsec": ["5", "60"],
        }
    )
    with pytest.raises(
        CatalogError, match=r"row 1 \('a'\): cutout_size_arcsec='5' is not in \[20, 900\]"
    ):
        validate_catalog(raw, SETTINGS)


def test_configurable_column_names():
    settings = CatalogSettings.from_config(
        {"catalog_options": {"columns": {"name": "id", "ra": "ra", "dec": "dec"}}}
    )
    t = validate_catalog(pd.DataFrame({"id": ["x"], "ra": ["1"], "dec": ["2"]}), settings)
    assert t["ra_deg"].iloc[0] == 1.0


def test_near_duplicates_and_neighbours_use_sky_separation():
    t = validate_catalog(
        frame(
            [["a", "10", "20"], ["b", str(10 + 0.5 / 3600), "20"], ["c", "10", str(20 + 30 / 3600)]]
        ),
        SETTINGS,
    )
    pairs = near_duplicates(t, 1.0)
    assert [(a, b) for a, b, _ in pairs] == [(0, 1)]
    assert pairs[0][2] == pytest.approx(0.5 * np.cos(np.radians(20)), rel=1e-3)
    nb = neighbour_lists(t, 60)
    assert len(nb["a"]) == 2 and nb["a"][0][0] == pytest.approx(10 + 0.5 / 3600)
    assert neighbour_lists(t, 10)["c"] == []


def test_ten_thousand_rows_validate_quickly_enough_to_not_be_quadratic():
    # Not a timing assertion: a quadratic check would build 10^8 pairs; we check the pair count
    # the KD-tree search returns is the true small number.
    rng = np.random.default_rng(1)
    n = 10_000
    raw = pd.DataFrame(
        {
            "Name": [f"s{i}" for i in range(n)],
            "RA_deg": rng.uniform(0, 360, n).astype(str),
            "DEC_deg": rng.uniform(-80, 80, n).astype(str),
        }
    )
    t = validate_catalog(raw, SETTINGS)
    assert len(t) == n
    assert len(near_duplicates(t, 1.0)) == 0
