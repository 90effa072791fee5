"""Deterministic survey model: pointings, OBSIDs, times and discovery (which images cover a point).

Geometry (a simplified SPHEREx scan; an instrument property, independent of the seed):

* Pass ``p`` (6 months, ``PASS_DAYS``) consists of ``N_RINGS`` great circles ("rings") through the
  ecliptic poles; ring ``k`` has ecliptic longitude ``L = L_START + 180 p + k * 180 / N_RINGS``,
  so one pass sweeps the whole sky once, as the Sun moves 180°.
* Along a ring, boresights are spaced ``360 / TILES_PER_RING`` (a quarter of a detector height)
  with a golden-ratio phase per ring. Four consecutive boresights are the 4 small steps
  (``_1`` … ``_4``, 128.9 s apart) of one large slew, so a source lands at 4 different y
  (wavelengths) per ring visit.
* The focal plane holds 3 detector pairs side by side across the ring (``PAIR_OFFSET_DEG``):
  D1/D4, D2/D5, D3/D6 see the same sky at the same time (same OBSID and times). Detector +y runs
  along the ring (flipped on odd passes, ``SPS_EPA`` 0/180), plus a small deterministic roll
  jitter.

A point at ecliptic latitude β is covered by about 98/cos β images per pass (≈113 at |β|=30°),
rising steeply toward the poles. Discovery solves for the candidate rings and tiles analytically
(never enumerating the sky) and then tests each candidate frame exactly with its TAN-SIP WCS.

Slew index ``A`` (absolute, from ``T0_MJD``) -> ``p = A // SLEWS_PER_PASS``, ring and large slew
within the pass; the OBSID is ``{ISO year}W{ISO week}_{half-week}A_{A - first A of that
planning period:04d}_{step}``, which is inverted exactly by ``parse_obsid``.

Releases are time slices of this one survey (``timeline``): ``find_images`` and
``parse_obsid`` serve only the slews of the configured releases; QR3 slews may also exist as an
``l2b_retry`` copy (``ImageInfo.retry``), which is the same exposure under another token.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import re
from dataclasses import dataclass

import numpy as np

from spxflow.format import NPIX, PIXEL_SCALE_ARCSEC, RELEASES
from spxflow.sim import wcs as simwcs
from spxflow.sim.timeline import (  # noqa: F401 - the survey clock, re-exported for callers
    N_RINGS,
    PASS_DAYS,
    SLEW_DAYS,
    SLEWS_PER_PASS,
    SLEWS_PER_RING,
    SPAN_SECONDS,
    STEP_SECONDS,
    STEPS,
    SURDLY,
    SURLIM,
    T0_MJD,
    TELAPSE,
    TSAMP,
    XPOSURE,
    check_releases,
    first_slew_of_period,
    has_retry,
    in_windows,
    iso_ms,
    level2_key,
    mjd_to_datetime,
    planning_period_of,
    publisher_did,
    release_of_slew,
    release_windows,
    slew_meta,
    slew_mjd,
    step_mjd,
)

DEFAULT_RELEASES = ("qr2",)  # low-level default; the archive passes its configured releases

TILES_PER_RING = SLEWS_PER_RING * STEPS
PAIR_OFFSET_DEG = 3.60
L_START = 130.6  # ecliptic longitude of the first ring (Sun + 90° on 2025-05-01)
OBLIQUITY_DEG = 23.4392911
DETECTOR_PAIR = {1: 0, 4: 0, 2: 1, 5: 1, 3: 2, 6: 2}
PAIR_DETECTORS = {0: (1, 4), 1: (2, 5), 2: (3, 6)}
_HALF_DET_DEG = NPIX * PIXEL_SCALE_ARCSEC / 3600.0 / 2.0
_TILE_DEG = 360.0 / TILES_PER_RING
_RING_DEG = 180.0 / N_RINGS
_GOLDEN = 0.6180339887498949
_OBSID_RE = re.compile(r"^(\d{4})W(\d{2})_([12])([A-Z])_(\d{4})_([1-4])$")

_CE = math.cos(math.radians(OBLIQUITY_DEG))
_SE = math.sin(math.radians(OBLIQUITY_DEG))


def ecl_to_equ(v: np.ndarray) -> np.ndarray:
    """Ecliptic -> equatorial unit vectors (last axis xyz)."""
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    return np.stack([x, _CE * y - _SE * z, _SE * y + _CE * z], axis=-1)


def equ_to_ecl(v: np.ndarray) -> np.ndarray:
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    return np.stack([x, _CE * y + _SE * z, -_SE * y + _CE * z], axis=-1)


def radec_to_vec(ra, dec) -> np.ndarray:
    a = np.deg2rad(np.asarray(ra, dtype=float))
    d = np.deg2rad(np.asarray(dec, dtype=float))
    return np.stack([np.cos(d) * np.cos(a), np.cos(d) * np.sin(a), np.sin(d)], axis=-1)


def vec_to_radec(v: np.ndarray):
    ra = np.mod(np.rad2deg(np.arctan2(v[..., 1], v[..., 0])), 360.0)
    dec = np.rad2deg(np.arcsin(np.clip(v[..., 2], -1.0, 1.0)))
    return ra, dec


def ecliptic_latitude(ra, dec) -> np.ndarray:
    return np.rad2deg(np.arcsin(np.clip(equ_to_ecl(radec_to_vec(ra, dec))[..., 2], -1, 1)))


def _ring_params(pass_index, ring):
    lon = np.deg2rad(L_START + 180.0 * pass_index + ring * _RING_DEG)
    phase = _TILE_DEG * np.mod(_GOLDEN * (ring + 37 * pass_index), 1.0)
    return lon, phase


def pointing(slew, step, pair):
    """Detector-centre (ra0, dec0) [deg] and +y position angle [deg E of N] (vectorised)."""
    slew = np.asarray(slew, dtype=np.int64)
    p = slew // SLEWS_PER_PASS
    rem = slew % SLEWS_PER_PASS
    ring = rem // SLEWS_PER_RING
    tile = (rem % SLEWS_PER_RING) * STEPS + (np.asarray(step) - 1)
    lon, phase = _ring_params(p, ring)
    phi = np.deg2rad(phase + tile * _TILE_DEG)
    zero = np.zeros_like(lon)
    e_l = np.stack([np.cos(lon), np.sin(lon), zero], axis=-1)
    e_z = np.stack([zero, zero, zero + 1.0], axis=-1)
    n = np.stack([-np.sin(lon), np.cos(lon), zero], axis=-1)
    cphi, sphi = np.cos(phi)[..., None], np.sin(phi)[..., None]
    pvec = cphi * e_l + sphi * e_z
    tvec = -sphi * e_l + cphi * e_z
    u = np.deg2rad((np.asarray(pair) - 1) * PAIR_OFFSET_DEG)[..., None]
    dvec = ecl_to_equ(np.cos(u) * pvec + np.sin(u) * n)
    tvec = ecl_to_equ(tvec) * np.where(p % 2 == 0, 1.0, -1.0)[..., None]
    ra0, dec0 = vec_to_radec(dvec)
    a, d = np.deg2rad(ra0), np.deg2rad(dec0)
    east = np.stack([-np.sin(a), np.cos(a), np.zeros_like(a)], axis=-1)
    north = np.stack([-np.sin(d) * np.cos(a), -np.sin(d) * np.sin(a), np.cos(d)], axis=-1)
    pa = np.rad2deg(np.arctan2((tvec * east).sum(-1), (tvec * north).sum(-1)))
    jitter = 0.3 * (np.mod(slew * 0.7548776662466927, 1.0) - 0.5)
    return ra0, dec0, pa + jitter


@dataclass(frozen=True)
class ImageInfo:
    """Everything that identifies one simulated Level-2 frame."""

    slew: int  # absolute large-slew index
    step: int  # small step 1..4
    detector: int
    obsid: str
    planning_period: str
    token: str  # processing token 'l2b-vNN-YYYY-DDD'
    mjd_beg: float
    ra0: float  # CRVAL1 [deg]
    dec0: float  # CRVAL2 [deg]
    pa_y: float  # position angle of detector +y [deg E of N]
    pass_index: int
    processing_mjd: float
    release: str = "qr2"  # 'qr2' / 'qr3' (time slice of the slew, ``timeline``)
    version: str = RELEASES["qr2"].version  # pipeline VERSION of the release
    retry: bool = False  # the l2b_retry copy of a QR3 exposure (same pixels, own token/DATE)

    @property
    def layout(self) -> str:
        """File layout: 'qr2' (PSF cube, int32 FLAGS) or 'r7' (EPSF table, RICE_1 FLAGS)."""
        return RELEASES[self.release].layout

    @property
    def key(self) -> str:
        """Path after ``/ibe/data/spherex/`` (= the S3 key)."""
        return level2_key(self.release, self.planning_period, self.token, self.obsid, self.detector)

    @property
    def publisher_did(self) -> str:
        return publisher_did(self.release, self.obsid, self.detector, self.retry)

    @property
    def mjd_end(self) -> float:
        return self.mjd_beg + SPAN_SECONDS / 86400.0

    @property
    def mjd_avg(self) -> float:
        return 0.5 * (self.mjd_beg + self.mjd_end)

    @property
    def cd(self) -> np.ndarray:
        return simwcs.cd_matrix(self.pa_y)

    @property
    def sip(self) -> simwcs.Sip:
        return simwcs.detector_sip(self.detector)

    @property
    def file_name(self) -> str:
        return f"level2_{self.obsid}D{self.detector}_spx_{self.token}.fits"

    @property
    def sps_epa(self) -> float:
        return 0.0 if self.pass_index % 2 == 0 else 180.0

    @property
    def sps_target(self) -> int:
        return 10000 + (self.slew * 7919) % 90000

    def world_to_pixel(self, ra, dec):
        return simwcs.world_to_pixel(ra, dec, self.ra0, self.dec0, self.cd, self.sip)

    def pixel_to_world(self, x0, y0):
        return simwcs.pixel_to_world(x0, y0, self.ra0, self.dec0, self.cd, self.sip)


@functools.lru_cache(maxsize=65536)
def image_info(slew: int, step: int, detector: int, retry: bool = False) -> ImageInfo:
    """ImageInfo of a frame; ``retry`` selects the l2b_retry copy (QR3 only, ValueError else)."""
    release = str(release_of_slew(slew))
    period, stem, token, proc_mjd = slew_meta(slew, bool(retry))
    ra0, dec0, pa = pointing(slew, step, DETECTOR_PAIR[detector])
    return ImageInfo(
        slew=slew,
        step=step,
        detector=detector,
        obsid=f"{stem}_{step}",
        planning_period=period,
        token=token,
        mjd_beg=float(step_mjd(slew, step)),
        ra0=float(ra0),
        dec0=float(dec0),
        pa_y=float(pa),
        pass_index=slew // SLEWS_PER_PASS,
        processing_mjd=proc_mjd,
        release=release,
        version=RELEASES[release].version,
        retry=bool(retry),
    )


def parse_obsid(
    obsid: str,
    detector: int,
    passes: int,
    releases=DEFAULT_RELEASES,
    qr3_days: float = 35.0,
    retry: bool = False,
) -> ImageInfo:
    """ImageInfo of an OBSID + detector (+ retry copy); KeyError if no such frame is served by
    the configured ``passes``/``releases``/``qr3_days``."""
    m = _OBSID_RE.match(obsid)
    if not m or m[4] != "A" or detector not in DETECTOR_PAIR:
        raise KeyError(f"no simulated image {obsid}/D{detector}")
    label = f"{m[1]}W{m[2]}_{m[3]}A"
    try:
        dt.date.fromisocalendar(int(m[1]), int(m[2]), 1)
    except ValueError as exc:
        raise KeyError(f"no simulated image {obsid}/D{detector}: {exc}") from exc
    slew = first_slew_of_period(label) + int(m[5])
    windows = release_windows(int(passes), check_releases(releases), float(qr3_days))
    if not in_windows(slew, windows):
        raise KeyError(
            f"no simulated image {obsid}/D{detector} (outside the served releases "
            f"{sorted(windows)} with {passes} QR2 pass(es), {qr3_days:g} QR3 days)"
        )
    if planning_period_of(float(slew_mjd(slew)))[0] != label:
        raise KeyError(f"no simulated image {obsid}/D{detector} (large slew out of range)")
    if retry and not has_retry(slew):
        raise KeyError(f"no simulated image {obsid}/D{detector} under an l2b_retry token")
    return image_info(slew, int(m[6]), detector, bool(retry))


def find_images(
    ra, dec, radius_arcsec: float, passes: int, releases=DEFAULT_RELEASES, qr3_days: float = 35.0
):
    """All frames of the served releases whose footprint (grown by ``radius_arcsec``) contains
    each position.

    Returns arrays (position index, slew, step, detector, x0, y0) with the 0-based pixel
    position of the point in each frame; ``release_of_slew(slew)`` names each frame's release
    and ``has_retry(slew)`` says which also exist as an l2b_retry copy (not listed here). Cost
    grows with the number of candidates, never with the size of the survey.
    """
    windows = release_windows(int(passes), check_releases(releases), float(qr3_days))
    ra = np.atleast_1d(np.asarray(ra, dtype=float))
    dec = np.atleast_1d(np.asarray(dec, dtype=float))
    xv = equ_to_ecl(radec_to_vec(ra, dec))
    beta = np.arcsin(np.clip(xv[:, 2], -1, 1))
    lam = np.rad2deg(np.arctan2(xv[:, 1], xv[:, 0]))
    grow = radius_arcsec / 3600.0
    d_max = PAIR_OFFSET_DEG + _HALF_DET_DEG + 0.12 + grow
    s = math.sin(math.radians(d_max)) / np.maximum(np.cos(beta), 1e-12)
    a = np.rad2deg(np.arcsin(np.minimum(s, 1.0)))
    out = []
    passes_needed = {
        p
        for lo, hi in windows.values()
        for p in range(lo // SLEWS_PER_PASS, hi // SLEWS_PER_PASS + 1)
    }
    for p in sorted(passes_needed):
        delta = np.mod(lam - (L_START + 180.0 * p), 180.0)
        k_lo = np.ceil((delta - a) / _RING_DEG).astype(np.int64)
        k_hi = np.floor((delta + a) / _RING_DEG).astype(np.int64)
        full = s >= 1.0
        k_lo = np.where(full, 0, k_lo)
        k_hi = np.where(full, N_RINGS - 1, np.minimum(k_hi, k_lo + N_RINGS - 1))
        count = k_hi - k_lo + 1
        pos = np.repeat(np.arange(len(ra)), count)
        ring = np.mod(
            np.repeat(k_lo, count)
            + np.arange(count.sum())
            - np.repeat(np.cumsum(count) - count, count),
            N_RINGS,
        )
        # Drop rings whose slews all lie outside the served time slices (cheap pre-cut).
        ring_lo = p * SLEWS_PER_PASS + ring * SLEWS_PER_RING
        keep = np.zeros(ring.shape, dtype=bool)
        for lo, hi in windows.values():
            keep |= (ring_lo < hi) & (ring_lo + SLEWS_PER_RING > lo)
        pos, ring = pos[keep], ring[keep]
        lon, phase = _ring_params(p, ring)
        xp = xv[pos]
        cross = np.rad2deg(
            np.arcsin(np.clip(-np.sin(lon) * xp[:, 0] + np.cos(lon) * xp[:, 1], -1, 1))
        )
        along = np.rad2deg(np.arctan2(xp[:, 2], np.cos(lon) * xp[:, 0] + np.sin(lon) * xp[:, 1]))
        for pair in range(3):
            ok = np.abs(cross - (pair - 1) * PAIR_OFFSET_DEG) <= _HALF_DET_DEG + 0.12 + grow
            if not ok.any():
                continue
            half_tiles = (_HALF_DET_DEG + 0.25 + grow) / _TILE_DEG
            centre = (along[ok] - phase[ok]) / _TILE_DEG
            t_lo = np.ceil(centre - half_tiles).astype(np.int64)
            t_hi = np.floor(centre + half_tiles).astype(np.int64)
            n_t = t_hi - t_lo + 1
            idx = np.repeat(np.arange(ok.sum()), n_t)
            tile = np.mod(
                np.repeat(t_lo, n_t) + np.arange(n_t.sum()) - np.repeat(np.cumsum(n_t) - n_t, n_t),
                TILES_PER_RING,
            )
            c_pos = pos[ok][idx]
            slew = p * SLEWS_PER_PASS + ring[ok][idx] * SLEWS_PER_RING + tile // STEPS
            step = tile % STEPS + 1
            served = in_windows(slew, windows)
            c_pos, slew, step = c_pos[served], slew[served], step[served]
            ra0, dec0, pa = pointing(slew, step, pair)
            cd = simwcs.cd_matrix(pa)
            for det in PAIR_DETECTORS[pair]:
                x0, y0, front = simwcs.world_to_pixel(
                    ra[c_pos], dec[c_pos], ra0, dec0, cd, simwcs.detector_sip(det)
                )
                lim = radius_arcsec / PIXEL_SCALE_ARCSEC
                inside = (
                    front
                    & (x0 >= -0.5 - lim)
                    & (x0 <= NPIX - 0.5 + lim)
                    & (y0 >= -0.5 - lim)
                    & (y0 <= NPIX - 0.5 + lim)
                )
                out.append(
                    (
                        c_pos[inside],
                        slew[inside],
                        step[inside],
                        np.full(int(inside.sum()), det),
                        x0[inside],
                        y0[inside],
                    )
                )
    if not out:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty, empty, np.zeros(0), np.zeros(0)
    cols = [np.concatenate(c) for c in zip(*out, strict=True)]
    # A tile window may wrap onto the same frame twice near the poles: keep unique frames.
    key = np.stack([cols[0], cols[1], cols[2], cols[3]], axis=1)
    _, first = np.unique(key, axis=0, return_index=True)
    first = np.sort(first)
    return tuple(c[first] for c in cols)
