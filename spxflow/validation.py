"""Accuracy against the simulator's injected truth (validation only).

The SIM* header cards are read here and in the simulator, never by the measurement path:
``truth_from_cutout`` runs at fetch time and stores the truth beside the cutout index; the
accuracy rule joins it to the measurements afterwards.
"""

from __future__ import annotations

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
        "chi2_red_median": float(np.median(j["chi2_red"])) if len(j) else np.nan,
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


def accuracy_table(measurements: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """One row per detector plus 'all' with the accuracy figures against injected truth."""
    j = join_truth(measurements, truth)
    rows = []
    for det in sorted(j["detector"].unique()):
        rows.append({"detector": str(int(det)), **accuracy_metrics(j[j["detector"] == det])})
    rows.append({"detector": "all", **accuracy_metrics(j)})
    return pd.DataFrame(rows)


# --- validation campaign -------------------------------------------------------------------
def synthetic_truth_table(path, n_sources: int, seed: int) -> pd.DataFrame:
    """Isolated stars over the whole sky with fluxes giving S/N ~3-3000 per cutout."""
    rng = np.random.default_rng(seed)
    ra = rng.uniform(0.0, 360.0, n_sources)
    dec = np.degrees(np.arcsin(rng.uniform(-0.95, 0.95, n_sources)))
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


def run_campaign(workdir, n_sources: int = 24, seed: int = 7, size_arcsec: float = 45.0):
    """Simulate, fetch and measure cutouts of synthetic stars; truth-joined measurements."""
    from pathlib import Path

    from spxflow.archive.simulated import SimulatedArchive
    from spxflow.photometry import CalibrationSet, PhotometrySettings, measure_cutouts

    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    truth_csv = work / "truth.csv"
    stars = synthetic_truth_table(truth_csv, n_sources, seed)
    archive = SimulatedArchive(seed=seed, truth_table=truth_csv)
    calibration = CalibrationSet.from_archive(archive, work / "calibration")
    settings = PhotometrySettings()
    parts, truth_rows = [], []
    for star in stars.itertuples(index=False):
        rows = archive.discover(star.ra, star.dec).to_dict(orient="records")
        out_dir = work / "cutouts" / star.name
        results = archive.fetch_cutouts(rows, star.ra, star.dec, size_arcsec, out_dir)
        paths = [r.path for r in results if r.status == "ok"]
        for p in paths:
            t = truth_from_cutout(p)
            truth_rows.append(
                {
                    "source": star.name,
                    "file_name": str(Path(p).name),
                    "flux_uJy": t["flux_uJy"],
                    "wavelength_um": t["wavelength_um"],
                    "truth_source": t["source"],
                }
            )
        df = measure_cutouts(paths, star.ra, star.dec, [], calibration, settings, threads=2)
        df["source"] = star.name
        parts.append(df)
    meas = pd.concat(parts, ignore_index=True)
    return join_truth(meas, pd.DataFrame(truth_rows)), meas


def _main(argv=None) -> int:
    import argparse
    import tempfile
    import time

    ap = argparse.ArgumentParser(
        description="Photometry accuracy against injected truth on simulated cutouts."
    )
    ap.add_argument("--sources", type=int, default=24)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--size-arcsec", type=float, default=45.0)
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args(argv)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        joined, meas = run_campaign(args.workdir or tmp, args.sources, args.seed, args.size_arcsec)
    print(f"{len(meas)} measurements of {args.sources} stars in {time.time() - t0:.1f} s")
    rows = [{"detector": "all", **accuracy_metrics(joined)}]
    for det in sorted(joined["detector"].unique()):
        rows.append({"detector": str(det), **accuracy_metrics(joined[joined["detector"] == det])})
    pd.set_option("display.width", 200)
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
