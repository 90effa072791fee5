"""Catalog discovery through the loopback IRSA emulator: TAP with uploaded positions vs. one
SIA2 query set per source. Prints figures only.

    python benchmarks/bench_discovery.py [--sources 10000] [--sia-sources 200]

The emulator runs in its own process (as IRSA would: client and server do not share a GIL).
TAP discovers all ``--sources`` positions; SIA2 is timed on the first ``--sia-sources`` and
extrapolated linearly (it is one query set per source, ≤ max_concurrent_per_host at a time).
The emulator answers in milliseconds what IRSA answers in seconds, so these figures are the
client's and emulator's own costs plus the request counts; docs/irsa.md scales them to IRSA.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from spxflow.archive.emulator import get_stats, reset_stats  # noqa: E402
from spxflow.archive.irsa import IrsaArchive  # noqa: E402
from tests.test_slurm import synthetic_catalog  # noqa: E402


def start_emulator() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "spxflow.archive.emulator", "--port", "0"],
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stderr.readline()
    m = re.search(r"(http://[\d.]+:\d+)", line)
    if not m:
        proc.kill()
        raise SystemExit(f"emulator did not start: {line!r}")
    return proc, m.group(1)


def run(archive: IrsaArchive, url: str, positions) -> tuple[float, dict, int]:
    reset_stats(url)
    t0 = time.perf_counter()
    tables = archive.discover_many(positions, 0.0)
    wall = time.perf_counter() - t0
    return wall, get_stats(url)["requests"], sum(len(t) for t in tables.values())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sources", type=int, default=10000)
    p.add_argument("--sia-sources", type=int, default=200)
    args = p.parse_args()
    load = os.getloadavg()
    cat = synthetic_catalog(args.sources)
    positions = list(zip(cat["Name"], cat["RA_deg"], cat["DEC_deg"], strict=True))
    proc, url = start_emulator()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = {"base_url_override": url, "lock_dir": tmp, "timeout_s": 600}
            tap = IrsaArchive.from_config({**cfg, "discovery": "tap"})
            sia = IrsaArchive.from_config({**cfg, "discovery": "sia"})
            print(
                f"machine: {os.cpu_count()} CPUs, load average at start {load[0]:.2f} "
                f"{load[1]:.2f} {load[2]:.2f}"
            )
            print(
                f"TAP upload rows {tap.tap.upload_rows}, MAXREC {tap.tap.maxrec}, "
                f"max_concurrent_per_host {tap.max_concurrent}"
            )
            wall, req, rows = run(tap, url, positions)
            print(
                f"TAP : {args.sources} sources, {rows} rows, {req.get('tap', 0)} tap requests, "
                f"{wall:.1f} s wall ({1000 * wall / args.sources:.2f} ms/source)"
            )
            n = min(args.sia_sources, args.sources)
            wall_s, req_s, rows_s = run(sia, url, positions[:n])
            per = wall_s / n
            print(
                f"SIA : {n} sources measured, {rows_s} rows, {req_s.get('sia', 0)} sia "
                f"requests, {wall_s:.1f} s wall ({1000 * per:.2f} ms/source)"
            )
            print(
                f"SIA : extrapolated to {args.sources} sources: "
                f"{req_s.get('sia', 0) * args.sources / n:.0f} requests, "
                f"{per * args.sources:.0f} s wall (linear in sources)"
            )
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
