"""Numba kernels of the forced PSF fit: render, normal equations, solve, metrics.

``fit_batch`` fits every cutout of a source in one call (``prange`` over cutouts, nogil).
The maths is spelled out once more in plain numpy in ``reference.py``; the tests hold the two
equal to 1e-6. Layout of the parameter vector: fluxes of ``S`` sources (target first, then
neighbours; unused slots inactive), then the background plane a + b·dx + c·dy with
(dx, dy) = pixel − target, so ``a`` is the background at the target.

PSF model (spec §1.6): the 10× oversampled plane is interpolated bilinearly at the centre of
each of the 10×10 sub-cells of a native pixel and summed, i.e. shifted to the subpixel
position and integrated over the pixel; its sum is the plane's sum (unit-normalised planes
give unit total flux).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

OVERSAMP = 10
PSF_SIZE = 101
PSF_CENTER = 50
STAMP = 11  # native pixels covering the whole ±5.05 px plane for |shift| <= 0.5
HALF = STAMP // 2

# Status codes of a fit.
OK = 0
ALL_MASKED = 1
FIT_FAILED = 2


@njit(cache=True, nogil=True)
def axis_weights(shift, m, lo, hi):
    """(STAMP, PSF_SIZE) bilinear + sub-cell integration weights along one axis."""
    m[:, :] = 0.0
    for r in range(STAMP):
        lo[r] = PSF_SIZE
        hi[r] = -1
        for a in range(OVERSAMP):
            pos = PSF_CENTER + OVERSAMP * (r - HALF - shift) - (OVERSAMP - 1) / 2.0 + a
            i0 = int(np.floor(pos))
            t = pos - i0
            if 0 <= i0 < PSF_SIZE:
                m[r, i0] += 1.0 - t
                lo[r] = min(lo[r], i0)
                hi[r] = max(hi[r], i0)
            if 0 <= i0 + 1 < PSF_SIZE:
                m[r, i0 + 1] += t
                lo[r] = min(lo[r], i0 + 1)
                hi[r] = max(hi[r], i0 + 1)


@njit(cache=True, nogil=True, fastmath=True)
def render_stamp(plane, dx, dy, out):
    """Pixel-integrated PSF on an STAMP×STAMP grid centred on the source's rounded pixel."""
    mx = np.empty((STAMP, PSF_SIZE))
    my = np.empty((STAMP, PSF_SIZE))
    lox = np.empty(STAMP, np.int64)
    hix = np.empty(STAMP, np.int64)
    loy = np.empty(STAMP, np.int64)
    hiy = np.empty(STAMP, np.int64)
    axis_weights(dx, mx, lox, hix)
    axis_weights(dy, my, loy, hiy)
    tmp = np.zeros((STAMP, PSF_SIZE))
    for r in range(STAMP):
        row = tmp[r]
        for i in range(loy[r], hiy[r] + 1):
            w = my[r, i]
            if w == 0.0:
                continue
            src = plane[i]
            for j in range(PSF_SIZE):
                row[j] += w * src[j]
    for r in range(STAMP):
        for c in range(STAMP):
            s = 0.0
            for j in range(lox[c], hix[c] + 1):
                s += tmp[r, j] * mx[c, j]
            out[r, c] = s


@njit(cache=True, nogil=True)
def _invert(a, out):
    """Gauss-Jordan inverse with partial pivoting; False if singular."""
    n = a.shape[0]
    w = a.copy()
    out[:, :] = 0.0
    for i in range(n):
        out[i, i] = 1.0
    for col in range(n):
        piv = col
        best = abs(w[col, col])
        for r in range(col + 1, n):
            if abs(w[r, col]) > best:
                best = abs(w[r, col])
                piv = r
        if best < 1e-12:
            return False
        if piv != col:
            for k in range(n):
                t = w[col, k]
                w[col, k] = w[piv, k]
                w[piv, k] = t
                t = out[col, k]
                out[col, k] = out[piv, k]
                out[piv, k] = t
        d = w[col, col]
        for k in range(n):
            w[col, k] /= d
            out[col, k] /= d
        for r in range(n):
            if r != col:
                f = w[r, col]
                if f != 0.0:
                    for k in range(n):
                        w[r, k] -= f * w[col, k]
                        out[r, k] -= f * out[col, k]
    return True


