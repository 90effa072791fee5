"""PSF cube model and THE rendering convention shared by the simulator and photometry.

PSF cube (per detector, constant): 121 planes (11x11 zones, x-fast: ``plane = iy*11 + ix``) of
101x101 samples at 10x oversampling (0.615″). Oversampled sample ``(i, j)`` (row i, column j) sits
at offset ``((j - 50) * 0.1, (i - 50) * 0.1)`` native pixels from the PSF centre; each plane sums
to 1 (float64 normalisation, stored float32). The profile is an elliptical Gaussian core plus a
broader Gaussian wing; FWHM follows the pre-launch band values (4.6″ at 0.75 µm to 6.9″ at 5 µm)
and varies by about ±4 % across the frame (mostly along x), with a twisted radial ellipticity up to
0.10, so the zone matters at the few-per-cent level (a PSF fit with the transposed corner zone
is off by 3-8 %).

Rendering convention (``render_psf_native``), used by the simulator for every source:

1. The PSF is the continuous function obtained by **bilinear interpolation** of the oversampled
   samples (zero outside the 101x101 grid); sample (i, j) sits at oversampled index coordinates
   (i, j), i.e. at native offset ((j-50)/10, (i-50)/10).
2. A native pixel covers offsets [-0.5, +0.5] around its centre. Its PSF integral is the **sum of
   the interpolated PSF at the 10x10 sub-cell centres** of that pixel, i.e. at native offsets
   ``c - dx - 0.45 + 0.1*a`` (a = 0..9) in x and likewise in y, where ``c`` is the pixel's offset
   from the stamp's reference pixel and ``(dx, dy)`` the source position relative to that
   reference pixel's centre. (Equivalently: shift the oversampled plane by the sub-pixel phase
   with bilinear interpolation and block-sum 10x10.) A stamp that covers the whole PSF sums to
   exactly the plane sum (1).
3. The plane is chosen from the source's (unrounded, 0-based) parent-pixel position with
   ``spxflow.format.psf_plane`` (geometry only, x-fast).
4. Surface brightness of native pixel p: ``I_p [MJy/sr] = F [µJy] * psf_integral_p /
   (Omega_p [arcsec²] * 23.5045)`` with ``Omega_p`` the solid-angle-map value of that parent pixel.

R7 (QR3) files carry no cube but an ePSF table (``spxflow.sim.r7``): per zone of the
``format.EPSF_LATTICE`` grid, this same model at the zone centre (``epsf_zone_params``), as a
continuous profile pixel-integrated by ``render_analytic_native``. QR3 pixels render every
source with the profile of the zone containing it (``format.epsf_zone``); QR2 pixels keep the
cube's 11x11 zones.

The stamp reference pixel is ``size // 2``; stamp pixel (r, c) is the native pixel
``(ref_x + c - size//2, ref_y + r - size//2)``. The simulator uses ``size = 11`` and the reference
pixel ``round(x_source)``, ``round(y_source)`` (0-based parent pixels), so ``|dx|, |dy| <= 0.5``.
"""

from __future__ import annotations

import functools

import numpy as np

from spxflow.format import (
    EPSF_LATTICE,
    NPIX,
    PIXEL_SCALE_ARCSEC,
    PSF_CENTER,
    PSF_NZONE,
    PSF_OVERSAMP,
    PSF_SIZE,
    epsf_zone_centers,
    psf_zone_centers,
)

# Pre-launch effective FWHM [arcsec] vs wavelength [µm] (spec §5, PP FWHM_v28).
FWHM_TABLE_UM = np.array([0.75, 1.08, 1.63, 2.41, 3.80, 4.42, 5.00])
FWHM_TABLE_ARCSEC = np.array([4.61, 4.68, 4.85, 5.18, 6.00, 6.43, 6.87])
DETECTOR_CENTRAL_UM = {1: 0.93, 2: 1.37, 3: 2.02, 4: 3.10, 5: 4.11, 6: 4.70}
STAMP_SIZE = 11  # native pixels; covers the full 101-sample (±5.05 px) oversampled plane
WING_FRACTION = 0.12
WING_SCALE = 2.2
ZONE_FWHM_GRAD_X = 0.04  # relative FWHM change per unit of x/(frame half-width)
ZONE_FWHM_GRAD_Y = -0.015
ZONE_ELLIPTICITY = 0.10  # ellipticity at the frame corners
ZONE_TWIST = 0.4  # rad per unit x: ellipticity position angle twist


