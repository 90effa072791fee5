"""IRSA SIA2 discovery: a recorded real-layout response, pyvo against the emulator, paging,
errors, and equality with the simulated backend's discovery table."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import astropy.units as u
import pandas as pd
import pytest
from astropy.io.votable import parse as parse_votable

from spxflow.archive import ArchiveError, make_archive
from spxflow.archive.emulator import running_emulator, set_faults
from spxflow.archive.irsa import IrsaArchive
from spxflow.archive.sia import SiaClient, normalise_sia_table, votable_bytes
from spxflow.archive.simulated import SimulatedArchive
from spxflow.discovery import deduplicate
from spxflow.format import RELEASES, SIA_COLUMN_NAMES, SIA_COLUMNS, release_of_path
from spxflow.settings import Runtime, Science

DATA = Path(__file__).parent / "data"
RECORDED = DATA / "irsa_sia2_spherex_qr2_m31.xml"
ERROR = DATA / "irsa_sia2_error.xml"
POSITIONS = [("a", 150.25, 45.30), ("b", 35.5, 48.1), ("c", 62.5, -12.2)]


def irsa(url, tmp_path, **kw):
    cfg = {
        "base_url_override": url,
        "timeout_s": 2.0,
        "backoff_base_s": 0.02,
        "backoff_max_s": 0.2,
        "lock_dir": str(tmp_path / "locks"),
        **kw,
    }
    return IrsaArchive.from_config(cfg)


def test_recorded_real_layout_parses_into_the_discovery_table(sim):
    from pyvo.dal.sia2 import SIA2Results

    res = SIA2Results(parse_votable(str(RECORDED)))
    table = normalise_sia_table(res)
    ref = sim.discover(150.25, 45.30, 1.0)
    assert list(table.columns) == list(SIA_COLUMN_NAMES)
    assert table.dtypes.to_dict() == ref.dtypes.to_dict()
    assert len(table) == 3
    # sorted by (t_min, obs_publisher_did): D3 and D6 of one OBSID share t_min
    assert table["obs_publisher_did"].tolist() == [
        "ivo://irsa.ipac/spherex_qr2?2025W51_1A_0684_2/D3",
        "ivo://irsa.ipac/spherex_qr2?2025W51_1A_0684_2/D6",
        "ivo://irsa.ipac/spherex_qr2?2025W51_1A_0684_3/D3",
    ]
    row = table.iloc[0]
    assert row["energy_bandpassname"] == "SPHEREx-D3"
    assert row["t_min"] == pytest.approx(61027.214984375)
    assert row["access_estsize"] == 71638 and row["s_xel1"] == 2040
    assert row["access_url"].endswith("/3/level2_2025W51_1A_0684_2D3_spx_l2b-v21-2025-354.fits")
    assert json.loads(row["cloud_access"])["aws"]["bucket_name"] == "nasa-irsa-spherex"
    assert pd.isna(row["t_xel"]) and row["proposal_id"] == ""
    # the same columns, in the same order, as the emulator and the simulated backend give
    assert list(res.fieldnames) == list(SIA_COLUMN_NAMES)


class _FixtureHandler(BaseHTTPRequestHandler):
    body = b""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


def _serve(body: bytes):
    handler = type("H", (_FixtureHandler,), {"body": body})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_recorded_response_through_the_client():
    server = _serve(RECORDED.read_bytes())
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/SIA"
        client = SiaClient(url, ["spherex_qr2", "spherex_qr2_deep"])
        table = client.discover(10.0862548, 40.9002275, 1.0)
        # both collections answered the same rows: one row per image is kept
        assert len(table) == 3 and list(table.columns) == list(SIA_COLUMN_NAMES)
    finally:
        server.shutdown()
        server.server_close()


class _PerCollectionHandler(BaseHTTPRequestHandler):
    """Answers every COLLECTION with the same two QR3 files (wide and deep share the tree);
    the second row has no obs_collection, which the client fills in."""

    def do_GET(self):
        from urllib.parse import parse_qs, urlsplit

        collection = parse_qs(urlsplit(self.path).query)["COLLECTION"][0]
        from pyvo.dal.sia2 import SIA2Results

        base = normalise_sia_table(SIA2Results(parse_votable(str(RECORDED))))
        rows = base.head(2).copy()
        for i, token in enumerate(["l2b-v27-2026-223", "l2b_retry-v27-2026-224"]):
            obsid = "2026W30_1B_0001_1"
            rows.loc[i, "access_url"] = (
                "https://irsa.ipac.caltech.edu/ibe/data/spherex/qr3/level2/2026W30_1B/"
                f"{token}/3/level2_{obsid}D3_spx_{token}.fits"
            )
            rows.loc[i, "obs_publisher_did"] = f"ivo://irsa.ipac/{collection}?{obsid}/D3"
            rows.loc[i, "obs_collection"] = collection if i == 0 else ""
        body = votable_bytes(rows)
        self.send_response(200)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_each_collection_is_queried_and_rows_keep_their_collection():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _PerCollectionHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/SIA"
        client = SiaClient(url, ["spherex_qr3", "spherex_qr3_deep"])
        table = client.discover(10.0862548, 40.9002275, 1.0)
        assert client.n_queries == 2 and len(table) == 4
        assert sorted(table["obs_collection"]) == ["spherex_qr3"] * 2 + ["spherex_qr3_deep"] * 2
        assert {release_of_path(u) for u in table["access_url"]} == {"qr3"}
        assert all("/ibe/data/spherex/qr3/level2/" in u for u in table["access_url"])
        # wide and deep returned the same two files; the retry supersedes the normal token
        kept, dropped = deduplicate(table)
        assert kept["obs_collection"].tolist() == ["spherex_qr3"]
        assert kept["access_url"].iloc[0].endswith("_spx_l2b_retry-v27-2026-224.fits")
        assert len(dropped) == 3
    finally:
        server.shutdown()
        server.server_close()


def test_collections_are_checked_against_the_releases(tmp_path):
    arch = IrsaArchive.from_config({"lock_dir": str(tmp_path)})
    assert arch.collections == [c for r in RELEASES.values() for c in r.collections]
    assert arch.releases == ("qr2", "qr3")
    only3 = IrsaArchive.from_config(
        {"collections": ["spherex_qr3_deep"], "lock_dir": str(tmp_path)}
    )
    assert only3.releases == ("qr3",)
    with pytest.raises(ValueError, match=r"archive\.irsa\.collections.*'spherex_qr'"):
        IrsaArchive.from_config({"collections": ["spherex_qr2", "spherex_qr"]})
    with pytest.raises(ValueError, match=r"archive\.irsa\.collections.*calibration collection"):
        IrsaArchive.from_config({"collections": ["spherex_qr3_cal"]})
    with pytest.raises(ValueError, match=r"archive\.irsa\.collections.*more than once"):
        IrsaArchive.from_config({"collections": ["spherex_qr3", "spherex_qr3"]})
    with pytest.raises(ValueError, match="at least one"):
        IrsaArchive.from_config({"collections": []})
    with pytest.raises(ValueError, match="unknown key"):
        IrsaArchive.from_config({"calibration_collection": "spherex_qr2_cal"})


@pytest.mark.parametrize("release", ["qr2", "qr3"])
def test_ibe_data_url_with_a_release_segment_is_refused(release):
    with pytest.raises(ValueError, match="data root without the release"):
        IrsaArchive.from_config(
            {"ibe_data_url": f"https://irsa.ipac.caltech.edu/ibe/data/spherex/{release}/"}
        )


def test_http200_error_votable_is_an_archive_error_with_the_message():
    server = _serve(ERROR.read_bytes())
    try:
        client = SiaClient(f"http://127.0.0.1:{server.server_address[1]}/SIA", ["spherex_qr2"])
        with pytest.raises(ArchiveError, match="COLLECTION is a required parameter"):
            client.discover(10.0, 40.0, 1.0)
    finally:
        server.shutdown()
        server.server_close()


def test_pyvo_queries_the_emulator_and_gets_the_real_columns(emulator):
    from pyvo.dal.sia2 import SIA2Service

    svc = SIA2Service(f"{emulator}/SIA", check_baseurl=False)
    res = svc.search(pos=(150.25, 45.30, 1.0 / 3600), collection="spherex_qr2")
    table = res.to_table()
    assert table.colnames == list(SIA_COLUMN_NAMES)
    units = {name: (str(table[name].unit) if table[name].unit else None) for name in table.colnames}
    for name, unit in SIA_COLUMNS:
        if unit:
            assert units[name] == str(u.Unit(unit)), name
    assert len(table) > 50
    assert set(table["energy_bandpassname"]) <= {f"SPHEREx-D{d}" for d in range(1, 7)}
    # no COLLECTION: HTTP 200 + QUERY_STATUS=ERROR, which pyvo raises
    from pyvo.dal.exceptions import DALQueryError

    with pytest.raises(DALQueryError, match="COLLECTION"):
        svc.search(pos=(150.25, 45.30, 1.0 / 3600))


def test_irsa_discovery_equals_simulated(emulator, sim, tmp_path):
    arch = irsa(emulator, tmp_path)
    for _, ra, dec in POSITIONS:
        table = arch.discover(ra, dec, 1.0)
        pd.testing.assert_frame_equal(table, sim.discover(ra, dec, 1.0))
        # every row's URL is under its own release's tree
        for coll, url in zip(table["obs_collection"], table["access_url"], strict=True):
            release = release_of_path(url)
            assert coll in RELEASES[release].collections
            assert f"/ibe/data/spherex/{release}/level2/" in url
    many = arch.discover_many(POSITIONS, 1.0)
    ref = sim.discover_many(POSITIONS, 1.0)
    assert list(many) == [p[0] for p in POSITIONS]
    for key in many:
        pd.testing.assert_frame_equal(many[key], ref[key])


def test_make_archive_builds_the_irsa_backend(emulator, tmp_path):
    cfg = {"archive": {"backend": "irsa", "irsa": {"base_url_override": emulator}}}
    arch = make_archive(Science.from_config(cfg).archive, Runtime.from_config(cfg).archive)
    assert isinstance(arch, IrsaArchive) and arch.sia_url == f"{emulator}/SIA"
    with pytest.raises(ValueError, match="unknown key"):
        IrsaArchive.from_config({"no_such_key": 1})


def test_time_paging_past_maxrec(tmp_path):
    sim4 = SimulatedArchive(passes=4)
    ref = sim4.discover(150.25, 45.30, 1.0)
    assert len(ref) > 300
    with running_emulator(sim4, {"sia_max_rows": 60}) as url:
        arch = irsa(url, tmp_path)  # server-side limit: QUERY_STATUS=OVERFLOW
        pd.testing.assert_frame_equal(arch.discover(150.25, 45.30, 1.0), ref)
        assert arch.sia.n_queries > 2 * 5
        set_faults(url, {})
        arch = irsa(url, tmp_path, maxrec=40)  # client MAXREC reached
        pd.testing.assert_frame_equal(arch.discover(150.25, 45.30, 1.0), ref)


@pytest.mark.parametrize("fault", ["429", "503", "truncate", "reset", "slow"])
def test_transient_sia_faults_are_retried(emulator, sim, tmp_path, fault):
    rule = {"kind": "sia", "fault": fault, "max_per_url": 2, "retry_after": 0.05, "slow_s": 1}
    set_faults(emulator, {"seed": 5, "rules": [rule]})
    try:
        arch = irsa(emulator, tmp_path, timeout_s=0.4)
        pd.testing.assert_frame_equal(
            arch.discover(62.5, -12.2, 1.0), sim.discover(62.5, -12.2, 1.0)
        )
    finally:
        set_faults(emulator, {})


def test_error_votable_from_the_emulator_is_not_retried(emulator, tmp_path):
    set_faults(emulator, {"rules": [{"kind": "sia", "fault": "error_votable"}]})
    try:
        arch = irsa(emulator, tmp_path)
        with pytest.raises(ArchiveError, match="UsageFault: BAD_REQUEST"):
            arch.discover(62.5, -12.2, 1.0)
        assert arch.sia.n_queries == 1
    finally:
        set_faults(emulator, {})
