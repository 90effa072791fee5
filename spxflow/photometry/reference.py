"""Plain-numpy reference of the kernels in ``kernels.py`` (same maths, no Numba).

Used by the tests (held equal to the kernels to 1e-6), by ``model_images`` for QA stamps
(which also wants the model and residual images) and as a slow fallback nobody needs.

The ePSF path is independent of the kernels' spline code: ``scipy.ndimage.map_coordinates``
(order 3, mode 'mirror', prefilter) instead of the hand-written B-spline taps.
``integrate_epsf_stamp`` is a deliberately WRONG model kept for the accuracy tests.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy.ndimage import map_coordinates

from spxflow.format import EPSF_CENTER, EPSF_OVERSAMP, EPSF_SIZE
from spxflow.photometry.kernels import ALL_MASKED, FIT_FAILED, HALF, OK, OVERSAMP, PSF_CENTER, STAMP


def axis_matrix(shift: float) -> np.ndarray:
    """(STAMP, 101) matrix M such that stamp = My @ plane @ Mx.T."""
    r = np.arange(STAMP)[:, None]
    a = np.arange(OVERSAMP)[None, :]
    pos = PSF_CENTER + OVERSAMP * (r - HALF - shift) - (OVERSAMP - 1) / 2.0 + a
    i0 = np.floor(pos).astype(int)
    t = pos - i0
    m = np.zeros((STAMP, 101))
    for lo, wt in ((i0, 1.0 - t), (i0 + 1, t)):
        ok = (lo >= 0) & (lo < 101)
        rows = np.broadcast_to(r, lo.shape)
        np.add.at(m, (rows[ok], lo[ok]), wt[ok])
    return m


def render_cube_stamp(plane: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """Cube model (§1.6): the plane shifted by (dx, dy) and integrated over native pixels."""
    return axis_matrix(dy) @ np.asarray(plane, dtype=np.float64) @ axis_matrix(dx).T


def _epsf_samples(arr, ox: np.ndarray, oy: np.ndarray) -> np.ndarray:
    """ePSF at native offsets (ox, oy) from its centre (cubic B-spline, 'mirror'), 0 outside."""
    row = EPSF_CENTER + EPSF_OVERSAMP * oy
    col = EPSF_CENTER + EPSF_OVERSAMP * ox
    v = map_coordinates(
        np.asarray(arr, dtype=np.float64), [row.ravel(), col.ravel()], order=3, mode="mirror",
        prefilter=True,
    ).reshape(row.shape)  # fmt: skip
    inside = (row >= 0) & (row <= EPSF_SIZE - 1) & (col >= 0) & (col <= EPSF_SIZE - 1)
    return np.where(inside, v, 0.0)


def _unit_sum(stamp: np.ndarray) -> np.ndarray:
    tot = stamp.sum()
    return stamp / tot if tot > 0 else stamp


def render_epsf_stamp(arr, dx: float, dy: float, normalise: bool = True) -> np.ndarray:
    """ePSF model (§8.4): the effective PSF point-sampled at the native pixel centres.

    Stamp pixel (r, c) is at native offset (c − HALF − dx, r − HALF − dy) from the source;
    normalised to sum 1 (unless ``normalise`` is False) since the file's normalisation is
    unconfirmed.
    """
    off = np.arange(STAMP) - HALF
    oy, ox = np.meshgrid(off - dy, off - dx, indexing="ij")
    v = _epsf_samples(arr, ox, oy)
    return _unit_sum(v) if normalise else v


def integrate_epsf_stamp(arr, dx: float, dy: float, sub: int = 5) -> np.ndarray:
    """WRONG ON PURPOSE: the ePSF integrated over each native pixel again (mean of sub × sub
    point samples per pixel, normalised to sum 1).

    The ePSF already includes the pixel response, so this convolves with the pixel twice
    (+1/12 px² variance; spec §8.4: ~30 % in N_eff, +4–13 % central residuals). Kept only so
    the accuracy tests can show that it misses their targets; never use it to measure.
    """
    off = np.arange(STAMP) - HALF
    fine = (np.arange(sub) + 0.5) / sub - 0.5  # sub-cell centres within a pixel
    oy = (off - dy)[:, None, None, None] + fine[None, :, None, None]
    ox = (off - dx)[None, None, :, None] + fine[None, None, None, :]
    oy, ox = np.broadcast_arrays(oy, ox)
    v = _epsf_samples(arr, ox, oy).mean(axis=(1, 3))
    return _unit_sum(v)


def epsf_from_plane(plane: np.ndarray) -> np.ndarray:
    """The 33×33, 5× effective PSF of a cube plane (tests, benchmarks): sample (i, j) is the
    plane's pixel-integrated PSF (``render_cube_stamp``) at native offset ((j − 16)/5,
    (i − 16)/5), so both models predict the same pixel values at the ePSF's sample phases.
    Sums to ≈ 25 × the plane sum (each of the 25 phase sub-grids sums to ≈ the plane sum)."""
    u = (np.arange(EPSF_SIZE) - EPSF_CENTER) / EPSF_OVERSAMP
    k = np.floor(u + 0.5)
    # Offset u = stamp pixel HALF + k of a source shifted by k − u, one axis-matrix row each.
    m = np.stack([axis_matrix(kk - uu)[HALF + int(kk)] for uu, kk in zip(u, k, strict=True)])
    return m @ np.asarray(plane, dtype=np.float64) @ m.T


def stamp_renderer(psf_model: str, psf: np.ndarray):
    """``render(dx, dy) -> stamp`` of a PSF model: ``"cube"`` (a 101×101 plane) or ``"epsf"``
    (a 33×33 ePSF), for ``fit_one`` and ``source_columns``."""
    if psf_model == "cube":
        return functools.partial(render_cube_stamp, psf)
    if psf_model == "epsf":
        return functools.partial(render_epsf_stamp, psf)
    raise ValueError(f"unknown PSF model {psf_model!r}; known: ['cube', 'epsf']")


def _stamp_of(stamps, s: int, dx: float, dy: float) -> np.ndarray:
    if callable(stamps):
        return stamps(dx, dy)
    return stamps[s]


def _check_stamps(stamps, n_src: int) -> None:
    if callable(stamps):
        return
    shape = np.shape(stamps)
    if len(shape) != 3 or shape[0] < n_src or shape[1:] != (STAMP, STAMP):
        raise TypeError(
            "stamps must be a render(dx, dy) callable (see stamp_renderer) or an array of "
            f"(n_src, {STAMP}, {STAMP}) rendered stamps; got shape {shape}"
        )


def source_columns(px, py, kconv, sx, sy, stamps):
    """Raw PSF columns (stamp values at the window pixels) of each source, and each stamp's
    total. ``stamps``: a ``render(dx, dy)`` callable or the sources' rendered stamps."""
    _check_stamps(stamps, len(sx))
    cols = np.zeros((len(px), len(sx)))
    totals = np.zeros(len(sx))
    for s, (x, y) in enumerate(zip(sx, sy, strict=True)):
        rx, ry = np.floor(x + 0.5), np.floor(y + 0.5)
        stamp = _stamp_of(stamps, s, x - rx, y - ry)
        totals[s] = stamp.sum()
        c = (px - rx).astype(int) + HALF
        r = (py - ry).astype(int) + HALF
        inside = (c >= 0) & (c < STAMP) & (r >= 0) & (r < STAMP)
        cols[inside, s] = stamp[r[inside], c[inside]]
    return cols, totals


