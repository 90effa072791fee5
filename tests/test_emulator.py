"""The loopback IRSA emulator: what it serves, its faults, stats and CLI."""

from __future__ import annotations

import gzip
import io
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
    from spxflow.format import calibration_key, calibration_products

    def get(key):
        return requests.get(f"{emulator}/ibe/data/spherex/{key}", timeout=60)

    r = get(calibration_key("qr2", "solid_angle_pixel_map", 4))
    assert r.status_code == 200
    assert r.content == sim.calibration_bytes("qr2", "solid_angle_pixel_map", 4)
    assert get(calibration_key("qr3", "epsf", 3)).content == sim.calibration_bytes("qr3", "epsf", 3)
    served = {(rel, fam) for rel, fam, _ in calibration_products(["qr2", "qr3"])}
    assert ("qr3", "l3_flux_corrections") in served and ("qr2", "epsf") not in served
    # Wrong tokens 404: the D3-only epsf v2 token on D1, a QR2 token under qr3/, a QR3-only
    # family under qr2/, and families the archive does not serve.
    d1 = "epsf/cal-epsf-v2-2026-191/1/epsf_D1_spx_cal-epsf-v2-2026-191.fits"
    for key in (
        f"qr3/{d1}",
        "qr3/solid_angle_pixel_map/cal-sapm-v2-2025-164/4/"
        "solid_angle_pixel_map_D4_spx_cal-sapm-v2-2025-164.fits",
        "qr2/epsf/cal-epsf-v1-2026-191/1/epsf_D1_spx_cal-epsf-v1-2026-191.fits",
        "qr2/dark/x/4/dark.fits",
    ):
        assert get(key).status_code == 404, key


def test_qr3_sia_collections_and_r7_cutouts(emulator, sim):
    from astropy.io import fits

    ra, dec = 35.5, 48.1  # covered by the default 35-day QR3 slice
    params = {"POS": f"CIRCLE {ra} {dec} 0.0003", "COLLECTION": "spherex_qr3"}
    r = requests.get(f"{emulator}/SIA", params=params, timeout=60)
    assert r.status_code == 200 and b"spherex_qr3" in r.content and b"spherex_qr2?" not in r.content
    ref = sim.discover(ra, dec, round(0.0003 * 3600, 9))
    qr3 = ref[ref["obs_collection"] == "spherex_qr3"]
    assert r.content.count(b"ivo://irsa.ipac/spherex_qr3?") == len(qr3) > 0
    both = requests.get(
        f"{emulator}/SIA",
        params=[
            ("POS", params["POS"]),
            ("COLLECTION", "spherex_qr2"),
            ("COLLECTION", "spherex_qr3"),
        ],
        timeout=60,
    )
    assert both.content.count(b"<TR>") == len(
        ref[ref["obs_collection"].isin(["spherex_qr2", "spherex_qr3"])]
    )
    row = qr3.iloc[0]
    got = requests.get(
        emulator + row["access_url"][len(IRSA) :],
        params={"center": f"{ra},{dec}", "size": "0.01", "gzip": "false"},
        timeout=30,
    )
    assert got.status_code == 200
    assert got.content == maybe_gunzip(sim.cutout_bytes(row["access_url"], ra, dec, 36.0))
    with fits.open(io.BytesIO(got.content)) as h:
        assert [x.name for x in h][-2:] == ["EPSF", "WCS-WAVE"] and h[0].header[
            "VERSION"
        ] == "7.0.5"
    # A QR3 file under the qr2 path is not served.
    wrong = row["access_url"][len(IRSA) :].replace("/spherex/qr3/", "/spherex/qr2/")
    assert (
        requests.get(
            emulator + wrong, params={"center": f"{ra},{dec}", "size": "0.01"}, timeout=10
        ).status_code
        == 404
    )


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