@njit(cache=True, nogil=True)
def _norm1(a):
    """Matrix 1-norm (largest absolute column sum)."""
    best = 0.0
    for c in range(a.shape[1]):
        t = 0.0
        for r in range(a.shape[0]):
            t += abs(a[r, c])
        best = max(best, t)
    return best


@njit(cache=True, nogil=True)
def fit_one(
    k, px, py, npix, data, var, good, kconv, cwave, cband, sx, sy, nsrc, psf, core_r,
    params, cov, active, status, chi2, dof, nused, psf_masked, psf_window, resid_core,
    model_core, var_core, sum_wm2, cond, wave, band,
):  # fmt: skip
    n = npix[k]
    S = sx.shape[1]
    P = S + 3
    A = np.zeros((n, P))
    stamp = np.empty((STAMP, STAMP))
    tot_t = 0.0
    win_t = 0.0
    bad_t = 0.0
    good_frac = np.zeros(S)
    for s in range(nsrc[k]):
        rx = np.floor(sx[k, s] + 0.5)
        ry = np.floor(sy[k, s] + 0.5)
        render_stamp(psf[k], sx[k, s] - rx, sy[k, s] - ry, stamp)
        tot = 0.0
        for r in range(STAMP):
            for c in range(STAMP):
                tot += stamp[r, c]
        gsum = 0.0
        for m in range(n):
            c = int(px[k, m] - rx) + HALF
            r = int(py[k, m] - ry) + HALF
            if 0 <= r < STAMP and 0 <= c < STAMP:
                v = stamp[r, c]
                A[m, s] = v * kconv[k, m]
                if good[k, m]:
                    gsum += v
                if s == 0:
                    win_t += v
                    if not good[k, m]:
                        bad_t += v
        if s == 0:
            tot_t = tot
        good_frac[s] = gsum / tot if tot > 0 else 0.0
    x0 = sx[k, 0]
    y0 = sy[k, 0]
    for m in range(n):
        A[m, S] = 1.0
        A[m, S + 1] = px[k, m] - x0
        A[m, S + 2] = py[k, m] - y0
    psf_window[k] = win_t / tot_t if tot_t > 0 else 0.0
    psf_masked[k] = bad_t / win_t if win_t > 0 else 1.0

    # Which parameters are fitted: the target and background always; a neighbour only if
    # enough of its PSF lands on usable pixels.
    act = np.zeros(P, np.bool_)
    for s in range(nsrc[k]):
        act[s] = good_frac[s] >= 0.05 or s == 0
    act[S] = True
    act[S + 1] = True
    act[S + 2] = True
    n_act = 0
    for i in range(P):
        if act[i]:
            n_act += 1
    n_good = 0
    for m in range(n):
        if good[k, m]:
            n_good += 1
    nused[k] = n_good
    for i in range(P):
        active[k, i] = act[i]
    if good_frac[0] < 0.05 or n_good <= n_act:
        status[k] = ALL_MASKED
        return

    N = np.zeros((P, P))
    b = np.zeros(P)
    for m in range(n):
        if not good[k, m]:
            continue
        w = 1.0 / var[k, m]
        d = data[k, m]
        for i in range(P):
            if not act[i]:
                continue
            ai = A[m, i] * w
            b[i] += ai * d
            for j in range(i, P):
                if act[j]:
                    N[i, j] += ai * A[m, j]
    for i in range(P):
        for j in range(i):
            N[i, j] = N[j, i]
    # Scale to unit diagonal: unit-free conditioning and a better-behaved inverse.
    dsc = np.zeros(P)
    for i in range(P):
        if act[i]:
            if N[i, i] <= 0.0:
                status[k] = FIT_FAILED
                return
            dsc[i] = 1.0 / np.sqrt(N[i, i])
    C = np.zeros((n_act, n_act))
    idx = np.empty(n_act, np.int64)
    q = 0
    for i in range(P):
        if act[i]:
            idx[q] = i
            q += 1
    for a in range(n_act):
        for c in range(n_act):
            C[a, c] = N[idx[a], idx[c]] * dsc[idx[a]] * dsc[idx[c]]
    Ci = np.empty((n_act, n_act))
    if not _invert(C, Ci):
        status[k] = FIT_FAILED
        cond[k] = np.inf
        return
    # 1-norm condition number from the inverse we need anyway (no eigen-decomposition).
    cond[k] = _norm1(C) * _norm1(Ci)
    for i in range(P):
        params[k, i] = np.nan
        for j in range(P):
            cov[k, i, j] = np.nan
    for a in range(n_act):
        for c in range(n_act):
            cov[k, idx[a], idx[c]] = Ci[a, c] * dsc[idx[a]] * dsc[idx[c]]
    for a in range(n_act):
        s = 0.0
        for c in range(n_act):
            s += cov[k, idx[a], idx[c]] * b[idx[c]]
        params[k, idx[a]] = s

    c2 = 0.0
    rc = 0.0
    mc = 0.0
    vc = 0.0
    wm2 = 0.0
    uw = 0.0
    uwl = 0.0
    uwb = 0.0
    f0 = params[k, 0]
    r2 = core_r * core_r
    for m in range(n):
        if not good[k, m]:
            continue
        model = 0.0
        for a in range(n_act):
            model += A[m, idx[a]] * params[k, idx[a]]
        w = 1.0 / var[k, m]
        res = data[k, m] - model
        c2 += w * res * res
        mt = f0 * A[m, 0]
        wm2 += w * mt * mt
        u = w * A[m, 0] * A[m, 0]
        uw += u
        uwl += u * cwave[k, m]
        uwb += u * cband[k, m]
        ddx = px[k, m] - x0
        ddy = py[k, m] - y0
        if ddx * ddx + ddy * ddy <= r2:
            rc += res
            mc += mt
            vc += var[k, m]
    chi2[k] = c2
    dof[k] = n_good - n_act
    resid_core[k] = rc
    model_core[k] = mc
    var_core[k] = vc
    sum_wm2[k] = wm2
    wave[k] = uwl / uw if uw > 0 else np.nan
    band[k] = uwb / uw if uw > 0 else np.nan
    status[k] = OK


