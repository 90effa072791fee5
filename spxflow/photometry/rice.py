"""RICE_1 tile-compressed images (FITS tiled-image convention) decoded straight from a buffer.

R7 FLAGS (spec §8.3) is a BINTABLE whose rows are tiles: a (byte count, heap offset)
descriptor per tile, the Rice-coded bytes in the heap. Only the tiles under the requested rows
are decoded, so a row window costs its own heap run (the S3 range reader reads just that).

The Rice decoder is astropy's ``Rice1`` codec: a private API, imported here and nowhere else.
It is what ``CompImageHDU`` itself calls, so the pixels equal astropy's by construction, and
it is imported lazily so QR2 work never pays for (or depends on) it.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from spxflow.photometry.fitsread import FitsReadError, Hdu, table_columns

_DESCRIPTOR_COLUMN = "COMPRESSED_DATA"
_OTHER_TILE_COLUMNS = ("GZIP_COMPRESSED_DATA", "UNCOMPRESSED_DATA")


class RiceUnavailable(FitsReadError):
    """astropy's private Rice codec cannot be imported (astropy missing or changed)."""


@functools.cache
def _rice1_class():
    try:
        from astropy.io.fits.hdu.compressed._codecs import Rice1
    except Exception as exc:  # ImportError, or an AttributeError after an astropy refactor
        raise RiceUnavailable(
            "RICE_1 FLAGS need astropy's private codec "
            f"astropy.io.fits.hdu.compressed._codecs.Rice1, which failed to import: {exc!r}"
        ) from exc
    return Rice1


@functools.cache
def _codec(blocksize: int, bytepix: int, tilesize: int):
    return _rice1_class()(blocksize=blocksize, bytepix=bytepix, tilesize=tilesize)


def decode_tile(data, blocksize: int, bytepix: int, npix: int) -> np.ndarray:
    """``npix`` integers of one Rice-coded tile (edge tiles may decode padded: cut, as
    astropy does)."""
    return _codec(blocksize, bytepix, npix).decode(data)[:npix]


@dataclass(frozen=True)
class TiledImage:
    """Geometry of a tile-compressed 2-D image HDU, from its table header."""

    name: str
    shape: tuple[int, int]  # image (ny, nx)
    tile: tuple[int, int]  # (ZTILE2, ZTILE1); tiles are stored x-fast
    blocksize: int
    bytepix: int
    table_start: int  # byte offset of the descriptor table
    row_width: int  # NAXIS1
    descriptor_offset: int  # of COMPRESSED_DATA inside a row
    descriptor_dtype: np.dtype  # >i4 ('P') or >i8 ('Q')
    heap_start: int  # byte offset of the heap (THEAP, default right after the table)
    data_end: int  # byte offset just past the HDU's data (table + heap)
    fallback_columns: tuple[str, ...]  # other tile columns (GZIP/uncompressed): unsupported

    @property
    def ntiles(self) -> tuple[int, int]:
        return math.ceil(self.shape[0] / self.tile[0]), math.ceil(self.shape[1] / self.tile[1])


def _setting(h, name: str, default: int) -> int:
    """A ZNAMEn/ZVALn compression parameter (as astropy reads them), else the default."""
    for i in range(1, 1000):
        znam = h.get(f"ZNAME{i}")
        if znam is None:
            break
        if str(znam).strip().upper() == name:
            return int(h[f"ZVAL{i}"])
    return default


