"""Accuracy against the simulator's injected truth (validation only).

The SIM* header cards are read here and in the simulator, never by the measurement path:
the truth is taken at fetch time (``truth_from_cutout`` for cutout files, the simulator's own
for windows) and stored beside the cutout index; the accuracy rule joins it to the
measurements afterwards.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from astropy.io import fits

# Rows whose truth source is "none" have no known true flux (only field stars or nothing).
NO_TRUTH = "none"


def truth_from_cutout(path) -> dict | None:
    """{flux_uJy, wavelength_um, source, simulator} from a simulated cutout, else None."""
    if not path:
        return None
    try:
        header = fits.getheader(path, "IMAGE")
    except (OSError, KeyError, ValueError):
        return None
    if "SIMFLUX" not in header:
        return None
    return {
        "flux_uJy": float(header["SIMFLUX"]),
        "wavelength_um": float(header["SIMWAVE"]),
        "source": str(header["SIMSRC"]),
        "simulator": str(header.get("SIMVERS", "")),
    }


def join_truth(measurements: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Measured rows with a known truth (adds truth_flux_uJy, truth_wavelength_um).

    ``truth``: one row per cutout with source (slug), file_name, flux_uJy, wavelength_um and
    truth_source (the simulator's SIMSRC).
    """
    m = measurements[measurements["detection_status"] != "failed"]
    if truth.empty:
        return m.iloc[0:0].assign(truth_flux_uJy=[], truth_wavelength_um=[])
    t = truth[truth["truth_source"] != NO_TRUTH].rename(
        columns={"flux_uJy": "truth_flux_uJy", "wavelength_um": "truth_wavelength_um"}
    )
    cols = ["source", "file_name", "truth_flux_uJy", "truth_wavelength_um"]
    return m.merge(t[cols], on=["source", "file_name"], how="inner")


def accuracy_metrics(j: pd.DataFrame) -> dict:
    """Bias, pull and chi-square figures of one group of truth-joined measurements."""
    pull = (j["flux_uJy"] - j["truth_flux_uJy"]) / j["flux_err_uJy"]
    true_snr = j["truth_flux_uJy"] / j["flux_err_uJy"]
    hi = j[true_snr > 50]
    frac = (hi["flux_uJy"] - hi["truth_flux_uJy"]) / hi["truth_flux_uJy"]
    s20 = j[(true_snr > 20)]
    iso = s20[s20["n_neighbors"] == 0] if "n_neighbors" in s20 else s20
    return {
        "n": int(len(j)),
        "n_snr_gt50": int(len(hi)),
        "bias_snr_gt50": float(np.median(frac)) if len(hi) else np.nan,
        "mean_bias_snr_gt50": float(np.mean(frac)) if len(hi) else np.nan,
        "pull_mean": float(np.mean(pull)) if len(j) else np.nan,
        "pull_std": float(np.std(pull, ddof=1)) if len(j) > 1 else np.nan,
        # 1-sigma sampling error of pull_std for Gaussian pulls: 0.07 at n ~ 100 (one detector
        # of the demo), more than the 0.05 tolerance, so targets are judged against it.
        "pull_std_se": float(np.std(pull, ddof=1) / np.sqrt(2.0 * (len(j) - 1)))
        if len(j) > 1
        else np.nan,
        "pull_robust_sigma": float(1.4826 * np.median(np.abs(pull - np.median(pull))))
        if len(j)
        else np.nan,
        "chi2_red_median": float(np.median(j["chi2_red"])) if len(j) else np.nan,
        # sampling error of a median: 1.2533 x (robust spread) / sqrt(n)
        "chi2_red_median_se": float(
            1.2533
            * 1.4826
            * np.median(np.abs(j["chi2_red"] - np.median(j["chi2_red"])))
            / np.sqrt(len(j))
        )
        if len(j)
        else np.nan,
        "n_isolated_snr_gt20": int(len(iso)),
        "recommended_frac_snr_gt20": float(iso["science_recommended"].mean())
        if len(iso)
        else np.nan,
        "wavelength_rms_nm": float(
            1e3 * np.sqrt(np.mean((j["wavelength_um"] - j["truth_wavelength_um"]) ** 2))
        )
        if len(j)
        else np.nan,
    }


def truth_from_indexes(indexes: list[dict]) -> pd.DataFrame:
    """The injected truth the cutout indexes copied from simulated cutouts, one row per image."""
    rows = [
        {
            "source": idx["source"],
            "file_name": e["file_name"],
            "flux_uJy": e["truth"]["flux_uJy"],
            "wavelength_um": e["truth"]["wavelength_um"],
            "truth_source": e["truth"]["source"],
        }
        for idx in indexes
        for e in idx["images"]
        if e.get("truth")
    ]
    return pd.DataFrame(rows)


