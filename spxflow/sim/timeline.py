"""The survey clock: slew times, planning periods, releases (time slices) and processing tokens.

Why a module of its own: which release an image belongs to, its processing token and its
``DATE`` cards are functions of the slew index alone (never of pointing geometry), and both the
survey geometry (``survey``) and the discovery rows need them.

* Large slew ``A`` starts at ``T0_MJD + A * SLEW_DAYS``; a pass is ``SLEWS_PER_PASS`` slews.
* Releases are consecutive time slices (spec §0, §8.0): **QR2** = slews of the first ``passes``
  passes that start before ``QR3_START_MJD`` (2026-07-20); **QR3** = slews that start in
  ``[QR3_START_MJD, QR3_START_MJD + qr3_days)`` whatever ``passes`` is (it lies in pass 2).
  A slew's release follows from its step-1 time, so all 4 small steps share a release.
* Tokens: QR2 ``l2b-v{21 + min(pass, 4)}-YYYY-DDD`` processed 45 days after the planning period
  starts; QR3 ``l2b-v27-YYYY-DDD`` processed ~22 days after (the first QR3 period gives day 222,
  as the first real token). A deterministic ~10 % of QR3 large slews were processed twice: they
  also exist as ``l2b_retry-v27-…`` one day later (§8.1, §8.8) with identical pixels.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import re
from collections.abc import Iterable

import numpy as np

from spxflow.format import QR3_START_MJD, RELEASES
from spxflow.sim import hashrng

T0_MJD = 60796.0  # 2025-05-01T00:00:00 UTC, start of science operations
PASS_DAYS = 182.625
N_RINGS = 211
SLEWS_PER_RING = 104
STEPS = 4
SLEWS_PER_PASS = N_RINGS * SLEWS_PER_RING
SLEW_DAYS = PASS_DAYS / SLEWS_PER_PASS  # ≈ 719 s per large slew
STEP_SECONDS = 128.9
TSAMP = 1.5349
SURLIM = 77
SURDLY = 3
XPOSURE = 113.5826
TELAPSE = 118.1873
SPAN_SECONDS = (SURLIM - 2) * TSAMP  # MJD-END - MJD-BEG = 115.118 s
QR2_PROCESSING_DAYS = 45
QR3_PROCESSING_DAYS = 21.5  # floor(period start + 21.5): first QR3 period -> 2026-222
QR3_L2_VERSION = 27
RETRY_FRACTION = 10  # 1 in RETRY_FRACTION QR3 large slews also has an l2b_retry copy
_RETRY_KEY = hashrng.key_of("l2b_retry")
_MJD_EPOCH = dt.datetime(1858, 11, 17)


def slew_mjd(slew) -> np.ndarray:
    """MJD-BEG of small step 1 of large slew ``slew``."""
    return T0_MJD + np.asarray(slew, dtype=np.float64) * SLEW_DAYS


def step_mjd(slew, step) -> np.ndarray:
    """MJD-BEG of a small step (steps are ``STEP_SECONDS`` apart)."""
    return slew_mjd(slew) + (np.asarray(step) - 1) * STEP_SECONDS / 86400.0


def mjd_to_datetime(mjd: float) -> dt.datetime:
    return _MJD_EPOCH + dt.timedelta(microseconds=round(mjd * 86400e6))


def iso_ms(mjd: float) -> str:
    """ISO-8601 UTC string with millisecond precision."""
    t = _MJD_EPOCH + dt.timedelta(milliseconds=round(mjd * 86400e3))
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}"


def _datetime_to_mjd(t: dt.datetime) -> float:
    return (t - _MJD_EPOCH) / dt.timedelta(days=1)


def planning_period_of(mjd: float) -> tuple[str, float]:
    """(planning period label 'YYYYWww_nA', its start MJD) of an MJD."""
    t = mjd_to_datetime(mjd)
    year, week, _ = t.isocalendar()
    monday = dt.datetime.combine(dt.date.fromisocalendar(year, week, 1), dt.time())
    half = 1 if (t - monday) < dt.timedelta(days=3.5) else 2
    start = monday + dt.timedelta(days=3.5 * (half - 1))
    return f"{year}W{week:02d}_{half}A", _datetime_to_mjd(start)


@functools.lru_cache(maxsize=4096)
def first_slew_of_period(label: str) -> int:
    """Smallest slew index whose step-1 time falls in planning period ``label``."""
    m = re.fullmatch(r"(\d{4})W(\d{2})_([12])A", label)
    year, week, half = int(m[1]), int(m[2]), int(m[3])
    monday = dt.datetime.combine(dt.date.fromisocalendar(year, week, 1), dt.time())
    start = _datetime_to_mjd(monday + dt.timedelta(days=3.5 * (half - 1)))
    a = max(0, math.ceil((start - T0_MJD) / SLEW_DAYS))
    while a > 0 and planning_period_of(float(slew_mjd(a - 1)))[0] == label:
        a -= 1
    while planning_period_of(float(slew_mjd(a)))[0] != label:
        a += 1
    return a


def first_slew_at(mjd: float) -> int:
    """Smallest slew index whose step-1 time is >= ``mjd``."""
    a = max(0, math.ceil((mjd - T0_MJD) / SLEW_DAYS))
    while a > 0 and float(slew_mjd(a - 1)) >= mjd:
        a -= 1
    while float(slew_mjd(a)) < mjd:
        a += 1
    return a


# --------------------------------------------------------------------------- releases


def check_releases(releases: Iterable[str]) -> tuple[str, ...]:
    """Releases as a sorted tuple; ValueError names an unknown one."""
    rels = tuple(sorted({str(r) for r in releases}))
    bad = [r for r in rels if r not in RELEASES]
    if bad or not rels:
        raise ValueError(f"releases must be a non-empty subset of {sorted(RELEASES)}, got {bad}")
    return rels


@functools.lru_cache(maxsize=256)
def release_windows(
    passes: int, releases: tuple[str, ...], qr3_days: float
) -> dict[str, tuple[int, int]]:
    """Half-open slew-index interval ``[lo, hi)`` of each configured release."""
    qr3_lo = first_slew_at(QR3_START_MJD)
    out = {}
    if "qr2" in releases:
        out["qr2"] = (0, min(int(passes) * SLEWS_PER_PASS, qr3_lo))
    if "qr3" in releases:
        out["qr3"] = (qr3_lo, first_slew_at(QR3_START_MJD + float(qr3_days)))
    return {k: v for k, v in out.items() if v[1] > v[0]}


def in_windows(slew, windows: dict[str, tuple[int, int]]) -> np.ndarray:
    """Boolean mask: slew lies in one of ``windows`` (vectorised)."""
    slew = np.asarray(slew, dtype=np.int64)
    ok = np.zeros(slew.shape, dtype=bool)
    for lo, hi in windows.values():
        ok |= (slew >= lo) & (slew < hi)
    return ok


def release_of_slew(slew) -> np.ndarray:
    """Release name ('qr2' / 'qr3') of each slew, from its step-1 time (vectorised)."""
    return np.where(slew_mjd(slew) >= QR3_START_MJD, "qr3", "qr2")


def has_retry(slew) -> np.ndarray:
    """True for QR3 large slews that also exist under an ``l2b_retry`` token (vectorised)."""
    slew = np.asarray(slew, dtype=np.int64)
    pick = hashrng.hash64(_RETRY_KEY, 0, slew) % np.uint64(RETRY_FRACTION) == 0
    return pick & (release_of_slew(slew) == "qr3")


@functools.lru_cache(maxsize=262144)
def slew_meta(slew: int, retry: bool = False) -> tuple[str, str, str, float]:
    """(planning period, OBSID stem 'YYYYWww_nA_SSSS', processing token, processing MJD)."""
    mjd1 = float(slew_mjd(slew))
    period, start = planning_period_of(mjd1)
    large = slew - first_slew_of_period(period)
    if mjd1 >= QR3_START_MJD:
        proc = math.floor(start + QR3_PROCESSING_DAYS) + int(retry)
        kind, version = ("l2b_retry" if retry else "l2b"), QR3_L2_VERSION
    else:
        if retry:
            raise ValueError(f"slew {slew} is a QR2 slew: QR2 has no l2b_retry copies")
        proc = math.floor(start) + QR2_PROCESSING_DAYS
        kind, version = "l2b", 21 + min(slew // SLEWS_PER_PASS, 4)
    proc_date = mjd_to_datetime(proc)
    token = f"{kind}-v{version}-{proc_date.year}-{proc_date.timetuple().tm_yday:03d}"
    return period, f"{period}_{large:04d}", token, proc + (slew % 997) / 997.0


def level2_key(release: str, period: str, token: str, obsid: str, detector: int) -> str:
    """Path after ``/ibe/data/spherex/`` (= S3 key) of a Level-2 file."""
    name = f"level2_{obsid}D{detector}_spx_{token}.fits"
    return f"{release}/level2/{period}/{token}/{detector}/{name}"


def publisher_did(release: str, obsid: str, detector: int, retry: bool = False) -> str:
    """obs_publisher_did; the ``/retry`` suffix (invented) keeps DIDs unique per file."""
    return f"ivo://irsa.ipac/spherex_{release}?{obsid}/D{detector}" + ("/retry" if retry else "")
