"""Forced PSF photometry of every cutout of a source: read, pack, fit (Numba), judge.

A cutout that cannot be measured becomes a row with a failure flag and a reason; it never
stops the batch.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd

from spxflow.format import (
    DEFAULT_PIXEL_OMEGA_ARCSEC2,
    FLAG_BITS,
    UJY_PER_MJYSR_ARCSEC2,
    flag_mask,
    parse_level2_file_name,
)
from spxflow.photometry import kernels, reference
from spxflow.photometry.calibration import CalibrationSet
from spxflow.photometry.cutout import Cutout, CutoutError, read_cutout
from spxflow.photometry.result_flags import NOT_RECOMMENDED, bit, mask_of
from spxflow.photometry.settings import PhotometrySettings
from spxflow.spectral import wcs_wave_lookup


@dataclass
class Prepared:
    """One cutout's fit window, flattened, plus what the row needs besides the fit."""

    cutout: Cutout
    px: np.ndarray
    py: np.ndarray
    data: np.ndarray
    var: np.ndarray
    good: np.ndarray
    kconv: np.ndarray
    cwave: np.ndarray
    cband: np.ndarray
    sx: np.ndarray  # target first, then neighbours that can reach the window
    sy: np.ndarray
    shape: tuple[int, int]  # window (ny, nx)
    n_window: int
    pix_to_uJy: float
    flags: int
    wavelength_source: str
    neighbour_dist: np.ndarray  # px from the target, per neighbour
    psf_model: str  # "cube" (101x101 float32 plane, 10x) or "epsf" (33x33 float64 row, 5x)
    psf: np.ndarray  # the PSF array the fit renders (the file's, or the ePSF library's)


def prepare(
    cutout: Cutout, neighbours, calibration: CalibrationSet | None, settings: PhotometrySettings
) -> Prepared:
    ny, nx = cutout.image.shape
    h = settings.fit_half_size_px
    rx, ry = int(math.floor(cutout.x + 0.5)), int(math.floor(cutout.y + 0.5))
    x0, x1 = max(0, rx - h), min(nx, rx + h + 1)
    y0, y1 = max(0, ry - h), min(ny, ry + h + 1)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    px, py = xx.ravel().astype(np.float64), yy.ravel().astype(np.float64)
    data = cutout.image[y0:y1, x0:x1].ravel()
    var = cutout.variance[y0:y1, x0:x1].ravel()
    bits = {k: v[0] for k, v in FLAG_BITS.items()} | cutout.flag_bits
    mask = flag_mask(settings.mask_flags, bits)
    good = (
        ((cutout.flags[y0:y1, x0:x1].ravel() & mask) == 0)
        & np.isfinite(data)
        & np.isfinite(var)
        & (var > 0)
    )
    xp = (xx + cutout.origin[0]).ravel().astype(np.int64)
    yp = (yy + cutout.origin[1]).ravel().astype(np.int64)
    flags = 0
    cal = calibration or CalibrationSet()
    omega = cal.solid_angle(cutout.detector, yp, xp)
    if omega is None:
        omega = np.full(len(px), DEFAULT_PIXEL_OMEGA_ARCSEC2)
        flags |= bit("NO_SOLID_ANGLE_MAP")
    # The target's pixel is always in the window (the window is centred on it).
    omega_t = float(omega[(ry - y0) * (x1 - x0) + (rx - x0)])
    spec = cal.cwave_cband(cutout.detector, yp, xp)
    if spec is not None:
        cwave, cband = spec
        source = "cwave"
    elif cutout.wcs_wave is not None:
        psi1 = px + 1.0 - cutout.crpix_w[0] + cutout.crval_w[0]
        psi2 = py + 1.0 - cutout.crpix_w[1] + cutout.crval_w[1]
        cwave, cband = wcs_wave_lookup(*cutout.wcs_wave, psi1, psi2)
        source = "wcs-wave"
        flags |= bit("WAVELENGTH_FROM_WCS_WAVE")
    else:
        cwave = cband = np.full(len(px), np.nan)
        source = "none"
        flags |= bit("WAVELENGTH_FROM_WCS_WAVE")
    sx, sy, dist = [cutout.x], [cutout.y], []
    m = settings.neighbour_margin_px
    for nb in neighbours:
        ra, dec = float(nb[-2]), float(nb[-1])
        try:
            x, y = (float(v) for v in cutout.wcs.world_to_pixel(ra, dec))
        except ValueError:
            continue
        if x0 - m <= x <= x1 - 1 + m and y0 - m <= y <= y1 - 1 + m:
            sx.append(x)
            sy.append(y)
            dist.append(math.hypot(x - cutout.x, y - cutout.y))
    return Prepared(
        cutout=cutout,
        px=px,
        py=py,
        data=data,
        var=var,
        good=good,
        kconv=1.0 / (omega * UJY_PER_MJYSR_ARCSEC2),
        cwave=np.asarray(cwave, float),
        cband=np.asarray(cband, float),
        sx=np.array(sx),
        sy=np.array(sy),
        shape=(y1 - y0, x1 - x0),
        n_window=len(px),
        pix_to_uJy=omega_t * UJY_PER_MJYSR_ARCSEC2,
        flags=flags,
        wavelength_source=source,
        neighbour_dist=np.array(dist),
        psf_model="cube",
        psf=cutout.psf,
    )