def fit_one(px, py, data, var, good, kconv, cwave, cband, sx, sy, stamps, core_r, n_slots=None):
    """Fit one cutout (arrays over its window pixels; ``sx/sy`` target first).

    ``stamps``: the PSF model as a ``render(dx, dy) -> (STAMP, STAMP)`` callable, e.g.
    ``stamp_renderer("epsf", arr)`` (any model, also ``integrate_epsf_stamp``), or the sources'
    already rendered stamps (n_src, STAMP, STAMP), each centred on its source's rounded pixel.
    """
    S = n_slots or len(sx)
    P = S + 3
    good = np.asarray(good, bool)
    raw, totals = source_columns(px, py, kconv, sx, sy, stamps)
    A = np.zeros((len(px), P))
    A[:, : len(sx)] = raw * kconv[:, None]
    A[:, S] = 1.0
    A[:, S + 1] = px - sx[0]
    A[:, S + 2] = py - sy[0]
    win_t = raw[:, 0].sum()
    out = {
        "params": np.full(P, np.nan),
        "cov": np.full((P, P), np.nan),
        "psf_window": win_t / totals[0] if totals[0] > 0 else 0.0,
        "psf_masked": raw[~good, 0].sum() / win_t if win_t > 0 else 1.0,
        "nused": int(good.sum()),
        "A": A,
    }
    good_frac = np.where(totals > 0, raw[good].sum(axis=0) / np.where(totals > 0, totals, 1), 0)
    act = np.zeros(P, bool)
    act[: len(sx)] = good_frac >= 0.05
    act[0] = True
    act[S:] = True
    out["active"] = act
    if good_frac[0] < 0.05 or good.sum() <= act.sum():
        out["status"] = ALL_MASKED
        return out
    w = 1.0 / var[good]
    Ag = A[good][:, act]
    N = Ag.T @ (Ag * w[:, None])
    b = Ag.T @ (w * data[good])
    dsc = 1.0 / np.sqrt(np.diag(N))
    C = N * dsc[:, None] * dsc[None, :]
    try:
        Ci = np.linalg.inv(C)
    except np.linalg.LinAlgError:
        out["status"] = FIT_FAILED
        out["cond"] = np.inf
        return out
    out["cond"] = np.linalg.norm(C, 1) * np.linalg.norm(Ci, 1)
    cov = Ci * dsc[:, None] * dsc[None, :]
    p = cov @ b
    out["params"][act] = p
    out["cov"][np.ix_(act, act)] = cov
    model = A[:, act] @ p
    res = data - model
    mt = p[0] * A[:, 0]
    core = (px - sx[0]) ** 2 + (py - sy[0]) ** 2 <= core_r**2
    gc = good & core
    u = w * A[good, 0] ** 2
    out.update(
        status=OK,
        chi2=float(np.sum(w * res[good] ** 2)),
        dof=int(good.sum() - act.sum()),
        resid_core=float(res[gc].sum()),
        model_core=float(mt[gc].sum()),
        var_core=float(var[gc].sum()),
        sum_wm2=float(np.sum(w * mt[good] ** 2)),
        wave=float(np.sum(u * cwave[good]) / u.sum()),
        band=float(np.sum(u * cband[good]) / u.sum()),
        model=model,
        target_model=mt,
    )
    return out
