"""Range reads of one object in rounds, and the FITS pieces of a whole Level-2 file.

``Rounds`` sends the requests of one round concurrently (S3 serves one range per GET) and
counts requests, bytes and rounds for one window read; ``If-Match`` carries the ETag of the
first answer. The helpers place and cut 2040x2040 32-bit planes (a window is one contiguous
run of full-width rows) and decode the R7 FLAGS rows of one heap run with rice.py's codec.
"""

from __future__ import annotations

import numpy as np

from spxflow.format import NPIX
from spxflow.photometry.fitsread import BLOCK, FitsReadError, Hdu, Header, data_size
from spxflow.photometry.rice import decode_tile, tiled_image
from spxflow.ranges.client import ObjectChanged, RangeClient

HEADER_GUESS = 11520  # a header read of unknown length (4 blocks), grown until END
MAX_HEADER = 1 << 20
ROW = NPIX * 4  # bytes per row of a 2040-wide 32-bit plane


class Rounds:
    """Range reads of one key with per-read counters; rounds run their requests in parallel."""

    def __init__(self, client: RangeClient, key: str):
        self.client, self.key = client, key
        self.etag: str | None = None
        self.size = -1
        self.requests = self.bytes = self.rounds = 0

    def round(self, spans: dict[str, tuple[int, int]]) -> dict[str, bytes]:
        """One round: every span fetched concurrently (``RangeClient.get_round``); the first
        error raises once every request has ended."""
        spans = {k: v for k, v in spans.items() if v is not None}
        if not spans:
            return {}
        self.rounds += 1
        got = self.client.get_round(self.key, spans, if_match=self.etag)
        out, error = {}, None
        for name, r in got.items():
            if isinstance(r, Exception):
                self.requests += getattr(r, "attempts", 0) or 1
                error = error or r
                continue
            self.requests += r.attempts
            self.bytes += len(r.data)
            if self.size >= 0 and r.total != self.size:
                error = error or ObjectChanged(
                    f"{self.key}: size changed from {self.size} to {r.total}"
                )
            elif self.etag is None:
                self.etag, self.size = r.etag, r.total
            out[name] = r.data
        if error is not None:
            raise error
        return out

    def header(self, start: int, have: bytes = b"", guess: int = HEADER_GUESS) -> bytes:
        """Raw header at ``start`` (``have``: bytes already read from there), grown by reads
        of ``guess`` bytes, doubling, until the block with END; returns every byte read from
        ``start`` (the header first)."""
        while True:
            n = header_len(have)
            if n:
                return have
            if len(have) >= MAX_HEADER or start + len(have) >= self.size:
                raise FitsReadError(f"no END card in the header at byte {start}")
            pos = start + len(have) - len(have) % BLOCK
            have = have[: pos - start] + self.round({"h": (pos, pos + guess)})["h"]
            guess *= 2  # long headers (the QR2 PSF's 43 KB) in few rounds


def header_len(raw: bytes) -> int:
    """Length of the header at the start of ``raw`` (through the block with END), or 0."""
    for b in range(0, len(raw) - BLOCK + 1, BLOCK):
        block = raw[b : b + BLOCK]
        for i in range(0, BLOCK, 80):
            if block[i : i + 8] == b"END     ":
                return b + BLOCK
    return 0


def hdu_at(name: str, raw: bytes, start: int) -> Hdu:
    """The HDU whose header starts at byte ``start`` (``raw`` holds at least the header)."""
    n = header_len(raw)
    header = Header(raw[:n])
    got = str(header.get("EXTNAME", "")).strip().upper()
    if got != name:
        raise FitsReadError(f"HDU at byte {start} is {got or 'unnamed'!r}, expected {name}")
    return Hdu(name, header, start + n, data_size(header))


def check_plane(hdu: Hdu, bitpix: int) -> None:
    """An uncompressed 2040x2040 plane of ``bitpix``: rows of ``ROW`` bytes."""
    h = hdu.header
    if hdu.is_table or h.get("BITPIX") != bitpix or hdu.shape != (NPIX, NPIX):
        raise FitsReadError(
            f"{hdu.name}: expected a {NPIX}x{NPIX} image of BITPIX {bitpix}, got "
            f"{h.get('XTENSION')} BITPIX={h.get('BITPIX')} shape={hdu.shape}"
        )


def plane_span(data_start: int, box) -> tuple[int, int]:
    """Bytes from the window's first pixel to its last in a plain plane (full-width rows)."""
    x0, x1, y0, y1 = box
    return data_start + y0 * ROW + 4 * x0, data_start + (y1 - 1) * ROW + 4 * x1


def cut(raw: bytes, box, dtype: str) -> np.ndarray:
    x0, x1, y0, y1 = box
    view = np.ndarray((y1 - y0, x1 - x0), np.dtype(dtype), buffer=raw, strides=(ROW, 4))
    return view.astype(np.dtype(dtype).newbyteorder("="))


class RiceWindow:
    """The window's FLAGS from an R7 descriptor table and one heap run (rice.py's codec)."""

    def __init__(self, hdu: Hdu, desc: bytes, box):
        self.t = t = tiled_image(hdu)
        if len(desc) < t.row_width * int(hdu.header["NAXIS2"]):
            raise FitsReadError(f"FLAGS: descriptor table of {len(desc)} bytes is incomplete")
        _, _, y0, y1 = box
        ty, ntx = t.tile[0], t.ntiles[1]
        self.j0, self.j1 = y0 // ty, -(-y1 // ty)
        d = np.ndarray(
            ((self.j1 - self.j0) * ntx, 2),
            t.descriptor_dtype,
            buffer=desc,
            offset=self.j0 * ntx * t.row_width + t.descriptor_offset,
            strides=(t.row_width, t.descriptor_dtype.itemsize),
        ).astype(np.int64)
        bad = (d[:, 0] <= 0) | (d[:, 1] < 0) | (t.heap_start + d[:, 0] + d[:, 1] > t.data_end)
        if bad.any():
            k = self.j0 * ntx + int(np.flatnonzero(bad)[0])
            raise FitsReadError(f"FLAGS: tile {k} has no RICE_1 data inside the heap")
        self.desc, self.box = d, box
        self.lo, self.hi = int(d[:, 1].min()), int((d[:, 0] + d[:, 1]).max())
        self.span = (t.heap_start + self.lo, t.heap_start + self.hi)

    def decode(self, run: bytes) -> np.ndarray:
        t, (x0, x1, y0, y1) = self.t, self.box
        (ny, nx), (ty, tx), ntx = t.shape, t.tile, t.ntiles[1]
        heap = np.frombuffer(run, dtype=np.uint8)
        out = np.empty(((self.j1 - self.j0) * ty, nx), dtype=np.int32)
        for n, (nbytes, off) in enumerate(self.desc.tolist()):
            j, i = divmod(n, ntx)
            h, w = min(ty, ny - (self.j0 + j) * ty), min(tx, nx - i * tx)
            data = heap[off - self.lo : off - self.lo + nbytes]
            try:
                tile = decode_tile(data, t.blocksize, t.bytepix, h * w)
            except FitsReadError:
                raise
            except Exception as exc:  # astropy's CfitsioException is a bare Exception
                raise FitsReadError(f"FLAGS tile {self.j0 * ntx + n}: RICE_1 {exc}") from exc
            out[j * ty : j * ty + h, i * tx : i * tx + w] = tile.reshape(h, w)
        return out[y0 - self.j0 * ty : y1 - self.j0 * ty, x0:x1]