def detector_fwhm_arcsec(detector: int) -> float:
    """Median PSF FWHM of a detector (written as ``PSF_FWHM``)."""
    return float(np.interp(DETECTOR_CENTRAL_UM[detector], FWHM_TABLE_UM, FWHM_TABLE_ARCSEC))


def _plane(fwhm_arcsec: float, ellip: float, theta: float) -> np.ndarray:
    off = (np.arange(PSF_SIZE) - PSF_CENTER) / PSF_OVERSAMP * PIXEL_SCALE_ARCSEC  # arcsec
    yy, xx = np.meshgrid(off, off, indexing="ij")
    c, s = np.cos(theta), np.sin(theta)
    xr = c * xx + s * yy
    yr = -s * xx + c * yy
    sigma = fwhm_arcsec / 2.3548
    sa = sigma * np.sqrt(1 + ellip)
    sb = sigma / np.sqrt(1 + ellip)
    core = np.exp(-0.5 * ((xr / sa) ** 2 + (yr / sb) ** 2))
    wing = np.exp(-0.5 * (xx**2 + yy**2) / (WING_SCALE * sigma) ** 2)
    prof = (1 - WING_FRACTION) * core / core.sum() + WING_FRACTION * wing / wing.sum()
    return prof / prof.sum()


def psf_params(detector: int, x: float, y: float) -> tuple[float, float, float]:
    """(FWHM arcsec, ellipticity, position angle rad) of the optical PSF at 0-based parent
    pixel (x, y): the one per-position model behind both the QR2 cube and the R7 ePSF."""
    half = (NPIX - 1) / 2.0
    qx = (x - half) / half
    qy = (y - half) / half
    r = np.hypot(qx, qy) / np.sqrt(2.0)
    # Size gradient along x (not y) and twisted radial ellipticity: the pattern is not
    # symmetric under ix <-> iy, so a transposed zone lookup costs a few per cent.
    fwhm = detector_fwhm_arcsec(detector) * (
        1.0 + ZONE_FWHM_GRAD_X * qx + ZONE_FWHM_GRAD_Y * qy + 0.03 * r * r
    )
    theta = np.arctan2(qy, qx) + ZONE_TWIST * qx
    return fwhm, ZONE_ELLIPTICITY * r, theta


def optical_psf(detector: int, x: float, y: float) -> np.ndarray:
    """Optical PSF (101x101 float64 at 10x, sum 1) of the model evaluated at parent (x, y)."""
    return _plane(*psf_params(detector, x, y))


@functools.cache
def psf_cube(detector: int) -> np.ndarray:
    """(121, 101, 101) float32 PSF cube of a detector, planes in x-fast zone order (QR2)."""
    centres = psf_zone_centers()
    cube = np.empty((PSF_NZONE * PSF_NZONE, PSF_SIZE, PSF_SIZE), dtype=np.float32)
    for iy in range(PSF_NZONE):
        for ix in range(PSF_NZONE):
            cube[iy * PSF_NZONE + ix] = optical_psf(detector, centres[ix], centres[iy])
    cube.setflags(write=False)
    return cube


@functools.lru_cache(maxsize=1024)  # 82 kB each; one detector's lattice is 441-451 zones
def epsf_zone_psf(detector: int, ix: int, iy: int) -> np.ndarray:
    """Optical PSF (101x101 float64, read-only) of R7 ePSF zone (ix, iy): the model at the
    zone centre. QR3 pixels are rendered from it; the EPSF table is its pixel integral."""
    nbx, nby = EPSF_LATTICE[detector]
    plane = optical_psf(detector, epsf_zone_centers(nbx)[ix], epsf_zone_centers(nby)[iy])
    plane.setflags(write=False)
    return plane


@functools.lru_cache(maxsize=1024)
def epsf_zone_params(detector: int, ix: int, iy: int) -> tuple[float, float, float]:
    """(FWHM arcsec, ellipticity, angle) of the optical PSF of R7 ePSF zone (ix, iy)."""
    nbx, nby = EPSF_LATTICE[detector]
    return psf_params(detector, epsf_zone_centers(nbx)[ix], epsf_zone_centers(nby)[iy])


