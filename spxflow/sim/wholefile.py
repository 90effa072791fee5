"""Virtual whole Level-2 files: the public S3 copy of one simulated image, rendered lazily.

A ``WholeFile`` is the complete QR2 or R7 (QR3) Level-2 MEF of one simulated image (spec §1.2,
§8.2) whose bytes are produced on demand: ``read(start, end)`` renders only the pixel rows the
byte range touches. HDUs: PRIMARY, IMAGE, FLAGS, VARIANCE, ZODI, then the per-detector tail
(PSF cube or EPSF table, WCS-WAVE), with the cards of ``render._image_cards`` (CRPIX of the
full frame) and no ``SIM*`` truth cards (the truth of a cutout depends on its requested centre).
Every pixel is a pure function of (seed, image, parent pixel), so a window of the whole file is
bit-identical to the same pixels of any cutout (``render.cutout_fits_bytes``).

Rendering works in aligned bands of ``BAND_ROWS`` full-width rows, held in a shared LRU
(``BandCache``, bounded in bytes, thread-safe, one render per band even when the IMAGE, FLAGS
and VARIANCE requests of one window arrive concurrently). Contiguous missing bands are rendered
by one ``render_planes`` call of up to ``MAX_RENDER_ROWS`` rows (its fixed cost is ~0.2 s).

R7 FLAGS (RICE_1 BINTABLE, one tile per row, the header cards of ``r7.rice_flags_hdu_bytes``)
differ from a real file in two documented ways, both so that the descriptor table is known
before any pixel is rendered:

- every row has a fixed heap slot of ``RICE_SLOT`` = 4·2040 + 2040/32 + 6 = 8229 bytes (CFITSIO's
  worst-case bound for a RICE_1 int32 row): descriptor offset = row·RICE_SLOT, the unused slot
  bytes are zero, ``PCOUNT`` = 2040·RICE_SLOT and ``TFORM1 = '1PB(8229)'``. FITS lets
  descriptors point anywhere in the heap, so a correct reader uses the descriptors and never
  assumes tiles are packed (here offset_k != sum of the lengths before k);
- each tile is coded with every 32-pixel block in Rice's "high-entropy" mode (raw 32-bit mapped
  differences), a valid RICE_1 stream that astropy's ``Rice1`` and ``CompImageHDU`` decode
  bit-exactly, of constant length ``RICE_TILE_BYTES`` = 8204. Astropy's own encoder output is
  content-dependent (and astropy rejects trailing bytes in a tile), so exact lengths would need
  the whole frame rendered. Real tiles are ~5.9 KB; the heap here is 16.8 MB instead of ~12 MB.

``BytesFile`` wraps a finished byte string (calibration products) with the same interface.
``s3_key_of`` maps an IBE ``access_url`` to its S3 key.
"""

from __future__ import annotations

import bisect
import functools
import io
import itertools
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

import numpy as np

from spxflow.format import CALIBRATION_TOKENS, NPIX, calibration_file_name, calibration_token
from spxflow.photometry.fitsread import walk
from spxflow.sim import r7, render
from spxflow.sim.fitsout import BLOCK, header_bytes, image_structure_cards
from spxflow.sim.survey import ImageInfo

BAND_ROWS = 32
MAX_RENDER_ROWS = 256
BAND_CACHE_BYTES = 256 * 2**20
ROW_BYTES = 4 * NPIX  # one row of a float32 / int32 plane
PLANES = ("IMAGE", "FLAGS", "VARIANCE", "ZODI")
FULL_BOX = (0, NPIX, 0, NPIX)
IBE_MARKER = "/ibe/data/spherex/"

