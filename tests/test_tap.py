"""IRSA TAP discovery with uploaded positions (spxflow.archive.tap) against the emulator's
/TAP/sync (spxflow.archive.tapserve): equality with per-position SIA2, chunks, MAXREC overflow
splitting, retried faults, error documents and the hosts contacted."""

from __future__ import annotations

import pandas as pd
import pytest
import requests

from spxflow.archive import ArchiveError, tap
from spxflow.archive.base import normalise_discovery
from spxflow.archive.emulator import get_stats, running_emulator
from spxflow.archive.irsa import IrsaArchive
from spxflow.discovery import deduplicate
from tests.test_slurm import synthetic_catalog

# Wide QR2 only, QR2 + QR3, and a deep-field point (|ecliptic latitude| >= 60: every file
# listed under wide and deep, in both releases; ~4,000 rows).
POSITIONS = [
    ("m31", 10.68, 41.27),
    ("b", 35.5, 48.1),
    ("c", 62.5, -12.2),
    ("nep", 270.0, 66.56),
]


def irsa(url, tmp_path, **kw) -> IrsaArchive:
    cfg = {
        "base_url_override": url,
        "timeout_s": 20.0,
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.05,
        "lock_dir": str(tmp_path / "locks"),
        **kw,
    }
    return IrsaArchive.from_config(cfg)


def positions(n: int, seed: int = 3):
    cat = synthetic_catalog(n, seed)
    return list(zip(cat["Name"], cat["RA_deg"], cat["DEC_deg"], strict=True))


def requests_of(url: str) -> dict:
    return get_stats(url)["requests"]


@pytest.mark.parametrize("radius", [0.0, 30.0])
def test_tap_tables_equal_sia_tables_per_position(emulator, tmp_path, radius):
    pos = POSITIONS if radius == 0 else POSITIONS[:3]
    got = irsa(emulator, tmp_path, discovery="tap").discover_many(pos, radius)
    ref = irsa(emulator, tmp_path, discovery="sia").discover_many(pos, radius)
    assert list(got) == [p[0] for p in pos]
    for key, _, _ in pos:
        assert len(ref[key]) > 0
        pd.testing.assert_frame_equal(got[key], ref[key])
        pd.testing.assert_frame_equal(normalise_discovery(got[key]), got[key])
    if radius == 0:
        releases = {c.split("_")[1] for c in ref["nep"]["obs_collection"]}
        assert releases == {"qr2", "qr3"}
        assert ref["nep"]["obs_collection"].str.endswith("_deep").any()
        kept_tap, dropped_tap = deduplicate(got["nep"])
        kept_sia, dropped_sia = deduplicate(ref["nep"])
        pd.testing.assert_frame_equal(kept_tap, kept_sia)
        assert dropped_tap == dropped_sia and dropped_tap


def test_chunks_one_tap_request_each_and_no_sia(sim, tmp_path):
    pos = positions(40)
    with running_emulator(sim) as url:
        got = irsa(url, tmp_path, tap_upload_rows=10).discover_many(pos, 0.0)
        assert requests_of(url) == {"tap": 4}  # 40 positions / 10 per upload
    want = sim.discover_many(pos, 0.0)
    assert list(got) == [p[0] for p in pos]
    for key in want:
        pd.testing.assert_frame_equal(got[key], want[key])


def test_overflow_is_split_in_halves_and_loses_no_row(sim, tmp_path):
    pos = positions(8)
    want = sim.discover_many(pos, 0.0)
    biggest = max(len(t) for t in want.values())
    # MAXREC below a chunk's rows but above every single position's
    with running_emulator(sim) as url:
        archive = irsa(url, tmp_path, tap_upload_rows=8, tap_maxrec=biggest * 2 + 1)
        got = archive.discover_many(pos, 0.0)
        n = requests_of(url)["tap"]
    assert n > 1 and archive.tap.n_queries == n
    for key in want:
        pd.testing.assert_frame_equal(got[key], want[key])
    # the emulator's own limit (a server cap below MAXREC) is an overflow too
    with running_emulator(sim, {"tap_max_rows": biggest + 1}) as url:
        got = irsa(url, tmp_path, tap_upload_rows=8).discover_many(pos, 0.0)
    assert sum(len(t) for t in got.values()) == sum(len(t) for t in want.values())


def test_a_single_position_over_maxrec_is_an_error(emulator, tmp_path):
    archive = irsa(emulator, tmp_path, tap_maxrec=50)
    with pytest.raises(ArchiveError, match="tap_maxrec"):
        archive.discover_many([POSITIONS[0]], 0.0)


