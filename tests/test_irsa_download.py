"""IRSA cutout and calibration downloads through the emulator, with injected faults."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from spxflow.archive import ArchiveError
from spxflow.archive.emulator import get_stats, reset_stats, running_emulator, set_faults
from spxflow.archive.http import HostSlots, RetryPolicy, parse_retry_after
from spxflow.archive.irsa import IrsaArchive, calibration_problem
from spxflow.archive.validate import cutout_problem, maybe_gunzip
from spxflow.format import calibration_file_name, calibration_id, calibration_products

RA, DEC, SIZE = 150.25, 45.30, 60.0
TRANSIENT_30 = {  # 30 % of cutout requests fail transiently, in every way IRSA fails
    "seed": 7,
    "rules": [
        {"kind": "cutout", "fault": "429", "rate": 0.06, "retry_after": 0.05},
        {"kind": "cutout", "fault": "503", "rate": 0.06 / 0.94},
        {"kind": "cutout", "fault": "truncate", "rate": 0.06 / 0.88},
        {"kind": "cutout", "fault": "reset", "rate": 0.06 / 0.82},
        {"kind": "cutout", "fault": "slow", "rate": 0.06 / 0.76, "slow_s": 1.0},
        {"kind": "cutout", "fault": "gzip", "rate": 0.2},  # not a failure: handled inline
    ],
}


@pytest.fixture(scope="module")
def rows(sim):
    return sim.discover(RA, DEC, 1.0).head(36).to_dict(orient="records")


@pytest.fixture(scope="module")
def reference(sim, rows):
    """sha256 of every cutout as the simulated backend writes it."""
    return {
        r["access_url"].rsplit("/", 1)[-1]: hashlib.sha256(
            maybe_gunzip(sim.cutout_bytes(r["access_url"], RA, DEC, SIZE))
        ).hexdigest()
        for r in rows
    }


@pytest.fixture()
def emulator(sim):
    with running_emulator(sim) as url:
        yield url


def irsa(url, tmp_path, **kw):
    cfg = {
        "base_url_override": url,
        "timeout_s": 0.5,
        "backoff_base_s": 0.02,
        "backoff_max_s": 0.2,
        "retry_attempts": 12,
        "lock_dir": str(tmp_path / "locks"),
        **kw,
    }
    return IrsaArchive.from_config(cfg)


def leftovers(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.iterdir() if not p.name.endswith(".fits"))


def test_30_percent_transient_faults(emulator, rows, reference, tmp_path):
    set_faults(emulator, TRANSIENT_30)
    dest = tmp_path / "cut"
    results = irsa(emulator, tmp_path).fetch_cutouts(rows, RA, DEC, SIZE, dest)
    stats = get_stats(emulator)
    assert [r.status for r in results] == ["ok"] * len(rows), [r.reason for r in results]
    assert [r.image_id for r in results] == [r["obs_publisher_did"] for r in rows]
    assert {r.file_name: r.sha256 for r in results} == reference
    for r in results:
        assert Path(r.path).name == r.file_name and cutout_problem(r.path) == ""
    assert sorted(p.name for p in dest.iterdir()) == sorted(reference)  # nothing else, no .part
    assert sum(stats["faults"].get(f, 0) for f in ("429", "503", "truncate", "reset", "slow")) >= 5
    assert stats["status"]["cutout"]["200"] == len(rows)  # every image served once: no duplicate
    assert stats["max_concurrent"]["cutout"] <= 2
    assert stats["max_concurrent"]["total"] <= 2
    assert max(r.attempts for r in results) > 1


def test_permanent_failures_are_recorded_and_a_rerun_fetches_only_them(
    emulator, rows, reference, tmp_path
):
    set_faults(
        emulator,
        {
            "rules": [
                {"kind": "cutout", "match": "0008_3D3", "fault": "503", "permanent": True},
                {"kind": "cutout", "match": "0009_1D6", "fault": "truncate", "permanent": True},
                {"kind": "cutout", "match": "0009_2D3", "fault": "no_overlap", "permanent": True},
                {"kind": "cutout", "match": "0008_4D6", "fault": "error_votable"},
            ]
        },
    )
    dest = tmp_path / "cut"
    arch = irsa(emulator, tmp_path, retry_attempts=3)
    results = arch.fetch_cutouts(rows, RA, DEC, SIZE, dest)
    bad = {r.file_name: r for r in results if r.status != "ok"}
    assert len(bad) == 4 and len(results) == len(rows)
    by = {k.split("_spx")[0][-8:]: v for k, v in bad.items()}
    assert by["0008_3D3"].status == "failed" and "HTTP 503" in by["0008_3D3"].reason
    assert by["0009_1D6"].status == "failed" and "truncated" in by["0009_1D6"].reason.lower()
    assert by["0009_2D3"].status == "no_overlap" and by["0009_2D3"].attempts == 1
    assert "error document" in by["0008_4D6"].reason and by["0008_4D6"].attempts == 1
    for r in bad.values():
        assert r.path is None and r.sha256 == "" and not (dest / r.file_name).exists()
    assert leftovers(dest) == []
    # The archive is healthy again: a rerun into the same directory requests only the failures.
    set_faults(emulator, {})
    reset_stats(emulator)
    again = arch.fetch_cutouts(rows, RA, DEC, SIZE, dest)
    assert [r.status for r in again] == ["ok"] * len(rows)
    assert get_stats(emulator)["requests"]["cutout"] == len(bad)
    assert {r.file_name: r.sha256 for r in again} == reference


def test_no_overlap_is_not_retried(emulator, rows, tmp_path):
    res = irsa(emulator, tmp_path).fetch_cutout(rows[0], (RA + 180) % 360, -DEC, SIZE, tmp_path)
    assert res.status == "no_overlap" and "overlap" in res.reason
    assert get_stats(emulator)["requests"]["cutout"] == 1
    assert list(tmp_path.glob("*.fits*")) == []


def test_corrupt_bodies_are_never_left(emulator, rows, tmp_path):
    set_faults(emulator, {"rules": [{"kind": "cutout", "fault": "truncate"}]})
    res = irsa(emulator, tmp_path, retry_attempts=2).fetch_cutouts(
        rows[:3], RA, DEC, SIZE, tmp_path
    )
    assert all(r.status == "failed" and r.attempts == 2 for r in res)
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == []


@pytest.mark.filterwarnings("ignore::astropy.io.fits.verify.VerifyWarning")
def test_an_invalid_file_under_the_final_name_is_replaced(emulator, rows, reference, tmp_path):
    name = rows[0]["access_url"].rsplit("/", 1)[-1]
    (tmp_path / name).write_bytes(b"SIMPLE  = T" + b" " * 100)
    res = irsa(emulator, tmp_path).fetch_cutout(rows[0], RA, DEC, SIZE, tmp_path)
    assert res.status == "ok" and res.sha256 == reference[name]


def test_retry_after_is_honoured(emulator, rows, tmp_path):
    set_faults(
        emulator,
        {"rules": [{"kind": "cutout", "fault": "429", "retry_after": 0.4, "max_per_url": 1}]},
    )
    t0 = time.monotonic()
    arch = irsa(emulator, tmp_path, backoff_max_s=2.0)  # Retry-After is capped by backoff_max_s
    res = arch.fetch_cutout(rows[0], RA, DEC, SIZE, tmp_path)
    assert res.status == "ok" and res.attempts == 2 and time.monotonic() - t0 >= 0.4


def test_host_limit_holds_across_archive_instances(emulator, rows, tmp_path):
    """Two archives (as two Snakemake jobs would be) share the per-host slots."""
    set_faults(emulator, {"rules": [{"kind": "cutout", "fault": "slow", "slow_s": 0.05}]})
    archives = [irsa(emulator, tmp_path), irsa(emulator, tmp_path)]
    threads = [
        threading.Thread(
            target=a.fetch_cutouts, args=(rows[i * 8 : i * 8 + 8], RA, DEC, SIZE, tmp_path / str(i))
        )
        for i, a in enumerate(archives)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = get_stats(emulator)
    assert stats["status"]["cutout"]["200"] == 16
    assert stats["max_concurrent"]["cutout"] == 2


@pytest.mark.parametrize(
    ("release", "family", "detector"),
    [
        ("qr2", "spectral_wcs", 2),
        ("qr3", "spectral_wcs", 5),
        ("qr3", "solid_angle_pixel_map", 1),
        ("qr3", "epsf", 3),  # the D3 token differs (cal-epsf-v2)
        ("qr3", "l3_flux_corrections", 4),
    ],
)
def test_calibration_downloaded_once_with_checksum(
    emulator, sim, tmp_path, release, family, detector
):
    arch = irsa(emulator, tmp_path, timeout_s=10)
    reset_stats(emulator)
    cal = arch.fetch_calibration(release, family, detector, tmp_path)
    ref = hashlib.sha256(sim.calibration_bytes(release, family, detector)).hexdigest()
    assert cal.sha256 == ref
    assert cal.release == release and cal.family == family and cal.detector == detector
    assert cal.calibration_id == calibration_id(release, family, detector)
    assert Path(cal.path).name == calibration_file_name(release, family, detector)
    assert calibration_problem(cal.path, family) == ""
    again = arch.fetch_calibration(release, family, detector, Path(cal.path))
    assert again == cal
    assert get_stats(emulator)["requests"]["calibration"] == 1


def test_calibration_urls_per_release(tmp_path):
    arch = irsa("http://127.0.0.1:9", tmp_path)
    root = "http://127.0.0.1:9/ibe/data/spherex"
    assert arch.calibration_url("qr2", "spectral_wcs", 2) == (
        f"{root}/qr2/spectral_wcs/cal-wcs-v4-2025-254/2/spectral_wcs_D2_spx_cal-wcs-v4-2025-254.fits"
    )
    assert arch.calibration_url("qr3", "epsf", 3) == (
        f"{root}/qr3/epsf/cal-epsf-v2-2026-191/3/epsf_D3_spx_cal-epsf-v2-2026-191.fits"
    )
    assert arch.calibration_url("qr3", "epsf", 4).endswith(
        "/qr3/epsf/cal-epsf-v1-2026-191/4/epsf_D4_spx_cal-epsf-v1-2026-191.fits"
    )
    # every product of both releases has one URL under its release
    urls = {arch.calibration_url(*p) for p in calibration_products(["qr2", "qr3"])}
    assert len(urls) == len(calibration_products(["qr2", "qr3"]))
    assert all(u.startswith((f"{root}/qr2/", f"{root}/qr3/")) for u in urls)
    with pytest.raises(ArchiveError, match="no calibration family 'epsf' in release 'qr2'"):
        arch.calibration_url("qr2", "epsf", 1)
    with pytest.raises(ArchiveError, match="unknown calibration release"):
        arch.calibration_url("qr1", "spectral_wcs", 1)
    with pytest.raises(ArchiveError, match="1..6"):
        arch.calibration_url("qr3", "spectral_wcs", 7)


def test_calibration_download_failure_names_the_product(emulator, tmp_path):
    set_faults(emulator, {"rules": [{"kind": "calibration", "fault": "503", "permanent": True}]})
    try:
        arch = irsa(emulator, tmp_path, retry_attempts=2)
        with pytest.raises(ArchiveError, match=r"calibration qr3 epsf D3 from .*/qr3/epsf/"):
            arch.fetch_calibration("qr3", "epsf", 3, tmp_path)
        assert list(tmp_path.glob("*.fits*")) == []
    finally:
        set_faults(emulator, {})


def _image(name, shape=(8, 8)):
    return fits.ImageHDU(np.ones(shape, dtype=np.float32), name=name)


def _table(name, columns):
    return fits.BinTableHDU.from_columns(columns, name=name)


def _epsf_table(rows=2):
    return _table(
        "EPSF",
        [
            fits.Column(name="BINX", format="J", array=np.arange(rows)),
            fits.Column(name="EPSF", format="1089D", dim="(33,33)", array=np.zeros((rows, 33, 33))),
        ],
    )


@pytest.mark.parametrize(
    ("family", "hdus", "problem"),
    [
        ("epsf", lambda: [_epsf_table()], ""),
        ("epsf", lambda: [_image("EPSF")], "EPSF is not a binary table"),
        ("epsf", lambda: [_epsf_table(0)], "no rows"),
        (
            "epsf",
            lambda: [_table("EPSF", [fits.Column(name="BINX", format="J", array=[0])])],
            "lacks the EPSF column",
        ),
        ("l3_flux_corrections", lambda: [_image("IMAGE")], ""),
        ("l3_flux_corrections", lambda: [_image("IMAGE", (2, 4, 4))], "not a 2-D image"),
        ("l3_flux_corrections", lambda: [_image("FLUXCORR")], "lack ['IMAGE']"),
        ("solid_angle_pixel_map", lambda: [_image("IMAGE")], ""),
        (
            "spectral_wcs",
            lambda: [
                _image("CWAVE"),
                _image("CBAND"),
                _table("WCS-WAVE", [fits.Column(name="X", format="E", array=[1.0])]),
            ],
            "",
        ),
        ("spectral_wcs", lambda: [_image("CWAVE"), _image("CBAND"), _image("WCS-WAVE")], "table"),
        ("no_such_family", lambda: [_image("IMAGE")], "unknown calibration family"),
    ],
)
def test_calibration_problem_knows_each_family(tmp_path, family, hdus, problem):
    path = tmp_path / "cal.fits"
    fits.HDUList([fits.PrimaryHDU(), *hdus()]).writeto(path)
    got = calibration_problem(path, family)
    assert (got == "") if problem == "" else (problem in got), got


def test_calibration_problem_of_a_non_fits_file(tmp_path):
    path = tmp_path / "cal.fits"
    path.write_bytes(b"<html>not found</html>")
    assert "not a readable FITS file" in calibration_problem(path, "epsf")


def test_retry_policy_and_retry_after_parsing():
    p = RetryPolicy(attempts=5, backoff_base_s=1.0, backoff_max_s=8.0)
    for attempt in range(1, 8):
        d = min(8.0, 2 ** (attempt - 1))
        assert d / 2 <= p.delay(attempt) <= d
    assert 3.0 <= p.delay(1, retry_after=3.0) <= 3.1
    assert p.delay(1, retry_after=600) <= 8.1  # capped
    assert parse_retry_after("12") == 12.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert parse_retry_after("soon") is None


def test_host_slots_limit_threads(tmp_path):
    slots = HostSlots(2, tmp_path)
    active, peak, lock = [0], [0], threading.Lock()

    def work():
        with slots("http://example.org/x"):
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
            time.sleep(0.02)
            with lock:
                active[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == 2
