"""Render the IMAGE/FLAGS/VARIANCE/ZODI planes of one cutout and write its FITS bytes.

Only the requested parent-pixel box is computed (cost scales with cutout area). Every pixel
value is a pure function of (seed, image, parent pixel), so overlapping cutouts agree exactly
(and an l2b_retry copy has exactly the pixels of its l2b original):

    IMAGE = [sources + zodi_scale * ZODI + airglow + noise (+ corrupted flagged pixels)] / g
    VARIANCE = [sigma_det^2 * (1 + 0.05 (y/2040 - 0.5)) + SHOT_COEFF * source] / g^2 [MJy/sr]

with ``g = 1`` for QR3 (the true sky is on the R7 gain scale) and ``g = flxc`` for QR2 (the QR3
``l3_flux_corrections`` map, ``sky.flux_correction_map``): QR2 IMAGE x flxc is the R7-scale
image. Sources and flags are computed on the R7 scale; ZODI is never scaled.

``zodi_scale`` is a per-image factor in [0.95, 1.05] (the ZODI model is not perfect; the truth
is in the SIMZSCAL card); airglow (D1/D2 only) is not in ZODI. NONFUNC pixels carry NaN
VARIANCE and a NaN or negative IMAGE value.

Sources are rendered with the optical PSF of their zone, integrated over pixels: in QR2
images the QR2 cube's 11x11 zone (``format.psf_plane``) with ``psf_model.render_psf_native``
(see that docstring for the exact convention); in QR3 images the smooth profile of the R7 ePSF
lattice zone (``format.epsf_zone``) with ``psf_model.render_analytic_native``. A source's
flux in an image is its SED averaged over the top-hat bandpass (CWAVE, CBAND) of the parent
pixel containing its centre, in the spectral WCS of the image's release.

File layouts: QR2 = PRIMARY, IMAGE, FLAGS (int32, MP_* cards), VARIANCE, ZODI, PSF (cube),
WCS-WAVE; R7 (QR3) = PRIMARY, IMAGE, FLAGS (RICE_1 BINTABLE, MSKN cards), VARIANCE, ZODI, EPSF
(table), WCS-WAVE (``spxflow.sim.r7``).
"""

from __future__ import annotations

import functools
import gzip
import math
from dataclasses import dataclass

import numpy as np

from spxflow.format import (
    EPSF_LATTICE,
    NPIX,
    PIXEL_SCALE_ARCSEC,
    UJY_PER_MJYSR_ARCSEC2,
    epsf_zone,
    psf_plane,
)
from spxflow.sim import SIM_VERSION, flags, hashrng, headers, r7, sky
from spxflow.sim.fitsout import (
    card,
    data_bytes,
    header_bytes,
    image_hdu_bytes,
    image_structure_cards,
    primary_cards,
    wcs_wave_hdu_bytes,
)
from spxflow.sim.psf_model import (
    STAMP_SIZE,
    epsf_zone_params,
    psf_cube,
    render_analytic_native,
    render_psf_native,
)
from spxflow.sim.sed import band_average, blackbody_band_average
from spxflow.sim.spectral_model import wave_band_parent0, wcs_wave_table
from spxflow.sim.survey import ImageInfo, radec_to_vec

NOISE_SIGMA = {1: 0.015, 2: 0.015, 3: 0.0135, 4: 0.0115, 5: 0.030, 6: 0.050}  # MJy/sr
# Astropy-parsable (format.VARIANCE_BUNIT '(MJy / sr)^2' does not parse; real string is [U]).
VARIANCE_BUNIT = "MJy2 / sr2"
SHOT_COEFF = 1e-4  # MJy/sr of variance per MJy/sr of source signal
S_NOISE, S_IMAGE = 1, 2
_HALF = STAMP_SIZE // 2


@dataclass(frozen=True)
class SimConfig:
    seed: int
    noise: bool
    field_stars: bool
    truth: sky.TruthTable
    psf_header_erratum: bool


