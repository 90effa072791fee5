"""``python -m spxflow``: the steps that run outside the DAG.

``rerun --update`` / ``rerun --retry-failed`` mark sources for their measure job to run again
(see ``spxflow.rerun``), once, before Snakemake builds its DAG; with arguments after ``--``
it then runs ``snakemake`` with them. ``config-defaults`` prints the full default
configuration (the schema's defaults). ``measure-file FILE --ra --dec`` measures one local
Level-2 file or cutout of either layout and prints its measurement row.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import yaml

from spxflow import rerun
from spxflow.config import block_defaults, config_defaults
from spxflow.format import RELEASES as RELEASES_CHOICES


def _measured_sources(results_dir: Path) -> list[str]:
    return sorted(
        p.name[: -len(".json")]
        for p in (results_dir / "cutouts").glob("*.json")
        if not p.name.endswith(".retry.json")
    )


def _snakemake_running(workdir: Path) -> bool:
    # Snakemake holds lock files while a run is active; marking then could set aside an
    # output a running job has just written.
    locks = workdir / ".snakemake" / "locks"
    return locks.is_dir() and any(locks.iterdir())


def cmd_rerun(args) -> int:
    results = Path(args.results)
    if _snakemake_running(Path.cwd()):
        print(
            "spxflow rerun: a Snakemake run holds locks in .snakemake/locks; wait for it to "
            "finish (or run `snakemake --unlock` if it crashed), then try again",
            file=sys.stderr,
        )
        return 2
    sources = args.sources or _measured_sources(results)
    if args.update:
        marked = rerun.mark_for_update(sources, str(results))
        what = "re-query discovery; images measured before are carried over"
        # The discover job of a batch re-runs as a whole, and so do its chunks' measure jobs.
        mates = rerun.mark_mates(marked, str(results), "discover")
        rerun.set_aside_discovery(marked, str(results))
    else:
        marked = rerun.mark_failed(sources, str(results))
        what = "re-fetch the cutouts that failed; the others are carried over"
        mates = rerun.mark_mates(marked, str(results), "measure")
    print(
        f"spxflow rerun: {len(marked)} of {len(sources)} measured source(s) marked to {what}"
        + (f": {', '.join(marked[:20])}" + (" ..." if len(marked) > 20 else "") if marked else "")
    )
    if mates:
        print(
            f"spxflow rerun: {len(mates)} other source(s) share a measure job (a chunk) with "
            "them and are marked to carry over what they measured"
        )
    if not args.snakemake_args:
        if marked:
            print("spxflow rerun: now run snakemake (with your usual profile) to re-measure them")
        return 0
    command = [sys.executable, "-m", "snakemake", *args.snakemake_args]
    print("spxflow rerun: running", " ".join(command[2:]), flush=True)
    return subprocess.call(command)


def cmd_config_defaults(args) -> int:
    sys.stdout.write(yaml.safe_dump(config_defaults(), sort_keys=False))
    return 0


def cmd_measure_file(args) -> int:
    import json

    from spxflow.archive.base import ArchiveError
    from spxflow.measurements import coerce_schema
    from spxflow.photometry import CalibrationSet, PhotometrySettings, measure_cutouts

    remote = args.file.startswith(("https://", "http://"))
    path = Path(args.file)
    if not remote and not path.is_file():
        print(f"spxflow measure-file: no such file {path}", file=sys.stderr)
        return 2
    paths = []
    if args.calibration:
        cal_dir = Path(args.calibration)
        if not cal_dir.is_dir():
            print(
                f"spxflow measure-file: --calibration {cal_dir} is not a directory", file=sys.stderr
            )
            return 2
        paths = sorted(str(p) for p in cal_dir.glob("*_spx_cal-*.fits"))
    try:
        calibration = CalibrationSet.from_paths(paths)
        settings = PhotometrySettings.from_config(
            {"qr2_psf": args.qr2_psf, "calibration_scale": args.calibration_scale}
        )
        if remote:
            table = _measure_url(args, calibration, settings)
        else:
            table = measure_cutouts(
                [path], args.ra, args.dec, [], calibration, settings, releases=[args.release]
            )
    except ValueError as exc:
        print(f"spxflow measure-file: {exc}", file=sys.stderr)
        return 2
    except ArchiveError as exc:
        print(f"spxflow measure-file: {exc}", file=sys.stderr)
        return 1
    row = coerce_schema(table.assign(ra_deg=args.ra, dec_deg=args.dec)).iloc[0]
    values = {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
    values = {k: v for k, v in values.items() if k not in ("source", "name", "measurement_id")}
    if args.json:
        print(json.dumps(values, indent=1, default=str))
    else:
        width = max(map(len, values))
        for k, v in values.items():
            print(f"{k:<{width}}  {v}")
    return 0 if row["detection_status"] != "failed" else 1


def _measure_url(args, calibration, settings):
    """Measure a whole Level-2 file at an https URL, reading only the window by ranges."""
    from urllib.parse import urlsplit

    import pandas as pd

    from spxflow.photometry import measure_windows
    from spxflow.photometry.cutout import CutoutError
    from spxflow.photometry.measure import failed_row
    from spxflow.ranges import ConstantCache, LayoutCache, RangeClient, read_window

    parts = urlsplit(args.file)
    # The client may contact only the host the user named.
    with RangeClient(f"{parts.scheme}://{parts.netloc}") as client:
        key = parts.path.lstrip("/")
        try:
            read = read_window(
                client, key, args.ra, args.dec, settings.fit_half_size_px,
                args.cutout_size_arcsec, layouts=LayoutCache(None), constants=ConstantCache(),
            )  # fmt: skip
        except CutoutError as exc:
            row = {**failed_row(key, exc.flag, str(exc)), "release": args.release or ""}
            return pd.DataFrame([row])
    print(
        f"spxflow measure-file: read {read.bytes} bytes in {read.requests} requests "
        f"({read.rounds} rounds), ETag {read.etag}",
        file=sys.stderr,
    )
    return measure_windows([read.cutout], [], calibration, settings, releases=[args.release])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    snakemake_args: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, snakemake_args = argv[:i], argv[i + 1 :]
    parser = argparse.ArgumentParser(prog="python -m spxflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "rerun",
        help="mark measured sources to be measured again, then optionally run snakemake",
        description="Mark sources so that the next `snakemake` run measures them again. "
        "Arguments after `--` are passed to snakemake, which then runs.",
    )
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument(
        "--update",
        action="store_true",
        help="every measured source re-queries discovery once; only new images are fetched",
    )
    mode.add_argument(
        "--retry-failed",
        action="store_true",
        help="sources with failed cutouts fetch only those again",
    )
    p.add_argument("--results", default="results", help="results directory (default: results)")
    p.add_argument("--sources", nargs="+", help="only these sources (file-name slugs)")
    p.set_defaults(func=cmd_rerun)
    d = sub.add_parser("config-defaults", help="print every config key with its default")
    d.set_defaults(func=cmd_config_defaults)
    m = sub.add_parser(
        "measure-file",
        help="measure one Level-2 file or cutout (QR2 or R7 layout, local or https) and print "
        "the row",
        description="Forced PSF photometry of one SPHEREx Level-2 file or IRSA cutout at "
        "(RA, Dec): a local file, or the https:// URL of a whole Level-2 file read by byte "
        "ranges (about 6 requests, < 400 KB). The layout (QR2 PSF cube or R7 EPSF table) is "
        "read from the file. "
        "Without --calibration, wavelengths come from the file's WCS-WAVE table and the "
        "nominal pixel area is used (both flagged).",
    )
    m.add_argument(
        "file",
        help="Level-2 FITS file or cutout (.fits or gzip), or the https:// URL of a whole "
        "Level-2 file (e.g. in IRSA's S3 bucket), read by byte ranges without downloading it",
    )
    m.add_argument("--ra", type=float, required=True, help="ICRS right ascension [deg]")
    m.add_argument("--dec", type=float, required=True, help="ICRS declination [deg]")
    m.add_argument(
        "--calibration",
        help="directory of calibration products (<family>_D<n>_spx_<token>.fits, e.g. "
        "resources/calibration after a workflow run)",
    )
    m.add_argument(
        "--release",
        choices=sorted(RELEASES_CHOICES),
        help="release of the file (default: qr3 for the R7 layout, else qr2)",
    )
    photometry = block_defaults("photometry")  # the schema is the defaults' one home
    m.add_argument("--qr2-psf", choices=["cube", "epsf"], default=photometry["qr2_psf"])
    m.add_argument(
        "--calibration-scale",
        choices=["r7", "native"],
        default=photometry["calibration_scale"],
    )
    m.add_argument(
        "--cutout-size-arcsec",
        type=float,
        default=config_defaults()["cutout_size_arcsec"],
        help="for a URL: the fit window is clipped to a cutout of this size, as in the workflow",
    )
    m.add_argument("--json", action="store_true", help="print JSON instead of aligned text")
    m.set_defaults(func=cmd_measure_file)
    args = parser.parse_args(argv)
    args.snakemake_args = snakemake_args
    return args.func(args)
