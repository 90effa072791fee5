"""Synthetic, demo-like inputs for the plot and summary tests and the plot benchmark.

Schema-complete measurement tables (``columns.MEASUREMENT_COLUMNS``) with a smooth SED, noise,
non-detections, failed rows and flags, rows from both releases (QR2 and QR3, the R7 pipeline),
plus random cutout stamps shaped like ``model_images`` output. No simulator or photometry needed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from spxflow.columns import MEASUREMENT_COLUMNS
from spxflow.format import BANDS, QR3_START_MJD

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


# Per-release metadata of the demo rows (pipeline VERSION, PSF model, calibration tokens).
_DEMO_RELEASE = {
    "qr2": {
        "processing_version": "6.5.6",
        "psf_model": "cube",
        "wcs": "spectral_wcs/cal-wcs-v4-2025-254",
        "sapm": "solid_angle_pixel_map/cal-sapm-v2-2025-164",
    },
    "qr3": {
        "processing_version": "7.0.5",
        "psf_model": "epsf",
        "wcs": "spectral_wcs/cal-swcs-v5-2026-191",
        "sapm": "solid_angle_pixel_map/cal-sapm-v3-2026-191",
    },
}
# l3_flux_corrections factor per detector applied to QR2 rows put on the R7 scale.
_DEMO_FLUX_CORRECTION = {1: 1.012, 2: 0.994, 3: 1.006, 4: 0.988, 5: 1.021, 6: 0.979}


def synthetic_measurements(
    n: int = 120,
    seed: int = 0,
    source: str = "demo_src",
    faint: bool = False,
    *,
    releases: tuple[str, ...] = ("qr2", "qr3"),
    qr3_fraction: float = 0.4,
    qr2_scale: str = "r7",
    qr2_flux_factor: float = 1.0,
) -> pd.DataFrame:
    """``n`` measurement rows of one source with the schema's columns and dtypes.

    ``releases``: which releases the rows come from; with both, a random ``qr3_fraction`` of
    the rows is QR3 (MJD in the QR3 time slice, ePSF fits, R7 calibration). QR2 rows are on
    ``qr2_scale`` ('r7': corrected with l3_flux_corrections, or 'qr2': native), and their
    flux and error are multiplied by ``qr2_flux_factor`` (a calibration offset between the
    releases; QR3/QR2 ratio = 1 / qr2_flux_factor). The other columns do not depend on the
    release options, so one seed gives the same spectrum whatever they are.
    """
    unknown = set(releases) - set(_DEMO_RELEASE)
    if not releases or unknown:
        raise ValueError(f"releases must be a non-empty subset of {sorted(_DEMO_RELEASE)}")
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
    # Drawn last, so the columns above are the same for any release options.
    if len(releases) == 1:
        release = np.full(n, releases[0], dtype=object)
    else:
        release = np.where(rng.random(n) < qr3_fraction, "qr3", "qr2").astype(object)
    values.update(_release_values(values, release, det, qr2_scale, qr2_flux_factor))
    df = pd.DataFrame(values)
    for col in ("flux_uJy", "flux_err_uJy", "snr", "wavelength_um", "chi2_red"):
        df.loc[failed, col] = np.nan
    for c in MEASUREMENT_COLUMNS:
        if c.name not in df:  # a schema column this demo does not know yet
            df[c.name] = _default_value(c.dtype)
        df[c.name] = df[c.name].astype(object if c.dtype == "str" else c.dtype)
    return df[[c.name for c in MEASUREMENT_COLUMNS]]


def _release_values(values: dict, release, det, qr2_scale: str, qr2_flux_factor: float) -> dict:
    """Release-dependent columns of ``synthetic_measurements``."""
    if qr2_scale not in ("r7", "qr2"):
        raise ValueError(f"qr2_scale must be r7 or qr2, got {qr2_scale!r}")
    qr3 = release == "qr3"
    meta = {key: np.array([_DEMO_RELEASE[r][key] for r in release]) for key in _DEMO_RELEASE["qr2"]}
    corrected = ~qr3 & (qr2_scale == "r7")
    factor = np.where(qr3, 1.0, qr2_flux_factor)
    mjd = np.asarray(values["mjd"])
    # QR2 rows keep their MJD; QR3 rows map the same draw into the QR3 slice (35 days).
    mjd = np.where(qr3, QR3_START_MJD + (mjd - 60800) / 200 * 35, mjd)
    return {
        "release": release,
        "processing_version": meta["processing_version"],
        "image_id": [f"ivo://irsa.ipac/spherex_{r}?{i}" for i, r in enumerate(release)],
        "mjd": mjd,
        "flux_uJy": np.asarray(values["flux_uJy"]) * factor,
        "flux_err_uJy": np.asarray(values["flux_err_uJy"]) * factor,
        "psf_model": meta["psf_model"],
        "calib_spectral_wcs": [f"{w}/D{d}" for w, d in zip(meta["wcs"], det, strict=True)],
        "calib_sapm": [f"{w}/D{d}" for w, d in zip(meta["sapm"], det, strict=True)],
        "calib_epsf": [
            f"epsf/cal-epsf-v{2 if d == 3 else 1}-2026-191/D{d}" if q else ""
            for q, d in zip(qr3, det, strict=True)
        ],
        "calib_flux_correction": [
            f"l3_flux_corrections/cal-flxc-v1-2026-191/D{d}" if c else ""
            for c, d in zip(corrected, det, strict=True)
        ],
        "flux_correction": np.where(
            corrected, np.array([_DEMO_FLUX_CORRECTION[int(d)] for d in det]), 1.0
        ),
        "calibration_scale": np.where(qr3 | corrected, "r7", "qr2").astype(object),
    }


def _default_value(dtype: str):
    return {"str": "", "bool": False, "float64": np.nan}.get(dtype, -1)


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
