"""Synthetic, demo-like inputs for the plot and summary tests and the plot benchmark.

Schema-complete measurement tables (``columns.MEASUREMENT_COLUMNS``) with a smooth SED, noise,
non-detections, failed rows and flags, plus random cutout stamps shaped like ``model_images``
output. No simulator or photometry needed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from spxflow.columns import MEASUREMENT_COLUMNS
from spxflow.format import BANDS

# Stand-in for spxflow.photometry.result_flags.RESULT_FLAGS when it is not importable.
DEMO_RESULT_FLAGS: dict[str, tuple[int, str]] = {
    "FETCH_FAILED": (0, "Cutout could not be fetched"),
    "FIT_FAILED": (1, "PSF fit did not converge"),
    "EDGE": (2, "Target near the cutout edge"),
    "MASKED_CORE": (3, "Masked pixels in the PSF core"),
    "HIGH_CHI2": (4, "Reduced chi-square above threshold"),
    "NEIGHBOR": (5, "Strongly correlated neighbour"),
}


def truth_sed(wavelength_um) -> np.ndarray:
    """A smooth demo SED in µJy: a 3000 K-ish bump plus a line at 1.876 µm."""
    wl = np.asarray(wavelength_um, dtype=float)
    return (
        400.0 * (wl / 1.6) ** -1.5 * np.exp(-((np.log(wl / 1.6)) ** 2) / 0.8)
        + 120.0 * np.exp(-0.5 * ((wl - 1.876) / 0.02) ** 2)
        + 20.0
    )


def synthetic_truth(n: int = 400) -> pd.DataFrame:
    wl = np.linspace(0.72, 5.05, n)
    return pd.DataFrame({"wavelength_um": wl, "flux_uJy": truth_sed(wl)})


def synthetic_measurements(
    n: int = 120, seed: int = 0, source: str = "demo_src", faint: bool = False
) -> pd.DataFrame:
    """``n`` measurement rows of one source with the schema's columns and dtypes."""
    rng = np.random.default_rng(seed)
    det = rng.integers(1, 7, n).astype("int16")
    lo = np.array([BANDS[d][0] for d in det]) * 1e6
    hi = np.array([BANDS[d][1] for d in det]) * 1e6
    wl = lo + rng.random(n) * (hi - lo)
    err = rng.uniform(5.0, 25.0, n) * (1 + (det >= 4))
    true = truth_sed(wl) * (0.02 if faint else 1.0)
    flux = true + rng.normal(0, 1, n) * err
    snr = flux / err
    status = np.where(snr >= 5, "detected", np.where(snr < 0, "negative", "non-detection"))
    status = status.astype(object)
    failed = rng.random(n) < 0.05
    flags = np.where(rng.random(n) < 0.15, 1 << rng.integers(2, 6, n), 0).astype("int64")
    flags[failed] |= 1
    status[failed] = "failed"
    chi2 = rng.gamma(8, 1 / 8, n) * np.where(flags & (1 << 4), 3, 1)
    values = {
        "source": source,
        "name": source.replace("_", " "),
        "measurement_id": [f"m{seed:02d}{i:06d}" for i in range(n)],
        "obs_id": [f"2025W{10 + i % 40:02d}_1A_{i:04d}_1" for i in range(n)],
        "detector": det,
        "image_id": [f"ivo://irsa.ipac/spherex_qr2?{i}" for i in range(n)],
        "file_name": [
            f"level2_2025W10_1A_{i:04d}_1D{d}_spx_l2b-v20-2025-200.fits" for i, d in enumerate(det)
        ],
        "ra_deg": 150.1,
        "dec_deg": 2.2,
        "x_cutout": 15.0 + rng.normal(0, 0.3, n),
        "y_cutout": 15.0 + rng.normal(0, 0.3, n),
        "x_parent": rng.uniform(0, 2040, n),
        "y_parent": rng.uniform(0, 2040, n),
        "psf_plane": rng.integers(0, 121, n).astype("int16"),
        "wavelength_um": wl,
        "bandwidth_um": wl / 40,
        "wavelength_source": "cwave",
        "mjd": 60800 + rng.random(n) * 200,
        "exptime_s": 112.0,
        "flux_uJy": flux,
        "flux_err_uJy": err,
        "snr": snr,
        "bkg_MJy_sr": 0.1 + 0.2 * wl + rng.normal(0, 0.02, n),
        "bkg_dx_MJy_sr": rng.normal(0, 1e-3, n),
        "bkg_dy_MJy_sr": rng.normal(0, 1e-3, n),
        "chi2_red": chi2,
        "n_pix": rng.integers(200, 400, n).astype("int32"),
        "masked_frac": rng.beta(1, 15, n),
        "psf_masked_frac": rng.beta(1, 25, n),
        "cond_number": rng.uniform(2, 30, n),
        "resid_core": rng.normal(0, 0.02, n),
        "n_neighbors": rng.integers(0, 3, n).astype("int16"),
        "neighbor_corr": rng.uniform(0, 0.5, n),
        "pix_to_uJy": 889.0,
        "zodi_subtracted": False,
        "result_flags": flags,
        "detection_status": status,
        "science_recommended": (status == "detected") & (flags == 0),
        "failure_reason": np.where(failed, "cutout http-error: 503 Service Unavailable", ""),
        "calib_spectral_wcs": [f"spectral_wcs/cal-wcs-v4-2025-254/D{d}" for d in det],
        "calib_sapm": [f"solid_angle_pixel_map/cal-sapm-v2-2025-164/D{d}" for d in det],
    }
    df = pd.DataFrame(values)
    for col in ("flux_uJy", "flux_err_uJy", "snr", "wavelength_um", "chi2_red"):
        df.loc[failed, col] = np.nan
    for c in MEASUREMENT_COLUMNS:
        df[c.name] = df[c.name].astype(object if c.dtype == "str" else c.dtype)
    return df[[c.name for c in MEASUREMENT_COLUMNS]]


def synthetic_model_images(size: int = 31, seed: int = 0, psf_size: int = 101) -> dict:
    """A dict shaped like ``model_images`` output: stamps and a few fit numbers."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size]
    c = (size - 1) / 2
    model = 0.3 + 5.0 * np.exp(-((x - c) ** 2 + (y - c) ** 2) / (2 * 1.2**2))
    data = model + rng.normal(0, 0.15, (size, size))
    mask = rng.random((size, size)) < 0.03
    py, px = np.mgrid[:psf_size, :psf_size]
    pc = (psf_size - 1) / 2
    psf = np.exp(-((px - pc) ** 2 + (py - pc) ** 2) / (2 * 12.0**2)) + 1e-4
    return {
        "data": data,
        "model": model,
        "residual": np.where(mask, 0.0, data - model),
        "mask": mask,
        "psf": psf / psf.sum(),
        "flux_uJy": 1234.5,
        "flux_err_uJy": 12.3,
        "chi2_red": 1.04,
        "n_iter": 3,
    }


def synthetic_stamps(n: int = 6, size: int = 31, seed: int = 0) -> list[dict]:
    out = []
    for k in range(n):
        img = synthetic_model_images(size, seed + k)
        out.append(
            {
                "data": img["data"],
                "model": img["model"],
                "residual": img["residual"],
                "mask": img["mask"],
                "label": f"D{k % 6 + 1} {0.8 + 0.7 * k:.3f} um S/N {50 - 7 * k:.1f}",
            }
        )
    return out
