"""The simulator's cross-process disk cache (``spxflow.sim.diskcache``): cold, warm and no cache
give bit-identical tables, files and windows; bad entries are rebuilt, never used."""

from __future__ import annotations

import dataclasses
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from spxflow.archive import make_archive
from spxflow.archive.simulated import SimulatedArchive
from spxflow.sim import diskcache, r7, render, windows

AGN = (35.5, 48.1)  # covered by QR2 and QR3
DET = 1  # one detector keeps the test to a few seconds (one EPSF table is ~2.5 s)


def _forget_tables():
    """Drop the in-memory copies, as a new process would start."""
    for fn in (r7.epsf_table, r7.epsf_hdu_bytes, render._tail_bytes, render._gzip_tail):
        fn.cache_clear()
    windows._tail.cache_clear()


@pytest.fixture
def fresh_memory():
    before = diskcache.cache_dir()
    _forget_tables()
    yield
    diskcache.set_dir(before)
    _forget_tables()


def _fingerprint(arch: SimulatedArchive) -> list:
    """Bytes of everything the archive serves that carries detector DET's EPSF table: the
    table, its HDU, the calibration product, a plain and a gzip cutout, and fetch_windows."""
    table = r7.epsf_table(DET)
    rows = [
        r
        for r in arch.discover(*AGN).to_dict(orient="records")
        if r["obs_publisher_did"].endswith(f"/D{DET}") and "spherex_qr3" in r["obs_publisher_did"]
    ][:2]
    assert rows
    out = [table.dtype.descr, table.tobytes(), r7.epsf_hdu_bytes(DET)]
    out.append(arch.calibration_bytes("qr3", "epsf", DET))
    for r in rows:
        out.append(arch.cutout_bytes(r["obs_publisher_did"], *AGN, 60.0))
        arch.gzip = True
        out.append(arch.cutout_bytes(r["obs_publisher_did"], *AGN, 60.0))
        arch.gzip = False
    for res in arch.fetch_windows(rows, *AGN, 6, 60.0):
        assert res.status == "ok"
        for f in dataclasses.fields(res.cutout):
            v = getattr(res.cutout, f.name)
            out.append((f.name, v.dtype.str, v.tobytes()) if isinstance(v, np.ndarray) else repr(v))
        out.append(repr(res.truth))
    return out


def test_cold_warm_and_no_cache_serve_identical_bytes(tmp_path, fresh_memory, monkeypatch):
    arch = SimulatedArchive.from_config({})  # no cache_dir: in-memory only
    diskcache.set_dir(None)
    none = _fingerprint(arch)

    _forget_tables()
    cached = SimulatedArchive.from_config({}, cache_dir=tmp_path)
    assert diskcache.cache_dir() == tmp_path / "sim"
    cold = _fingerprint(cached)
    (entry,) = (tmp_path / "sim").iterdir()
    assert entry.name.startswith(f"epsf_table_d{DET}_")

    _forget_tables()

    def no_build(det):
        raise AssertionError("warm cache rebuilt the table")

    monkeypatch.setattr(r7, "_build_epsf_table", no_build)
    warm = _fingerprint(cached)
    assert none == cold == warm
    assert not r7.epsf_table(DET).flags.writeable


def test_bad_entries_are_rebuilt_never_used(tmp_path, fresh_memory):
    diskcache.set_dir(tmp_path)
    good = np.arange(12, dtype=">f8").reshape(3, 4)
    calls = []

    def build():
        calls.append(1)
        return good.copy()

    got = diskcache.cached("t", 2, "v1", build)
    (entry,) = tmp_path.iterdir()
    data = entry.read_bytes()
    assert got.tobytes() == good.tobytes() and got.dtype == good.dtype and len(calls) == 1
    assert diskcache.cached("t", 2, "v1", build).tobytes() == good.tobytes() and len(calls) == 1
    flipped = bytearray(data)
    flipped[-3] ^= 0x40
    for bad in (data[:-5], data[:40], b"", bytes(flipped), data.replace(b'"v1"', b'"v2"')):
        entry.write_bytes(bad)
        n = len(calls)
        assert diskcache.cached("t", 2, "v1", build).tobytes() == good.tobytes()
        assert len(calls) == n + 1, bad[:80]
        assert entry.read_bytes() == data  # rewritten whole
    # Another code version is another entry.
    diskcache.cached("t", 2, "v2", build)
    assert len(list(tmp_path.iterdir())) == 2


def test_concurrent_builders_leave_one_valid_entry(tmp_path, fresh_memory):
    diskcache.set_dir(tmp_path)
    barrier = threading.Barrier(6)
    value = np.linspace(0, 1, 200_000)

    def build():
        barrier.wait()  # all six miss, then all write the same entry at once
        return value.copy()

    results = [None] * 6

    def run(i):
        results[i] = diskcache.cached("race", 1, "v", build).tobytes()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r == value.tobytes() for r in results)
    (entry,) = tmp_path.iterdir()  # no temporaries left behind
    assert diskcache.cached("race", 1, "v", lambda: 1 / 0).tobytes() == value.tobytes()


def test_make_archive_gives_the_simulator_its_cache_dir(tmp_path, fresh_memory):
    science = SimpleNamespace(backend="simulated", options={})
    make_archive(science, {}, str(tmp_path / "cache"))
    assert diskcache.cache_dir() == tmp_path / "cache" / "sim"