def test_transient_faults_are_retried_and_change_nothing(sim, tmp_path):
    pos = positions(12)
    faults = {
        "seed": 5,
        "rules": [
            {"kind": "tap", "fault": "504", "max_per_url": 1},  # every chunk's first attempt
            {"kind": "tap", "fault": "503", "rate": 0.5, "max_per_url": 1, "retry_after": 0},
            {"kind": "tap", "fault": "reset", "rate": 0.5, "max_per_url": 1},
            {"kind": "tap", "fault": "truncate", "rate": 0.5, "max_per_url": 1},
        ],
    }
    with running_emulator(sim, faults) as url:
        got = irsa(url, tmp_path, tap_upload_rows=4).discover_many(pos, 0.0)
        stats = get_stats(url)
    want = sim.discover_many(pos, 0.0)
    for key in want:
        pd.testing.assert_frame_equal(got[key], want[key])
    assert stats["faults"]["504"] == 3 and stats["status"]["tap"]["504"] == 3
    assert stats["requests"]["tap"] == 3 + sum(stats["faults"].values())


def test_error_votable_is_an_archive_error_not_retried(sim, tmp_path):
    faults = {"rules": [{"kind": "tap", "fault": "error_votable"}]}  # HTTP 200, ERROR
    with running_emulator(sim, faults) as url:
        with pytest.raises(ArchiveError, match="query error.*injected error"):
            irsa(url, tmp_path).discover_many(POSITIONS[:2], 0.0)
        assert requests_of(url) == {"tap": 1}


def test_adql_the_emulator_does_not_understand_fails_loudly(emulator, tmp_path, monkeypatch):
    changed = tap.discovery_adql  # e.g. a client that starts sorting server-side

    def with_order(collections, radius):
        return changed(collections, radius) + "\nORDER BY p.time_bounds_lower"

    monkeypatch.setattr(tap, "discovery_adql", with_order)
    before = requests_of(emulator).get("tap", 0)
    with pytest.raises(ArchiveError, match=r"HTTP 400.*ADQL not understood"):
        irsa(emulator, tmp_path).discover_many(POSITIONS[:1], 0.0)
    assert requests_of(emulator)["tap"] == before + 1  # a permanent error: one attempt


def test_emulator_tap_errors_for_bad_requests(emulator):
    r = requests.get(
        f"{emulator}/TAP/sync",
        params={"REQUEST": "doQuery", "LANG": "ADQL", "QUERY": "SELECT * FROM spherex.plane"},
    )
    assert r.status_code == 400 and b'value="ERROR"' in r.content
    assert b"ADQL not understood" in r.content
    query = tap.discovery_adql(["spherex_qr2"], 0.0)
    r = requests.post(
        f"{emulator}/TAP/sync", data={"REQUEST": "doQuery", "LANG": "ADQL", "QUERY": query}
    )
    assert r.status_code == 400 and b"no UPLOAD=cat,param:cat" in r.content


def test_only_the_configured_host_is_contacted(emulator, tmp_path):
    archive = irsa(emulator, tmp_path)
    assert archive.tap_url == f"{emulator}/TAP"  # tap_url rewritten like sia_url
    seen = []
    archive.session.hooks["response"].append(lambda r, *a, **k: seen.append(r.url))
    before = requests_of(emulator)
    archive.discover_many(POSITIONS[:3], 0.0)
    after = requests_of(emulator)
    assert seen and all(u == f"{emulator}/TAP/sync" for u in seen)
    assert after.get("sia", 0) == before.get("sia", 0)


def test_discovery_sia_keeps_per_position_sia(emulator, tmp_path):
    before = requests_of(emulator)
    irsa(emulator, tmp_path, discovery="sia").discover_many(POSITIONS[:2], 0.0)
    after = requests_of(emulator)
    assert after.get("tap", 0) == before.get("tap", 0)
    assert after["sia"] - before.get("sia", 0) == 2 * 4  # 4 collections per position
    with pytest.raises(ValueError, match="discovery must be tap or sia"):
        irsa(emulator, tmp_path, discovery="adql")


def test_poly_as_string_gives_the_same_s_region():
    dali = tap._s_region([1.0, 2.0, 3.0, 2.0, 3.0, 4.0, 1.0, 4.0])
    assert dali == tap._s_region("POLYGON ICRS 1 2 3 2 3 4 1 4")
    assert dali == tap._s_region("Polygon ICRS 1 2 3 2 3 4 1 4 1 2")
    assert dali.startswith("POLYGON ICRS 1.0000000 2.0000000") and dali.endswith(
        "1.0000000 2.0000000"
    )