def image_key(seed: int, info: ImageInfo) -> int:
    return hashrng.key_of("image", seed, info.obsid, info.detector)


def cutout_box(info: ImageInfo, ra: float, dec: float, size_arcsec: float):
    """Parent-pixel box (x_lo, x_hi, y_lo, y_hi), half-open and clipped to the frame, of a
    cutout of ``size_arcsec`` centred on (ra, dec); None if it does not overlap the frame.

    The width is ``round(size / 6.15″)`` pixels (0.2° -> 117 px, as IRSA); an odd width is
    centred on the pixel containing (ra, dec), an even one straddles it.
    """
    x0, y0, front = info.world_to_pixel(ra, dec)
    if not bool(front) or not (np.isfinite(x0) and np.isfinite(y0)):
        return None
    n = max(1, int(round(size_arcsec / PIXEL_SCALE_ARCSEC)))
    if abs(x0) > 1e6 or abs(y0) > 1e6:
        return None
    lo_x = int(math.floor(float(x0) - (n - 1) / 2.0 + 0.5))
    lo_y = int(math.floor(float(y0) - (n - 1) / 2.0 + 0.5))
    box = (max(lo_x, 0), min(lo_x + n, NPIX), max(lo_y, 0), min(lo_y + n, NPIX))
    if box[0] >= box[1] or box[2] >= box[3]:
        return None
    return box


def _sources(info: ImageInfo, box, cfg: SimConfig):
    """Sources whose 11x11 stamp touches the box: (keys, x0, y0, seds-or-None, star params)."""
    x_lo, x_hi, y_lo, y_hi = box
    cx, cy = (x_lo + x_hi - 1) / 2.0, (y_lo + y_hi - 1) / 2.0
    ra_c, dec_c = info.pixel_to_world(cx, cy)
    radius = (math.hypot(x_hi - x_lo, y_hi - y_lo) / 2 + _HALF + 3) * PIXEL_SCALE_ARCSEC / 3600
    truth = cfg.truth
    out = []  # (sort key, x, y, kind, payload)
    if len(truth):
        near = truth.vec @ radec_to_vec(float(ra_c), float(dec_c)) >= math.cos(math.radians(radius))
        for i in np.flatnonzero(near):
            x, y, front = info.world_to_pixel(truth.ra[i], truth.dec[i])
            if front:
                out.append((int(i), float(x), float(y), "truth", truth.seds[i]))
    if cfg.field_stars:
        ids, ra, dec, flux, temp = sky.field_stars(
            float(ra_c), float(dec_c), radius, cfg.seed, truth
        )
        if len(ids):
            x, y, front = info.world_to_pixel(ra, dec)
            for j in np.flatnonzero(front):
                out.append(
                    (1_000_000 + int(ids[j]), float(x[j]), float(y[j]), "star", (flux[j], temp[j]))
                )
    keep = []
    for item in sorted(out, key=lambda t: t[0]):
        rx, ry = round(item[1]), round(item[2])
        if rx + _HALF >= x_lo and rx - _HALF < x_hi and ry + _HALF >= y_lo and ry - _HALF < y_hi:
            keep.append(item)
    return keep


def source_flux(info: ImageInfo, x: float, y: float, kind: str, payload) -> tuple[float, float]:
    """(flux µJy, CWAVE µm) of a source centred at 0-based parent (x, y) in this image."""
    px = min(max(round(x), 0), NPIX - 1)
    py = min(max(round(y), 0), NPIX - 1)
    wave, band = wave_band_parent0(info.detector, px, py, info.release)
    if kind == "truth":
        return float(band_average(payload, wave, band)), float(wave)
    flux, temp = payload
    return float(blackbody_band_average(flux, temp, 1.0, wave, band)), float(wave)


