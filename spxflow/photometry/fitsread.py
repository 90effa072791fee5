"""A lean FITS reader: header cards and data offsets, then only the bytes that are needed.

Why not astropy for every cutout: opening a cutout with astropy, parsing all headers and
building a TAN-SIP ``WCS`` costs 6-13 ms, while the fit costs microseconds. This reader scans
the HDU headers, computes where each data block starts, and reads just IMAGE, FLAGS, VARIANCE,
one PSF plane or ePSF row and the WCS-WAVE row. BINTABLE columns are located from TFORM/TDIM
so single columns and cells can be read without the rest of a row; RICE_1 tile-compressed
images (R7 FLAGS) are decoded by ``rice.py``. ``tests/test_photometry_reader.py`` and
``tests/test_reader_r7.py`` hold it equal to astropy on the same files.
"""

from __future__ import annotations

import contextlib
import gzip
import math
import mmap
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

BLOCK = 2880
_DTYPES = {8: ">u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}


class FitsReadError(ValueError):
    """The file is not a complete FITS file of the expected layout."""


class Header(Mapping):
    """Header cards of one HDU, converted to Python values only when looked up.

    Cutout headers carry ~1,000 cards (the PSF zone table alone ~500); converting all of them
    cost more than the fit, so the raw value text is indexed and parsed on access.
    """

    def __init__(self, raw: bytes):
        self._text = raw
        cards = np.frombuffer(raw, dtype="S80")
        # 8-character keywords of all cards in one C-level pass; the first occurrence wins.
        keys = cards.view("S1").reshape(len(cards), 80)[:, :8].copy().view("S8").ravel()
        self._keys = np.char.rstrip(keys)
        keys = self._keys.tolist()
        n = len(keys)
        self._index = dict(zip(reversed(keys), range(n - 1, -1, -1), strict=True))
        self._end = self._index.get(b"END", n)
        self._hier: dict[str, int] | None = None
        self._values: dict = {}

    def _raw(self, key: str) -> str | None:
        if len(key) <= 8:
            i = self._index.get(key.encode("ascii").rstrip())
            if i is not None and i < self._end:
                card = self._text[i * 80 : i * 80 + 80]
                return card[10:].decode("ascii", "replace") if card[8:10] == b"= " else None
            # A short name a writer put behind HIERARCH (astropy finds it too); the byte search
            # spares building the HIERARCH index for the usual miss (an absent optional card).
            if b"HIERARCH " + key.encode("ascii") not in self._text:
                return None
        i = self._hierarch().get(key.removeprefix("HIERARCH ").strip())
        if i is None:
            return None
        card = self._text[i * 80 : i * 80 + 80]
        return card[9:].partition(b"=")[2].decode("ascii", "replace")

    def _hierarch(self) -> dict[str, int]:
        """HIERARCH keyword (without the prefix, as astropy names it) -> card index, built on
        first use: QR2 writes most flag cards as ``HIERARCH MP_<NAME> = bit``."""
        if self._hier is None:
            self._hier = {}
            for i in np.flatnonzero(self._keys[: self._end] == b"HIERARCH").tolist():
                key, eq, _ = self._text[i * 80 + 9 : i * 80 + 80].partition(b"=")
                name = key.decode("ascii", "replace").strip()
                if eq and name not in self._hier:
                    self._hier[name] = i
        return self._hier

    def __getitem__(self, key):
        if key not in self._values:
            raw = self._raw(key)
            if raw is None:
                raise KeyError(key)
            self._values[key] = _value(raw)
        return self._values[key][0]

    def get(self, key, default=None):
        """As Mapping.get, without raising KeyError for absent cards (most optional look-ups
        miss, and exceptions cost more than the look-up)."""
        if key not in self._values:
            raw = self._raw(key)
            if raw is None:
                return default
            self._values[key] = _value(raw)
        return self._values[key][0]

    def comment(self, key) -> str:
        self[key]
        return self._values[key][1]

    def __iter__(self):
        """Keywords of value cards: 8-character keys, then HIERARCH keys (prefix dropped)."""
        seen = set()
        for k, i in self._index.items():
            if i < self._end and self._text[i * 80 + 8 : i * 80 + 10] == b"= ":
                seen.add(name := k.decode("ascii", "replace"))
                yield name
        yield from (k for k in self._hierarch() if k not in seen)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def keys_starting(self, prefix: str) -> list[str]:
        """Value-card keywords (HIERARCH ones included) that start with ``prefix``: the flag
        cards (``MP_``, ``MSKN``) without converting every card."""
        p, text, end = prefix.encode("ascii"), self._text, self._end
        out = [
            k.decode("ascii", "replace")
            for k, i in self._index.items()
            if k.startswith(p) and i < end and text[i * 80 + 8 : i * 80 + 10] == b"= "
        ]
        seen = set(out)
        return out + [k for k in self._hierarch() if k.startswith(prefix) and k not in seen]

    def __contains__(self, key) -> bool:
        try:
            self[key]
        except KeyError:
            return False
        return True


@dataclass
class Hdu:
    name: str
    header: Header
    data_start: int
    data_size: int
    cache: dict = field(default_factory=dict, repr=False, compare=False)  # parsed layouts

    @property
    def shape(self) -> tuple[int, ...]:
        """numpy order (slowest axis first)."""
        n = int(self.header.get("NAXIS", 0))
        return tuple(int(self.header[f"NAXIS{k}"]) for k in range(n, 0, -1))

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(_DTYPES[int(self.header["BITPIX"])])

    @property
    def is_table(self) -> bool:
        return str(self.header.get("XTENSION", "")).strip() == "BINTABLE"

    @property
    def is_compressed(self) -> bool:
        """A tile-compressed image stored as a BINTABLE (``ZIMAGE = T``, R7 FLAGS)."""
        return self.is_table and self.header.get("ZIMAGE") is True

    @property
    def image_shape(self) -> tuple[int, ...]:
        """numpy shape of the image, the decompressed one for a tile-compressed HDU."""
        if not self.is_compressed:
            return self.shape
        n = int(self.header["ZNAXIS"])
        return tuple(int(self.header[f"ZNAXIS{k}"]) for k in range(n, 0, -1))


def _value(text: str):
    """(value, comment) of a card's value field."""
    text = text.strip()
    if text.startswith("'"):
        # Quoted string; '' is an escaped quote; the comment follows the closing quote.
        out, i = [], 1
        while i < len(text):
            ch = text[i]
            if ch == "'":
                if i + 1 < len(text) and text[i + 1] == "'":
                    out.append("'")
                    i += 2
                    continue
                break
            out.append(ch)
            i += 1
        return "".join(out).rstrip(), text[i + 1 :].partition("/")[2].strip()
    raw, _, comment = text.partition("/")
    raw = raw.strip()
    comment = comment.strip()
    if raw == "T":
        return True, comment
    if raw == "F":
        return False, comment
    if raw == "":
        return None, comment
    try:
        return int(raw), comment
    except ValueError:
        pass
    try:
        return float(raw.replace("D", "E")), comment
    except ValueError:
        return raw, comment


def data_size(h: Header) -> int:
    naxis = int(h.get("NAXIS", 0))
    if naxis == 0:
        return 0
    n = math.prod(int(h[f"NAXIS{k}"]) for k in range(1, naxis + 1))
    return abs(int(h["BITPIX"])) // 8 * int(h.get("GCOUNT", 1)) * (int(h.get("PCOUNT", 0)) + n)


def scan(buf) -> list[Hdu]:
    """Every HDU's header and data offsets in a bytes-like ``buf`` (bytes or mmap); raises
    FitsReadError on a truncated or non-FITS buffer."""
    if len(buf) < BLOCK or bytes(buf[:9]) != b"SIMPLE  =":
        raise FitsReadError("not a FITS file (no SIMPLE card)")
    return walk(buf)


def walk(buf, first: str = "PRIMARY") -> list[Hdu]:
    """The HDUs of ``buf`` from its first byte (a whole file, or a run of extensions);
    an HDU without EXTNAME is ``first`` if it comes first, else ''. FitsReadError on a
    truncated buffer."""
    hdus: list[Hdu] = []
    size = len(buf)
    pos = 0
    while pos < size:
        end = _find_end(buf, pos)
        if end < 0:
            raise FitsReadError(f"truncated header at byte {pos} (HDU {len(hdus)})")
        header = Header(bytes(buf[pos:end]))
        start = end
        nbytes = data_size(header)
        name = str(header.get("EXTNAME", first if not hdus else "")).strip().upper()
        if start + nbytes > size:
            raise FitsReadError(
                f"truncated data in HDU {len(hdus)} ({name}): needs {start + nbytes} bytes, "
                f"file has {size}"
            )
        hdus.append(Hdu(name, header, start, nbytes))
        pos = start + nbytes + ((-nbytes) % BLOCK)
    return hdus


def _find_end(buf, pos: int) -> int:
    """Offset just past the header block holding the END card, or -1."""
    size = len(buf)
    while pos + BLOCK <= size:
        block = bytes(buf[pos : pos + BLOCK])
        for i in range(0, BLOCK, 80):
            if block[i : i + 8] == b"END     ":
                return pos + BLOCK
        pos += BLOCK
    return -1


def _native_copy(buf, hdu: Hdu, shape: tuple[int, ...], offset: int) -> np.ndarray:
    """``shape`` values of the HDU's type from byte ``offset``, as a native-order copy."""
    raw = np.frombuffer(buf, dtype=hdu.dtype, count=math.prod(shape), offset=offset)
    return raw.reshape(shape).astype(hdu.dtype.newbyteorder("="))


def read_array(buf, hdu: Hdu) -> np.ndarray:
    """The whole data array of an image HDU, native byte order (a copy); a tile-compressed
    image (``ZIMAGE``) is decoded (RICE_1 only, see ``rice.py``)."""
    if hdu.is_compressed:
        from spxflow.photometry.rice import read_compressed_image  # rice imports this module

        return read_compressed_image(buf, hdu)
    return _native_copy(buf, hdu, hdu.shape, hdu.data_start)


def read_rows(buf, hdu: Hdu, y0: int, y1: int) -> np.ndarray:
    """Rows [y0, y1) of a 2-D image HDU (native order, a copy): one contiguous byte run of a
    plain image, or only the covering tiles of a tile-compressed one."""
    if hdu.is_compressed:
        from spxflow.photometry.rice import read_compressed_rows

        return read_compressed_rows(buf, hdu, y0, y1)
    shape = hdu.shape
    if len(shape) != 2 or not 0 <= y0 <= y1 <= shape[0]:
        raise FitsReadError(f"{hdu.name}: no rows [{y0}, {y1}) in shape {shape}")
    offset = hdu.data_start + y0 * shape[1] * hdu.dtype.itemsize
    return _native_copy(buf, hdu, (y1 - y0, shape[1]), offset)


def read_plane(buf, hdu: Hdu, index: int) -> np.ndarray:
    """Plane ``index`` (0-based, slowest axis) of a 3-D image HDU without touching the rest.

    Returned in the file's own type (native byte order), e.g. float32 for a SPHEREx PSF.
    """
    shape = hdu.shape
    if len(shape) != 3 or not 0 <= index < shape[0]:
        raise FitsReadError(f"{hdu.name}: no plane {index} in shape {shape}")
    offset = hdu.data_start + index * shape[1] * shape[2] * hdu.dtype.itemsize
    return _native_copy(buf, hdu, shape[1:], offset)


# TFORM letter -> element type; P/Q are heap descriptors (count, offset) of int32/int64.
_TFORM_DTYPES = {
    "L": "u1", "X": "u1", "B": "u1", "I": ">i2", "J": ">i4", "K": ">i8", "A": "S1",
    "E": ">f4", "D": ">f8", "C": ">c8", "M": ">c16", "P": ">i4", "Q": ">i8",
}  # fmt: skip
_TFORM_RE = re.compile(r"^\s*(\d*)([A-Z])(.*)$")


@dataclass(frozen=True)
class Column:
    """Where one BINTABLE column sits in a row."""

    name: str
    offset: int  # bytes from the row start
    dtype: np.dtype  # element type, big-endian as stored
    count: int  # elements per cell (2 per P/Q descriptor)
    shape: tuple[int, ...]  # numpy shape of one cell (TDIMn reversed, else (count,))
    heap_type: str = ""  # element letter of a P/Q column ('B' for compressed tiles)


def table_columns(hdu: Hdu) -> dict[str, Column]:
    """The row layout of a BINTABLE from its TFORMn/TTYPEn/TDIMn cards, by TTYPE (parsed
    once per HDU)."""
    if "columns" not in hdu.cache:
        hdu.cache["columns"] = _table_columns(hdu)
    return hdu.cache["columns"]


def _table_columns(hdu: Hdu) -> dict[str, Column]:
    h = hdu.header
    if not hdu.is_table:
        raise FitsReadError(f"{hdu.name}: not a BINTABLE")
    cols, offset = {}, 0
    for k in range(1, int(h["TFIELDS"]) + 1):
        form = str(h[f"TFORM{k}"]).strip()
        m = _TFORM_RE.match(form)
        if m is None or m[2] not in _TFORM_DTYPES:
            raise FitsReadError(f"{hdu.name}: unsupported TFORM{k} = {form!r}")
        repeat, letter = int(m[1] or 1), m[2]
        dt = np.dtype(_TFORM_DTYPES[letter])
        count = 2 * repeat if letter in "PQ" else (repeat + 7) // 8 if letter == "X" else repeat
        shape = (count,)
        tdim = h.get(f"TDIM{k}") if count > 1 and letter not in "PQX" else None  # vectors only
        if tdim:
            dims = tuple(int(v) for v in str(tdim).strip().strip("()").split(","))
            if math.prod(dims) != count:
                raise FitsReadError(f"{hdu.name}: TDIM{k} {tdim!r} does not match {form!r}")
            shape = dims[::-1]  # FITS lists the fastest axis first
        name = str(h.get(f"TTYPE{k}", f"col{k}")).strip()
        heap = m[3][:1] if letter in "PQ" else ""
        cols[name] = Column(name, offset, dt, count, shape, heap)
        offset += count * dt.itemsize
    if offset != int(h["NAXIS1"]):
        raise FitsReadError(f"{hdu.name}: columns span {offset} bytes, NAXIS1 = {h['NAXIS1']}")
    return cols


def _column(hdu: Hdu, name: str, columns: dict[str, Column] | None) -> Column:
    cols = columns if columns is not None else table_columns(hdu)
    if name not in cols:
        raise FitsReadError(f"{hdu.name}: no column {name!r} (has {sorted(cols)})")
    return cols[name]


def read_column(buf, hdu: Hdu, name: str, columns: dict[str, Column] | None = None):
    """One column of every row, (nrows, *cell shape), as a native copy: a strided read, so
    only the bytes of this column are touched (the ePSF table's 8.7 KB rows stay unread)."""
    col = _column(hdu, name, columns)
    nrows, width = int(hdu.header["NAXIS2"]), int(hdu.header["NAXIS1"])
    view = np.ndarray(
        (nrows, col.count),
        dtype=col.dtype,
        buffer=buf,
        offset=hdu.data_start + col.offset,
        strides=(width, col.dtype.itemsize),
    )
    return view.astype(col.dtype.newbyteorder("=")).reshape((nrows, *col.shape))


def read_cell(buf, hdu: Hdu, name: str, row: int, columns: dict[str, Column] | None = None):
    """One cell (row, column) in its TDIM shape, native byte order (a copy)."""
    col = _column(hdu, name, columns)
    nrows, width = int(hdu.header["NAXIS2"]), int(hdu.header["NAXIS1"])
    if not 0 <= row < nrows:
        raise FitsReadError(f"{hdu.name}: no row {row} in {nrows} rows")
    raw = np.frombuffer(
        buf, dtype=col.dtype, count=col.count, offset=hdu.data_start + row * width + col.offset
    )
    return raw.astype(col.dtype.newbyteorder("=")).reshape(col.shape)


def read_table_row(buf, hdu: Hdu, row: int = 0) -> dict[str, np.ndarray]:
    """Columns of one BINTABLE row as flat arrays."""
    cols = table_columns(hdu)
    return {name: read_cell(buf, hdu, name, row, cols).ravel() for name in cols}


def map_file(path: str | os.PathLike):
    """The file's bytes as a buffer: memory-mapped (only touched pages are read), or the
    decompressed bytes of a gzip file (IRSA gzips cutouts by default). Close an mmap when done
    (``open_buffer`` does); long-lived readers such as the ePSF library keep it open."""
    with open(path, "rb") as fh:
        if fh.read(2) == b"\x1f\x8b":
            fh.seek(0)
            return gzip.decompress(fh.read())
        fh.seek(0, os.SEEK_END)
        if fh.tell() == 0:
            return b""
        return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)


@contextlib.contextmanager
def open_buffer(path: str | os.PathLike):
    """``map_file`` as a context manager."""
    buf = map_file(path)
    try:
        yield buf
    finally:
        if isinstance(buf, mmap.mmap):
            # A numpy view still alive (e.g. in the frames of a traceback being raised) makes
            # close() fail; the map is then closed when the view goes, and the real error
            # (not a BufferError) reaches the caller.
            with contextlib.suppress(BufferError):
                buf.close()
