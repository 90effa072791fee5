"""Reading what the photometry needs from one SPHEREx cutout file (spec §1-§2, §8).

Two layouts (§8.0): QR2 (a ``PSF`` cube, int32 FLAGS) and R7 (QR3/DR1: an ``EPSF`` table,
FLAGS usually RICE_1-compressed). The layout is chosen by the HDUs present and cross-checked
with the primary ``VERSION``.

ZODI is deliberately not read: the fit's background plane absorbs it (recorded per row as
``zodi_subtracted = False``). The PSF plane is chosen from parent-pixel geometry, never from
the zone cards, so files with the transposed-header erratum (§1.6) are measured correctly.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np

from spxflow.format import FLAG_BITS, layout_of_version, psf_plane
from spxflow.photometry.celestial import TanSip, WcsError
from spxflow.photometry.epsf import epsf_for
from spxflow.photometry.fitsread import (
    FitsReadError,
    open_buffer,
    read_array,
    read_plane,
    read_table_row,
    scan,
)

REQUIRED_HDUS = ("IMAGE", "FLAGS", "VARIANCE")
PSF_HDUS = {"PSF": "qr2", "EPSF": "r7"}  # the PSF-bearing HDU names the layout
_MSKN_RE = re.compile(r"^MSKN(\d{4})$")


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
    plane: int  # PSF cube plane (qr2) or EPSF table row (r7)
    psf: np.ndarray  # 101x101 float32 cube plane (10x), or 33x33 float64 ePSF [y, x] (5x)
    layout: str = "qr2"  # "qr2" | "r7"
    version: str = ""  # primary VERSION ("" if absent)
    psf_model: str = "cube"  # "cube" (PSF plane) | "epsf" (EPSF row)
    # Parent corner of the cutout the user asked for, when the planes are a window of it
    # (x_cutout/y_cutout columns are relative to it); None: the planes are that cutout.
    cutout_origin: tuple[float, float] | None = None

    @property
    def x_parent(self) -> float:
        return self.x + self.origin[0]

    @property
    def y_parent(self) -> float:
        return self.y + self.origin[1]


def flag_bits(header) -> dict[str, int]:
    """FLAGS bit numbers by name from the file's own cards: QR2 ``MP_<NAME> = bit`` (mostly
    HIERARCH), R7 ``MSKNnnnn = 'NAME'``; the spec table only when a file has neither."""
    mp, mskn = {}, {}
    if hasattr(header, "keys_starting"):  # the lean Header: no walk over every card
        mp_keys, mskn_keys = header.keys_starting("MP_"), header.keys_starting("MSKN")
    else:
        mp_keys = [k for k in header if k.startswith("MP_")]
        mskn_keys = [k for k in header if k.startswith("MSKN")]
    for k in mp_keys:
        v = header[k]
        if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 32:
            mp[k[3:]] = v
    for k in mskn_keys:
        m = _MSKN_RE.match(k)
        name = str(header[k]).strip() if m else ""
        if name and int(m[1]) < 32:  # an int32 plane has no higher bits
            mskn[name] = int(m[1])
    clash = {n: (mp[n], mskn[n]) for n in mp.keys() & mskn.keys() if mp[n] != mskn[n]}
    if clash:
        raise FitsReadError(f"FLAGS MP_* and MSKN* cards disagree (MP_, MSKN): {clash}")
    return (mp | mskn) or {k: v[0] for k, v in FLAG_BITS.items()}


def file_layout(hdus: dict, version: str, name: str) -> str:
    """'qr2' or 'r7' from the PSF-bearing HDU, cross-checked with VERSION (§8.0)."""
    present = [n for n in PSF_HDUS if n in hdus]
    if len(present) != 1:
        what = "neither a PSF (QR2) nor an EPSF (R7) HDU" if not present else "both PSF and EPSF"
        raise CutoutError("READ_FAILED", f"{name}: {what}; HDUs {list(hdus)}")
    hdu = hdus[present[0]]
    layout = PSF_HDUS[hdu.name]
    if (layout == "r7") != hdu.is_table or (layout == "qr2" and len(hdu.shape) != 3):
        kind = "BINTABLE" if hdu.is_table else f"image {hdu.shape}"
        raise CutoutError("READ_FAILED", f"{name}: {hdu.name} HDU is a {kind}")
    if version:
        try:
            implied = layout_of_version(version)
        except ValueError as exc:
            raise CutoutError("READ_FAILED", f"{name}: {exc}") from exc
        if implied != layout:
            raise CutoutError(
                "READ_FAILED",
                f"{name}: HDUs {list(hdus)} are the {layout} layout but primary VERSION "
                f"{version!r} implies {implied}",
            )
    return layout


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
    name = os.path.basename(path)
    scanned = scan(buf)
    hdus = {h.name: h for h in scanned}
    missing = [n for n in REQUIRED_HDUS if n not in hdus]
    if missing:
        raise CutoutError("READ_FAILED", f"{name}: missing HDU(s) {missing}; has {list(hdus)}")
    version = str(scanned[0].header.get("VERSION", "") or "").strip()
    layout = file_layout(hdus, version, name)
    image = read_array(buf, hdus["IMAGE"])
    flags = read_array(buf, hdus["FLAGS"])  # int32 or RICE_1 (ZIMAGE)
    variance = read_array(buf, hdus["VARIANCE"])

    def psf_for(x_parent: float, y_parent: float) -> tuple[int, np.ndarray]:
        if layout == "qr2":
            plane = psf_plane(x_parent, y_parent)
            return plane, read_plane(buf, hdus["PSF"], plane)
        return epsf_for(buf, hdus["EPSF"], x_parent, y_parent)

    wave = None
    if "WCS-WAVE" in hdus:
        wave = wcs_wave_of(read_table_row(buf, hdus["WCS-WAVE"]))
    return assemble(
        path, version, layout, hdus["IMAGE"].header, hdus["FLAGS"].header,
        image, flags, variance, psf_for, wave, ra, dec,
    )  # fmt: skip


def wcs_wave_of(row: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X, Y, VALUES[y, x, 2]) of the one-row WCS-WAVE table."""
    x_tab, y_tab = row["X"].astype(float), row["Y"].astype(float)
    return x_tab, y_tab, row["VALUES"].astype(float).reshape(len(y_tab), len(x_tab), 2)


