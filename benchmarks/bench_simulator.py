"""Simulator speed: cutouts per second (PSF cube write included), measurement windows per
second (``fetch_windows``, what a simulated run measures), the per-process warm-up of a
fresh measure job with no / a cold / a warm disk cache (``data/cache/sim``), and bulk discovery.

Usage: python benchmarks/bench_simulator.py [--n 40] [--sources 8] [--skip-disk-cache]
Prints figures and ratios only; nothing is asserted (tests never time anything).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
from spxflow.archive.simulated import SimulatedArchive  # noqa: E402


def bench_cutouts(arch: SimulatedArchive, rows, ra: float, dec: float, size: float) -> float:
    """Cutouts/s over distinct images (each image's header cards built once, as in a run)."""
    t0 = time.perf_counter()
    nbytes = 0
    for did in rows:
        nbytes += len(arch.cutout_bytes(did, ra, dec, size))
    dt = time.perf_counter() - t0
    return len(rows) / dt, nbytes / len(rows)


def bench_windows(arch: SimulatedArchive, n_sources: int) -> dict:
    """Windows/s of ``fetch_windows`` (13x13, 60 arcsec) over every deduplicated image of
    ``n_sources`` well-separated positions, after building every detector's PSF cube / EPSF
    table (seconds each, once per process) and one warm-up source; returns the warm-up time,
    window count and a sha256 of the windows served."""
    from spxflow.discovery import deduplicate
    from spxflow.sim import windows

    rng = np.random.default_rng(7)  # the positions of tests/test_slurm.synthetic_catalog(1000)
    ra = ((np.arange(1000) * 360.0 / 1000 + rng.uniform(0, 1, 1000)) % 360).round(6)
    dec = rng.uniform(-60, 60, 1000).round(6)

    digest = hashlib.sha256()

    def one(k: int) -> int:
        kept, _ = deduplicate(arch.discover(ra[k], dec[k], 0.0))
        rows = kept.to_dict(orient="records")
        got = arch.fetch_windows(rows, ra[k], dec[k], 6, 60.0)
        for res in got:  # every served byte, so runs with and without a disk cache compare
            c = res.cutout
            digest.update(repr((res.status, res.truth, c and (c.plane, c.x, c.y))).encode())
            for a in (c.image, c.flags, c.variance, c.psf) if c else ():
                digest.update(a.dtype.str.encode() + a.tobytes())
        return len(got)

    t0 = time.perf_counter()  # per-detector one-off (PSF cube / EPSF table), kept per process
    for det in range(1, 7):
        windows._tail(det, "qr2", "qr2", False)
        windows._tail(det, "r7", "qr3", False)
    one(0)
    warm_up = time.perf_counter() - t0
    print(f"fetch_windows warm-up (12 detector tails + 1 source): {warm_up:.2f} s")
    t0 = time.perf_counter()
    n = sum(one(k) for k in range(1, 1 + n_sources))
    dt = time.perf_counter() - t0
    print(
        f"fetch_windows: {n_sources} sources, {n} windows in {dt:.2f} s: "
        f"{n / dt:.0f} windows/s, {1000 * dt / n:.2f} ms/window, {dt / n_sources:.3f} s/source"
    )
    return {"warm_up_s": warm_up, "windows": n, "sha256": digest.hexdigest()}


def bench_disk_cache(n_sources: int) -> None:
    """Warm-up of a fresh process (a measure job) without a disk cache, then with a cold and a
    warm one (a scratch folder under ``data/cache``, removed after), and whether the windows
    served are byte-identical in all three."""
    root = Path("data/cache")
    root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="bench_sim_", dir=root))
    try:
        out = {}
        for label, cache in (("none", "none"), ("cold", scratch), ("warm", scratch)):
            cmd = [sys.executable, __file__, "--child", str(cache), "--sources", str(n_sources)]
            t0 = time.perf_counter()
            text = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            out[label] = json.loads(text.splitlines()[-1]) | {"wall_s": time.perf_counter() - t0}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print("disk_cache  warm_up_s  process_wall_s  windows  sha256")
    for label, r in out.items():
        print(
            f"{label:10s}  {r['warm_up_s']:9.2f}  {r['wall_s']:14.2f}  {r['windows']:7d}"
            f"  {r['sha256'][:16]}"
        )
    same = len({r["sha256"] for r in out.values()}) == 1
    print(f"windows byte-identical with no / cold / warm disk cache: {'yes' if same else 'NO'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=40, help="cutouts per size")
    parser.add_argument("--sources", type=int, default=8, help="sources for fetch_windows")
    parser.add_argument("--skip-disk-cache", action="store_true", help="no fresh-process rows")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # disk cache dir or "none"
    args = parser.parse_args()
    if args.child:
        cache = None if args.child == "none" else args.child
        result = bench_windows(SimulatedArchive.from_config({}, cache_dir=cache), args.sources)
        print(json.dumps(result))
        return
    if not args.skip_disk_cache:
        bench_disk_cache(args.sources)
    arch = SimulatedArchive.from_config({})
    bench_windows(arch, args.sources)
    ra, dec = 150.25, 45.30
    dids = list(arch.discover(ra, dec, 0.0)["obs_publisher_did"])
    arch.cutout_bytes(dids[0], ra, dec, 60.0)  # warm the per-detector caches (PSF cube bytes)
    for det_did in dids[:12]:
        arch.cutout_bytes(det_did, ra, dec, 6.0)
    print("size_arcsec  cutouts_per_s  ms_per_cutout  mean_bytes")
    base = None
    for k, size in enumerate((60.0, 180.0, 600.0)):
        sel = dids[(k * args.n) % len(dids) :][: args.n] or dids[: args.n]
        rate, mean_bytes = bench_cutouts(arch, sel, ra, dec, size)
        base = base or rate
        print(f"{size:11.0f}  {rate:13.1f}  {1000 / rate:13.1f}  {mean_bytes:10.0f}")
    print(f"target >= 50 cutouts/s at 60 arcsec: {'met' if base >= 50 else 'NOT met'}")

    rng = np.random.default_rng(1)
    n = 1000
    ra_s = rng.uniform(0, 360, n)
    dec_s = np.rad2deg(np.arcsin(rng.uniform(-0.7, 0.7, n)))  # |dec| < ~44 deg: typical fields
    positions = [
        (f"s{i}", float(a), float(d)) for i, (a, d) in enumerate(zip(ra_s, dec_s, strict=True))
    ]
    t0 = time.perf_counter()
    tables = arch.discover_many(positions, 0.0)
    dt = time.perf_counter() - t0
    rows = sum(len(t) for t in tables.values())
    print(f"discover_many: {n} positions, {rows} rows in {dt:.2f} s ({rows / dt:.0f} rows/s)")
    t0 = time.perf_counter()
    for p in positions[:20]:
        arch.discover(p[1], p[2], 0.0)
    dt1 = (time.perf_counter() - t0) / 20
    print(f"discover (single): {1000 * dt1:.1f} ms/position; bulk speed-up {dt1 * n / dt:.1f}x")


if __name__ == "__main__":
    main()