# Acceptance targets of every (release, detector) row (issue: R7 format).
TARGETS = {
    "bias_snr_gt50": 0.005,  # |median fractional flux bias| at true S/N > 50
    "pull_std": (0.95, 1.05),
    "chi2_red_median": (0.95, 1.05),
    "recommended_frac_snr_gt20": 0.95,  # isolated sources with S/N > 20
}


MIN_ROWS = 10  # fewer rows than this leave a target untested


def targets_met(m: dict) -> dict:
    """Which accuracy targets a row of figures meets, judged against its sampling error.

    A demo detector has ~20-120 rows, whose pull std scatters by ±0.07-0.15 between noise
    realisations (nine seeds measured), so each band is widened by twice the figure's sampling
    error: the pull std's, the median chi2's (from the spread of chi2_red) and the binomial
    error of the recommended fraction. A figure from fewer than ``MIN_ROWS`` rows is
    *untested* (listed in ``untested``) rather than failed. Campaigns of thousands of rows
    (``python -m spxflow.validation``) test the bands themselves."""
    lo_p, hi_p = TARGETS["pull_std"]
    lo_c, hi_c = TARGETS["chi2_red_median"]
    rec = TARGETS["recommended_frac_snr_gt20"]
    n_iso = m["n_isolated_snr_gt20"]
    tested = {
        "bias": m["n_snr_gt50"] >= MIN_ROWS,
        "pull": m["n"] >= MIN_ROWS,
        "chi2": m["n"] >= MIN_ROWS,
        "recommended": n_iso >= MIN_ROWS,
    }
    pull_slack = 2.0 * m["pull_std_se"] if tested["pull"] else 0.0
    chi2_slack = 2.0 * m["chi2_red_median_se"] if tested["chi2"] else 0.0
    rec_slack = 2.0 * np.sqrt(rec * (1 - rec) / n_iso) if tested["recommended"] else 0.0
    ok = {
        "ok_bias": bool(abs(m["bias_snr_gt50"]) < TARGETS["bias_snr_gt50"]),
        "ok_pull": bool(lo_p - pull_slack <= m["pull_std"] <= hi_p + pull_slack),
        "ok_chi2": bool(lo_c - chi2_slack <= m["chi2_red_median"] <= hi_c + chi2_slack),
        "ok_recommended": bool(m["recommended_frac_snr_gt20"] >= rec - rec_slack),
    }
    untested = [name for name, t in tested.items() if not t]
    ok["meets_targets"] = all(v for k, v in ok.items() if k[3:] not in untested)
    ok["untested"] = " ".join(untested)
    return ok


