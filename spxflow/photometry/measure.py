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
    RELEASES,
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
    psf_index: int = -1  # PSF plane or ePSF table row
    release: str = "qr2"
    flux_correction: float = 1.0  # factor applied at the target pixel
    calibration_scale: str = "qr2"  # scale of the fitted pixels: r7 or qr2
    calib_epsf: str = ""
    calib_flux_correction: str = ""


def prepare(
    cutout: Cutout,
    neighbours,
    calibration: CalibrationSet | None,
    settings: PhotometrySettings,
    release: str | None = None,
) -> Prepared:
    """The fit window of one cutout on one calibration scale, with its PSF model chosen.

    ``release`` (from the discovery row) picks the CWAVE/CBAND and solid-angle products; by
    default it follows the file layout (R7 -> qr3). QR2-layout images on ``calibration_scale:
    r7`` are multiplied by ``l3_flux_corrections`` (variance by its square) before the fit.
    """
    release = release or ("qr3" if cutout.layout == "r7" else "qr2")
    ny, nx = cutout.image.shape
    h = settings.fit_half_size_px
    rx, ry = int(math.floor(cutout.x + 0.5)), int(math.floor(cutout.y + 0.5))
    x0, x1 = max(0, rx - h), min(nx, rx + h + 1)
    y0, y1 = max(0, ry - h), min(ny, ry + h + 1)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    px, py = xx.ravel().astype(np.float64), yy.ravel().astype(np.float64)
    data = cutout.image[y0:y1, x0:x1].ravel()
    var = cutout.variance[y0:y1, x0:x1].ravel()
    # The file's own bit names (MP_* or MSKN cards); a name the file does not define cannot be
    # set in it, so it masks nothing.
    bits = cutout.flag_bits
    mask = flag_mask([n for n in settings.mask_flags if n in bits], bits)
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
    correction, scale = 1.0, "r7"
    calib_flxc = ""
    if RELEASES[release].layout == "qr2":
        scale = "qr2"
        if settings.calibration_scale == "r7":
            fc = cal.flux_correction(cutout.detector, yp, xp)
            if fc is None:
                flags |= bit("NO_FLUX_CORRECTION")
            else:
                data = data * fc
                var = var * fc * fc
                correction = float(fc[(ry - y0) * (x1 - x0) + (rx - x0)])
                scale = "r7"
                calib_flxc = cal.calibration_id("qr3", "l3_flux_corrections", cutout.detector)
    psf_model, psf, psf_index, calib_epsf = cutout.psf_model, cutout.psf, cutout.plane, ""
    if psf_model == "cube" and settings.qr2_psf == "epsf":
        library = cal.epsf_library(cutout.detector)
        if library is None:
            flags |= bit("NO_EPSF_LIBRARY")
        else:
            psf_index, psf = library.row_for(cutout.x_parent, cutout.y_parent)
            psf_model = "epsf"
            calib_epsf = cal.calibration_id("qr3", "epsf", cutout.detector)
    omega = cal.solid_angle(release, cutout.detector, yp, xp)
    if omega is None:
        omega = np.full(len(px), DEFAULT_PIXEL_OMEGA_ARCSEC2)
        flags |= bit("NO_SOLID_ANGLE_MAP")
    # The target's pixel is always in the window (the window is centred on it).
    omega_t = float(omega[(ry - y0) * (x1 - x0) + (rx - x0)])
    spec = cal.cwave_cband(release, cutout.detector, yp, xp)
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
        psf_model=psf_model,
        psf=psf,
        psf_index=int(psf_index),
        release=release,
        flux_correction=correction,
        calibration_scale=scale,
        calib_epsf=calib_epsf,
        calib_flux_correction=calib_flxc,
    )


def pack(prepared: list[Prepared]) -> dict:
    """Pad a batch to common shapes for ``kernels.fit_batch`` and render every source's PSF
    stamp with its cutout's model (a batch may mix ``cube`` and ``epsf`` cutouts)."""
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
    }
    for k, p in enumerate(prepared):
        w = p.n_window
        for name in ("px", "py", "data", "var", "good", "kconv", "cwave", "cband"):
            out[name][k, :w] = getattr(p, name)
        out["sx"][k, : len(p.sx)] = p.sx
        out["sy"][k, : len(p.sy)] = p.sy
    out["stamps"] = kernels.render_batch_stamps(
        [p.psf_model for p in prepared], [p.psf for p in prepared], out["sx"], out["sy"],
        out["nsrc"],
    )  # fmt: skip
    return out


def _identity(path: str) -> dict:
    name = os.path.basename(path)
    try:
        obsid, det, _ = parse_level2_file_name(name)
    except ValueError:
        obsid, det = "", -1
    return {"file_name": name, "obs_id": obsid, "detector": det}


