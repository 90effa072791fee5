"""Numba kernels of the forced PSF fit: render, normal equations, solve, metrics.

Rendering and fitting are separate steps. ``render_cube_stamps`` / ``render_epsf_stamps`` turn
each source's PSF into an STAMP×STAMP native-pixel stamp (pixel (HALF, HALF) = the source's
rounded pixel ``floor(x + 0.5)``); ``fit_batch`` fits every cutout of a source from those stamps
in one call (``prange`` over cutouts, nogil), so one batch may mix PSF models. The maths is
spelled out once more in plain numpy in ``reference.py``; the tests hold the two equal to 1e-6.
Layout of the parameter vector: fluxes of ``S`` sources (target first, then neighbours; unused
slots inactive), then the background plane a + b·dx + c·dy with (dx, dy) = pixel − target, so
``a`` is the background at the target.

PSF models:

- ``cube`` (QR2, spec §1.6): the 10× oversampled optical plane is interpolated bilinearly at the
  centre of each of the 10×10 sub-cells of a native pixel and summed, i.e. shifted to the
  subpixel position and integrated over the pixel; the stamp sums to the plane's sum
  (unit-normalised planes give unit total flux). Not renormalised.
- ``epsf`` (R7, spec §8.4): the 33×33 effective PSF at 5× already includes the pixel response,
  so it is **point-sampled** at native pixel centres (offset (u, v) native px ↔ array coordinate
  (16 + 5v, 16 + 5u)), never integrated over pixels again. Values are cubic B-spline
  interpolation with scipy.ndimage semantics (order 3, mode 'mirror', coefficients from
  ``epsf_coefficients``), zero outside the array; each stamp is then normalised to sum 1
  because the file's normalisation is unconfirmed.

Speed: a cube stamp reads one 101×101 plane (the planes stay float32, as in the files, which
halves the memory traffic that bounds the rendering); an ePSF stamp costs 4×4 taps per pixel
on ~7×7 pixels. A fit loops over ~170 window pixels a few times; the pixel loops keep one
parameter's values contiguous so they vectorise. ``FASTMATH`` allows reassociation and FMA
contraction but not the no-NaN/no-inf assumptions: masked pixels may hold NaN in the input
arrays. The ePSF rendering runs without it, so its sample coordinates (and which samples fall
inside the array) are bit-identical to the numpy reference's.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import njit, prange
from scipy.ndimage import spline_filter1d

from spxflow.format import EPSF_CENTER, EPSF_OVERSAMP, EPSF_SIZE

OVERSAMP = 10
PSF_SIZE = 101
PSF_CENTER = 50
STAMP = 11  # native pixels covering the whole ±5.05 px plane (ePSF: ±3.2 px) for |shift| <= 0.5
HALF = STAMP // 2
FASTMATH = {"contract", "reassoc", "nsz"}

# Status codes of a fit.
OK = 0
ALL_MASKED = 1
FIT_FAILED = 2


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _block_start(shift):
    """First plane index under stamp cell 0 along one axis, and the interpolation weight.

    The sub-cell centres of native cell r sit at ``start + 10 r + a`` (a = 0..9) with one
    fractional part ``t``, so cell r weighs plane index ``start + 10 r`` by 1 − t, the next
    nine by 1 and ``start + 10 r + 10`` by t (bilinear interpolation summed over sub-cells).
    """
    pos = PSF_CENTER + OVERSAMP * (-HALF - shift) - (OVERSAMP - 1) / 2.0
    start = int(np.floor(pos))
    return start, pos - start


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _block_weight(q, t):
    if q == 0:
        return 1.0 - t
    if q == OVERSAMP:
        return t
    return 1.0


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def render_into(plane, dx, dy, out, tmp):
    """Pixel-integrated PSF on an STAMP×STAMP grid centred on the source's rounded pixel.

    ``tmp`` is (STAMP, PSF_SIZE) scratch: the plane summed over each stamp row's plane rows.
    """
    i0, ty = _block_start(dy)
    uy = 1.0 - ty
    for r in range(STAMP):
        lo = i0 + OVERSAMP * r
        if lo >= 0 and lo + OVERSAMP < PSF_SIZE:
            # Interior rows (all 11 plane rows exist), unrolled for OVERSAMP = 10: one pass over
            # the plane, one store per column.
            for j in range(PSF_SIZE):
                s = uy * plane[lo, j]
                s += ty * plane[lo + OVERSAMP, j]
                s += plane[lo + 1, j]
                s += plane[lo + 2, j]
                s += plane[lo + 3, j]
                s += plane[lo + 4, j]
                s += plane[lo + 5, j]
                s += plane[lo + 6, j]
                s += plane[lo + 7, j]
                s += plane[lo + 8, j]
                s += plane[lo + 9, j]
                tmp[r, j] = s
        else:
            for j in range(PSF_SIZE):
                tmp[r, j] = 0.0
            for q in range(OVERSAMP + 1):
                i = lo + q
                if 0 <= i < PSF_SIZE:
                    w = _block_weight(q, ty)
                    for j in range(PSF_SIZE):
                        tmp[r, j] += w * plane[i, j]
    j0, tx = _block_start(dx)
    for r in range(STAMP):
        for c in range(STAMP):
            lo = j0 + OVERSAMP * c
            s = 0.0
            for q in range(OVERSAMP + 1):
                j = lo + q
                if 0 <= j < PSF_SIZE:
                    s += _block_weight(q, tx) * tmp[r, j]
            out[r, c] = s


@njit(cache=True, nogil=True)
def render_stamp(plane, dx, dy, out):
    """``render_into`` with its own scratch (for callers outside the batch)."""
    render_into(plane, dx, dy, out, np.empty((STAMP, PSF_SIZE)))


@njit(cache=True, nogil=True)
def render_cube_stamps(psf, sx, sy, nsrc):
    """(N, S, STAMP, STAMP) pixel-integrated stamps of each cutout's sources from its cube
    plane ``psf[k]`` (N, 101, 101; float32 as in the files); unused source slots are zero."""
    N, S = sx.shape
    out = np.zeros((N, S, STAMP, STAMP))
    tmp = np.empty((STAMP, PSF_SIZE))
    for k in range(N):
        for s in range(nsrc[k]):
            rx = np.floor(sx[k, s] + 0.5)
            ry = np.floor(sy[k, s] + 0.5)
            render_into(psf[k], sx[k, s] - rx, sy[k, s] - ry, out[k, s], tmp)
    return out


@functools.cache
def _epsf_prefilter_matrix() -> np.ndarray:
    """scipy's 1-D cubic B-spline prefilter ('mirror') along a 33-sample axis, as a matrix."""
    eye = np.eye(EPSF_SIZE)
    return spline_filter1d(eye, 3, axis=0, output=np.float64, mode="mirror")