@njit(cache=True, nogil=True, parallel=True)
def fit_batch(px, py, npix, data, var, good, kconv, cwave, cband, sx, sy, nsrc, psf, core_r):
    """Fit every cutout of a batch; returns a tuple of per-cutout result arrays."""
    N = px.shape[0]
    P = sx.shape[1] + 3
    params = np.full((N, P), np.nan)
    cov = np.full((N, P, P), np.nan)
    active = np.zeros((N, P), np.bool_)
    status = np.zeros(N, np.int64)
    chi2 = np.full(N, np.nan)
    dof = np.zeros(N, np.int64)
    nused = np.zeros(N, np.int64)
    psf_masked = np.full(N, np.nan)
    psf_window = np.full(N, np.nan)
    resid_core = np.full(N, np.nan)
    model_core = np.full(N, np.nan)
    var_core = np.full(N, np.nan)
    sum_wm2 = np.full(N, np.nan)
    cond = np.full(N, np.nan)
    wave = np.full(N, np.nan)
    band = np.full(N, np.nan)
    for k in prange(N):
        fit_one(
            k, px, py, npix, data, var, good, kconv, cwave, cband, sx, sy, nsrc, psf, core_r,
            params, cov, active, status, chi2, dof, nused, psf_masked, psf_window, resid_core,
            model_core, var_core, sum_wm2, cond, wave, band,
        )  # fmt: skip
    return (
        params, cov, active, status, chi2, dof, nused, psf_masked, psf_window, resid_core,
        model_core, var_core, sum_wm2, cond, wave, band,
    )  # fmt: skip


RESULT_NAMES = (
    "params", "cov", "active", "status", "chi2", "dof", "nused", "psf_masked", "psf_window",
    "resid_core", "model_core", "var_core", "sum_wm2", "cond", "wave", "band",
)  # fmt: skip