def pack(prepared: list[Prepared]) -> dict:
    """Pad a batch to common shapes for ``kernels.fit_batch``."""
    n = len(prepared)
    M = max(p.n_window for p in prepared)
    S = max(len(p.sx) for p in prepared)
    out = {
        "px": np.zeros((n, M)),
        "py": np.zeros((n, M)),
        "npix": np.array([p.n_window for p in prepared], np.int64),
        "data": np.zeros((n, M)),
        "var": np.ones((n, M)),
        "good": np.zeros((n, M), np.bool_),
        "kconv": np.zeros((n, M)),
        "cwave": np.zeros((n, M)),
        "cband": np.zeros((n, M)),
        "sx": np.zeros((n, S)),
        "sy": np.zeros((n, S)),
        "nsrc": np.array([len(p.sx) for p in prepared], np.int64),
        # float32 as in every SPHEREx file (exact): half the memory traffic of the rendering.
        "psf": np.stack([p.cutout.psf for p in prepared], dtype=np.float32),
    }
    for k, p in enumerate(prepared):
        w = p.n_window
        for name in ("px", "py", "data", "var", "good", "kconv", "cwave", "cband"):
            out[name][k, :w] = getattr(p, name)
        out["sx"][k, : len(p.sx)] = p.sx
        out["sy"][k, : len(p.sy)] = p.sy
    return out


def _identity(path: str) -> dict:
    name = os.path.basename(path)
    try:
        obsid, det, _ = parse_level2_file_name(name)
    except ValueError:
        obsid, det = "", -1
    return {"file_name": name, "obs_id": obsid, "detector": det}


def _cutout_row(cutout: Cutout) -> dict:
    """Identity, time and position columns known once a cutout has been read."""
    row = _identity(cutout.path)
    row.update(
        obs_id=cutout.obs_id or row["obs_id"],
        detector=cutout.detector,
        mjd=cutout.mjd,
        exptime_s=cutout.exptime_s,
        x_cutout=cutout.x,
        y_cutout=cutout.y,
        x_parent=cutout.x_parent,
        y_parent=cutout.y_parent,
        psf_plane=cutout.plane,
    )
    return row


def _failed_row(path: str, flag: str, reason: str, cutout: Cutout | None = None) -> dict:
    row = _identity(path) if cutout is None else _cutout_row(cutout)
    row.update(
        result_flags=bit(flag),
        detection_status="failed",
        science_recommended=False,
        failure_reason=reason,
        zodi_subtracted=False,
        flux_uJy=np.nan,
        flux_err_uJy=np.nan,
    )
    return row