def _cutout_row(cutout: Cutout, release: str | None = None) -> dict:
    """Identity, time and position columns known once a cutout has been read."""
    row = _identity(cutout.path)
    row.update(
        obs_id=cutout.obs_id or row["obs_id"],
        release=release or ("qr3" if cutout.layout == "r7" else "qr2"),
        processing_version=cutout.version,
        psf_model=cutout.psf_model,
        detector=cutout.detector,
        mjd=cutout.mjd,
        exptime_s=cutout.exptime_s,
        x_cutout=cutout.x_parent - (cutout.cutout_origin or cutout.origin)[0],
        y_cutout=cutout.y_parent - (cutout.cutout_origin or cutout.origin)[1],
        x_parent=cutout.x_parent,
        y_parent=cutout.y_parent,
        psf_plane=cutout.plane,
    )
    return row


def failed_row(path: str, flag: str, reason: str, cutout: Cutout | None = None) -> dict:
    row = {**_identity(path), "release": ""} if cutout is None else _cutout_row(cutout)
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
    row = _cutout_row(c, p.release)
    row.update(
        release=p.release,
        psf_model=p.psf_model,
        psf_plane=p.psf_index,
        flux_correction=p.flux_correction,
        calibration_scale=p.calibration_scale,
        calib_epsf=p.calib_epsf,
        calib_flux_correction=p.calib_flux_correction,
        wavelength_um=res["wave"],
        bandwidth_um=res["band"],
        wavelength_source=p.wavelength_source,
        n_pix=res["nused"],
        masked_frac=1.0 - res["nused"] / p.n_window,
        psf_masked_frac=res["psf_masked"],
        pix_to_uJy=p.pix_to_uJy,
        zodi_subtracted=False,
        calib_spectral_wcs=calibration.calibration_id(p.release, "spectral_wcs", c.detector)
        if calibration
        else "",
        calib_sapm=calibration.calibration_id(p.release, "solid_angle_pixel_map", c.detector)
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


def _load(path, ra, dec, neighbours, calibration, settings, release=None):
    try:
        cutout = read_cutout(path, ra, dec)
    except CutoutError as exc:
        row = failed_row(str(path), exc.flag, str(exc))
        row["release"] = release or ""
        return None, row
    return _prepared(cutout, neighbours, calibration, settings, release)


def _prepared(cutout, neighbours, calibration, settings, release=None):
    try:
        return prepare(cutout, neighbours, calibration, settings, release), None
    except (ValueError, KeyError, OSError) as exc:
        row = failed_row(cutout.path, "READ_FAILED", f"{type(exc).__name__}: {exc}", cutout)
        return None, {**row, "release": release or row["release"]}


def measure_cutouts(
    paths,
    ra: float,
    dec: float,
    neighbours,
    calibration: CalibrationSet | None,
    settings: PhotometrySettings,
    threads: int = 1,
    releases=None,
) -> pd.DataFrame:
    """One row per cutout file (schema columns; source/name/measurement_id left to the caller).

    ``releases`` (one per path, from the discovery rows) picks each image's calibration
    products; by default the release follows the file layout."""
    paths = [str(p) for p in paths]
    rels = _releases(releases, len(paths))

    def load(i):
        return _load(paths[i], ra, dec, neighbours, calibration, settings, rels[i])

    if threads > 1 and len(paths) > 8:
        with ThreadPoolExecutor(threads) as pool:
            loaded = list(pool.map(load, range(len(paths))))
    else:
        loaded = [load(i) for i in range(len(paths))]
    return _fit_rows(loaded, calibration, settings, threads)


def measure_windows(
    cutouts: list[Cutout],
    neighbours,
    calibration: CalibrationSet | None,
    settings: PhotometrySettings,
    threads: int = 1,
    releases=None,
) -> pd.DataFrame:
    """As ``measure_cutouts`` for windows already in memory (``window.window_cutout``: the S3
    reader, the simulated backend, or a stamps file)."""
    rels = _releases(releases, len(cutouts))
    loaded = [
        _prepared(c, neighbours, calibration, settings, r)
        for c, r in zip(cutouts, rels, strict=True)
    ]
    return _fit_rows(loaded, calibration, settings, threads)


def _releases(releases, n: int) -> list:
    rels = list(releases) if releases is not None else [None] * n
    if len(rels) != n:
        raise ValueError(f"{len(rels)} releases for {n} cutouts")
    return rels


def _fit_rows(loaded, calibration, settings, threads) -> pd.DataFrame:
    """Fit every prepared window in one batch; failures keep their rows, in order."""
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
            batch["sy"], batch["nsrc"], batch["stamps"], float(core_r),
        )  # fmt: skip
    finally:
        numba.set_num_threads(previous)
    return dict(zip(kernels.RESULT_NAMES, out, strict=True))


def model_images(path, ra, dec, neighbours, calibration, settings) -> dict:
    """Data, model, residual, mask and PSF images of one fit window (for QA); ``path`` is a
    cutout file or a Cutout already in memory (a window)."""
    cutout = path if isinstance(path, Cutout) else read_cutout(path, ra, dec)
    p = prepare(cutout, neighbours, calibration, settings)
    r = reference.fit_one(
        p.px, p.py, p.data, p.var, p.good, p.kconv, p.cwave, p.cband, p.sx, p.sy,
        reference.stamp_renderer(p.psf_model, p.psf), settings.core_radius_px,
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
