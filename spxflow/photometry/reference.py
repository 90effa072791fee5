"""Plain-numpy reference of the kernels in ``kernels.py`` (same maths, no Numba).

Used by the tests (held equal to the kernels to 1e-6), by ``model_images`` for QA stamps
(which also wants the model and residual images) and as a slow fallback nobody needs.
"""

from __future__ import annotations

import numpy as np

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


def render_stamp(plane: np.ndarray, dx: float, dy: float) -> np.ndarray:
    return axis_matrix(dy) @ np.asarray(plane, dtype=np.float64) @ axis_matrix(dx).T


def source_columns(px, py, kconv, sx, sy, psf):
    """Design-matrix columns (MJy/sr per µJy) of each source, and each stamp's total."""
    cols = np.zeros((len(px), len(sx)))
    totals = np.zeros(len(sx))
    for s, (x, y) in enumerate(zip(sx, sy, strict=True)):
        rx, ry = np.floor(x + 0.5), np.floor(y + 0.5)
        stamp = render_stamp(psf, x - rx, y - ry)
        totals[s] = stamp.sum()
        c = (px - rx).astype(int) + HALF
        r = (py - ry).astype(int) + HALF
        inside = (c >= 0) & (c < STAMP) & (r >= 0) & (r < STAMP)
        cols[inside, s] = stamp[r[inside], c[inside]]
    return cols, totals


def fit_one(px, py, data, var, good, kconv, cwave, cband, sx, sy, psf, core_r, n_slots=None):
    """Fit one cutout (arrays over its window pixels; ``sx/sy`` target first)."""
    S = n_slots or len(sx)
    P = S + 3
    good = np.asarray(good, bool)
    raw, totals = source_columns(px, py, kconv, sx, sy, psf)
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