_SUB = (np.arange(PSF_OVERSAMP) - (PSF_OVERSAMP - 1) / 2.0) / PSF_OVERSAMP  # sub-cell centres


def render_analytic_native(params, dx: float, dy: float, size: int = STAMP_SIZE) -> np.ndarray:
    """Pixel-integrated stamp (as ``render_psf_native``) of the *continuous* profile of
    ``_plane`` with ``params`` (FWHM, ellipticity, angle): the mean of the analytic density
    over the 10x10 sub-cell centres of each native pixel.

    QR3 pixels are rendered with it and the EPSF table samples it: unlike the bilinearly
    interpolated cube it is smooth in the source position, as a real pixel-convolved PSF is,
    so an ePSF sampled at 5x and interpolated reproduces it (the cube's 0.1 px kinks left
    0.65 % of the peak, which a cubic spline through 0.2 px samples cannot follow)."""
    fwhm, ellip, theta = params
    h = size // 2
    cells = np.arange(size) - h
    u = (cells[:, None] + _SUB[None, :]).ravel()  # offsets of sub-cell centres [px]
    xx = (u - dx)[None, :] * PIXEL_SCALE_ARCSEC
    yy = (u - dy)[:, None] * PIXEL_SCALE_ARCSEC
    c, s = np.cos(theta), np.sin(theta)
    xr = c * xx + s * yy
    yr = -s * xx + c * yy
    sigma = fwhm / 2.3548
    sa = sigma * np.sqrt(1 + ellip)
    sb = sigma / np.sqrt(1 + ellip)
    sw = WING_SCALE * sigma
    area = PIXEL_SCALE_ARCSEC**2  # densities per arcsec^2 -> per native pixel
    core = np.exp(-0.5 * ((xr / sa) ** 2 + (yr / sb) ** 2)) * area / (2 * np.pi * sa * sb)
    wing = np.exp(-0.5 * (xx**2 + yy**2) / sw**2) * area / (2 * np.pi * sw**2)
    dens = (1 - WING_FRACTION) * core + WING_FRACTION * wing
    n = PSF_OVERSAMP
    return dens.reshape(size, n, size, n).mean(axis=(1, 3))


@functools.lru_cache(maxsize=64)  # the ePSF build reuses 5 phases thousands of times
def _axis_matrix(shift: float, size: int) -> np.ndarray:
    """(size, 101) matrix M such that stamp = My @ plane @ Mx.T (see module docstring)."""
    h = size // 2
    cols = np.arange(size)[:, None]
    sub = np.arange(PSF_OVERSAMP)[None, :]
    # Oversampled index coordinate of each sub-cell centre.
    pos = PSF_CENTER + PSF_OVERSAMP * (cols - h - shift) - (PSF_OVERSAMP - 1) / 2.0 + sub
    i0 = np.floor(pos).astype(np.int64)
    t = pos - i0
    m = np.zeros((size, PSF_SIZE + 2))
    rows = np.broadcast_to(cols, pos.shape)
    # Column k+1 of the padded matrix is oversampled index k; out-of-range weights fall in pads.
    lo = np.clip(i0 + 1, 0, PSF_SIZE + 1)
    hi = np.clip(i0 + 2, 0, PSF_SIZE + 1)
    np.add.at(m, (rows, lo), 1.0 - t)
    np.add.at(m, (rows, hi), t)
    out = m[:, 1 : PSF_SIZE + 1]
    out.setflags(write=False)
    return out


def render_psf_native(plane: np.ndarray, dx: float, dy: float, size: int = STAMP_SIZE):
    """Pixel-integrated PSF stamp (size x size, float64) of a source offset by (dx, dy) native
    pixels from the centre of stamp pixel (size//2, size//2). Sums to the plane sum when the
    stamp covers the whole PSF (size >= 11 and |dx|, |dy| <= 0.5)."""
    mx = _axis_matrix(float(dx), size)
    my = _axis_matrix(float(dy), size)
    return my @ np.asarray(plane, dtype=np.float64) @ mx.T
