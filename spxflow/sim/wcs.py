"""TAN-SIP celestial WCS of a simulated detector frame, vectorised in numpy.

Conventions (FITS / astropy): pixel coordinates handed in and out here are **0-based parent
pixels** (pixel centres at integers); the FITS header uses 1-based ``CRPIX = 1020.5``.
``u = x0 + 1 - CRPIX1``, ``v = y0 + 1 - CRPIX2``; the focal-plane coordinates are
``(u + A(u, v), v + B(u, v))`` with 3rd-order SIP polynomials that include constant and linear
terms (as in real QR2 headers), then ``CD`` (``PC`` with ``CDELT = 1``) gives intermediate world
coordinates in degrees (x east, y north) and the gnomonic projection gives (RA, Dec).
``world_to_pixel`` is the exact inverse of the forward SIP (iterated), which is what astropy's
``all_world2pix`` / ``world_to_pixel`` computes, so rendering and reading agree.
All functions broadcast over arrays of positions and of WCS parameters.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from spxflow.format import NPIX, PIXEL_SCALE_ARCSEC

CRPIX = (NPIX + 1) / 2.0  # 1020.5: 1-based centre of the 2040-pixel frame
SIP_ORDER = 3
_TERMS = [(p, q) for p in range(SIP_ORDER + 1) for q in range(SIP_ORDER + 1 - p)]


@dataclass(frozen=True)
class Sip:
    """SIP coefficient matrices ``a[p, q]`` (A_p_q), b, ap, bp (4x4, zero where p+q > 3)."""

    a: np.ndarray
    b: np.ndarray
    ap: np.ndarray
    bp: np.ndarray


def sip_poly(coef: np.ndarray, u, v):
    """Evaluate sum coef[p, q] u^p v^q (Horner-free; 10 terms)."""
    return sip_polys((coef,), u, v)[0]


def sip_polys(coefs, u, v) -> list:
    """``[sip_poly(c, u, v) for c in coefs]`` with the powers u^p, v^q computed once.

    Why: world_to_pixel evaluates A and B (or AP and BP) at the same (u, v) 14 times per call
    on tiny arrays, where each numpy operation costs its overhead. The terms are the same
    operations in the same order as ``c * u**p * v**q``, minus the factors u**0 = v**0 = 1.0
    (multiplying by 1.0 is exact), so the values are bit-identical."""
    shape = np.broadcast(u, v).shape
    up = [None, u**1, u**2, u**3]
    vq = [None, v**1, v**2, v**3]
    outs = []
    for coef in coefs:
        out = np.zeros(shape)
        for p, q in _TERMS:
            c = coef[p, q]
            if c != 0.0:
                term = c if p == 0 else c * up[p]
                out = out + (term if q == 0 else term * vq[q])
        outs.append(out)
    return outs


def _fit_inverse(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AP/BP: least-squares cubic such that u = U + AP(U, V) over the frame."""
    g = np.linspace(-NPIX / 2, NPIX / 2, 41)
    u, v = (arr.ravel() for arr in np.meshgrid(g, g))
    da, db = sip_polys((a, b), u, v)
    uu = u + da
    vv = v + db
    design = np.stack([(uu**p) * (vv**q) for p, q in _TERMS], axis=1)
    scale = np.abs(design).max(axis=0)
    sol_u, *_ = np.linalg.lstsq(design / scale, u - uu, rcond=None)
    sol_v, *_ = np.linalg.lstsq(design / scale, v - vv, rcond=None)
    ap = np.zeros((4, 4))
    bp = np.zeros((4, 4))
    for (p, q), cu, cv, s in zip(_TERMS, sol_u, sol_v, scale, strict=True):
        ap[p, q] = cu / s
        bp[p, q] = cv / s
    return ap, bp


@functools.cache
def detector_sip(detector: int) -> Sip:
    """Fixed optical distortion of one detector (an instrument property, independent of seed).

    Amplitudes follow real QR2 headers: constant terms of order 0.1-1 px, small linear terms,
    and quadratic/cubic terms reaching about 1 px at the frame edge.
    """
    rng = np.random.default_rng(7100 + detector)
    a = np.zeros((4, 4))
    b = np.zeros((4, 4))
    a[0, 0] = rng.uniform(-0.6, 0.6)
    b[0, 0] = rng.uniform(-1.2, 1.2)
    for m in (a, b):
        m[1, 0], m[0, 1] = rng.uniform(-3e-4, 3e-4, 2)
        m[2, 0], m[1, 1], m[0, 2] = rng.uniform(-4e-7, 4e-7, 3)
        m[3, 0], m[2, 1], m[1, 2], m[0, 3] = rng.uniform(-3e-10, 3e-10, 4)
    ap, bp = _fit_inverse(a, b)
    return Sip(a, b, ap, bp)


