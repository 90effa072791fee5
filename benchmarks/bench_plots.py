"""Plot speed: seconds per SED plot, per QA summary and per full-QA PNG (serial and threaded),
plus the catalog-wide FITS writer.

Usage: python benchmarks/bench_plots.py [--n-rows 150] [--n-qa 40] [--threads 2] [--per-source]
Prints figures only; nothing is asserted (tests never time anything). The SED and QA-summary
lines are warm (after a first figure) and give wall and CPU seconds, median of --repeat calls:
CPU time is what the per-source budget counts and is less sensitive to other load. Targets:
SED <= 0.2 s, QA summary <= 0.4 s, full-QA PNG <= 0.1 s (the reference tool needs ~0.35 s).
``--per-source`` times only the two per-source plots.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
from spxflow.plots import (  # noqa: E402
    plot_measurement_qa,
    plot_qa_summary,
    plot_sed,
    render_measurement_qas,
)
from spxflow.plots.demo_data import (  # noqa: E402
    DEMO_RESULT_FLAGS,
    synthetic_measurements,
    synthetic_model_images,
    synthetic_stamps,
    synthetic_truth,
)
from spxflow.summary import write_measurements_fits  # noqa: E402


def per_call(fn, n: int) -> float:
    fn()  # warm-up: font cache, colormaps, imports
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def wall_and_cpu(fn, n: int) -> tuple[float, float]:
    """Median wall and CPU seconds of ``n`` warm calls."""
    fn()  # warm-up: font cache, colormaps, imports
    walls, cpus = [], []
    for _ in range(n):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n-rows", type=int, default=150, help="measurements per source")
    ap.add_argument("--n-qa", type=int, default=40, help="full-QA PNGs per timing")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=9, help="SED / QA summary repetitions")
    ap.add_argument("--per-source", action="store_true", help="only the SED and QA summary")
    args = ap.parse_args()

    df = synthetic_measurements(args.n_rows, seed=1)
    truth = synthetic_truth()
    stamps = synthetic_stamps(6)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        sed = wall_and_cpu(
            lambda: plot_sed(df, out / "sed.png", title_name="bench", ra=1.0, dec=2.0, truth=truth),
            args.repeat,
        )
        sed_log = wall_and_cpu(
            lambda: plot_sed(
                df,
                out / "sed_log.png",
                title_name="bench",
                ra=1.0,
                dec=2.0,
                units="flambda",
                scale="log",
                truth=truth,
            ),
            args.repeat,
        )
        qa = wall_and_cpu(
            lambda: plot_qa_summary(
                df,
                out / "qa.png",
                title_name="bench",
                stamps=stamps,
                result_flags=DEMO_RESULT_FLAGS,
            ),
            args.repeat,
        )
        qa_none = wall_and_cpu(
            lambda: plot_qa_summary(
                df, out / "qa0.png", title_name="bench", result_flags=DEMO_RESULT_FLAGS
            ),
            args.repeat,
        )
        print(f"rows per source                : {args.n_rows}")
        print("per-source plots, warm, median : wall s / CPU s")
        print(f"SED plot (fnu, linear)         : {sed[0]:.3f} / {sed[1]:.3f}")
        print(f"SED plot (flambda, log)        : {sed_log[0]:.3f} / {sed_log[1]:.3f}")
        print(f"QA summary (6 stamps)          : {qa[0]:.3f} / {qa[1]:.3f}")
        print(f"QA summary (no stamps)         : {qa_none[0]:.3f} / {qa_none[1]:.3f}")
        if not args.per_source:
            _batch_figures(args, out, df)


def _batch_figures(args, out: Path, df: pd.DataFrame) -> None:
    images = [synthetic_model_images(seed=i) for i in range(args.n_qa)]
    rows = [df.iloc[i % len(df)].to_dict() for i in range(args.n_qa)]
    one = per_call(
        lambda: plot_measurement_qa(
            images[0], rows[0], out / "m.png", result_flags=DEMO_RESULT_FLAGS
        ),
        args.n_qa,
    )

    def batch(threads: int, executor: str = "thread") -> float:
        jobs = [
            {"images": im, "row": r, "out_png": str(out / f"q{threads}{executor}_{i}.png")}
            for i, (im, r) in enumerate(zip(images, rows, strict=True))
        ]
        t0 = time.perf_counter()
        render_measurement_qas(
            jobs, threads=threads, result_flags=DEMO_RESULT_FLAGS, executor=executor
        )
        return (time.perf_counter() - t0) / len(jobs)

    serial = batch(1)
    threaded = batch(args.threads)
    processes = batch(args.threads, "process")
    big = pd.concat([df] * max(1, 20000 // len(df)), ignore_index=True)
    t0 = time.perf_counter()
    write_measurements_fits(big, out / "m.fits", result_flags=DEMO_RESULT_FLAGS)
    fits_s = time.perf_counter() - t0
    png_kb = (out / "m.png").stat().st_size / 1024
    print(f"full-QA PNG, single call       : {one * 1000:.1f} ms  ({png_kb:.0f} kB)")
    print(f"full-QA PNG, batch, 1 thread   : {serial * 1000:.1f} ms per PNG")
    print(
        f"full-QA PNG, batch, {args.threads} threads  : {threaded * 1000:.1f} ms per PNG "
        f"(speed-up {serial / threaded:.2f}x)"
    )
    print(
        f"full-QA PNG, batch, {args.threads} processes: {processes * 1000:.1f} ms per PNG "
        f"(speed-up {serial / processes:.2f}x)"
    )
    print(f"measurements.fits, {len(big)} rows : {fits_s:.2f} s")


if __name__ == "__main__":
    main()