def epsf_coefficients(arr):
    """Cubic B-spline coefficients of an ePSF (33×33) or a stack of them (..., 33, 33).

    ``scipy.ndimage.spline_filter(a, order=3, mode='mirror')`` of each 33×33 array, float64
    (equal to rounding, ~1e-15): the filter is linear and separable, so it is applied as
    ``F @ a @ F.T`` with F = scipy's ``spline_filter1d`` of the identity, 3× faster than
    filtering line by line. Call once per ePSF, outside Numba; ``render_epsf_stamps`` then only
    evaluates the spline.
    """
    a = np.asarray(arr, dtype=np.float64)
    if a.shape[-2:] != (EPSF_SIZE, EPSF_SIZE):
        raise ValueError(f"an ePSF is {EPSF_SIZE}x{EPSF_SIZE}, got shape {a.shape}")
    f = _epsf_prefilter_matrix()
    return np.ascontiguousarray(f @ a @ f.T)


@njit(cache=True, nogil=True)
def _bspline_axis(shift, idx, wt):
    """Cubic B-spline taps of each stamp cell along one axis: cell r samples the ePSF at array
    coordinate ``EPSF_CENTER + EPSF_OVERSAMP * ((r - HALF) - shift)``; ``idx[r]`` holds the 4
    coefficient indices (mirror-reflected at the edges, scipy's 'mirror'), ``wt[r]`` their
    weights, all zero when the coordinate is outside [0, EPSF_SIZE - 1]."""
    last = EPSF_SIZE - 1
    for r in range(STAMP):
        pos = EPSF_CENTER + EPSF_OVERSAMP * ((r - HALF) - shift)
        if not (0.0 <= pos <= last):
            for q in range(4):
                idx[r, q] = 0
                wt[r, q] = 0.0
            continue
        f = np.floor(pos)
        t = pos - f
        start = int(f) - 1
        for q in range(4):
            i = start + q
            if i < 0:
                i = -i
            elif i > last:
                i = 2 * last - i
            idx[r, q] = i
        u = 1.0 - t
        t2 = t * t
        t3 = t2 * t
        wt[r, 0] = u * u * u / 6.0
        wt[r, 1] = (3.0 * t3 - 6.0 * t2 + 4.0) / 6.0
        wt[r, 2] = (-3.0 * t3 + 3.0 * t2 + 3.0 * t + 1.0) / 6.0
        wt[r, 3] = t3 / 6.0