def cd_matrix(pa_y_deg, scale_arcsec: float = PIXEL_SCALE_ARCSEC) -> np.ndarray:
    """CD matrix (deg/px) for sky parity with the detector +y axis at position angle
    ``pa_y_deg`` (east of north). Shape (..., 2, 2)."""
    th = np.deg2rad(np.asarray(pa_y_deg, dtype=float))
    s = scale_arcsec / 3600.0
    c, sn = np.cos(th), np.sin(th)
    cd = np.empty(th.shape + (2, 2))
    cd[..., 0, 0] = -s * c
    cd[..., 0, 1] = s * sn
    cd[..., 1, 0] = s * sn
    cd[..., 1, 1] = s * c
    return cd


def tan_project(ra, dec, ra0, dec0):
    """Gnomonic projection: (xi, eta) in degrees about (ra0, dec0) and a 'front side' mask."""
    a = np.deg2rad(np.asarray(ra, dtype=float) - ra0)
    d = np.deg2rad(np.asarray(dec, dtype=float))
    d0 = np.deg2rad(np.asarray(dec0, dtype=float))
    cosc = np.sin(d0) * np.sin(d) + np.cos(d0) * np.cos(d) * np.cos(a)
    front = cosc > 1e-6
    cosc = np.where(front, cosc, 1.0)
    xi = np.cos(d) * np.sin(a) / cosc
    eta = (np.cos(d0) * np.sin(d) - np.sin(d0) * np.cos(d) * np.cos(a)) / cosc
    return np.rad2deg(xi), np.rad2deg(eta), front


def tan_deproject(xi, eta, ra0, dec0):
    """Inverse gnomonic projection of (xi, eta) [deg] about (ra0, dec0) -> (ra, dec) [deg]."""
    x = np.deg2rad(xi)
    y = np.deg2rad(eta)
    d0 = np.deg2rad(np.asarray(dec0, dtype=float))
    den = np.cos(d0) - y * np.sin(d0)
    ra = np.asarray(ra0, dtype=float) + np.rad2deg(np.arctan2(x, den))
    dec = np.rad2deg(np.arctan2(np.sin(d0) + y * np.cos(d0), np.hypot(x, den)))
    return np.mod(ra, 360.0), dec


def pixel_to_world(x0, y0, ra0, dec0, cd, sip: Sip):
    """0-based parent pixels -> (ra, dec) in degrees. ``cd`` has shape (..., 2, 2)."""
    u = np.asarray(x0, dtype=float) + 1.0 - CRPIX
    v = np.asarray(y0, dtype=float) + 1.0 - CRPIX
    da, db = sip_polys((sip.a, sip.b), u, v)
    fu = u + da
    fv = v + db
    xi = cd[..., 0, 0] * fu + cd[..., 0, 1] * fv
    eta = cd[..., 1, 0] * fu + cd[..., 1, 1] * fv
    return tan_deproject(xi, eta, ra0, dec0)


def world_to_pixel(ra, dec, ra0, dec0, cd, sip: Sip, iterations: int = 6):
    """(ra, dec) -> 0-based parent pixels (x0, y0, front) inverting the forward SIP exactly."""
    xi, eta, front = tan_project(ra, dec, ra0, dec0)
    det = cd[..., 0, 0] * cd[..., 1, 1] - cd[..., 0, 1] * cd[..., 1, 0]
    fu = (cd[..., 1, 1] * xi - cd[..., 0, 1] * eta) / det
    fv = (-cd[..., 1, 0] * xi + cd[..., 0, 0] * eta) / det
    # SIP is only meaningful near the frame; far points (outside anyway) keep the linear
    # solution so the cubic iteration cannot diverge.
    near = (np.abs(fu) < 4000.0) & (np.abs(fv) < 4000.0)
    fu_n = np.where(near, fu, 0.0)
    fv_n = np.where(near, fv, 0.0)
    dap, dbp = sip_polys((sip.ap, sip.bp), fu_n, fv_n)
    u = fu_n + dap
    v = fv_n + dbp
    for _ in range(iterations):  # fixed point of u + A(u, v) = fu (distortion gradients << 1)
        da, db = sip_polys((sip.a, sip.b), u, v)
        u, v = fu_n - da, fv_n - db
    u = np.where(near, u, fu)
    v = np.where(near, v, fv)
    return u + CRPIX - 1.0, v + CRPIX - 1.0, front


def sip_cards(sip: Sip) -> list[tuple[str, float, str]]:
    """Header (key, value, comment) triples for A/B/AP/BP of order 3, all terms written."""
    cards: list[tuple[str, float, str]] = []
    for name, m in (("A", sip.a), ("B", sip.b), ("AP", sip.ap), ("BP", sip.bp)):
        cards.append((f"{name}_ORDER", SIP_ORDER, "SIP polynomial order"))
        for p, q in _TERMS:
            cards.append((f"{name}_{p}_{q}", float(m[p, q]), ""))
    return cards
