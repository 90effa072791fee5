"""Simulator speed: cutouts per second (PSF cube write included) and bulk discovery time.

Usage: python benchmarks/bench_simulator.py [--n 40]
Prints figures and ratios only; nothing is asserted (tests never time anything).
"""

from __future__ import annotations

import argparse
import sys
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=40, help="cutouts per size")
    args = parser.parse_args()
    arch = SimulatedArchive.from_config({})
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
