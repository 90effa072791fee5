"""Result flags of a measurement: one bit per reason, each with help text.

As in Astra's ``result_flags``: a measurement keeps every bit that applies, and
``science_recommended`` is False when any bit of ``NOT_RECOMMENDED`` is set. The FITS summary
writes the table as FLAGnn header cards. Bits are part of the output schema: append new ones,
never renumber.
"""

from __future__ import annotations

RESULT_FLAGS: dict[str, tuple[int, str]] = {
    "FETCH_FAILED": (0, "The cutout could not be fetched from the archive"),
    "READ_FAILED": (1, "Cutout file unreadable, truncated or missing an HDU"),
    "BAD_WCS": (2, "Celestial WCS missing, non-finite or not invertible"),
    "OFF_CUTOUT": (3, "Target position lies outside the cutout"),
    "ALL_MASKED": (4, "Too few unmasked pixels under the target PSF to fit"),
    "FIT_FAILED": (5, "Normal matrix singular: no solution"),
    "NEAR_EDGE": (6, "Part of the target PSF falls outside the fit window"),
    "MASKED_CORE": (7, "PSF-weighted masked fraction above the limit"),
    "HIGH_CHI2": (8, "Reduced chi-square above what noise and PSF error allow"),
    "CORE_RESIDUAL": (9, "Residual flux inside 2.5 px beyond noise and PSF tolerance"),
    "BLENDED": (10, "A neighbour within the blend radius or strongly correlated"),
    "ILL_CONDITIONED": (11, "Normal matrix condition number above the limit"),
    "NO_SOLID_ANGLE_MAP": (12, "No solid-angle pixel map: nominal pixel area used"),
    "WAVELENGTH_FROM_WCS_WAVE": (13, "No CWAVE/CBAND calibration: WCS-WAVE lookup used"),
    "NEIGHBOUR_DROPPED": (14, "A neighbour had no usable pixels and was not fitted"),
    "NO_FLUX_CORRECTION": (15, "QR2 image without l3_flux_corrections: QR2 scale"),
    "NO_EPSF_LIBRARY": (16, "qr2_psf=epsf but no ePSF library: PSF cube used"),
}

FAILURE_FLAGS = ("FETCH_FAILED", "READ_FAILED", "BAD_WCS", "OFF_CUTOUT", "ALL_MASKED", "FIT_FAILED")
NOT_RECOMMENDED = FAILURE_FLAGS + (
    "NEAR_EDGE",
    "MASKED_CORE",
    "HIGH_CHI2",
    "CORE_RESIDUAL",
    "BLENDED",
    "ILL_CONDITIONED",
    "NO_SOLID_ANGLE_MAP",
    "NO_FLUX_CORRECTION",
)


def bit(name: str) -> int:
    """The integer value (1 << bit) of flag ``name``."""
    return 1 << RESULT_FLAGS[name][0]


def mask_of(names) -> int:
    out = 0
    for n in names:
        out |= bit(n)
    return out


def describe(value: int) -> list[str]:
    """Names of the flags set in ``value``, in bit order."""
    value = int(value)
    return [
        n for n, (b, _) in sorted(RESULT_FLAGS.items(), key=lambda kv: kv[1][0]) if value >> b & 1
    ]