# Rice (CFITSIO fits_rcomp_int) parameters for 4-byte pixels.
_FSBITS, _FSMAX, _BBITS = 5, 25, 32
_NBLOCKS = -(-NPIX // r7.RICE_BLOCKSIZE)
RICE_SLOT = 4 * NPIX + NPIX // r7.RICE_BLOCKSIZE + 6  # CFITSIO's RICE_1 bound: 8229
RICE_TILE_BYTES = -(-(_BBITS + _NBLOCKS * _FSBITS + NPIX * _BBITS) // 8)  # 8204


def s3_key_of(access_url: str) -> str:
    """S3 key of an IBE URL: its path after ``/ibe/data/spherex/`` (query dropped)."""
    path = urlsplit(str(access_url)).path
    i = path.find(IBE_MARKER)
    if i < 0 or not path[i + len(IBE_MARKER) :]:
        raise ValueError(f"not an IRSA SPHEREx IBE URL: {access_url!r}")
    return path[i + len(IBE_MARKER) :]


# ---------------------------------------------------------------------------------------------
# RICE_1 tiles of constant length


def _rice_bit_index() -> np.ndarray:
    """Source bit of every output bit of a high-entropy tile. Sources: the first pixel's 32 bits
    (0..31), the 5-bit block code fsmax+1 (32..36), the 32·NPIX bits of the mapped differences
    (37..)."""
    parts = [np.arange(32)]
    code = np.arange(32, 32 + _FSBITS)
    for b in range(_NBLOCKS):
        lo, hi = b * r7.RICE_BLOCKSIZE, min((b + 1) * r7.RICE_BLOCKSIZE, NPIX)
        parts.append(code)
        parts.append(37 + np.arange(lo * _BBITS, hi * _BBITS))
    idx = np.concatenate(parts)
    pad = -len(idx) % 8
    return np.concatenate([idx, np.full(pad, -1)]) if pad else idx


_BIT_INDEX = _rice_bit_index()
_CODE_BITS = np.unpackbits(np.array([(_FSMAX + 1) << (8 - _FSBITS)], dtype=np.uint8))[:_FSBITS]


def rice_rows(rows: np.ndarray) -> np.ndarray:
    """(n, RICE_SLOT) uint8: each int32 row of width NPIX as a high-entropy RICE_1 tile of
    RICE_TILE_BYTES bytes (BLOCKSIZE 32, BYTEPIX 4), zero-padded to the slot."""
    a = np.ascontiguousarray(rows, dtype=np.int32)
    n = a.shape[0]
    prev = np.concatenate([a[:, :1], a[:, :-1]], axis=1)
    with np.errstate(over="ignore"):
        d = a - prev  # wraps like CFITSIO's int arithmetic
        z = ((d << 1) ^ (d >> 31)).astype(">u4")  # pdiff<0 ? ~(pdiff<<1) : pdiff<<1
    first = np.unpackbits(a[:, :1].astype(">i4").view(np.uint8), axis=1)
    diffs = np.unpackbits(z.view(np.uint8), axis=1)
    src = np.concatenate([first, np.broadcast_to(_CODE_BITS, (n, _FSBITS)), diffs], axis=1)
    bits = src[:, _BIT_INDEX]  # no padding bits: 65632 is a multiple of 8
    out = np.zeros((n, RICE_SLOT), dtype=np.uint8)
    out[:, :RICE_TILE_BYTES] = np.packbits(bits, axis=1)
    return out


assert len(_BIT_INDEX) == 8 * RICE_TILE_BYTES and _BIT_INDEX.min() >= 0


@functools.cache
def _rice_cards() -> tuple[str, ...]:
    """The compression cards of ``r7.rice_flags_hdu_bytes`` (taken from its own output so they
    stay in sync), with PCOUNT and TFORM1 of the fixed-slot heap."""
    from spxflow.sim.fitsout import card

    text = r7.rice_flags_hdu_bytes(np.zeros((NPIX, NPIX), dtype=np.int32), [])
    cards = []
    for i in range(0, len(text), 80):
        c = text[i : i + 80].decode("ascii")
        key = c[:8].rstrip()
        if key == "END":
            break
        if key == "PCOUNT":
            c = card("PCOUNT", NPIX * RICE_SLOT, "number of group parameters")
        elif key == "TFORM1":
            c = card("TFORM1", f"1PB({RICE_SLOT})", "data format of field: variable length array")
        cards.append(c)
    return tuple(cards)


_DESCRIPTORS = (
    np.stack([np.full(NPIX, RICE_TILE_BYTES), np.arange(NPIX) * RICE_SLOT], axis=1)
    .astype(">i4")
    .tobytes()
)


# ---------------------------------------------------------------------------------------------
# Header walking (layout of finished bytes)


def hdu_layout(data: bytes, start: int = 0, first_name: str = "PRIMARY") -> dict:
    """HDU name -> (header_offset, data_offset, data_end) of FITS bytes (``data_end``: end of
    the data proper, before block padding); offsets are shifted by ``start``."""
    out, pos = {}, 0
    for n, hdu in enumerate(walk(data, first_name)):
        end = hdu.data_start + hdu.data_size
        out[hdu.name or f"HDU{n}"] = (start + pos, start + hdu.data_start, start + end)
        pos = end + (-hdu.data_size % BLOCK)
    return out


# ---------------------------------------------------------------------------------------------
# Band cache


class BandCache:
    """LRU of rendered row bands, bounded in bytes, shared by WholeFiles; thread-safe, and a
    band wanted by several threads at once is rendered by one of them."""

    def __init__(self, max_bytes: int = BAND_CACHE_BYTES):
        self.max_bytes = int(max_bytes)
        self._lock = threading.Lock()
        self._data: OrderedDict = OrderedDict()
        self._pending: dict = {}
        self.nbytes = 0
        self.hits = self.misses = self.renders = 0

    def stats(self) -> dict:
        with self._lock:
            return {
                "bands": len(self._data),
                "bytes": self.nbytes,
                "max_bytes": self.max_bytes,
                "hits": self.hits,
                "misses": self.misses,
                "renders": self.renders,
            }

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.nbytes = 0

    def _put(self, key, band: dict) -> None:
        size = sum(len(v) for v in band.values())
        with self._lock:
            if key in self._data:
                return
            self._data[key] = band
            self.nbytes += size
            while self.nbytes > self.max_bytes and len(self._data) > 1:
                _, old = self._data.popitem(last=False)
                self.nbytes -= sum(len(v) for v in old.values())

    def get(
        self,
        owner,
        bands: Sequence[int],
        render_run: Callable[[int, int], list],
        max_run: int,
    ) -> list[dict]:
        """The bands of ``owner`` (a hashable token), rendering missing contiguous runs with
        ``render_run(b0, b1)`` -> list of band dicts (at most ``max_run`` bands per call)."""
        result: dict[int, dict] = {}
        while True:
            mine, waits = [], []
            with self._lock:
                for b in bands:
                    if b in result:
                        continue
                    key = (owner, b)
                    band = self._data.get(key)
                    if band is not None:
                        self._data.move_to_end(key)
                        result[b] = band
                        self.hits += 1
                    elif key in self._pending:
                        waits.append(self._pending[key])
                    else:
                        self._pending[key] = threading.Event()
                        mine.append(b)
                        self.misses += 1
            if mine:
                try:
                    for run in _runs(mine, max_run):
                        rendered = render_run(run[0], run[-1] + 1)
                        with self._lock:
                            self.renders += 1
                        for b, band in zip(run, rendered, strict=True):
                            result[b] = band
                            self._put((owner, b), band)
                finally:
                    with self._lock:
                        for b in mine:
                            ev = self._pending.pop((owner, b), None)
                            if ev is not None:
                                ev.set()
            for ev in waits:
                ev.wait()
            if all(b in result for b in bands):
                return [result[b] for b in bands]
            # a band another thread rendered was evicted (or its render failed): claim it


def _runs(items: list[int], max_run: int) -> list[list[int]]:
    runs: list[list[int]] = []
    for b in items:
        if runs and b == runs[-1][-1] + 1 and len(runs[-1]) < max_run:
            runs[-1].append(b)
        else:
            runs.append([b])
    return runs


BAND_CACHE = BandCache()
_TOKENS = itertools.count()


# ---------------------------------------------------------------------------------------------
# Objects


class _Object:
    """Common interface: ``size``, ``layout``, ``read(start, end)``, ``open()``."""

    size: int
    layout: dict

    def read(self, start: int, end: int) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check(self, start: int, end: int) -> tuple[int, int]:
        start, end = int(start), int(end)
        if not 0 <= start < end <= self.size:
            raise ValueError(f"byte range [{start}, {end}) outside [0, {self.size})")
        return start, end

    def materialise(self) -> bytes:
        """All bytes (renders the whole frame of a WholeFile: seconds)."""
        return self.read(0, self.size)

    def open(self) -> io.BufferedReader:
        """A seekable binary file object reading through ``read`` (e.g. for ``fits.open``)."""
        return io.BufferedReader(_RawReader(self), buffer_size=64 * 1024)


class _RawReader(io.RawIOBase):
    def __init__(self, obj: _Object):
        self._obj, self._pos = obj, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._obj.size}[whence]
        self._pos = max(0, base + int(offset))
        return self._pos

    def readinto(self, buf) -> int:
        n = min(len(buf), self._obj.size - self._pos)
        if n <= 0:
            return 0
        buf[:n] = self._obj.read(self._pos, self._pos + n)
        self._pos += n
        return n


class BytesFile(_Object):
    """A finished object (e.g. a calibration product) with the WholeFile interface."""

    def __init__(self, data: bytes):
        self.data = bytes(data)
        self.size = len(self.data)
        self.layout = hdu_layout(self.data)

    def read(self, start: int, end: int) -> bytes:
        start, end = self._check(start, end)
        return self.data[start:end]


class WholeFile(_Object):
    """The whole Level-2 file of one simulated image, rendered lazily (module docstring).

    ``size``: total bytes; ``layout``: HDU name -> (header_offset, data_offset, data_end),
    ``data_end`` before block padding; ``read(start, end)``: bytes of the half-open range.
    """

    def __init__(
        self,
        info: ImageInfo,
        cfg: render.SimConfig,
        cache: BandCache | None = None,
        band_rows: int = BAND_ROWS,
        max_render_rows: int = MAX_RENDER_ROWS,
    ):
        self.info, self.cfg = info, cfg
        self.cache = BAND_CACHE if cache is None else cache
        self.band_rows = int(band_rows)
        self.max_run = max(1, int(max_render_rows) // self.band_rows)
        self.nbands = -(-NPIX // self.band_rows)
        self._owner = next(_TOKENS)
        self._center = tuple(float(v) for v in info.pixel_to_world(1019.5, 1019.5))
        self.r7 = info.layout == "r7"
        cards = render._image_cards(info, cfg.seed)
        segments: list[tuple] = []  # (start, end, kind, payload); kind: bytes | plane | zeros
        layout: dict[str, tuple[int, int, int]] = {}
        pos = 0

        def add(kind, length, payload=None):
            nonlocal pos
            if length:
                segments.append((pos, pos + length, kind, payload))
                pos += length

        primary = render.primary_bytes(render.file_version(info, cfg.psf_header_erratum))
        layout["PRIMARY"] = (0, len(primary), len(primary))
        add("bytes", len(primary), primary)
        for name in PLANES:
            hcards = render._shift_crpix(cards[name], FULL_BOX)
            start = pos
            if name == "FLAGS" and self.r7:
                head = header_bytes([*_rice_cards(), *hcards])
                add("bytes", len(head) + len(_DESCRIPTORS), head + _DESCRIPTORS)
                add("plane", NPIX * RICE_SLOT, (name, RICE_SLOT))
                end = pos
                size = len(_DESCRIPTORS) + NPIX * RICE_SLOT
            else:
                dtype = np.int32 if name == "FLAGS" else np.float32
                shape = np.broadcast_to(np.zeros((), dtype=dtype), (NPIX, NPIX))
                head = header_bytes(image_structure_cards(shape) + hcards)
                add("bytes", len(head), head)
                add("plane", NPIX * ROW_BYTES, (name, ROW_BYTES))
                end = pos
                size = NPIX * ROW_BYTES
            layout[name] = (start, start + len(head), start + len(head) + size)
            add("zeros", -(end - start) % BLOCK)
        tail = render._tail_bytes(*render._tail_key(info, cfg.psf_header_erratum))
        layout.update(hdu_layout(tail, start=pos, first_name="TAIL"))
        add("bytes", len(tail), tail)
        self.size = pos
        self.layout = layout
        self._segments = segments
        self._starts = [s[0] for s in segments]

    # -------------------------------------------------------------- rendering
    def _render_run(self, b0: int, b1: int) -> list[dict]:
        h = self.band_rows
        y0, y1 = b0 * h, min(b1 * h, NPIX)
        planes = render.render_planes(self.info, (0, NPIX, y0, y1), *self._center, self.cfg)
        be = {
            name: planes[name].astype(">i4" if name == "FLAGS" else ">f4")
            for name in PLANES
            if not (name == "FLAGS" and self.r7)
        }
        rice = rice_rows(planes["FLAGS"]) if self.r7 else None
        out = []
        for b in range(b0, b1):
            r0, r1 = b * h - y0, min((b + 1) * h, NPIX) - y0
            band = {name: be[name][r0:r1].tobytes() for name in be}
            if rice is not None:
                band["FLAGS"] = rice[r0:r1].tobytes()
            out.append(band)
        return out

    def rows(self, y0: int, y1: int) -> list[dict]:
        """Rendered bands covering rows [y0, y1) (each: plane name -> big-endian bytes)."""
        h = self.band_rows
        return self.cache.get(
            self._owner, range(y0 // h, (y1 - 1) // h + 1), self._render_run, self.max_run
        )

    # -------------------------------------------------------------- reading
    def read(self, start: int, end: int) -> bytes:
        start, end = self._check(start, end)
        i = bisect.bisect_right(self._starts, start) - 1
        out = []
        while i < len(self._segments) and self._segments[i][0] < end:
            s0, s1, kind, payload = self._segments[i]
            a, b = max(start, s0) - s0, min(end, s1) - s0
            if kind == "bytes":
                out.append(payload[a:b])
            elif kind == "zeros":
                out.append(bytes(b - a))
            else:
                out.extend(self._plane_bytes(payload[0], payload[1], a, b))
            i += 1
        if len(out) == 1 and isinstance(out[0], bytes):
            return out[0]
        return b"".join(out)

    def _plane_bytes(self, name: str, row_bytes: int, a: int, b: int) -> list:
        band_bytes = self.band_rows * row_bytes
        r0, r1 = a // row_bytes, (b - 1) // row_bytes + 1
        bands = self.rows(r0, r1)
        first = r0 // self.band_rows
        out = []
        for k, band in enumerate(bands):
            base = (first + k) * band_bytes
            data = band[name]
            lo, hi = max(a - base, 0), min(b - base, len(data))
            out.append(data if (lo == 0 and hi == len(data)) else memoryview(data)[lo:hi])
        return out


class ObjectCache:
    """Per-archive LRU of S3 objects: Level-2 WholeFiles (small; their rendered rows live in
    ``wholefile.BAND_CACHE``) and calibration BytesFiles (whole products, up to 34 MB each)."""

    MAX_LEVEL2, MAX_CALIBRATION = 64, 6
    _CAL_KEY_RE = re.compile(
        r"^(?P<release>[a-z]+\d*)/(?P<family>[a-z0-9_]+)/(?P<token>[^/]+)/(?P<det>[1-6])/"
        r"(?P<file>[^/]+)$"
    )

    def __init__(self):
        self.lock = threading.Lock()
        self.level2: OrderedDict = OrderedDict()
        self.calibration: OrderedDict = OrderedDict()

    def get(self, archive, key: str):
        """The object of ``key`` on ``archive`` (a SimulatedArchive); ArchiveError if none."""
        from spxflow.archive.base import ArchiveError

        m = self._CAL_KEY_RE.match(key)
        table, limit = (self.calibration, self.MAX_CALIBRATION) if m else (self.level2, 0)
        with self.lock:
            obj = table.get(key)
            if obj is not None:
                table.move_to_end(key)
                return obj
        if m:
            release, family, det = m["release"], m["family"], int(m["det"])
            if (
                release not in CALIBRATION_TOKENS
                or family not in CALIBRATION_TOKENS[release]
                or m["token"] != calibration_token(release, family, det)
                or m["file"] != calibration_file_name(release, family, det)
            ):
                raise ArchiveError(f"no such calibration object {key!r}")
            obj = BytesFile(archive.calibration_bytes(release, family, det))
        else:
            info = archive.image_info("https://irsa.ipac.caltech.edu/ibe/data/spherex/" + key)
            if info.key != key:
                raise ArchiveError(f"unknown S3 key {key!r}")
            obj = WholeFile(info, archive.cfg)
            limit = self.MAX_LEVEL2
        with self.lock:
            obj = table.setdefault(key, obj)  # a concurrent creator may have won
            table.move_to_end(key)
            while len(table) > limit:
                table.popitem(last=False)
        return obj
