"""The IRSA backend with ``pixels: s3``: measure jobs read windows by byte ranges from the
loopback S3 emulator (discovery from the SIA emulator) and give the simulated backend's
numbers; faults, replaced objects, denied keys and foreign hosts are handled and recorded."""

from __future__ import annotations

import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
import pytest

from spxflow import rerun, rules
from spxflow.archive.emulator import running_emulator
from spxflow.archive.irsa import IrsaArchive
from spxflow.archive.s3emulator import (
    get_s3_stats,
    reset_s3_stats,
    running_s3_emulator,
    set_s3_faults,
)
from spxflow.archive.simulated import SimulatedArchive
from spxflow.fileio import read_json, write_json_atomic
from spxflow.settings import Runtime, Science
from tests.workflow_helpers import assert_same_rows, measure_outputs

TARGET = {"name": "AGN", "ra_deg": 35.5, "dec_deg": 48.1, "cutout_size_arcsec": 120.0}
CAL_INDEX = "calibration_index.json"
N_PER_RELEASE = 6
TRANSIENT_30 = {  # 30 % of range requests fail transiently, in every way S3 fails
    "seed": 5,
    "rules": [
        {"fault": "503", "rate": 0.08, "retry_after": 0.01},
        {"fault": "500", "rate": 0.06 / 0.92},
        {"fault": "reset", "rate": 0.08 / 0.86},
        {"fault": "truncate", "rate": 0.08 / 0.78},
    ],
}


def limited(table: pd.DataFrame) -> pd.DataFrame:
    """The first few images of each release (a source has ~250)."""
    release = table["obs_collection"].str[:11]
    return table.groupby(release, group_keys=False).head(N_PER_RELEASE).reset_index(drop=True)


class Limited:
    """An archive whose discovery keeps only ``limited`` rows (plus ``extra`` rows)."""

    def __init__(self, archive, extra=()):
        self.archive, self.extra = archive, list(extra)

    def discover(self, ra, dec, radius_arcsec=0.0):
        t = limited(self.archive.discover(ra, dec, radius_arcsec))
        return pd.concat([t, pd.DataFrame(self.extra)], ignore_index=True) if self.extra else t

    def __getattr__(self, name):
        return getattr(self.archive, name)


@pytest.fixture(scope="module")
def services():
    sim = SimulatedArchive()
    with running_emulator(sim) as sia, running_s3_emulator(sim) as s3:
        yield sim, sia, s3.base_url


def irsa(services, cache_dir, **kw) -> IrsaArchive:
    _, sia, s3 = services
    cfg = {
        "base_url_override": sia,
        "s3_url": s3,
        "timeout_s": 30.0,
        "s3_timeout_s": 30.0,  # the emulator renders a band of a new file in ~0.5 s
        "retry_attempts": 10,
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.1,
        **kw,
    }
    return IrsaArchive.from_config(cfg, cache_dir=str(cache_dir))


def measure(monkeypatch, archive, backend: str, tag: str, runtime=None):
    science = Science.from_config({"archive": {"backend": backend}})
    runtime = runtime or Runtime.from_config({"archive": {"backend": backend}})
    monkeypatch.setattr(rules, "make_archive", lambda science, runtime, cache_dir=None: archive)
    out = measure_outputs(tag)
    rules.measure_source(science, runtime, "AGN", TARGET, [], CAL_INDEX, out)
    return pd.read_parquet(out.measurements), read_json(out.cutout_index)


@pytest.fixture()
def work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_json_atomic(CAL_INDEX, {"products": []})
    return tmp_path


@pytest.fixture()
def reference(services, work, monkeypatch):
    sim, _, _ = services
    return measure(monkeypatch, Limited(sim), "simulated", "sim")[0]


