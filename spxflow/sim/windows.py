"""Measurement windows straight from the simulator: the fit window's pixels, no FITS file.

The planes are ``render.render_planes`` of the window box, a pure function of (seed, image,
parent pixel), so they equal the same pixels of any cutout or whole file of the image. The
headers, PSF plane / EPSF row and WCS-WAVE are the bytes a file would carry, parsed once per
image or detector. Rendering a 13x13 window instead of writing a 5 MB cutout file is what
makes the simulated demo fast.
"""

from __future__ import annotations

import functools

import numpy as np

from spxflow.format import NPIX, psf_plane
from spxflow.photometry.cutout import Cutout, wcs_wave_of
from spxflow.photometry.epsf import read_epsf_row, read_lattice
from spxflow.photometry.fitsread import Header, read_plane, read_table_row, scan
from spxflow.photometry.window import locate, window_cutout
from spxflow.sim import SIM_VERSION, render
from spxflow.sim.fitsout import header_bytes
from spxflow.sim.survey import ImageInfo

_FULL_FRAME = (0, NPIX, 0, NPIX)


@functools.lru_cache(maxsize=2048)
def frame_headers(info: ImageInfo, seed: int) -> tuple[Header, Header]:
    """IMAGE and FLAGS headers of the whole file (full-frame CRPIX, no SIM truth cards)."""
    cards = render._image_cards(info, seed)
    return tuple(
        Header(header_bytes(render._shift_crpix(cards[name], _FULL_FRAME)))
        for name in ("IMAGE", "FLAGS")
    )


class _Tail:
    """The per-detector constant HDUs of a file (PSF cube or EPSF table, WCS-WAVE), parsed."""

    def __init__(self, detector: int, layout: str, release: str, erratum: bool):
        self.buf = render.primary_bytes("") + render._tail_bytes(detector, layout, release, erratum)
        self.hdus = {h.name: h for h in scan(self.buf)}
        self.layout = layout
        self.lattice = read_lattice(self.buf, self.hdus["EPSF"]) if layout == "r7" else None
        self.wave = wcs_wave_of(read_table_row(self.buf, self.hdus["WCS-WAVE"]))

    def psf_for(self, x_parent: float, y_parent: float) -> tuple[int, np.ndarray]:
        if self.layout == "qr2":
            index = psf_plane(x_parent, y_parent)
        else:
            index = self.lattice.row_for(x_parent, y_parent)
        return index, self._psf(index)

    @functools.lru_cache(maxsize=512)  # noqa: B019 - one _Tail per detector, kept for the run
    def _psf(self, index: int) -> np.ndarray:
        if self.layout == "qr2":
            return read_plane(self.buf, self.hdus["PSF"], index)
        return read_epsf_row(self.buf, self.hdus["EPSF"], index)


@functools.cache
def _tail(detector: int, layout: str, release: str, erratum: bool) -> _Tail:
    return _Tail(detector, layout, release, erratum)


def render_window(
    info: ImageInfo, cfg, ra: float, dec: float, half_size: int, size_arcsec: float
) -> tuple[Cutout, dict]:
    """(window Cutout, injected truth) of (ra, dec) on one image; CutoutError OFF_CUTOUT when
    the target is off the frame."""
    ih, fh = frame_headers(info, cfg.seed)
    target = locate(ih, ra, dec, info.file_name, half_size, size_arcsec)
    planes = render.render_planes(info, target.box, ra, dec, cfg)
    tail = _tail(*render._tail_key(info, cfg.psf_header_erratum))
    cutout = window_cutout(
        info.file_name, render.file_version(info, cfg.psf_header_erratum), info.layout, ih, fh,
        target, planes["IMAGE"], planes["FLAGS"], planes["VARIANCE"], tail.psf_for, tail.wave,
        ra, dec, size_arcsec,
    )  # fmt: skip
    simflux, simwave, simsrc = planes["sim"][:3]
    truth = {
        "flux_uJy": float(simflux),
        "wavelength_um": float(simwave),
        "source": str(simsrc),
        "simulator": SIM_VERSION,
    }
    return cutout, truth
