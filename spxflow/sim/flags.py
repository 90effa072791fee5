"""FLAGS plane of a simulated frame (QR2 bits, ``spxflow.format.FLAG_BITS``) and the matching
value corruptions. Each flag is a pure function of (seed, detector or image, parent pixel).

Incidence (spec §5, one real D3 frame): NONFUNC 0.3 % and COLD 0.04 % fixed per detector;
per image TRANSIENT 0.5 % (cosmic rays; 74 % of them also SUR_ERROR), OUTLIER 1.7 %, PERSIST
0.2 %; DICHROIC on the 53 lowest rows of D3 and the 53 highest rows of D4 (2.6 %); SOURCE on
pixels where a rendered source exceeds half the per-pixel noise; OVERFLOW where the signal
exceeds ``SATURATION_MJYSR`` (values kept: SUR values stay usable).
"""

from __future__ import annotations

import numpy as np

from spxflow.format import FLAG_BITS, NPIX
from spxflow.sim import hashrng

BIT = {name: 1 << bit for name, (bit, _) in FLAG_BITS.items()}
RATE_NONFUNC = 0.003
RATE_COLD = 0.0004
RATE_TRANSIENT = 0.005
SUR_ERROR_FRACTION = 0.74
RATE_OUTLIER = 0.017
RATE_PERSIST = 0.002
DICHROIC_ROWS = 53
SATURATION_MJYSR = 50.0
SOURCE_THRESHOLD_SIGMA = 0.5

# Stream numbers of the counter-based RNG (one per independent random field).
S_NONFUNC, S_COLD, S_TRANSIENT, S_SURERR, S_OUTLIER, S_PERSIST, S_CRAMP, S_OUTAMP = range(10, 18)


def detector_key(seed: int, detector: int) -> int:
    return hashrng.key_of("detector", seed, detector)


def pixel_flags(seed: int, detector: int, image_key: int, xx, yy, signal, source_mask):
    """(flags int32, masks dict) for 0-based parent pixel grids ``xx``, ``yy``.

    ``signal`` is the noiseless sky+source model [MJy/sr] (for OVERFLOW) and ``source_mask``
    the SOURCE footprint.
    """
    idx = np.asarray(yy, dtype=np.int64) * NPIX + np.asarray(xx, dtype=np.int64)
    dkey = detector_key(seed, detector)
    m = {
        "NONFUNC": hashrng.uniform(dkey, S_NONFUNC, idx) < RATE_NONFUNC,
        "COLD": hashrng.uniform(dkey, S_COLD, idx) < RATE_COLD,
        "TRANSIENT": hashrng.uniform(image_key, S_TRANSIENT, idx) < RATE_TRANSIENT,
        "OUTLIER": hashrng.uniform(image_key, S_OUTLIER, idx) < RATE_OUTLIER,
        "PERSIST": hashrng.uniform(image_key, S_PERSIST, idx) < RATE_PERSIST,
        "SOURCE": np.asarray(source_mask, dtype=bool),
        "OVERFLOW": np.asarray(signal) > SATURATION_MJYSR,
    }
    m["SUR_ERROR"] = m["TRANSIENT"] & (
        hashrng.uniform(image_key, S_SURERR, idx) < SUR_ERROR_FRACTION
    )
    if detector == 3:
        m["DICHROIC"] = np.asarray(yy) < DICHROIC_ROWS
    elif detector == 4:
        m["DICHROIC"] = np.asarray(yy) >= NPIX - DICHROIC_ROWS
    else:
        m["DICHROIC"] = np.zeros(idx.shape, dtype=bool)
    flags = np.zeros(idx.shape, dtype=np.int32)
    for name, mask in m.items():
        flags |= np.where(mask, np.int32(BIT[name]), np.int32(0))
    return flags, m


def full_frame_counts(detector: int, image_key: int, source_fraction: float) -> dict[str, int]:
    """``L2 N_*`` counts of the (never materialised) full frame: expected values with a
    deterministic per-image scatter of a few per cent."""
    n = NPIX * NPIX

    def jitter(stream: int) -> float:
        return 1.0 + 0.06 * (
            float(hashrng.uniform(image_key, 900 + stream, np.array([0]))[0]) - 0.5
        )

    transient = round(n * RATE_TRANSIENT * jitter(1))
    return {
        "SOURCE": round(n * source_fraction),
        "OUTLIER": round(n * RATE_OUTLIER * jitter(2)),
        "TRANSIENT": transient,
        "SUR_ERROR": round(transient * SUR_ERROR_FRACTION),
        "NONFUNC": round(n * RATE_NONFUNC),
        "DICHROIC": DICHROIC_ROWS * NPIX if detector in (3, 4) else 0,
        "OVERFLOW": round(40 * jitter(3)),
        "COLD": round(n * RATE_COLD),
        "HOT": 1,
        "PERSIST": round(n * RATE_PERSIST * jitter(4)),
        "FULLSAMPLE": 0,
        "MISSING": 0,
        "PHANMISS": 0,
        "NONLINEAR": 0,
        "GHOST": 0,
        "GHOST_FPA": 0,
        "GHOST_EXT": 0,
        "BLOOM_NS": 0,
        "SNOW_NS": 0,
    }