def _row(p: Prepared, res: dict, settings: PhotometrySettings, calibration) -> dict:
    c = p.cutout
    S = res["S"]
    status = res["status"]
    flags = p.flags
    row = _cutout_row(c)
    row.update(
        wavelength_um=res["wave"],
        bandwidth_um=res["band"],
        wavelength_source=p.wavelength_source,
        n_pix=res["nused"],
        masked_frac=1.0 - res["nused"] / p.n_window,
        psf_masked_frac=res["psf_masked"],
        pix_to_uJy=p.pix_to_uJy,
        zodi_subtracted=False,
        calib_spectral_wcs=calibration.calibration_id("spectral_wcs", c.detector)
        if calibration
        else "",
        calib_sapm=calibration.calibration_id("solid_angle_pixel_map", c.detector)
        if calibration
        else "",
        failure_reason="",
    )
    n_nb = len(p.sx) - 1
    active = res["active"]
    if n_nb and not all(active[1 : 1 + n_nb]):
        flags |= bit("NEIGHBOUR_DROPPED")
    if res["psf_window"] < settings.min_psf_window_frac:
        flags |= bit("NEAR_EDGE")
    if res["psf_masked"] > settings.max_psf_masked_frac:
        flags |= bit("MASKED_CORE")
    if status != kernels.OK:
        name = "ALL_MASKED" if status == kernels.ALL_MASKED else "FIT_FAILED"
        reason = (
            "too few unmasked pixels under the target PSF"
            if status == kernels.ALL_MASKED
            else "singular normal matrix"
        )
        row.update(
            flux_uJy=np.nan,
            flux_err_uJy=np.nan,
            result_flags=flags | bit(name),
            detection_status="failed",
            science_recommended=False,
            failure_reason=reason,
        )
        return row
    params, cov = res["params"], res["cov"]
    flux = float(params[0])
    err = float(math.sqrt(cov[0, 0])) if cov[0, 0] > 0 else np.nan
    snr = flux / err if err > 0 else np.nan
    dof = max(int(res["dof"]), 1)
    chi2_red = float(res["chi2"]) / dof
    corr = 0.0
    blended = False
    for s in range(1, 1 + n_nb):
        if not active[s]:
            continue
        cs = cov[0, s] / math.sqrt(cov[0, 0] * cov[s, s])
        corr = max(corr, abs(cs))
        if p.neighbour_dist[s - 1] < settings.blend_radius_px:
            blended = True
    if blended or corr > settings.blend_corr:
        flags |= bit("BLENDED")
    tol, nsig = settings.psf_model_tolerance, settings.quality_nsigma
    chi2_limit = 1.0 + nsig * math.sqrt(2.0 / dof) + tol**2 * float(res["sum_wm2"]) / dof
    if chi2_red > chi2_limit:
        flags |= bit("HIGH_CHI2")
    rc, mc, vc = float(res["resid_core"]), float(res["model_core"]), float(res["var_core"])
    if abs(rc) > tol * abs(mc) + nsig * math.sqrt(max(vc, 0.0)):
        flags |= bit("CORE_RESIDUAL")
    if not res["cond"] <= settings.max_cond_number:
        flags |= bit("ILL_CONDITIONED")
    if snr >= settings.detection_snr:
        status_txt = "detected"
    elif snr <= -settings.detection_snr:
        status_txt = "negative"
    else:
        status_txt = "non-detection"
    row.update(
        flux_uJy=flux,
        flux_err_uJy=err,
        snr=snr,
        bkg_MJy_sr=float(params[S]),
        bkg_dx_MJy_sr=float(params[S + 1]),
        bkg_dy_MJy_sr=float(params[S + 2]),
        chi2_red=chi2_red,
        cond_number=float(res["cond"]),
        resid_core=rc / mc if mc != 0 else np.nan,
        n_neighbors=int(sum(active[1 : 1 + n_nb])),
        neighbor_corr=corr,
        result_flags=flags,
        detection_status=status_txt,
        science_recommended=not (flags & mask_of(NOT_RECOMMENDED)),
    )
    return row