@njit(cache=True, nogil=True)
def render_epsf_into(coef, dx, dy, out, normalise=True):
    """ePSF point-sampled at the centres of the STAMP×STAMP pixels around the rounded pixel of
    a source offset (dx, dy) from it; ``coef`` from ``epsf_coefficients``. Pixel (r, c) sits at
    native offset (c − HALF − dx, r − HALF − dy) from the source. Normalised to sum 1 (if > 0)."""
    iy = np.empty((STAMP, 4), np.int64)
    wy = np.empty((STAMP, 4))
    ix = np.empty((STAMP, 4), np.int64)
    wx = np.empty((STAMP, 4))
    _bspline_axis(dy, iy, wy)
    _bspline_axis(dx, ix, wx)
    tot = 0.0
    for r in range(STAMP):
        for c in range(STAMP):
            out[r, c] = 0.0
        if wy[r, 1] == 0.0:  # outside the array (an inside point always has w1 >= 1/6)
            continue
        for c in range(STAMP):
            if wx[c, 1] == 0.0:
                continue
            v = 0.0
            for a in range(4):
                row = coef[iy[r, a]]
                h = 0.0
                for b in range(4):
                    h += wx[c, b] * row[ix[c, b]]
                v += wy[r, a] * h
            out[r, c] = v
            tot += v
    if normalise and tot > 0.0:
        for r in range(STAMP):
            for c in range(STAMP):
                out[r, c] /= tot


@njit(cache=True, nogil=True)
def render_epsf_stamps(coef, sx, sy, nsrc, normalise=True):
    """(N, S, STAMP, STAMP) point-sampled ePSF stamps of each cutout's sources from its spline
    coefficients ``coef[k]`` (N, 33, 33; ``epsf_coefficients``); unused slots are zero."""
    N, S = sx.shape
    out = np.zeros((N, S, STAMP, STAMP))
    for k in range(N):
        for s in range(nsrc[k]):
            rx = np.floor(sx[k, s] + 0.5)
            ry = np.floor(sy[k, s] + 0.5)
            render_epsf_into(coef[k], sx[k, s] - rx, sy[k, s] - ry, out[k, s], normalise)
    return out


PSF_MODELS = ("cube", "epsf")


