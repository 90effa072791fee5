"""Measurement windows: the few pixels a fit needs, cut from a whole Level-2 frame in memory.

A window is the fit window (the target's pixel ± ``fit_half_size_px``) clipped to the cutout
the user asked for (``cutout_size_arcsec``, placed as IRSA places cutouts) and to the frame.
So a window holds exactly the pixels the fit of the same image's cutout would use, and the
S3 reader, the simulated backend and the cutout files give the same numbers.

``WindowHeader`` shows a full-frame header from the window's corner, as a cutout's header is
written (CRPIX pairs shifted), so one ``cutout.assemble`` serves files and windows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from spxflow.format import NPIX, PIXEL_SCALE_ARCSEC
from spxflow.photometry.celestial import TanSip
from spxflow.photometry.cutout import Cutout, CutoutError, assemble, target_pixel

# Cards a cutout shifts by its corner (x for ...1*, y for ...2*).
_SHIFTED = ("CRPIX1", "CRPIX2", "CRPIX1A", "CRPIX2A", "CRPIX1W", "CRPIX2W")


class WindowHeader(Mapping):
    """A full-frame header seen from parent pixel (x0, y0): CRPIX cards shifted, others as is."""

    def __init__(self, header: Mapping, x0: int, y0: int):
        self._h = header
        self._shift = {k: float(x0 if k[5] == "1" else y0) for k in _SHIFTED}

    def __getitem__(self, key):
        value = self._h[key]
        shift = self._shift.get(key)
        return value if shift is None else float(value) - shift

    def get(self, key, default=None):
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key) -> bool:
        return key in self._h

    def __iter__(self):
        return iter(self._h)

    def __len__(self) -> int:
        return len(self._h)

    def keys_starting(self, prefix: str) -> list[str]:
        if hasattr(self._h, "keys_starting"):
            return self._h.keys_starting(prefix)
        return [k for k in self._h if k.startswith(prefix)]


def cutout_span(centre: float, size_arcsec: float) -> tuple[int, int]:
    """Half-open parent span of a cutout of ``size_arcsec`` along one axis: ``round(size /
    6.15″)`` pixels, an odd width centred on the target's pixel, clipped to the frame."""
    n = max(1, int(round(size_arcsec / PIXEL_SCALE_ARCSEC)))
    lo = int(math.floor(centre - (n - 1) / 2.0 + 0.5))
    return max(lo, 0), min(lo + n, NPIX)


def window_box(
    x_parent: float, y_parent: float, half_size: int, size_arcsec: float
) -> tuple[int, int, int, int] | None:
    """Parent box (x0, x1, y0, y1), half-open, of the fit window of a target at 0-based parent
    pixel (x, y); None when the target is off the frame."""
    if not (-0.5 <= x_parent < NPIX - 0.5 and -0.5 <= y_parent < NPIX - 0.5):
        return None
    box = []
    for centre in (x_parent, y_parent):
        lo, hi = cutout_span(centre, size_arcsec)
        r = int(math.floor(centre + 0.5))
        box += [max(r - half_size, lo), min(r + half_size + 1, hi)]
    return box[0], box[1], box[2], box[3]


@dataclass(frozen=True)
class Target:
    """A target on a full frame: the frame's WCS, the 0-based parent pixel, the window box."""

    wcs: TanSip
    x: float
    y: float
    box: tuple[int, int, int, int]


def locate(
    image_header: Mapping, ra: float, dec: float, name: str, half_size: int, size_arcsec,
    wcs: TanSip | None = None,
) -> Target:  # fmt: skip
    """The window of (ra, dec) on a full frame from its IMAGE header (``wcs``: that header's,
    if already solved); CutoutError OFF_CUTOUT (or BAD_WCS) when the target is off the frame."""
    wcs, x, y = target_pixel(image_header, ra, dec, name, wcs)
    box = window_box(x, y, half_size, size_arcsec)
    if box is None:
        raise CutoutError(
            "OFF_CUTOUT", f"{name}: target at parent pixel ({x:.2f}, {y:.2f}) is off the frame"
        )
    return Target(wcs, x, y, box)


def window_cutout(
    path: str,
    version: str,
    layout: str,
    image_header: Mapping,
    flags_header: Mapping,
    target: Target,
    image: np.ndarray,
    flags: np.ndarray,
    variance: np.ndarray,
    psf_for,
    wave,
    ra: float,
    dec: float,
    size_arcsec: float | None = None,
) -> Cutout:
    """A Cutout of the window of ``target`` (planes already cut to its box) from full-frame
    headers; with ``size_arcsec`` its x/y_cutout columns are relative to that cutout's corner.
    The frame's WCS is solved once (``locate``) and shifted to the window's corner."""
    x0, _, y0, _ = target.box
    solved = (target.wcs.shifted(x0, y0), target.x - x0, target.y - y0)
    cutout = assemble(
        path, version, layout, WindowHeader(image_header, x0, y0), flags_header,
        image, flags, variance, psf_for, wave, ra, dec, solved,
    )  # fmt: skip
    if size_arcsec is not None:
        cutout.cutout_origin = (
            float(cutout_span(cutout.x_parent, size_arcsec)[0]),
            float(cutout_span(cutout.y_parent, size_arcsec)[0]),
        )
    return cutout
