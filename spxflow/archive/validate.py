"""Validation of a cutout file before it is renamed into place or measured."""

from __future__ import annotations

import gzip
import os

import numpy as np
from astropy.io import fits

from spxflow.format import EXTNAMES, R7_EXTNAMES

GZIP_MAGIC = b"\x1f\x8b"


def maybe_gunzip(data: bytes) -> bytes:
    """Decompress ``data`` if it starts with the gzip magic bytes (IRSA gzips by default)."""
    return gzip.decompress(data) if data[:2] == GZIP_MAGIC else data


def cutout_problem(path: str | os.PathLike) -> str:
    """Empty string if ``path`` is a complete SPHEREx cutout, else the reason it is not.

    Checks FITS structure (every HDU's data present: a truncated file fails), the seven HDUs
    of either layout in order (QR2: PSF cube; R7: EPSF table, FLAGS tile-compressed), image
    shapes that agree, and an IMAGE that is not all zero or non-finite.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(2)
        if head == GZIP_MAGIC:
            return "file is gzip-compressed (decompress before validating)"
        with fits.open(path, memmap=False, lazy_load_hdus=False) as hdul:
            names = [h.name for h in hdul]
            r7 = "EPSF" in names
            want = list(R7_EXTNAMES if r7 else EXTNAMES)
            if names[: len(want)] != want:
                return f"HDUs {names} match neither Level-2 layout ({EXTNAMES}, {R7_EXTNAMES})"
            for h in hdul[1:]:
                _ = h.data  # reading every HDU's data detects truncation
            image = hdul["IMAGE"].data
            if image is None or image.ndim != 2 or image.size == 0:
                return "IMAGE HDU has no 2-D data"
            for name in ("FLAGS", "VARIANCE", "ZODI"):
                if hdul[name].data is None or hdul[name].data.shape != image.shape:
                    return f"{name} shape does not match IMAGE {image.shape}"
            finite = np.isfinite(image)
            if not finite.any() or not np.any(image[finite] != 0):
                return "IMAGE is all zero or non-finite"
            if r7:
                epsf = hdul["EPSF"]
                if not isinstance(epsf, fits.BinTableHDU) or "EPSF" not in epsf.columns.names:
                    return "EPSF HDU is not a table with an EPSF column"
                if epsf.data is None or len(epsf.data) == 0:
                    return "EPSF table has no rows"
            elif hdul["PSF"].data is None or hdul["PSF"].data.ndim != 3:
                return "PSF HDU is not a 3-D cube"
    except (OSError, ValueError, TypeError, IndexError, KeyError) as exc:
        return f"not a readable FITS cutout: {type(exc).__name__}: {exc}"
    return ""
