"""Reading what the photometry needs from one SPHEREx cutout file (spec §1-§2).

ZODI is deliberately not read: the fit's background plane absorbs it (recorded per row as
``zodi_subtracted = False``). The PSF plane is chosen from parent-pixel geometry, never from
the zone cards, so files with the transposed-header erratum (§1.6) are measured correctly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from spxflow.format import FLAG_BITS, psf_plane
from spxflow.photometry.celestial import TanSip, WcsError
from spxflow.photometry.fitsread import (
    FitsReadError,
    open_buffer,
    read_array,
    read_plane,
    read_table_row,
    scan,
)

REQUIRED_HDUS = ("IMAGE", "FLAGS", "VARIANCE", "PSF")


class CutoutError(ValueError):
    """A cutout that cannot be measured; ``flag`` names the result flag to set."""

    def __init__(self, flag: str, message: str):
        super().__init__(message)
        self.flag = flag


@dataclass
class Cutout:
    path: str
    obs_id: str
    detector: int
    image: np.ndarray  # MJy/sr, float64
    flags: np.ndarray  # int32
    variance: np.ndarray  # (MJy/sr)^2, float64
    wcs: TanSip
    origin: tuple[float, float]  # parent 0-based position of cutout pixel (0, 0)
    crpix_w: tuple[float, float]
    crval_w: tuple[float, float]
    mjd: float
    exptime_s: float
    flag_bits: dict[str, int]  # from the file's MP_* cards (preferred over the spec table)
    wcs_wave: tuple[np.ndarray, np.ndarray, np.ndarray] | None
    x: float  # target position, cutout 0-based
    y: float
    plane: int
    psf: np.ndarray  # the chosen 101x101 oversampled plane (the file's type: float32)

    @property
    def x_parent(self) -> float:
        return self.x + self.origin[0]

    @property
    def y_parent(self) -> float:
        return self.y + self.origin[1]


def _flag_bits(header) -> dict[str, int]:
    bits = {}
    for k in header:
        if k.startswith("MP_") and isinstance(header[k], int):
            bits[k[3:]] = int(header[k])
    return bits or {k: v[0] for k, v in FLAG_BITS.items()}


def read_cutout(path: str | os.PathLike, ra: float, dec: float) -> Cutout:
    """Read one cutout and place the target (ra, dec) on it; raises CutoutError."""
    name = os.path.basename(path)
    try:
        with open_buffer(path) as buf:
            return _read(buf, str(path), ra, dec)
    except FitsReadError as exc:
        raise CutoutError("READ_FAILED", f"{name}: {exc}") from exc
    except (OSError, EOFError, ValueError) as exc:
        if isinstance(exc, CutoutError):
            raise
        raise CutoutError("READ_FAILED", f"{name}: {type(exc).__name__}: {exc}") from exc


def _read(buf, path: str, ra: float, dec: float) -> Cutout:
    hdus = {h.name: h for h in scan(buf)}
    missing = [n for n in REQUIRED_HDUS if n not in hdus]
    if missing:
        raise CutoutError("READ_FAILED", f"{os.path.basename(path)}: missing HDU(s) {missing}")
    ih = hdus["IMAGE"].header
    image = read_array(buf, hdus["IMAGE"]).astype(np.float64)
    flags = read_array(buf, hdus["FLAGS"]).astype(np.int32)
    variance = read_array(buf, hdus["VARIANCE"]).astype(np.float64)
    if image.ndim != 2 or flags.shape != image.shape or variance.shape != image.shape:
        raise CutoutError(
            "READ_FAILED",
            f"{os.path.basename(path)}: IMAGE {image.shape}, FLAGS {flags.shape} and VARIANCE "
            f"{variance.shape} do not agree",
        )
    try:
        wcs = TanSip.from_header(ih)
        x, y = wcs.world_to_pixel(ra, dec)
        x, y = float(x), float(y)
    except WcsError as exc:
        raise CutoutError("BAD_WCS", f"{os.path.basename(path)}: {exc}") from exc
    if not (np.isfinite(x) and np.isfinite(y)):
        raise CutoutError("BAD_WCS", f"{os.path.basename(path)}: target maps to a non-finite pixel")
    ny, nx = image.shape
    if not (-0.5 <= x < nx - 0.5 and -0.5 <= y < ny - 0.5):
        raise CutoutError(
            "OFF_CUTOUT",
            f"{os.path.basename(path)}: target at pixel ({x:.2f}, {y:.2f}) is outside the "
            f"{nx}x{ny} cutout",
        )
    try:
        origin = (1.0 - float(ih["CRPIX1A"]), 1.0 - float(ih["CRPIX2A"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise CutoutError("BAD_WCS", f"{os.path.basename(path)}: no CRPIXnA cards") from exc
    plane = psf_plane(x + origin[0], y + origin[1])
    psf = read_plane(buf, hdus["PSF"], plane)
    wave = None
    if "WCS-WAVE" in hdus:
        row = read_table_row(buf, hdus["WCS-WAVE"])
        x_tab, y_tab = row["X"].astype(float), row["Y"].astype(float)
        wave = (x_tab, y_tab, row["VALUES"].astype(float).reshape(len(y_tab), len(x_tab), 2))
    return Cutout(
        path=path,
        obs_id=str(ih.get("OBSID", "")),
        detector=int(ih.get("DETECTOR", 0)),
        image=image,
        flags=flags,
        variance=variance,
        wcs=wcs,
        origin=origin,
        crpix_w=(
            float(ih.get("CRPIX1W", 1.0 - origin[0])),
            float(ih.get("CRPIX2W", 1.0 - origin[1])),
        ),
        crval_w=(float(ih.get("CRVAL1W", 1.0)), float(ih.get("CRVAL2W", 1.0))),
        mjd=float(ih.get("MJD-AVG", np.nan)),
        exptime_s=float(ih.get("XPOSURE", np.nan)),
        flag_bits=_flag_bits(hdus["FLAGS"].header),
        wcs_wave=wave,
        x=x,
        y=y,
        plane=plane,
        psf=psf,
    )