def tiled_image(hdu: Hdu) -> TiledImage:
    """Validate a compressed HDU and return its geometry; FitsReadError names the value that
    is not supported (only RICE_1 on a 32-bit integer 2-D image is)."""
    h = hdu.header
    if not hdu.is_compressed:
        raise FitsReadError(f"{hdu.name}: not a tile-compressed image (no ZIMAGE = T)")
    cmp = str(h.get("ZCMPTYPE", "")).strip()
    if cmp != "RICE_1":
        raise FitsReadError(f"{hdu.name}: ZCMPTYPE = {cmp!r} is not supported (only 'RICE_1')")
    if h.get("ZBITPIX") != 32:
        raise FitsReadError(f"{hdu.name}: ZBITPIX = {h.get('ZBITPIX')!r} is not supported (32)")
    if h.get("ZNAXIS") != 2:
        raise FitsReadError(f"{hdu.name}: ZNAXIS = {h.get('ZNAXIS')!r} is not supported (2)")
    # Scaled integers would not be the stored bits astropy returns for int32 flags.
    if float(h.get("BSCALE", 1.0)) != 1.0 or float(h.get("BZERO", 0.0)) != 0.0:
        raise FitsReadError(
            f"{hdu.name}: BSCALE/BZERO = {h.get('BSCALE')!r}/{h.get('BZERO')!r} not supported"
        )
    ny, nx = int(h["ZNAXIS2"]), int(h["ZNAXIS1"])
    tile = (int(h.get("ZTILE2", 1)), int(h.get("ZTILE1", nx)))
    if min(tile) < 1:
        raise FitsReadError(f"{hdu.name}: bad tile shape ZTILE1/2 = {tile[1]}/{tile[0]}")
    bytepix = _setting(h, "BYTEPIX", 4)
    if bytepix not in (1, 2, 4):
        raise FitsReadError(f"{hdu.name}: RICE_1 BYTEPIX = {bytepix} not supported (1, 2, 4)")
    cols = table_columns(hdu)
    col = cols.get(_DESCRIPTOR_COLUMN)
    if col is None or col.heap_type != "B":
        raise FitsReadError(f"{hdu.name}: no {_DESCRIPTOR_COLUMN} byte-descriptor column")
    out = TiledImage(
        name=hdu.name,
        shape=(ny, nx),
        tile=tile,
        blocksize=_setting(h, "BLOCKSIZE", 32),
        bytepix=bytepix,
        table_start=hdu.data_start,
        row_width=int(h["NAXIS1"]),
        descriptor_offset=col.offset,
        descriptor_dtype=col.dtype,
        heap_start=hdu.data_start + int(h.get("THEAP", int(h["NAXIS1"]) * int(h["NAXIS2"]))),
        data_end=hdu.data_start + hdu.data_size,
        fallback_columns=tuple(c for c in _OTHER_TILE_COLUMNS if c in cols),
    )
    if int(h["NAXIS2"]) != math.prod(out.ntiles):
        raise FitsReadError(
            f"{hdu.name}: {h['NAXIS2']} tile rows, but ZNAXIS/ZTILE give {math.prod(out.ntiles)}"
        )
    return out


def _descriptors(buf, t: TiledImage, first: int, count: int) -> np.ndarray:
    """(count, 2) [nbytes, heap offset] of tiles first..first+count-1 (a strided read)."""
    view = np.ndarray(
        (count, 2),
        dtype=t.descriptor_dtype,
        buffer=buf,
        offset=t.table_start + first * t.row_width + t.descriptor_offset,
        strides=(t.row_width, t.descriptor_dtype.itemsize),
    )
    return view.astype(np.int64)


def read_compressed_rows(buf, hdu: Hdu, y0: int, y1: int) -> np.ndarray:
    """Image rows [y0, y1) of a RICE_1 tile-compressed HDU as int32, decoding only the tile
    rows that cover them (one tile per image row in R7 FLAGS)."""
    return _rows(buf, tiled_image(hdu), y0, y1)


def read_compressed_image(buf, hdu: Hdu) -> np.ndarray:
    """The whole decoded image (int32)."""
    t = tiled_image(hdu)
    return _rows(buf, t, 0, t.shape[0])


def _rows(buf, t: TiledImage, y0: int, y1: int) -> np.ndarray:
    ny, nx = t.shape
    if not 0 <= y0 <= y1 <= ny:
        raise FitsReadError(f"{t.name}: row window [{y0}, {y1}) outside 0..{ny}")
    ty, tx = t.tile
    ntx = t.ntiles[1]
    j0, j1 = y0 // ty, -(-y1 // ty)
    out = np.empty(((j1 - j0) * ty, nx), dtype=np.int32)
    if j1 == j0:
        return out[:0]
    desc = _descriptors(buf, t, j0 * ntx, (j1 - j0) * ntx)
    # One view of the heap run under these tiles, sliced per tile (cheaper than a
    # frombuffer per tile; R7 FLAGS decode one ~6 KB tile per image row).
    empty = desc[:, 0] <= 0
    outside = (desc[:, 1] < 0) | (t.heap_start + desc[:, 0] + desc[:, 1] > t.data_end)
    if empty.any() or outside.any():
        k = int(np.flatnonzero(empty | outside)[0])
        extra = f" (the file uses {list(t.fallback_columns)})" if t.fallback_columns else ""
        what = f"has no RICE_1 data{extra}" if empty[k] else "lies outside the HDU's heap"
        raise FitsReadError(f"{t.name}: tile {j0 * ntx + k} {what}")
    lo, hi = int(desc[:, 1].min()), int((desc[:, 0] + desc[:, 1]).max())
    heap = np.frombuffer(buf, dtype=np.uint8, count=hi - lo, offset=t.heap_start + lo)
    for n, (nbytes, offset) in enumerate(desc.tolist()):
        j, i = divmod(n, ntx)
        h = min(ty, ny - (j0 + j) * ty)
        w = min(tx, nx - i * tx)
        try:
            tile = decode_tile(
                heap[offset - lo : offset - lo + nbytes], t.blocksize, t.bytepix, h * w
            )
        except RiceUnavailable:
            raise
        except Exception as exc:  # astropy's CfitsioException is a bare Exception
            raise FitsReadError(f"{t.name}: tile {j0 * ntx + n}: RICE_1 {exc}") from exc
        out[j * ty : j * ty + h, i * tx : i * tx + w] = tile.reshape(h, w)
    return out[y0 - j0 * ty : y1 - j0 * ty]