def accuracy_table(measurements: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """One row per (release, detector), per release ('all' detectors) and overall, with the
    accuracy figures against injected truth and which targets each row meets."""
    j = join_truth(measurements, truth)
    if "release" not in j:
        j = j.assign(release="qr2")
    rows = []
    for rel in sorted(j["release"].unique()):
        jr = j[j["release"] == rel]
        for det in sorted(jr["detector"].unique()):
            m = accuracy_metrics(jr[jr["detector"] == det])
            rows.append({"release": rel, "detector": str(int(det)), **m, **targets_met(m)})
        m = accuracy_metrics(jr)
        rows.append({"release": rel, "detector": "all", **m, **targets_met(m)})
    m = accuracy_metrics(j)
    rows.append({"release": "all", "detector": "all", **m, **targets_met(m)})
    return pd.DataFrame(rows)


# --- validation campaign -------------------------------------------------------------------
def synthetic_truth_table(path, n_sources: int, seed: int, release: str | None = None):
    """Isolated stars with fluxes giving S/N ~3-3000 per cutout, over the whole sky, or only
    where ``release`` has at least 30 images (QR3 covers the sky scanned in its time slice)."""
    rng = np.random.default_rng(seed)
    n_draw = n_sources if release is None else 40 * n_sources
    ra = rng.uniform(0.0, 360.0, n_draw)
    dec = np.degrees(np.arcsin(rng.uniform(-0.95, 0.95, n_draw)))
    if release is not None:
        from spxflow.archive.simulated import SimulatedArchive

        found = SimulatedArchive(seed=seed).discover_many(
            [(str(i), r, d) for i, (r, d) in enumerate(zip(ra, dec, strict=True))]
        )
        keep = [
            int(k)
            for k, t in found.items()
            if (t["obs_collection"] == f"spherex_{release}").sum() >= 30
        ][:n_sources]
        if len(keep) < n_sources:
            raise ValueError(f"only {len(keep)} positions with {release} coverage found")
        ra, dec = ra[keep], dec[keep]
    table = pd.DataFrame(
        {
            "name": [f"VAL{i:04d}" for i in range(n_sources)],
            "ra": np.round(ra, 6),
            "dec": np.round(dec, 6),
            "sed": "star",
            "flux_ujy": np.round(10 ** rng.uniform(np.log10(60.0), np.log10(1.5e5), n_sources), 3),
            "ref_um": 1.6,
            "temp_k": np.round(rng.uniform(3500.0, 9000.0, n_sources)),
        }
    )
    table.to_csv(path, index=False)
    return table


Variant = Callable[..., pd.DataFrame]  # (windows, ra, dec, calibration, releases) -> rows


def settings_variant(settings=None, threads: int = 2) -> Variant:
    """A campaign variant that measures with ``settings`` (default: the schema's)."""
    from spxflow.photometry import PhotometrySettings, measure_windows

    settings = settings or PhotometrySettings()

    def measure(windows, ra, dec, calibration, releases):
        return measure_windows(windows, [], calibration, settings, threads, releases)

    return measure


def run_campaign(
    workdir,
    n_sources: int = 24,
    seed: int = 7,
    size_arcsec: float = 45.0,
    release: str | None = None,
    variants: dict[str, Variant] | None = None,
    half_size: int | None = None,
):
    """Simulate and measure synthetic stars, each exposure once (duplicates across collections
    and processings dropped, as the workflow does).

    Each star's windows (``half_size``: default the schema's fit window, as the workflow reads
    them; no files) are measured by every variant. Returns ``{variant: (truth-joined rows,
    all rows, truth)}``, or the first two alone when no variants are given (the default
    settings)."""
    from pathlib import Path

    from spxflow.archive.simulated import SimulatedArchive
    from spxflow.discovery import deduplicate, release_of_row
    from spxflow.photometry import CalibrationSet, PhotometrySettings

    half_size = half_size or PhotometrySettings().fit_half_size_px
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    truth_csv = work / "truth.csv"
    stars = synthetic_truth_table(truth_csv, n_sources, seed, release)
    archive = SimulatedArchive(seed=seed, truth_table=truth_csv)
    calibration = CalibrationSet.from_archive(archive, work / "calibration")
    todo = variants or {"default": settings_variant()}
    parts = {name: [] for name in todo}
    truth_rows = []
    for star in stars.itertuples(index=False):
        kept, _ = deduplicate(archive.discover(star.ra, star.dec))
        rows = kept.to_dict(orient="records")
        results = archive.fetch_windows(rows, star.ra, star.dec, half_size, size_arcsec)
        ok = [(r, release_of_row(row)) for r, row in zip(results, rows, strict=True)]
        ok = [(r, rel) for r, rel in ok if r.status == "ok"]
        for r, _ in ok:
            truth_rows.append(
                {
                    "source": star.name,
                    "file_name": r.file_name,
                    "flux_uJy": r.truth["flux_uJy"],
                    "wavelength_um": r.truth["wavelength_um"],
                    "truth_source": r.truth["source"],
                }
            )
        windows, releases = [r.cutout for r, _ in ok], [rel for _, rel in ok]
        for name, measure in todo.items():
            df = measure(windows, star.ra, star.dec, calibration, releases)
            parts[name].append(df.assign(source=star.name))
    truth = pd.DataFrame(truth_rows)
    out = {}
    for name, frames in parts.items():
        meas = pd.concat(frames, ignore_index=True)
        out[name] = (join_truth(meas, truth), meas, truth)
    if variants is None:
        return out["default"][:2]
    return out


def _main(argv=None) -> int:
    import argparse
    import tempfile
    import time

    from spxflow.photometry import PhotometrySettings

    ap = argparse.ArgumentParser(
        description="Photometry accuracy against injected truth on simulated cutouts, one "
        "row per (release, detector)."
    )
    ap.add_argument("--sources", type=int, default=24)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--size-arcsec", type=float, default=45.0)
    ap.add_argument("--release", choices=["qr2", "qr3"], help="only stars this release covers")
    ap.add_argument("--qr2-psf", choices=["cube", "epsf"], default="cube")
    ap.add_argument("--calibration-scale", choices=["r7", "native"], default="r7")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args(argv)
    settings = PhotometrySettings.from_config(
        {"qr2_psf": args.qr2_psf, "calibration_scale": args.calibration_scale}
    )
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        runs = run_campaign(
            args.workdir or tmp,
            args.sources,
            args.seed,
            args.size_arcsec,
            args.release,
            {"run": settings_variant(settings)},
        )
    _, meas, truth = runs["run"]
    print(f"{len(meas)} measurements of {args.sources} stars in {time.time() - t0:.1f} s")
    table = accuracy_table(meas, truth)
    pd.set_option("display.width", 250)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
