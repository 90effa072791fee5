"""The R7 ``EPSF`` table (spec §8.4): pick a source's zone row and read just that ePSF.

The table has one 8,752-byte row per zone (441; 451 on D3's 11x41 lattice). Choosing a row
needs only BINX/BINY/XCENTER/YCENTER, read as strided columns, so of the 3.9 MB table a read
touches those 16 bytes per row plus the one chosen 1089-double EPSF cell. The same functions
read the L2 extension and the ``epsf`` calibration library (QR2 images can be measured with
the R7 ePSF: ``photometry.qr2_psf: epsf``).
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass

import numpy as np

from spxflow.format import EPSF_SIZE, epsf_zone, epsf_zone_centers
from spxflow.photometry.fitsread import (
    FitsReadError,
    Hdu,
    map_file,
    read_cell,
    read_column,
    scan,
    table_columns,
)

EXTNAME = "EPSF"
CENTRE_TOLERANCE_PX = 0.01  # XCENTER/YCENTER are float32 values of (i+0.5)*2040/n - 0.5


class EpsfError(FitsReadError):
    """An EPSF table whose rows do not form the uniform zone lattice of §8.4."""


@dataclass(frozen=True)
class EpsfLattice:
    """Zone index and centre of every row of one EPSF table."""

    binx: np.ndarray
    biny: np.ndarray
    xcenter: np.ndarray  # 0-based parent pixels
    ycenter: np.ndarray
    nbinx: int
    nbiny: int

    def row_for(self, x_parent: float, y_parent: float) -> int:
        """Row nearest to a 0-based parent pixel (IRSA's rule), checked against the closed-form
        zone of the lattice; EpsfError if the table disagrees with its own lattice."""
        d2 = (self.xcenter - x_parent) ** 2 + (self.ycenter - y_parent) ** 2
        row = int(np.argmin(d2))
        ix, iy = epsf_zone(x_parent, y_parent, self.nbinx, self.nbiny)
        if (self.binx[row], self.biny[row]) != (ix, iy):
            # On a zone edge two centres tie; the closed form's zone is then as near.
            same = np.flatnonzero((self.binx == ix) & (self.biny == iy))
            if len(same) != 1 or d2[same[0]] > d2[row] + 1e-6:
                raise EpsfError(
                    f"EPSF row {row} (BINX={self.binx[row]}, BINY={self.biny[row]}) is nearest "
                    f"to parent pixel ({x_parent:.2f}, {y_parent:.2f}), whose zone on the "
                    f"{self.nbinx}x{self.nbiny} lattice is ({ix}, {iy})"
                )
            row = int(same[0])
        cx = epsf_zone_centers(self.nbinx)[ix]
        cy = epsf_zone_centers(self.nbiny)[iy]
        if (
            abs(self.xcenter[row] - cx) > CENTRE_TOLERANCE_PX
            or abs(self.ycenter[row] - cy) > CENTRE_TOLERANCE_PX
        ):
            raise EpsfError(
                f"EPSF row {row} zone ({ix}, {iy}) centre ({self.xcenter[row]:.4f}, "
                f"{self.ycenter[row]:.4f}) is not the lattice centre ({cx:.4f}, {cy:.4f})"
            )
        return row


def read_lattice(buf, hdu: Hdu) -> EpsfLattice:
    """BINX, BINY, XCENTER, YCENTER of every row (strided reads, no EPSF cells)."""
    if not hdu.is_table:
        raise EpsfError(f"{hdu.name}: not a BINTABLE")
    cols = table_columns(hdu)
    binx, biny, xc, yc = (
        read_column(buf, hdu, name, cols).ravel() for name in ("BINX", "BINY", "XCENTER", "YCENTER")
    )
    if len(binx) == 0:
        raise EpsfError(f"{hdu.name}: the table has no rows")
    nbinx, nbiny = int(binx.max()) + 1, int(biny.max()) + 1
    if len(binx) != nbinx * nbiny or binx.min() < 0 or biny.min() < 0:
        raise EpsfError(
            f"{hdu.name}: {len(binx)} rows do not tile a {nbinx}x{nbiny} lattice "
            f"(nbinx = max(BINX)+1, nbiny = max(BINY)+1)"
        )
    return EpsfLattice(
        binx.astype(np.int64),
        biny.astype(np.int64),
        xc.astype(np.float64),
        yc.astype(np.float64),
        nbinx,
        nbiny,
    )


def read_epsf_row(buf, hdu: Hdu, row: int) -> np.ndarray:
    """The 33x33 float64 ePSF of one row, numpy [y, x] (TDIM '(33,33)')."""
    arr = read_cell(buf, hdu, "EPSF", row)
    if arr.shape != (EPSF_SIZE, EPSF_SIZE):
        raise EpsfError(f"{hdu.name}: EPSF cell shape {arr.shape}, expected 33x33 (TDIM)")
    return arr.astype(np.float64, copy=False)


def epsf_for(buf, hdu: Hdu, x_parent: float, y_parent: float) -> tuple[int, np.ndarray]:
    """(row, 33x33 ePSF) for a 0-based parent pixel, straight from a file's EPSF table."""
    row = read_lattice(buf, hdu).row_for(x_parent, y_parent)
    return row, read_epsf_row(buf, hdu, row)


class EpsfLibrary:
    """The per-detector ``epsf`` calibration product (primary + EPSF BINTABLE), memory-mapped
    once per process; the lattice is read at open and each row on first use, then cached.

    Picklable: the map is reopened lazily in another process, cached rows travel along.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        self._buf = None
        self._rows: dict[int, np.ndarray] = {}
        try:
            buf = self._buffer()
            hdus = scan(buf)
            epsf = next((h for h in hdus if h.name == EXTNAME), None)
            if epsf is None:
                raise EpsfError(f"no {EXTNAME} HDU (has {[h.name for h in hdus]})")
            self._hdu = epsf
            self.lattice = read_lattice(buf, epsf)
            primary = hdus[0].header
            self.version = str(primary.get("VERSION", "")).strip()
            # The EPSF header's DETECTOR is a string, the primary's an int (§8.8-3).
            det = primary.get("DETECTOR", epsf.header.get("DETECTOR", 0))
            self.detector = int(str(det).strip() or 0)
        except (FitsReadError, ValueError) as exc:  # ValueError: a malformed DETECTOR card
            self.close()
            raise EpsfError(f"{os.path.basename(self.path)}: {exc}") from exc

    @classmethod
    def from_path(cls, path: str | os.PathLike) -> EpsfLibrary:
        return cls(path)

    def _buffer(self):
        if self._buf is None:
            self._buf = map_file(self.path)
        return self._buf

    @property
    def shape(self) -> tuple[int, int]:
        """(nbinx, nbiny) of the lattice."""
        return self.lattice.nbinx, self.lattice.nbiny

    def row(self, index: int) -> np.ndarray:
        """ePSF of one table row (cached; do not modify the returned array)."""
        if index not in self._rows:
            try:
                self._rows[index] = read_epsf_row(self._buffer(), self._hdu, index)
            except FitsReadError as exc:
                raise EpsfError(f"{os.path.basename(self.path)}: {exc}") from exc
        return self._rows[index]

    def row_for(self, x_parent: float, y_parent: float) -> tuple[int, np.ndarray]:
        """(row index, 33x33 float64 [y, x] ePSF) of the zone of a 0-based parent pixel."""
        try:
            index = self.lattice.row_for(x_parent, y_parent)
        except EpsfError as exc:
            raise EpsfError(f"{os.path.basename(self.path)}: {exc}") from exc
        return index, self.row(index)

    def close(self) -> None:
        if isinstance(self._buf, mmap.mmap):
            self._buf.close()
        self._buf = None

    def __enter__(self) -> EpsfLibrary:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_buf"] = None
        return state
