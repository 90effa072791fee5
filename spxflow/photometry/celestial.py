"""TAN-SIP celestial WCS from header cards alone (FITS Paper II + SIP convention).

Building an astropy ``WCS`` per cutout costs milliseconds; this needs a dozen cards and
microseconds. Only what SPHEREx Level-2 headers use is supported (TAN with LONPOLE 180, PC or
CD matrix, SIP A/B with optional AP/BP); anything else raises ``WcsError`` so the caller can
report it. Tests compare it with astropy's ``all_world2pix`` on the same headers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

D2R = math.pi / 180.0


class WcsError(ValueError):
    """Header cards that do not describe a usable TAN(-SIP) WCS."""


def _poly(header: dict, name: str) -> np.ndarray | None:
    order = header.get(f"{name}_ORDER")
    if order is None:
        return None
    order = int(order)
    m = np.zeros((order + 1, order + 1))
    for p in range(order + 1):
        for q in range(order + 1 - p):
            m[p, q] = float(header.get(f"{name}_{p}_{q}", 0.0))
    return m


def _eval(m: np.ndarray, u, v):
    out = np.zeros(np.broadcast(u, v).shape)
    n = m.shape[0]
    for p in range(n):
        for q in range(n - p):
            if m[p, q] != 0.0:
                out = out + m[p, q] * u**p * v**q
    return out


def _deriv(m: np.ndarray, u, v):
    du = np.zeros(np.broadcast(u, v).shape)
    dv = np.zeros_like(du)
    n = m.shape[0]
    for p in range(n):
        for q in range(n - p):
            c = m[p, q]
            if c == 0.0:
                continue
            if p:
                du = du + c * p * u ** (p - 1) * v**q
            if q:
                dv = dv + c * q * u**p * v ** (q - 1)
    return du, dv


@dataclass(frozen=True)
class TanSip:
    crpix: tuple[float, float]
    crval: tuple[float, float]
    cd: np.ndarray
    a: np.ndarray | None
    b: np.ndarray | None
    ap: np.ndarray | None
    bp: np.ndarray | None

    @classmethod
    def from_header(cls, h: dict) -> TanSip:
        c1, c2 = str(h.get("CTYPE1", "")), str(h.get("CTYPE2", ""))
        if not (c1.startswith("RA---TAN") and c2.startswith("DEC--TAN")):
            raise WcsError(f"unsupported projection CTYPE1={c1!r} CTYPE2={c2!r}")
        if float(h.get("LONPOLE", 180.0)) != 180.0:
            raise WcsError(f"unsupported LONPOLE={h.get('LONPOLE')}")
        try:
            crpix = (float(h["CRPIX1"]), float(h["CRPIX2"]))
            crval = (float(h["CRVAL1"]), float(h["CRVAL2"]))
            if "CD1_1" in h:
                cd = np.array(
                    [
                        [float(h.get("CD1_1", 0.0)), float(h.get("CD1_2", 0.0))],
                        [float(h.get("CD2_1", 0.0)), float(h.get("CD2_2", 0.0))],
                    ]
                )
            else:
                pc = np.array(
                    [
                        [float(h.get("PC1_1", 1.0)), float(h.get("PC1_2", 0.0))],
                        [float(h.get("PC2_1", 0.0)), float(h.get("PC2_2", 1.0))],
                    ]
                )
                cdelt = np.array([float(h.get("CDELT1", 1.0)), float(h.get("CDELT2", 1.0))])
                cd = pc * cdelt[:, None]
        except (KeyError, TypeError, ValueError) as exc:
            raise WcsError(f"missing or bad WCS card: {exc}") from exc
        sip = c1.endswith("-SIP")
        a, b = (_poly(h, "A"), _poly(h, "B")) if sip else (None, None)
        ap, bp = (_poly(h, "AP"), _poly(h, "BP")) if sip else (None, None)
        values = [*crpix, *crval, *cd.ravel()]
        for m in (a, b, ap, bp):
            if m is not None:
                values.extend(m.ravel())
        if not np.all(np.isfinite(values)) or abs(np.linalg.det(cd)) == 0.0:
            raise WcsError("non-finite or singular WCS cards")
        return cls(crpix, crval, cd, a, b, ap, bp)

    def shifted(self, x0: float, y0: float) -> TanSip:
        """The same WCS seen from pixel (x0, y0) of this frame (a cutout's CRPIX shift)."""
        return replace(self, crpix=(self.crpix[0] - x0, self.crpix[1] - y0))

    # -- pixel (0-based) <-> world ---------------------------------------------------------
    def pixel_to_world(self, x, y):
        u = np.asarray(x, dtype=float) + 1.0 - self.crpix[0]
        v = np.asarray(y, dtype=float) + 1.0 - self.crpix[1]
        if self.a is not None:
            u, v = u + _eval(self.a, u, v), v + _eval(self.b, u, v)
        xi = self.cd[0, 0] * u + self.cd[0, 1] * v
        eta = self.cd[1, 0] * u + self.cd[1, 1] * v
        return _tan_deproject(xi, eta, *self.crval)

    def world_to_pixel(self, ra, dec, tol: float = 1e-10, max_iter: int = 20):
        """0-based pixel (x, y) of (ra, dec); Newton iterations on the forward SIP."""
        xi, eta = _tan_project(np.asarray(ra, float), np.asarray(dec, float), *self.crval)
        inv = np.linalg.inv(self.cd)
        U = inv[0, 0] * xi + inv[0, 1] * eta
        V = inv[1, 0] * xi + inv[1, 1] * eta
        u, v = U, V
        if self.a is not None:
            if self.ap is not None:
                u, v = U + _eval(self.ap, U, V), V + _eval(self.bp, U, V)
            for _ in range(max_iter):
                fu = u + _eval(self.a, u, v) - U
                fv = v + _eval(self.b, u, v) - V
                au, av = _deriv(self.a, u, v)
                bu, bv = _deriv(self.b, u, v)
                j11, j12, j21, j22 = 1.0 + au, av, bu, 1.0 + bv
                det = j11 * j22 - j12 * j21
                du = (j22 * fu - j12 * fv) / det
                dv = (-j21 * fu + j11 * fv) / det
                u, v = u - du, v - dv
                if np.all(np.abs(du) < tol) and np.all(np.abs(dv) < tol):
                    break
        return u + self.crpix[0] - 1.0, v + self.crpix[1] - 1.0


def _tan_project(ra, dec, ra0, dec0):
    """Gnomonic intermediate world coordinates (deg) for LONPOLE=180."""
    a, d = ra * D2R, dec * D2R
    a0, d0 = ra0 * D2R, dec0 * D2R
    cosc = np.sin(d) * math.sin(d0) + np.cos(d) * math.cos(d0) * np.cos(a - a0)
    if np.any(cosc <= 0):
        raise WcsError("position is more than 90 deg from the projection centre")
    xi = np.cos(d) * np.sin(a - a0) / cosc
    eta = (np.sin(d) * math.cos(d0) - np.cos(d) * math.sin(d0) * np.cos(a - a0)) / cosc
    return xi / D2R, eta / D2R


def _tan_deproject(xi, eta, ra0, dec0):
    x, y = np.asarray(xi) * D2R, np.asarray(eta) * D2R
    d0 = dec0 * D2R
    rho = np.hypot(x, y)
    c = np.arctan(rho)
    with np.errstate(invalid="ignore", divide="ignore"):
        dec = np.arcsin(
            np.cos(c) * math.sin(d0) + np.where(rho > 0, y * np.sin(c) * math.cos(d0) / rho, 0.0)
        )
    ra = ra0 * D2R + np.arctan2(
        x * np.sin(c), rho * math.cos(d0) * np.cos(c) - y * math.sin(d0) * np.sin(c)
    )
    return (ra / D2R) % 360.0, dec / D2R
