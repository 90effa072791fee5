"""Workflow scale: `snakemake -n` on synthetic catalogs, and the demo run locally vs on Slurm.

Usage:
    python benchmarks/bench_dag.py                      # 1,000 / 10,000 / 50,000 sources
    python benchmarks/bench_dag.py --sizes 1000 10000 --profile slurm
    python benchmarks/bench_dag.py --sizes 1000 --demo  # + demo wall time, local and Slurm
    python benchmarks/bench_dag.py --sizes 2000 --cprofile out.prof
    python benchmarks/bench_dag.py --sizes 10000 100000 --sources-per-job 1 20 50

For each size: a fresh workspace (copy of the workflow) with a synthetic catalog of
well-separated positions, then `snakemake -n -q rules` with the given profile, timed by wall
clock, peak RSS of the Snakemake process from `resource.getrusage(RUSAGE_CHILDREN)` (each
measurement in its own child, so peaks do not mix), and the number of jobs in the plan.
`--demo` runs the demo catalog end to end with profiles/local and, if a Slurm controller
answers, with profiles/slurm (`--cores 2`, 5 s first status check, as in CI).
`--sources-per-job` sets the config key of that name (default: the schema's default, not the
demo config's).
Targets (issue 14): -n at 10,000 sources <= 30 s; at 100,000 <= 3 min and <= 3 GiB.
Prints figures only; nothing is asserted. Workspaces go to benchmarks/out/ (git-ignored).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout
from spxflow.config import config_defaults  # noqa: E402
from tests.test_slurm import synthetic_catalog  # noqa: E402
from tests.workflow_helpers import make_workspace  # noqa: E402

OUT = REPO / "benchmarks" / "out" / "dag"
TARGETS = {10_000: (30.0, None), 100_000: (180.0, 3 * 1024**3)}


def run_child(cmd: list[str], cwd: Path, timeout: float) -> tuple[float, int, str, int]:
    """(wall s, peak RSS bytes, output, returncode) of one command run in a fresh child
    process that records its own children's peak RSS (getrusage is cumulative per parent)."""
    probe = (
        "import resource, subprocess, sys, time\n"
        "t0 = time.perf_counter()\n"
        "p = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)\n"
        "dt = time.perf_counter() - t0\n"
        "ru = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        "sys.stdout.buffer.write(p.stdout)\n"
        "print(f'\\n@@BENCH {dt:.3f} {ru.ru_maxrss * 1024} {p.returncode}')\n"
    )
    env = {**os.environ, "MPLBACKEND": "Agg"}
    proc = subprocess.run(
        [sys.executable, "-c", probe, *cmd],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    m = re.search(r"@@BENCH (\S+) (\d+) (-?\d+)", proc.stdout)
    if not m:
        raise RuntimeError(f"benchmark child failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return float(m.group(1)), int(m.group(2)), proc.stdout, int(m.group(3))


def planned_jobs(output: str) -> int:
    m = re.search(r"^total\s+(\d+)\s*$", output, re.MULTILINE)
    return int(m.group(1)) if m else -1


def bench_dry_run(n: int, per_job: int, profile: str, timeout: float, cprofile: str | None) -> dict:
    ws = OUT / f"n{n}"
    if ws.exists():
        shutil.rmtree(ws)
    make_workspace(ws, synthetic_catalog(n))
    smk = [sys.executable, "-m", "snakemake"]
    if cprofile:
        smk = [sys.executable, "-m", "cProfile", "-o", str(Path(cprofile).resolve()), "-m"]
        smk.append("snakemake")
    cmd = [*smk, "-n", "-q", "rules", "--profile", f"profiles/{profile}"]
    config = ["--config", "catalog=catalog.csv"]
    config += [f"sources_per_job={per_job}"]
    cmd += ["--cores", "2", *config]
    # start-up (imports, plugin registration, parsing the catalog and defining the rules)
    wall0, rss0, _, _ = run_child(
        [sys.executable, "-m", "snakemake", "--list-rules", *config], ws, timeout
    )
    wall, rss, out, rc = run_child(cmd, ws, timeout)
    shutil.rmtree(ws, ignore_errors=True)
    return {
        "sources": n,
        "per_job": per_job,
        "jobs": planned_jobs(out),
        "wall_s": wall,
        "peak_rss_mib": rss / 1024**2,
        "parse_only_s": wall0,
        "parse_only_mib": rss0 / 1024**2,
        "rc": rc,
    }


def slurm_up() -> bool:
    if not shutil.which("scontrol"):
        return False
    try:
        p = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return p.returncode == 0 and "UP" in p.stdout


def bench_demo(timeout: float) -> list[tuple[str, float, int]]:
    rows = []
    runs = [("local", ["--profile", "profiles/local", "--cores", "2"])]
    if slurm_up():
        runs.append(
            (
                "slurm",
                [
                    "--profile",
                    "profiles/slurm",
                    "--cores",
                    "2",
                    "--slurm-init-seconds-before-status-checks",
                    "5",
                ],
            )
        )
    else:
        print("(no Slurm controller answers: demo on Slurm skipped)")
    for name, args in runs:
        ws = OUT / f"demo_{name}"
        if ws.exists():
            shutil.rmtree(ws)
        make_workspace(ws)
        wall, _, out, rc = run_child([sys.executable, "-m", "snakemake", *args], ws, timeout)
        n_slurm = len(set(re.findall(r"submitted with SLURM jobid (\d+)", out)))
        rows.append((name, wall, rc, n_slurm))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument(
        "--sources-per-job",
        type=int,
        nargs="+",
        default=[config_defaults()["sources_per_job"]],
        help="config sources_per_job",
    )
    parser.add_argument("--profile", default="local", choices=["local", "slurm"])
    parser.add_argument("--demo", action="store_true", help="also time the demo run(s)")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--cprofile", help="cProfile the (first) dry run into this file")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"snakemake -n -q rules --profile profiles/{args.profile} (synthetic catalogs)")
    print("(machine load at start: {:.2f} {:.2f} {:.2f})".format(*os.getloadavg()))
    print("sources  per_job     jobs   wall_s  peak_MiB  ms/source  KiB/source  parse_s  target")
    runs = [(n, k) for n in args.sizes for k in args.sources_per_job]
    for i, (n, per_job) in enumerate(runs):
        r = bench_dry_run(n, per_job, args.profile, args.timeout, args.cprofile if i == 0 else None)
        per_src_ms = 1000 * (r["wall_s"] - r["parse_only_s"]) / n
        per_src_kib = 1024 * (r["peak_rss_mib"] - r["parse_only_mib"]) / n
        target = ""
        if n in TARGETS:
            t_s, t_mem = TARGETS[n]
            ok = r["wall_s"] <= t_s and (t_mem is None or r["peak_rss_mib"] * 1024**2 <= t_mem)
            target = f"{'met' if ok else 'MISSED'} (<={t_s:g} s" + (
                f", <={t_mem / 1024**3:g} GiB)" if t_mem else ")"
            )
        shown = str(per_job)
        print(
            f"{n:7d} {shown:>8s} {r['jobs']:8d} {r['wall_s']:8.1f} {r['peak_rss_mib']:9.0f} "
            f"{per_src_ms:10.2f} {per_src_kib:11.1f} {r['parse_only_s']:8.1f}  {target}"
            + ("" if r["rc"] == 0 else f"  (exit {r['rc']})"),
            flush=True,
        )
    if args.demo:
        print("\ndemo catalog (6 sources), full run")
        print("profile  wall_s  exit  slurm_jobs")
        for name, wall, rc, n_slurm in bench_demo(args.timeout):
            print(f"{name:7s} {wall:7.1f} {rc:5d} {n_slurm:11d}", flush=True)


if __name__ == "__main__":
    main()