def _source_stamp(info: ImageInfo, x: float, y: float, rx: int, ry: int) -> np.ndarray:
    """Pixel-integrated 11x11 stamp of a source at parent (x, y), centred on (rx, ry): the
    QR2 cube plane of its zone, or in R7 images the smooth profile of its ePSF zone."""
    if info.layout == "r7":
        zone = epsf_zone(x, y, *EPSF_LATTICE[info.detector])
        params = epsf_zone_params(info.detector, *zone)
        return render_analytic_native(params, x - rx, y - ry, STAMP_SIZE)
    return render_psf_native(psf_cube(info.detector)[psf_plane(x, y)], x - rx, y - ry, STAMP_SIZE)


def render_planes(
    info: ImageInfo, box, ra: float, dec: float, cfg: SimConfig, calibrated: bool = True
) -> dict:
    """IMAGE, FLAGS, VARIANCE, ZODI (float32/int32) of the box plus the truth for SIM* cards.

    ``calibrated=False`` leaves IMAGE/VARIANCE on the R7 scale (skips the QR2 division by
    flxc): what a QR2 image x flxc must equal."""
    x_lo, x_hi, y_lo, y_hi = box
    det = info.detector
    yy, xx = np.mgrid[y_lo:y_hi, x_lo:x_hi]
    wave, band = wave_band_parent0(det, xx, yy, info.release)
    omega = sky.solid_angle(det, xx, yy)
    ra_pix, dec_pix = info.pixel_to_world(xx, yy)
    zodi = sky.zodi_model(wave, ra_pix, dec_pix).astype(np.float32)
    key = image_key(cfg.seed, info)
    u_img = hashrng.uniform(key, S_IMAGE, np.arange(4))
    zscale = 0.95 + 0.10 * float(u_img[0])
    glow = sky.airglow(det, wave, band, amplitude=0.5 + float(u_img[1]))

    sigma_det = NOISE_SIGMA[det]
    source = np.zeros(xx.shape)
    source_mask = np.zeros(xx.shape, dtype=bool)
    truth_hits = {}
    for skey, x, y, kind, payload in _sources(info, box, cfg):
        flux, wave_src = source_flux(info, x, y, kind, payload)
        if kind == "truth":
            truth_hits[skey] = (flux, wave_src, x, y)
        rx, ry = round(x), round(y)
        stamp = _source_stamp(info, x, y, rx, ry)
        sx0, sy0 = rx - _HALF, ry - _HALF
        ax0, ax1 = max(sx0, x_lo), min(sx0 + STAMP_SIZE, x_hi)
        ay0, ay1 = max(sy0, y_lo), min(sy0 + STAMP_SIZE, y_hi)
        if ax0 >= ax1 or ay0 >= ay1:
            continue
        cut = stamp[ay0 - sy0 : ay1 - sy0, ax0 - sx0 : ax1 - sx0]
        sb = (
            flux
            * cut
            / (omega[ay0 - y_lo : ay1 - y_lo, ax0 - x_lo : ax1 - x_lo] * UJY_PER_MJYSR_ARCSEC2)
        )
        source[ay0 - y_lo : ay1 - y_lo, ax0 - x_lo : ax1 - x_lo] += sb
        source_mask[ay0 - y_lo : ay1 - y_lo, ax0 - x_lo : ax1 - x_lo] |= sb > (
            flags.SOURCE_THRESHOLD_SIGMA * sigma_det
        )

    sigma2 = sigma_det**2 * (1.0 + 0.05 * (yy / NPIX - 0.5))
    variance = sigma2 + SHOT_COEFF * np.maximum(source, 0.0)
    signal = source + zscale * zodi + glow
    flag_plane, masks = flags.pixel_flags(cfg.seed, det, key, xx, yy, signal, source_mask)
    image = signal.copy()
    idx = yy.astype(np.int64) * NPIX + xx
    if cfg.noise:
        image += np.sqrt(variance) * hashrng.normal(key, S_NOISE, idx)
        cr_amp = 2.0 + 40.0 * hashrng.uniform(key, flags.S_CRAMP, idx) ** 2
        image = np.where(masks["TRANSIENT"], image + cr_amp, image)
        out_amp = sigma_det * (3.0 + 5.0 * hashrng.uniform(key, flags.S_OUTAMP, idx))
        sign = np.where(hashrng.uniform(key, flags.S_OUTAMP + 50, idx) < 0.5, -1.0, 1.0)
        image = np.where(masks["OUTLIER"], image + sign * out_amp, image)
        image = np.where(masks["PERSIST"], image + 0.05, image)
        image = np.where(masks["COLD"], image * 0.4, image)
    dkey = flags.detector_key(cfg.seed, det)
    dead = masks["NONFUNC"]
    nan_dead = dead & (hashrng.uniform(dkey, 77, idx) < 0.5)
    image = np.where(dead, -1.0 - 4.0 * hashrng.uniform(dkey, 78, idx), image)
    image = np.where(nan_dead, np.nan, image)
    variance = np.where(dead, np.nan, variance)
    if calibrated and info.release == "qr2":  # QR2 gains: R7-scale pixels / flxc
        flxc = sky.flux_correction_map(det)[y_lo:y_hi, x_lo:x_hi].astype(np.float64)
        image = image / flxc
        variance = variance / (flxc * flxc)

    # Truth for the SIM* cards: the truth source nearest the requested centre (within 3").
    idx_t, sep = cfg.truth.nearest(ra, dec)
    if idx_t >= 0 and sep <= sky.TRUTH_MATCH_ARCSEC:
        if idx_t in truth_hits:
            simflux, simwave, sx, sy = truth_hits[idx_t]
        else:
            sx, sy, _ = info.world_to_pixel(cfg.truth.ra[idx_t], cfg.truth.dec[idx_t])
            simflux, simwave = source_flux(
                info, float(sx), float(sy), "truth", cfg.truth.seds[idx_t]
            )
        simsrc = cfg.truth.names[idx_t]
    else:
        sx, sy, _ = info.world_to_pixel(ra, dec)
        px = min(max(round(float(sx)), 0), NPIX - 1)
        py = min(max(round(float(sy)), 0), NPIX - 1)
        simwave = float(wave_band_parent0(det, px, py, info.release)[0])
        simflux, simsrc = 0.0, "none"
    return {
        "IMAGE": image.astype(np.float32),
        "FLAGS": flag_plane.astype(np.int32),
        "VARIANCE": variance.astype(np.float32),
        "ZODI": zodi,
        "sim": (simflux, simwave, simsrc, float(sx), float(sy), zscale),
    }