def test_s3_windows_give_the_simulated_backends_numbers_within_budget(
    services, work, monkeypatch, reference
):
    table, index = measure(monkeypatch, Limited(irsa(services, work / "cache")), "irsa", "s3")
    assert sorted(set(table["release"])) == ["qr2", "qr3"]
    assert_same_rows(table, reference, skip={"config_hash", "measurement_id"})
    images = index["images"]
    assert all(e["status"] == "ok" and e["etag"] and e["key"] for e in images)
    # Every image a new file; the first of each detector also reads its constants (the
    # per-image budget itself is held in tests/test_ranges.py).
    assert all(e["requests"] >= 3 and e["size_bytes"] > 0 for e in images)
    assert np.median([e["size_bytes"] for e in images]) < 400_000
    assert os.listdir(work / "cache" / "s3-layouts")  # shared on disk with other jobs
    # a second source on the same images reads no headers: 3 requests per window
    again, index = measure(monkeypatch, Limited(irsa(services, work / "cache")), "irsa", "s3b")
    assert [e["requests"] for e in index["images"]] == [3] * len(images)
    assert_same_rows(again, table)


def test_30_percent_transient_faults_complete_with_nothing_duplicated(
    services, work, monkeypatch, reference
):
    _, _, s3 = services
    set_s3_faults(s3, TRANSIENT_30)
    reset_s3_stats(s3)
    try:
        table, index = measure(monkeypatch, Limited(irsa(services, work / "c")), "irsa", "f")
        stats = get_s3_stats(s3)
    finally:
        set_s3_faults(s3, {"rules": []})
    assert sum(stats["faults"].values()) >= 5
    assert [e["status"] for e in index["images"]] == ["ok"] * len(index["images"])
    assert table["image_id"].is_unique and len(table) == len(reference)
    assert_same_rows(table, reference, skip={"config_hash", "measurement_id"})


def test_replaced_object_is_detected_re_read_and_recorded(services, work, monkeypatch):
    sim, _, s3 = services
    rows = limited(sim.discover(TARGET["ra_deg"], TARGET["dec_deg"], 1.0))
    victim = rows["access_url"].iloc[1].split("/spherex/", 1)[1]
    # replaced after its first request (the header read), before its pixels are read
    set_s3_faults(s3, {"rules": [{"fault": "replace", "match": victim, "after": 1}]})
    try:
        _, index = measure(monkeypatch, Limited(irsa(services, work / "c")), "irsa", "r")
    finally:
        set_s3_faults(s3, {"rules": []})
    entry = next(e for e in index["images"] if e["key"] == victim)
    assert entry["status"] == "ok" and entry["replaced"] is True
    assert sum(e["replaced"] for e in index["images"]) == 1


def test_update_re_measures_only_images_whose_etag_changed(services, work, monkeypatch):
    sim, _, s3 = services
    from spxflow.archive.s3emulator import replace_object

    archive = Limited(irsa(services, work / "c"))
    _, first = measure(monkeypatch, archive, "irsa", "results")
    victim = first["images"][2]
    replace_object(s3, victim["key"])
    assert rerun.mark_for_update(["AGN"], "results") == ["AGN"]
    _, index = measure(monkeypatch, archive, "irsa", "results")
    fresh = [e for e in index["images"] if not e.get("carried")]
    assert [e["key"] for e in fresh] == [victim["key"]]
    assert fresh[0]["reprocessed_from_etag"] == victim["etag"] != fresh[0]["etag"]


def test_denied_and_missing_objects_become_failure_rows_with_reasons(services, work, monkeypatch):
    sim, _, s3 = services
    rows = limited(sim.discover(TARGET["ra_deg"], TARGET["dec_deg"], 1.0))
    denied = rows["access_url"].iloc[0].split("/spherex/", 1)[1]
    missing = rows["access_url"].iloc[-1].split("/spherex/", 1)[1]
    set_s3_faults(
        s3,
        {"rules": [{"fault": "403", "match": denied}, {"fault": "404", "match": missing}]},
    )
    try:
        table, index = measure(monkeypatch, Limited(irsa(services, work / "c")), "irsa", "d")
    finally:
        set_s3_faults(s3, {"rules": []})
    failed = table[table["failure_reason"].str.startswith("window")].set_index("file_name")
    assert sorted(failed.index) == sorted(k.rsplit("/", 1)[1] for k in (denied, missing))
    reasons = " ".join(failed["failure_reason"])
    assert "AccessDenied" in reasons and "NoSuchKey" in reasons
    assert index["n_failed"] == 2 and index["n_ok"] == len(rows) - 2