def frame_wcs(ih, name: str) -> TanSip:
    """The celestial WCS of a header; CutoutError BAD_WCS if it has none usable."""
    try:
        return TanSip.from_header(ih)
    except WcsError as exc:
        raise CutoutError("BAD_WCS", f"{name}: {exc}") from exc


def target_pixel(
    ih, ra: float, dec: float, name: str, wcs: TanSip | None = None
) -> tuple[TanSip, float, float]:
    """The header's WCS (``wcs`` if already solved from it) and the target's 0-based pixel in
    that header's frame."""
    wcs = frame_wcs(ih, name) if wcs is None else wcs
    try:
        x, y = wcs.world_to_pixel(ra, dec)
        x, y = float(x), float(y)
    except WcsError as exc:
        raise CutoutError("BAD_WCS", f"{name}: {exc}") from exc
    if not (np.isfinite(x) and np.isfinite(y)):
        raise CutoutError("BAD_WCS", f"{name}: target maps to a non-finite pixel")
    return wcs, x, y


def assemble(
    path, version, layout, ih, fh, image, flags, variance, psf_for, wave, ra, dec, solved=None
) -> Cutout:
    """A Cutout from the IMAGE/FLAGS headers and planes of one pixel frame (a cutout file, or a
    window of a whole file seen through ``window.WindowHeader``). ``psf_for(x_parent,
    y_parent) -> (index, psf)`` reads the PSF plane or EPSF row the target needs; ``solved``
    = ``target_pixel(ih, ra, dec, ...)`` when the caller has it (windows: from the frame's)."""
    name = os.path.basename(path)
    image = np.asarray(image).astype(np.float64)
    flags = np.asarray(flags).astype(np.int32)
    variance = np.asarray(variance).astype(np.float64)
    if image.ndim != 2 or flags.shape != image.shape or variance.shape != image.shape:
        raise CutoutError(
            "READ_FAILED",
            f"{name}: IMAGE {image.shape}, FLAGS {flags.shape} and VARIANCE "
            f"{variance.shape} do not agree",
        )
    wcs, x, y = target_pixel(ih, ra, dec, name) if solved is None else solved
    ny, nx = image.shape
    if not (-0.5 <= x < nx - 0.5 and -0.5 <= y < ny - 0.5):
        raise CutoutError(
            "OFF_CUTOUT",
            f"{name}: target at pixel ({x:.2f}, {y:.2f}) is outside the {nx}x{ny} cutout",
        )
    try:
        origin = (1.0 - float(ih["CRPIX1A"]), 1.0 - float(ih["CRPIX2A"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise CutoutError("BAD_WCS", f"{name}: no CRPIXnA cards") from exc
    plane, psf = psf_for(x + origin[0], y + origin[1])
    return Cutout(
        path=str(path),
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
        flag_bits=flag_bits(fh),
        wcs_wave=wave,
        x=x,
        y=y,
        plane=plane,
        psf=psf,
        layout=layout,
        version=version,
        psf_model="cube" if layout == "qr2" else "epsf",
    )