# ---------------------------------------------------------------------------------------------
# FITS assembly with cached constant parts.


@functools.cache
def psf_hdu_bytes(detector: int, erratum: bool) -> bytes:
    cube = psf_cube(detector)
    return header_bytes(image_structure_cards(cube) + headers.psf_cards(erratum)) + data_bytes(cube)


@functools.cache
def wcs_wave_bytes(detector: int, release: str = "qr2") -> bytes:
    return wcs_wave_hdu_bytes(*wcs_wave_table(detector, release))


@functools.cache
def primary_bytes(version: str) -> bytes:
    return header_bytes(primary_cards(version))


def file_version(info: ImageInfo, erratum: bool) -> str:
    """PRIMARY VERSION: the release's, or 6.5.4 for QR2 files with the PSF header erratum."""
    return headers.ERRATUM_VERSION if erratum and info.layout == "qr2" else info.version


@functools.lru_cache(maxsize=512)
def _image_cards(info: ImageInfo, seed: int) -> dict:
    """Per-image card lists; CRPIX cards are replaced per cutout."""
    key = image_key(seed, info)
    source_fraction = 0.02 + 0.01 * float(hashrng.uniform(key, 901, np.array([0]))[0])
    counts = flags.full_frame_counts(info.detector, key, source_fraction)
    omega = (sky.OMEGA_MEDIAN, sky.OMEGA_STDDEV)  # the SAPM is normalised to these
    wcs = headers.wcs_cards(info)
    times = headers.time_cards(info)
    hist = list(headers.history_cards(info.detector, info.release))
    ident = {
        name: headers.identity_cards(info, name, exttype, bunit)
        for name, exttype, bunit in (
            ("IMAGE", "IMAGE", "MJy / sr"),
            ("FLAGS", "MASK", ""),
            ("VARIANCE", "VARIANCE", VARIANCE_BUNIT),
            ("ZODI", "ZODI", "MJy / sr"),
        )
    }
    count = headers.count_cards(counts)
    bit_cards = r7.mskn_cards() if info.layout == "r7" else headers.flag_cards()
    return {
        "IMAGE": ident["IMAGE"]
        + headers.image_extra_cards(info, counts, omega)
        + count
        + wcs
        + times
        + hist,
        "FLAGS": ident["FLAGS"] + count + bit_cards + wcs + times,
        "VARIANCE": ident["VARIANCE"] + wcs + times,
        "ZODI": ident["ZODI"] + wcs + times,
    }


