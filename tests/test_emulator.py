"""The loopback IRSA emulator: what it serves, its faults, stats and CLI."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time

import pytest
import requests

from spxflow.archive.emulator import (
    get_stats,
    reset_stats,
    set_faults,
)
from spxflow.archive.validate import maybe_gunzip

RA, DEC = 150.25, 45.30
IRSA = "https://irsa.ipac.caltech.edu"


@pytest.fixture(scope="module")
def row(sim):
    return sim.discover(RA, DEC, 1.0).iloc[0]


def cutout_get(url, row, **params):
    path = row["access_url"][len(IRSA) :]
    q = {"center": f"{RA},{DEC}", "size": repr(60 / 3600), **params}
    return requests.get(url + path, params=q, timeout=10)


def test_cutouts_are_the_simulated_bytes_gzip_by_default(emulator, sim, row):
    ref = maybe_gunzip(sim.cutout_bytes(row["access_url"], RA, DEC, 60))
    plain = cutout_get(emulator, row, gzip="false")
    assert plain.status_code == 200 and plain.content == ref
    default = cutout_get(emulator, row)  # IRSA gzips unless gzip=false
    assert default.content[:2] == b"\x1f\x8b" and gzip.decompress(default.content) == ref
    # size with units and the tutorials' trailing "d" on center
    arcsec = cutout_get(emulator, row, gzip="false", size="60arcsec", center=f"{RA},{DEC}d")
    assert arcsec.content == ref


def test_no_overlap_is_http_400_and_unknown_image_404(emulator, row):
    far = requests.get(
        emulator + row["access_url"][len(IRSA) :],
        params={"center": f"{(RA + 90) % 360},{-DEC}", "size": "0.01", "gzip": "false"},
        timeout=10,
    )
    assert far.status_code == 400 and "overlap" in far.text
    bad = requests.get(
        emulator
        + "/ibe/data/spherex/qr2/level2/2025W18_1A/l2b-v21-2025-163/3/"
        + "level2_2099W01_1A_0001_1D3_spx_l2b-v21-2025-163.fits",
        params={"center": f"{RA},{DEC}", "size": "0.01"},
        timeout=10,
    )
    assert bad.status_code == 404


def test_calibration_files(emulator, sim):
    from spxflow.format import CALIBRATION_FAMILIES, calibration_file_name

    token = CALIBRATION_FAMILIES["solid_angle_pixel_map"][0]
    name = calibration_file_name("solid_angle_pixel_map", 4)
    r = requests.get(
        f"{emulator}/ibe/data/spherex/qr2/solid_angle_pixel_map/{token}/4/{name}", timeout=30
    )
    assert r.status_code == 200 and r.content == sim.calibration_bytes("solid_angle_pixel_map", 4)
    r = requests.get(f"{emulator}/ibe/data/spherex/qr2/dark/x/4/dark.fits", timeout=10)
    assert r.status_code == 404


def _statuses(url, row, n=40):
    return [
        cutout_get(url, row, gzip="false", size=f"{0.01 + i * 1e-4!r}").status_code
        for i in range(n)
    ]


def test_faults_are_deterministic_and_counted(emulator, row):
    faults = {"seed": 11, "rules": [{"kind": "cutout", "fault": "503", "rate": 0.3}]}
    set_faults(emulator, faults)
    reset_stats(emulator)
    try:
        first = _statuses(emulator, row)
        stats = get_stats(emulator)
        assert stats["faults"]["503"] == first.count(503) and 4 <= first.count(503) <= 20
        assert stats["requests"]["cutout"] == 40 and stats["max_concurrent"]["cutout"] == 1
        set_faults(emulator, faults)
        reset_stats(emulator)
        assert _statuses(emulator, row) == first  # same seed, same URLs: same faults
        set_faults(emulator, {**faults, "seed": 12})
        reset_stats(emulator)
        assert _statuses(emulator, row) != first
        assert requests.get(f"{emulator}/__faults", timeout=5).json()["seed"] == 12
    finally:
        set_faults(emulator, {})


def test_fault_kinds(emulator, row):
    def one(rule, **params):
        set_faults(emulator, {"rules": [{"kind": "cutout", **rule}]})
        try:
            return cutout_get(emulator, row, gzip="false", **params)
        finally:
            set_faults(emulator, {})

    r = one({"fault": "429", "retry_after": 7})
    assert r.status_code == 429 and r.headers["Retry-After"] == "7"
    assert one({"fault": "no_overlap"}).status_code == 400
    r = one({"fault": "error_votable"})
    assert r.status_code == 200 and b'value="ERROR"' in r.content
    assert one({"fault": "gzip"}).content[:2] == b"\x1f\x8b"
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        one({"fault": "truncate"})
    with pytest.raises(requests.exceptions.ConnectionError):
        one({"fault": "reset"})
    t0 = time.monotonic()
    with pytest.raises(requests.exceptions.Timeout):
        set_faults(emulator, {"rules": [{"kind": "cutout", "fault": "slow", "slow_s": 2}]})
        try:
            path = row["access_url"][len(IRSA) :]
            requests.get(
                emulator + path, params={"center": f"{RA},{DEC}", "size": "0.01"}, timeout=0.3
            )
        finally:
            set_faults(emulator, {})
    assert time.monotonic() - t0 < 1.5
    # the slow handler noticed the client leaving: nothing stays in flight
    time.sleep(0.1)
    assert get_stats(emulator)["in_flight"].get("cutout", 0) == 0


def test_bad_fault_config_is_rejected(emulator):
    r = requests.post(
        f"{emulator}/__faults", data=json.dumps({"rules": [{"fault": "x"}]}), timeout=5
    )
    assert r.status_code == 400


def test_cli_serves_and_reports_its_url(tmp_path):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "spxflow.archive.emulator",
            "--port",
            "0",
            "--faults",
            json.dumps({"seed": 2, "rules": []}),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stderr.readline()
        url = line.split(" on ", 1)[1].split()[0]
        assert requests.get(f"{url}/__stats", timeout=5).json()["requests"] == {}
        r = requests.get(
            f"{url}/SIA",
            params={"COLLECTION": "spherex_qr2", "POS": f"CIRCLE {RA} {DEC} 0.0003"},
            timeout=30,
        )
        assert r.status_code == 200 and b'name="obs_publisher_did"' in r.content
    finally:
        proc.terminate()
        proc.wait(timeout=10)