class _Counting(BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self):  # noqa: N802 - http.server API
        type(self).hits += 1
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_row_pointing_at_an_unconfigured_host_is_never_fetched(services, work, monkeypatch):
    sim, _, s3 = services
    evil = ThreadingHTTPServer(("127.0.0.1", 0), _Counting)
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    try:
        # rows of images elsewhere on the sky, so that de-duplication keeps them
        other = sim.discover(150.25, 45.3, 1.0).head(2).to_dict(orient="records")
        host = f"http://127.0.0.1:{evil.server_port}"
        extra = [
            {**other[0], "access_url": f"{host}/ibe/" + other[0]["access_url"].split("/ibe/")[1]},
            {**other[1], "access_url": other[1]["access_url"].replace("/level2/", "/../../etc/")},
        ]
        evil_ids = {r["obs_publisher_did"] for r in extra}
        reset_s3_stats(s3)
        archive = Limited(irsa(services, work / "c"), extra)
        table, index = measure(monkeypatch, archive, "irsa", "x")
    finally:
        evil.shutdown()
    assert _Counting.hits == 0
    refused = [e for e in index["images"] if e["image_id"] in evil_ids]
    assert len(refused) == 2 and all("refused" in e["reason"] for e in refused)
    assert all(e["status"] == "failed" and not e["size_bytes"] for e in refused)
    keys = get_s3_stats(s3)["per_key"]
    assert not any("etc" in k for k in keys)


def test_cutout_path_stays_for_users_who_want_files(services, work, monkeypatch, reference):
    runtime = Runtime.from_config(
        {"archive": {"backend": "irsa", "irsa": {"pixels": "cutout"}}, "cleanup": "never"}
    )
    archive = Limited(irsa(services, work / "c", pixels="cutout"))
    table, index = measure(monkeypatch, archive, "irsa", "cut", runtime)
    assert_same_rows(table, reference, skip={"config_hash", "measurement_id"})
    assert len(os.listdir(work / "data" / "cutouts" / "AGN")) >= len(table)
    assert not any(e.get("pixels") for e in index["images"])


def test_measure_file_reads_an_archive_url_by_ranges(services, work, capsys):
    """`python -m spxflow measure-file <url>` measures a whole file without downloading it,
    with the numbers of the same image's cutout file."""
    import json

    from spxflow.cli import main

    sim, _, s3 = services
    row = limited(sim.discover(TARGET["ra_deg"], TARGET["dec_deg"], 1.0)).iloc[-1]
    key = row["access_url"].split("/spherex/", 1)[1]
    pos = ["--ra", str(TARGET["ra_deg"]), "--dec", str(TARGET["dec_deg"]), "--json"]
    size = ["--cutout-size-arcsec", "120"]
    reset_s3_stats(s3)
    assert main(["measure-file", f"{s3}/{key}", *pos, *size]) == 0
    remote = json.loads(capsys.readouterr().out)
    assert get_s3_stats(s3)["requests"] <= 12  # the first file of a detector reads its tail
    cutout = work / "cutout.fits"
    cutout.write_bytes(
        sim.cutout_bytes(row["access_url"], TARGET["ra_deg"], TARGET["dec_deg"], 120)
    )
    assert main(["measure-file", str(cutout), *pos]) == 0
    local = json.loads(capsys.readouterr().out)
    assert remote["release"] == local["release"] == "qr3"
    for k in ("flux_uJy", "flux_err_uJy", "wavelength_um", "x_cutout", "y_cutout"):
        assert abs(remote[k] - local[k]) <= 1e-9 * max(1.0, abs(local[k])), k