def render_batch_stamps(psf_models, psfs, sx, sy, nsrc):
    """Stamps (N, S, STAMP, STAMP) of a batch that may mix PSF models.

    ``psf_models[k]`` is ``"cube"`` (``psfs[k]`` a 101×101 plane) or ``"epsf"`` (a 33×33
    ePSF); each subset is rendered by its kernel and scattered back into cutout order.
    """
    models = np.asarray(psf_models, dtype=object)
    bad = sorted({str(m) for m in models if m not in PSF_MODELS})
    if bad:
        raise ValueError(f"unknown PSF model(s) {bad}; known: {list(PSF_MODELS)}")
    N, S = sx.shape
    stamps = np.zeros((N, S, STAMP, STAMP))
    for model in PSF_MODELS:
        rows = np.flatnonzero(models == model)
        if len(rows) == 0:
            continue
        if model == "cube":
            # float32 as in every SPHEREx file (exact): half the memory traffic of rendering.
            psf = np.stack([psfs[k] for k in rows], dtype=np.float32)
            sub = render_cube_stamps(psf, sx[rows], sy[rows], nsrc[rows])
        else:
            coef = epsf_coefficients(np.stack([psfs[k] for k in rows]))
            sub = render_epsf_stamps(coef, sx[rows], sy[rows], nsrc[rows])
        if len(rows) == N:
            return sub
        stamps[rows] = sub
    return stamps


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


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def fit_one(
    k, px, py, npix, data, var, good, kconv, cwave, cband, sx, sy, nsrc, stamps, core_r,
    params, cov, active, status, chi2, dof, nused, psf_masked, psf_window, resid_core,
    model_core, var_core, sum_wm2, cond, wave, band,
):  # fmt: skip
    n = npix[k]
    S = sx.shape[1]
    P = S + 3
    # Design matrix with one row per parameter (contiguous over pixels), weights and data with
    # masked pixels zeroed, so the pixel loops below are plain vectorisable sums.
    At = np.zeros((P, n))
    w = np.empty(n)
    d = np.empty(n)
    n_good = 0
    for m in range(n):
        if good[k, m]:
            w[m] = 1.0 / var[k, m]
            d[m] = data[k, m]
            n_good += 1
        else:
            w[m] = 0.0
            d[m] = 0.0
    tot_t = 0.0
    win_t = 0.0
    bad_t = 0.0
    act = active[k]  # which parameters are fitted, written straight into the result
    good_t = 0.0
    for s in range(nsrc[k]):
        rx = np.floor(sx[k, s] + 0.5)
        ry = np.floor(sy[k, s] + 0.5)
        stamp = stamps[k, s]
        tot = 0.0
        for r in range(STAMP):
            for c in range(STAMP):
                tot += stamp[r, c]
        gsum = 0.0
        wsum = 0.0
        bsum = 0.0
        for m in range(n):
            c = int(px[k, m] - rx) + HALF
            r = int(py[k, m] - ry) + HALF
            if 0 <= r < STAMP and 0 <= c < STAMP:
                v = stamp[r, c]
                At[s, m] = v * kconv[k, m]
                wsum += v
                if good[k, m]:
                    gsum += v
                else:
                    bsum += v
        gf = gsum / tot if tot > 0 else 0.0
        if s == 0:
            tot_t, win_t, bad_t, good_t = tot, wsum, bsum, gf
        # A neighbour is fitted only if enough of its PSF lands on usable pixels.
        act[s] = gf >= 0.05 or s == 0
    x0 = sx[k, 0]
    y0 = sy[k, 0]
    for m in range(n):
        At[S, m] = 1.0
        At[S + 1, m] = px[k, m] - x0
        At[S + 2, m] = py[k, m] - y0
    psf_window[k] = win_t / tot_t if tot_t > 0 else 0.0
    psf_masked[k] = bad_t / win_t if win_t > 0 else 1.0
    act[S] = True
    act[S + 1] = True
    act[S + 2] = True
    idx = np.empty(P, np.int64)  # the active parameters, in order
    n_act = 0
    for i in range(P):
        if act[i]:
            idx[n_act] = i
            n_act += 1
    nused[k] = n_good
    if good_t < 0.05 or n_good <= n_act:
        status[k] = ALL_MASKED
        return

    # Normal equations of the active parameters, scaled to unit diagonal (unit-free
    # conditioning and a better-behaved inverse).
    C = np.empty((n_act, n_act))
    b = np.empty(n_act)
    dsc = np.empty(n_act)
    for a in range(n_act):
        ra = At[idx[a]]
        sb = 0.0
        for m in range(n):
            sb += ra[m] * w[m] * d[m]
        b[a] = sb
        for c in range(a, n_act):
            rowc = At[idx[c]]
            sn = 0.0
            for m in range(n):
                sn += ra[m] * w[m] * rowc[m]
            C[a, c] = sn
            C[c, a] = sn
    for a in range(n_act):
        if C[a, a] <= 0.0:
            status[k] = FIT_FAILED
            return
        dsc[a] = 1.0 / np.sqrt(C[a, a])
    for a in range(n_act):
        for c in range(n_act):
            C[a, c] *= dsc[a] * dsc[c]
    Ci = np.empty((n_act, n_act))
    if not _invert(C, Ci):
        status[k] = FIT_FAILED
        cond[k] = np.inf
        return
    # 1-norm condition number from the inverse we need anyway (no eigen-decomposition).
    cond[k] = _norm1(C) * _norm1(Ci)
    for a in range(n_act):
        for c in range(n_act):
            cov[k, idx[a], idx[c]] = Ci[a, c] * dsc[a] * dsc[c]
    for a in range(n_act):
        pa = 0.0
        for c in range(n_act):
            pa += cov[k, idx[a], idx[c]] * b[c]
        params[k, idx[a]] = pa

    # Residual metrics over the good pixels (d and w are zero elsewhere).
    model = np.zeros(n)
    for a in range(n_act):
        pa = params[k, idx[a]]
        ra = At[idx[a]]
        for m in range(n):
            model[m] += ra[m] * pa
    f0 = params[k, 0]
    r2 = core_r * core_r
    c2 = 0.0
    rc = 0.0
    mc = 0.0
    vc = 0.0
    wm2 = 0.0
    uw = 0.0
    uwl = 0.0
    uwb = 0.0
    for m in range(n):
        if good[k, m]:
            res = d[m] - model[m]
            c2 += w[m] * res * res
            a0 = At[0, m]
            mt = f0 * a0
            wm2 += w[m] * mt * mt
            u = w[m] * a0 * a0
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
def fit_batch(px, py, npix, data, var, good, kconv, cwave, cband, sx, sy, nsrc, stamps, core_r):
    """Fit every cutout of a batch; returns a tuple of per-cutout result arrays.

    ``stamps`` (N, S, STAMP, STAMP): each source's rendered PSF (``render_cube_stamps``,
    ``render_epsf_stamps`` or ``render_batch_stamps``), centred on its rounded pixel.
    """
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
            k, px, py, npix, data, var, good, kconv, cwave, cband, sx, sy, nsrc, stamps, core_r,
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
