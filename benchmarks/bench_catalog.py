"""A synthetic catalog end to end on the simulated archive, with per-stage time per source.

Usage:
    python benchmarks/bench_catalog.py                       # 1,000 sources, schema defaults
    python benchmarks/bench_catalog.py --sources 200 --sources-per-job 1 20

For each sources_per_job value: a fresh workspace (copy of the workflow, compact QA) with
`--sources` well-separated positions, the calibration products copied from a first run (they
are fetched once per project, not per catalog: their time is printed separately), then
`snakemake --profile profiles/local --cores 2`, timed by wall clock. Per stage, from the
rules' `benchmark:` files: jobs, wall seconds and CPU seconds summed over jobs, and both per
source. "archive" is the simulator's share of the measure jobs' time (rendering pixels; a
real archive spends it waiting on the network): measured with the simulated archive's
``fetch_windows`` alone on the same sources, in this process.
Targets (issue 14): 1,000 sources <= 15 min wall; per-source CPU excluding archive <= 1 s.
Prints figures only; nothing is asserted. Workspaces go to benchmarks/out/ (git-ignored).
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout
from spxflow.config import config_defaults  # noqa: E402
from tests.test_slurm import synthetic_catalog  # noqa: E402
from tests.workflow_helpers import make_workspace  # noqa: E402

OUT = REPO / "benchmarks" / "out" / "catalog"
STAGES = ("validate_catalog", "discover", "measure", "source_products", "summary", "accuracy")


def run(ws: Path, args: list[str], timeout: float) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--profile", "profiles/local", "--cores", "2", *args],
        cwd=ws,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "MPLBACKEND": "Agg"},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"snakemake failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0


def stage_times(ws: Path) -> dict[str, tuple[int, float, float]]:
    """stage -> (jobs, wall s, CPU s) summed over its benchmark files."""
    out: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    for tsv in (ws / "logs" / "benchmarks").rglob("*.tsv"):
        stage = tsv.parent.name if tsv.parent.name != "benchmarks" else tsv.stem
        with open(tsv) as fh:
            row = next(csv.DictReader(fh, delimiter="\t"))
        acc = out[stage]
        acc[0] += 1
        acc[1] += float(row["s"])
        acc[2] += float(row["cpu_time"])
    return {k: tuple(v) for k, v in out.items()}


def photometry_ms(ws: Path) -> tuple[int, float, float]:
    """(measurements, ms each over all sources, ms each without each job's first source)
    from the measure logs' per-source photometry lines (the first source of a job also
    loads the Numba cache)."""
    pattern = re.compile(r"photometry of (\d+) images in ([\d.]+) s")
    n_all = t_all = n_rest = t_rest = 0.0
    for log_path in (ws / "logs" / "measure").glob("*.log"):
        for i, m in enumerate(pattern.finditer(log_path.read_text())):
            n, t = int(m.group(1)), float(m.group(2))
            n_all, t_all = n_all + n, t_all + t
            if i:
                n_rest, t_rest = n_rest + n, t_rest + t
    return int(n_all), _ms_each(t_all, n_all), _ms_each(t_rest, n_rest)


def _ms_each(seconds: float, n: float) -> float:
    return 1000 * seconds / n if n else float("nan")


def archive_seconds(n: int, n_timed: int = 30) -> float:
    """CPU seconds per source the simulated archive takes to render a source's windows
    (discovery plus fetch_windows), warm, on the first sources of the same catalog."""
    from spxflow.archive import make_archive
    from spxflow.discovery import deduplicate
    from spxflow.settings import Runtime, Science

    science, runtime = Science.from_config({}), Runtime.from_config({})
    archive = make_archive(science.archive, runtime.archive)
    cat = synthetic_catalog(n).head(n_timed + 1)
    rows = list(cat.itertuples(index=False))
    t0 = 0.0
    for i, row in enumerate(rows):
        if i == 1:  # the first source pays for imports and per-process set-up: not timed
            t0 = time.process_time()
        kept, _ = deduplicate(archive.discover(row.RA_deg, row.DEC_deg, 0.0))
        archive.fetch_windows(
            kept.to_dict(orient="records"),
            row.RA_deg,
            row.DEC_deg,
            science.photometry.fit_half_size_px,
            60.0,
        )
    return (time.process_time() - t0) / (len(rows) - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sources", type=int, default=1000)
    parser.add_argument(
        "--sources-per-job", type=int, nargs="+", default=[config_defaults()["sources_per_job"]]
    )
    parser.add_argument("--timeout", type=float, default=6 * 3600)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    print(
        "machine: {} CPUs, load at start {:.2f} {:.2f} {:.2f}".format(
            os.cpu_count(), *os.getloadavg()
        )
    )
    calibration = OUT / "calibration"
    if not (calibration / "calibration_index.json").exists():
        ws = make_workspace(OUT / "calibration_ws")
        wall = run(ws, ["resources/calibration/calibration_index.json"], args.timeout)
        shutil.rmtree(calibration, ignore_errors=True)
        shutil.copytree(ws / "resources" / "calibration", calibration)
        shutil.rmtree(ws)
        print(f"calibration products (once per project): {wall:.0f} s")
    sim = archive_seconds(args.sources)
    print(f"simulated archive: {sim:.2f} CPU s per source (discovery + windows)")
    for per_job in args.sources_per_job:
        ws = OUT / f"n{args.sources}_k{per_job}"
        if ws.exists():
            shutil.rmtree(ws)
        make_workspace(ws, synthetic_catalog(args.sources))
        shutil.copytree(calibration, ws / "resources" / "calibration")
        config = ["--config", "catalog=catalog.csv", f"sources_per_job={per_job}"]
        wall = run(ws, config, args.timeout)
        times = stage_times(ws)
        n = args.sources
        print(f"\n{n} sources, sources_per_job={per_job}: {wall:.0f} s wall ({wall / 60:.1f} min)")
        print("stage            jobs   wall_s  cpu_s  wall_s/src  cpu_s/src")
        cpu_total = 0.0
        for stage in STAGES:
            if stage not in times:
                continue
            jobs, w, c = times[stage]
            cpu_total += c
            print(f"{stage:15s} {jobs:5d} {w:8.1f} {c:6.1f} {w / n:11.3f} {c / n:10.3f}")
        print(
            f"CPU per source: {cpu_total / n:.2f} s in all, {cpu_total / n - sim:.2f} s "
            f"excluding the simulated archive's {sim:.2f} s"
        )
        n_meas, ms_all, ms_rest = photometry_ms(ws)
        print(
            f"photometry in the measure jobs: {n_meas} measurements, {ms_all:.2f} ms each "
            f"({ms_rest:.2f} ms without each job's first source; target <= 2 ms)"
        )
        shutil.rmtree(ws, ignore_errors=True)


if __name__ == "__main__":
    main()