def _shift_crpix(cards: list[str], box) -> list[str]:
    x_lo, _, y_lo, _ = box
    values = {
        "CRPIX1": 1020.5 - x_lo,
        "CRPIX2": 1020.5 - y_lo,
        "CRPIX1A": 1.0 - x_lo,
        "CRPIX2A": 1.0 - y_lo,
        "CRPIX1W": 1.0 - x_lo,
        "CRPIX2W": 1.0 - y_lo,
    }
    out = []
    for c in cards:
        k = c[:8].rstrip() if c.startswith("CRPIX") else ""  # cheap test first: ~300 cards
        if k in values:
            out.append(card(k, float(values[k]), "Pixel coordinate of reference point"))
        else:
            out.append(c)
    return out


def _tail_key(info: ImageInfo, erratum: bool) -> tuple:
    return info.detector, info.layout, info.release, erratum and info.layout == "qr2"


@functools.cache
def _tail_bytes(detector: int, layout: str, release: str, erratum: bool) -> bytes:
    """The per-detector constant HDUs after ZODI: PSF cube or EPSF table, then WCS-WAVE."""
    psf = r7.epsf_hdu_bytes(detector) if layout == "r7" else psf_hdu_bytes(detector, erratum)
    return psf + wcs_wave_bytes(detector, release)


@functools.cache
def _gzip_tail(detector: int, layout: str, release: str, erratum: bool) -> bytes:
    tail = _tail_bytes(detector, layout, release, erratum)
    return gzip.compress(tail, compresslevel=6, mtime=0)


def cutout_fits_bytes(
    info: ImageInfo, box, ra: float, dec: float, cfg: SimConfig, compress: bool = False
) -> bytes:
    """The complete 7-HDU cutout FITS file of the image's layout (PSF/EPSF and WCS-WAVE whole,
    CRPIX pairs shifted).

    ``compress`` returns a gzip stream made of two members (the cutout-specific HDUs, then the
    cached compressed PSF/EPSF + WCS-WAVE tail): standard multi-member gzip that
    ``gzip.decompress``, ``gzip.open``, astropy and urllib3 decode to the plain file.
    """
    planes = render_planes(info, box, ra, dec, cfg)
    cards = _image_cards(info, cfg.seed)
    sim = headers.sim_cards(*planes["sim"], SIM_VERSION)
    parts = [primary_bytes(file_version(info, cfg.psf_header_erratum))]
    for name in ("IMAGE", "FLAGS", "VARIANCE", "ZODI"):
        extra = sim if name == "IMAGE" else []
        hdr = _shift_crpix(cards[name], box) + extra
        if name == "FLAGS" and info.layout == "r7":
            parts.append(r7.rice_flags_hdu_bytes(planes[name], hdr))
        else:
            parts.append(image_hdu_bytes(planes[name], hdr))
    if compress:
        head = gzip.compress(b"".join(parts), compresslevel=6, mtime=0)
        return head + _gzip_tail(*_tail_key(info, cfg.psf_header_erratum))
    parts.append(_tail_bytes(*_tail_key(info, cfg.psf_header_erratum)))
    return b"".join(parts)