def _load(path, ra, dec, neighbours, calibration, settings):
    try:
        cutout = read_cutout(path, ra, dec)
    except CutoutError as exc:
        return None, _failed_row(str(path), exc.flag, str(exc))
    try:
        return prepare(cutout, neighbours, calibration, settings), None
    except (ValueError, KeyError, OSError) as exc:
        return None, _failed_row(str(path), "READ_FAILED", f"{type(exc).__name__}: {exc}", cutout)


def measure_cutouts(
    paths,
    ra: float,
    dec: float,
    neighbours,
    calibration: CalibrationSet | None,
    settings: PhotometrySettings,
    threads: int = 1,
) -> pd.DataFrame:
    """One row per cutout (schema columns; source/name/measurement_id left to the caller)."""
    paths = [str(p) for p in paths]
    if threads > 1 and len(paths) > 8:
        with ThreadPoolExecutor(threads) as pool:
            loaded = list(
                pool.map(lambda p: _load(p, ra, dec, neighbours, calibration, settings), paths)
            )
    else:
        loaded = [_load(p, ra, dec, neighbours, calibration, settings) for p in paths]
    rows: list[dict | None] = [fail for _, fail in loaded]
    prepared = [(i, p) for i, (p, _) in enumerate(loaded) if p is not None]
    if prepared:
        batch = pack([p for _, p in prepared])
        out = fit_packed(batch, settings.core_radius_px, threads)
        S = batch["sx"].shape[1]
        for j, (i, p) in enumerate(prepared):
            res = {name: out[name][j] for name in kernels.RESULT_NAMES}
            res["S"] = S
            rows[i] = _row(p, res, settings, calibration)
    return pd.DataFrame(rows)


def fit_packed(batch: dict, core_r: float, threads: int = 1) -> dict:
    """Run the Numba kernel on a packed batch; results by name."""
    import numba

    previous = numba.get_num_threads()
    # A thread costs more to wake than ~100 cutouts take to fit: small batches run on one.
    n_threads = min(int(threads), numba.config.NUMBA_NUM_THREADS, len(batch["npix"]) // 128)
    numba.set_num_threads(max(1, n_threads))
    try:
        out = kernels.fit_batch(
            batch["px"], batch["py"], batch["npix"], batch["data"], batch["var"],
            batch["good"], batch["kconv"], batch["cwave"], batch["cband"], batch["sx"],
            batch["sy"], batch["nsrc"], batch["psf"], float(core_r),
        )  # fmt: skip
    finally:
        numba.set_num_threads(previous)
    return dict(zip(kernels.RESULT_NAMES, out, strict=True))


def model_images(path, ra, dec, neighbours, calibration, settings) -> dict:
    """Data, model, residual, mask and PSF images of one cutout's fit window (for QA)."""
    cutout = read_cutout(path, ra, dec)
    p = prepare(cutout, neighbours, calibration, settings)
    r = reference.fit_one(
        p.px, p.py, p.data, p.var, p.good, p.kconv, p.cwave, p.cband, p.sx, p.sy,
        cutout.psf, settings.core_radius_px,
    )  # fmt: skip
    shape = p.shape
    data = p.data.reshape(shape)
    if r["status"] != kernels.OK:
        model = np.full(shape, np.nan)
    else:
        model = r["model"].reshape(shape)
    psf = r["A"][:, 0].reshape(shape)
    out = {
        "data": data,
        "model": model,
        "residual": data - model,
        "mask": (~p.good).reshape(shape),
        "psf": psf / psf.max() if psf.max() > 0 else psf,
        "fit_status": int(r["status"]),
        "window_px": int(p.n_window),
    }
    if r["status"] == kernels.OK:
        dof = max(r["dof"], 1)
        out.update(
            flux_fit=float(r["params"][0]),
            bkg_fit=float(r["params"][len(r["params"]) - 3]),
            chi2_fit=float(r["chi2"] / dof),
        )
    return out
