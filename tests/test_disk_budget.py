"""The live-cutout disk bound (max_live_cutout_gb, spxflow.diskbudget) is never exceeded."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from spxflow.diskbudget import (
    CutoutDiskBudget,
    DiskBudgetError,
    estimate_cutout_bytes,
    tree_bytes,
)


class Sampler:
    """Samples the bytes under a directory in a thread; .peak is the largest value seen."""

    def __init__(self, root: Path, every_s: float = 0.005):
        self.root, self.every_s, self.peak, self.samples = root, every_s, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_bytes(self.root))
            self.samples += 1
            time.sleep(self.every_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


@pytest.mark.parametrize("size_arcsec", [20, 60, 300, 900])
def test_estimate_is_an_upper_bound_of_real_simulated_cutouts(tmp_path, size_arcsec):
    from spxflow.archive.simulated import SimulatedArchive

    archive = SimulatedArchive()
    ra, dec = 150.25, 45.30
    rows = archive.discover(ra, dec, 1.0).head(3).to_dict(orient="records")
    results = archive.fetch_cutouts(rows, ra, dec, size_arcsec, tmp_path)
    assert [r.status for r in results] == ["ok"] * 3
    actual = tree_bytes(tmp_path)
    estimate = estimate_cutout_bytes(3, size_arcsec)
    assert actual <= estimate <= 1.1 * actual, (actual, estimate)


def _fake_source(root: str, key: str, limit: int, n_files: int, file_bytes: int, hold_s: float):
    """One source: reserve, 'fetch' (write files), then 'photometry' holds them and deletes."""
    budget = CutoutDiskBudget(root=root, limit_bytes=limit, max_wait_s=60, poll_s=0.02)
    d = Path(root) / key
    with budget.reserve(key, n_files * file_bytes):
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n_files):
            (d / f"f{i}.fits").write_bytes(b"\0" * file_bytes)
            time.sleep(0.005)
    time.sleep(hold_s)  # live: fetched, waiting for / in photometry
    for f in d.iterdir():
        f.unlink()
    d.rmdir()


def test_concurrent_sources_never_exceed_the_bound(tmp_path):
    root = tmp_path / "data" / "cutouts"
    root.mkdir(parents=True)
    file_bytes = 64 * 4096
    per_source = 5 * file_bytes
    limit = int(2.5 * per_source)  # at most two sources live at once
    ctx = mp.get_context("fork")
    procs = [
        ctx.Process(target=_fake_source, args=(str(root), f"s{i}", limit, 5, file_bytes, 0.15))
        for i in range(8)
    ]
    t0 = time.monotonic()
    with Sampler(root) as sampler:
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
    assert [p.exitcode for p in procs] == [0] * 8
    assert sampler.samples > 20
    assert 0 < sampler.peak <= limit, (sampler.peak, limit)
    # serialised by the budget: 8 sources, two at a time, each live >= 0.15 s
    assert time.monotonic() - t0 >= 4 * 0.15
    assert not list((tmp_path / "data" / ".cutout_budget").glob("*.reservation.json"))


def test_no_bound_means_no_waiting(tmp_path):
    budget = CutoutDiskBudget(root=str(tmp_path / "c"), limit_bytes=None)
    with budget.reserve("a", 10**15) as live:
        assert live == 0


def test_a_source_larger_than_the_bound_fails_naming_the_key(tmp_path):
    budget = CutoutDiskBudget(root=str(tmp_path / "c"), limit_bytes=1000)
    with pytest.raises(DiskBudgetError, match="max_live_cutout_gb"):
        with budget.reserve("BigSource", 2000):
            pass


def test_cleanup_never_fails_at_once_instead_of_waiting(tmp_path):
    root = tmp_path / "c"
    (root / "kept").mkdir(parents=True)
    (root / "kept" / "x.fits").write_bytes(b"\0" * 8192)
    budget = CutoutDiskBudget(root=str(root), limit_bytes=10000, can_wait=False)
    t0 = time.monotonic()
    with pytest.raises(DiskBudgetError, match="cleanup=never"):
        with budget.reserve("new", 4096):
            pass
    assert time.monotonic() - t0 < 1


def test_waiting_is_bounded_and_explained(tmp_path):
    root = tmp_path / "c"
    (root / "live").mkdir(parents=True)
    (root / "live" / "x.fits").write_bytes(b"\0" * 8192)
    budget = CutoutDiskBudget(root=str(root), limit_bytes=10000, max_wait_s=0.2, poll_s=0.02)
    with pytest.raises(DiskBudgetError, match="will be retried"):
        with budget.reserve("new", 4096):
            pass


def test_reservations_of_dead_processes_are_dropped(tmp_path):
    root = tmp_path / "c"
    budget = CutoutDiskBudget(root=str(root), limit_bytes=10000, max_wait_s=1, poll_s=0.02)
    budget.state_dir.mkdir(parents=True)
    ctx = mp.get_context("fork")
    p = ctx.Process(target=os._exit, args=(0,))
    p.start()
    p.join()
    stale = {"key": "crashed", "bytes": 9000, "host": os.uname().nodename, "pid": p.pid}
    stale["time"] = time.time()
    (budget.state_dir / "crashed.reservation.json").write_text(json.dumps(stale))
    with budget.reserve("next", 5000):
        pass


def test_config_maps_to_budget(tmp_path):
    from spxflow.settings import Runtime

    cfg = {"max_live_cutout_gb": 0.5, "cleanup": "never", "cutout_budget_max_wait_s": 7}
    b = CutoutDiskBudget.from_runtime(Runtime.from_config(cfg), str(tmp_path))
    assert (b.limit_bytes, b.can_wait, b.max_wait_s) == (500_000_000, False, 7.0)
    unbounded = Runtime.from_config({"max_live_cutout_gb": None})
    assert CutoutDiskBudget.from_runtime(unbounded, "x").limit_bytes is None


@pytest.mark.slow
def test_workflow_run_with_a_small_bound_never_exceeds_it(tmp_path, capsys):
    """The real workflow (3 demo sources, 2 cores) under a bound that fits ~1.3 sources."""
    from spxflow.archive.simulated import SimulatedArchive
    from tests.workflow_helpers import REPO, make_workspace, snakemake

    demo = pd.read_csv(REPO / "resources" / "demo_catalog.csv").iloc[[0, 1, 3]]
    archive = SimulatedArchive()
    needs = [
        estimate_cutout_bytes(len(archive.discover(r.RA_deg, r.DEC_deg, 1.0)), r.cutout_size_arcsec)
        for r in demo.itertuples()
    ]
    bound_gb = 1.3 * max(needs) / 1e9
    ws = make_workspace(tmp_path / "ws", demo.reset_index(drop=True))
    cfg_path = ws / "config" / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["archive"].setdefault("simulated", {})["pixels"] = "cutout"  # the bound is for files
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    root = ws / "data" / "cutouts"
    root.mkdir(parents=True)
    with Sampler(root, every_s=0.01) as sampler:
        snakemake(
            ws,
            "--config",
            "catalog=catalog.csv",
            f"max_live_cutout_gb={bound_gb:.6f}",
            "sources_per_job=1",  # jobs side by side share the bound
            "--until",
            *(f"results/chunks/measure/c{k:06d}.json" for k in range(3)),
        )
    assert sampler.peak <= bound_gb * 1e9, (sampler.peak, bound_gb)
    assert sampler.peak >= 0.5 * max(needs)  # the sampler did see cutouts on disk
    logs = "".join(p.read_text() for p in (ws / "logs" / "measure").glob("*.log"))
    assert "reserved" in logs
    with capsys.disabled():
        print(
            f"\nlive cutouts peak {sampler.peak / 1e6:.0f} MB <= bound {bound_gb * 1e3:.0f} MB "
            f"({sampler.samples} samples); measure jobs that waited: {logs.count('waiting for')}"
        )
    assert len(list((ws / "results" / "measurements").glob("*.parquet"))) == 3
