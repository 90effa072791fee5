"""De-duplication of multi-collection, multi-release discovery tables (spec §8.7, §8.8)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from spxflow.archive.sia import SIA_DTYPES, coerce_sia_dtypes
from spxflow.discovery import (
    DROP_KEYS,
    collection_rank,
    deduplicate,
    release_of_row,
)
from spxflow.format import SIA_COLUMN_NAMES, parse_level2_file_name

IBE = "https://irsa.ipac.caltech.edu/ibe/data/spherex"


def url_of(release: str, obsid: str, det: int, token: str) -> str:
    period = obsid[:10]
    return f"{IBE}/{release}/level2/{period}/{token}/{det}/level2_{obsid}D{det}_spx_{token}.fits"


def row(collection: str, obsid: str, det: int, token: str, t_min: float, **over) -> dict:
    release = "qr3" if "qr3" in collection else "qr2"
    out = {
        name: ("" if SIA_DTYPES[name] == "s" else 0 if SIA_DTYPES[name] == "i" else np.nan)
        for name in SIA_COLUMN_NAMES
    }
    out.update(
        obs_collection=collection,
        obs_id=obsid,
        energy_bandpassname=f"SPHEREx-D{det}",
        access_url=url_of(release, obsid, det, token),
        obs_publisher_did=f"ivo://irsa.ipac/{collection}?{obsid}/D{det}",
        t_min=t_min,
        t_max=t_min + 0.0013,
        s_ra=10.0,
        s_dec=41.0,
    )
    out.update(over)
    return out


def table(rows, sort=True) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=list(SIA_COLUMN_NAMES))
    return coerce_sia_dtypes(df) if sort else df


def exposures(df: pd.DataFrame) -> list[tuple[str, int]]:
    out = []
    for url in df["access_url"]:
        obsid, det, _ = parse_level2_file_name(url.split("?")[0].rsplit("/", 1)[-1])
        out.append((obsid, det))
    return out


def check_invariants(inp: pd.DataFrame, kept: pd.DataFrame, dropped: list[dict]) -> None:
    assert list(kept.columns) == list(inp.columns)
    assert kept.dtypes.to_dict() == inp.dtypes.to_dict()
    assert len(kept) + len(dropped) == len(inp)
    assert isinstance(kept.index, pd.RangeIndex)
    # kept rows keep the input's order
    pos = {
        did_url: i
        for i, did_url in enumerate(zip(inp.obs_publisher_did, inp.access_url, strict=True))
    }
    idx = [pos[k] for k in zip(kept.obs_publisher_did, kept.access_url, strict=True)]
    assert idx == sorted(idx)
    kept_names = set(kept["access_url"].str.split("?").str[0].str.rsplit("/", n=1).str[-1])
    for d in dropped:
        assert tuple(d) == DROP_KEYS
        assert d["kept_file_name"] in kept_names
        assert d["kept_file_name"] in d["reason"] or d["file_name"] == d["kept_file_name"]


def test_same_file_from_wide_and_deep_is_kept_once_wide_first():
    tok = "l2b-v27-2026-223"
    deep = row("spherex_qr3_deep", "2026W30_1B_0001_1", 3, tok, 61241.5)
    wide = row("spherex_qr3", "2026W30_1B_0001_1", 3, tok, 61241.5)
    other = row("spherex_qr3_deep", "2026W30_1B_0002_1", 3, tok, 61241.6)
    inp = table([deep, wide, other], sort=False)  # deep listed first: order must not matter
    kept, dropped = deduplicate(inp)
    check_invariants(inp, kept, dropped)
    assert kept["obs_collection"].tolist() == ["spherex_qr3", "spherex_qr3_deep"]
    assert len(dropped) == 1
    d = dropped[0]
    assert d["image_id"] == deep["obs_publisher_did"]
    assert d["obs_collection"] == "spherex_qr3_deep" and d["release"] == "qr3"
    assert d["kept_image_id"] == wide["obs_publisher_did"]
    assert d["file_name"] == d["kept_file_name"] == wide["access_url"].rsplit("/", 1)[-1]
    assert "same file" in d["reason"] and "also returned by spherex_qr3" in d["reason"]


def test_same_url_with_different_query_strings_is_one_file():
    a = row("spherex_qr2", "2025W51_1A_0684_2", 3, "l2b-v21-2025-354", 61027.2)
    b = dict(a, obs_collection="spherex_qr2_deep", access_url=a["access_url"] + "?center=1,2")
    b["obs_publisher_did"] = "ivo://irsa.ipac/spherex_qr2_deep?2025W51_1A_0684_2/D3"
    kept, dropped = deduplicate(table([b, a]))
    assert kept["obs_collection"].tolist() == ["spherex_qr2"] and len(dropped) == 1


def test_identical_rows_of_one_collection_are_merged():
    a = row("spherex_qr3", "2026W30_1B_0001_1", 2, "l2b-v27-2026-223", 61241.5)
    kept, dropped = deduplicate(table([a, dict(a)], sort=False))
    assert len(kept) == 1 and "duplicate row" in dropped[0]["reason"]


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("l2b-v27-2026-223", "l2b_retry-v27-2026-223"),  # same date: the retry wins
        ("l2b_retry-v27-2026-223", "l2b-v27-2026-224"),  # a newer date beats a retry
        ("l2b-v27-2026-222", "l2b-v27-2026-240"),  # two processing dates
        ("l2b-v27-2026-223", "l2b_retry-v27-2026-224"),
    ],
)
def test_newest_processing_of_an_exposure_is_kept(old, new):
    obsid, det = "2026W30_1A_0001_1", 3
    rows = [
        row("spherex_qr3", obsid, det, old, 61241.5),
        row("spherex_qr3", obsid, det, new, 61241.5),
        row("spherex_qr3", obsid, 4, old, 61241.5),  # another detector: untouched
    ]
    for order in (rows, rows[::-1]):
        inp = table(order, sort=False)
        kept, dropped = deduplicate(inp)
        check_invariants(inp, kept, dropped)
        assert sorted(exposures(kept)) == [(obsid, 3), (obsid, 4)]
        kept3 = kept[kept["energy_bandpassname"] == "SPHEREx-D3"].iloc[0]
        assert kept3["access_url"].endswith(f"_spx_{new}.fits")
        (d,) = dropped
        assert d["file_name"].endswith(f"_spx_{old}.fits")
        assert d["kept_file_name"].endswith(f"_spx_{new}.fits")
        assert d["reason"] == (
            f"older processing {old} of {obsid}/D3; kept {new} ({d['kept_file_name']})"
        )
        # one collection, one exposure: both rows share the token-free publisher DID
        assert d["image_id"] == d["kept_image_id"]


def test_unparseable_names_are_kept_and_only_merged_by_url():
    a = row("spherex_qr3", "x", 1, "t", 61241.0, access_url=f"{IBE}/qr3/level2/odd/a.fits")
    b = row("spherex_qr3", "x", 1, "t", 61241.0, access_url=f"{IBE}/qr3/level2/odd/b.fits")
    c = dict(a, obs_collection="spherex_qr3_deep", obs_publisher_did="ivo://x?deep")
    d = row("spherex_qr3", "x", 1, "t", 61241.0, access_url="")  # no URL at all
    kept, dropped = deduplicate(table([a, b, c, d], sort=False))
    # a and b share the publisher DID but are different files; c is a's file again
    assert kept["access_url"].tolist() == [a["access_url"], b["access_url"], ""]
    assert [x["image_id"] for x in dropped] == ["ivo://x?deep"]
    assert dropped[0]["kept_file_name"] == "a.fits"


def test_mixed_releases_every_exposure_once():
    rows = [
        # QR2: wide + deep of one file, two processings of another exposure
        row("spherex_qr2", "2025W51_1A_0684_2", 3, "l2b-v21-2025-354", 61027.2),
        row("spherex_qr2_deep", "2025W51_1A_0684_2", 3, "l2b-v21-2025-354", 61027.2),
        row("spherex_qr2", "2025W51_1A_0684_3", 6, "l2b-v20-2025-300", 61027.3),
        row("spherex_qr2", "2025W51_1A_0684_3", 6, "l2b-v21-2025-354", 61027.3),
        # QR3: an old processing returned by wide and deep, its retry by wide only
        row("spherex_qr3_deep", "2026W30_1B_0001_1", 3, "l2b-v27-2026-223", 61241.5),
        row("spherex_qr3", "2026W30_1B_0001_1", 3, "l2b-v27-2026-223", 61241.5),
        row("spherex_qr3", "2026W30_1B_0001_1", 3, "l2b_retry-v27-2026-224", 61241.5),
        row("spherex_qr3_deep", "2026W31_2A_0100_4", 1, "l2b-v27-2026-241", 61250.0),
    ]
    inp = table(rows)
    kept, dropped = deduplicate(inp)
    check_invariants(inp, kept, dropped)
    ex = exposures(kept)
    assert len(ex) == len(set(ex)) == 4
    assert [x.rsplit("_spx_", 1)[1] for x in kept["access_url"]] == [
        "l2b-v21-2025-354.fits",
        "l2b-v21-2025-354.fits",
        "l2b_retry-v27-2026-224.fits",
        "l2b-v27-2026-241.fits",
    ]
    assert kept["obs_collection"].tolist()[:3] == ["spherex_qr2", "spherex_qr2", "spherex_qr3"]
    by = {(d["obs_collection"], d["file_name"]): d for d in dropped}
    assert sorted(d["release"] for d in dropped) == ["qr2", "qr2", "qr3", "qr3"]
    chained = by[("spherex_qr3_deep", "level2_2026W30_1B_0001_1D3_spx_l2b-v27-2026-223.fits")]
    assert chained["reason"].startswith("same file")
    assert "kept l2b_retry-v27-2026-224" in chained["reason"]
    assert chained["kept_file_name"].endswith("l2b_retry-v27-2026-224.fits")
    # a second pass finds nothing more to drop
    again, none = deduplicate(kept)
    assert none == [] and again.equals(kept)


def test_empty_and_missing_columns():
    empty = table([])
    kept, dropped = deduplicate(empty)
    assert dropped == [] and list(kept.columns) == list(SIA_COLUMN_NAMES) and len(kept) == 0
    with pytest.raises(ValueError, match="obs_collection"):
        deduplicate(empty.drop(columns=["obs_collection"]))


def test_release_of_row():
    r = row("spherex_qr3_deep", "2026W30_1B_0001_1", 3, "l2b-v27-2026-223", 61241.5)
    assert release_of_row(r) == "qr3"
    assert release_of_row(pd.Series(r)) == "qr3"
    assert release_of_row(dict(r, obs_collection="", access_url=r["access_url"])) == "qr3"
    qr2 = url_of("qr2", "2025W51_1A_0684_2", 3, "l2b-v21-2025-354")
    assert release_of_row({"obs_collection": "spherex_other", "access_url": qr2}) == "qr2"
    with pytest.raises(ValueError, match="no known SPHEREx release"):
        release_of_row({"obs_collection": "x", "access_url": "https://example.org/a.fits"})


def test_collection_rank_orders_releases_then_wide_before_deep():
    names = ["spherex_qr3_deep", "zzz", "spherex_qr2_deep", "spherex_qr3", "spherex_qr2"]
    assert sorted(names, key=collection_rank) == [
        "spherex_qr2",
        "spherex_qr2_deep",
        "spherex_qr3",
        "spherex_qr3_deep",
        "zzz",
    ]
