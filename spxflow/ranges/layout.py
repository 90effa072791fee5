"""What the range reader remembers: per-file layouts and per-detector constants.

``FileLayout`` (per object key and ETag): HDU offsets and the raw headers a window read needs
(IMAGE, FLAGS, VARIANCE; the R7 FLAGS descriptor table), so a warm read skips every header.
``ConstantEntry`` (per release, detector and calibration token): where the PSF/EPSF and
WCS-WAVE HDUs sit relative to the file end, their contents (PSF cube planes as read, the whole
EPSF table, the WCS-WAVE table) and the header lengths seen last (hints that let a cold read
ask for the FLAGS rows and the VARIANCE window in its second round).

Both caches live in memory and, given a directory, on disk: one small file per entry, written
under a temporary name and renamed, shared by every job and process. An entry that cannot be
read or does not check out is ignored (and rewritten by the next put).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass, field, fields

import numpy as np

from spxflow.fileio import sha256_bytes, write_bytes_atomic
from spxflow.photometry.celestial import TanSip
from spxflow.photometry.cutout import frame_wcs
from spxflow.photometry.epsf import EpsfLattice, read_epsf_row, read_lattice
from spxflow.photometry.fitsread import BLOCK, Hdu, Header, data_size

_MAGIC = b"SPXRANGES1\n"
_CALIB_RE = re.compile(r"^\[CALIB\]\s+(\S+)\s+(\S+)")
_PSF_FAMILIES = ("average_psf", "epsf")


def padded(n: int) -> int:
    """``n`` rounded up to whole 2880-byte FITS blocks."""
    return n + (-n) % BLOCK


def calibration_token(image_raw: bytes, version: str) -> str:
    """Identity of the per-detector constants of a file: the PSF and spectral-WCS products
    its IMAGE header names (``HISTORY [CALIB] <family> <id>``), plus VERSION when either is
    not named."""
    cal = {}
    for i in range(0, len(image_raw) - 79, 80):
        kw = image_raw[i : i + 8]
        if kw == b"END     ":
            break
        if kw == b"HISTORY ":
            m = _CALIB_RE.match(image_raw[i + 8 : i + 80].decode("ascii", "replace").strip())
            if m and (m[1] in _PSF_FAMILIES or m[1] == "spectral_wcs"):
                cal[m[1]] = m[2]
    parts = [f"{k}={v}" for k, v in sorted(cal.items())]
    if not any(f in cal for f in _PSF_FAMILIES) or "spectral_wcs" not in cal:
        parts.append(f"VERSION={version}")
    return ";".join(parts)


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def _write(path: str, meta: dict, blobs: dict[str, bytes]) -> None:
    """meta + blobs to ``path`` atomically (``fileio.write_bytes_atomic``). Two jobs writing
    the same entry at once lose nothing: either copy is whole, and ``put`` ignores the
    OSError of the one whose temporary file the other cleared."""
    body = b"".join(blobs.values())
    head = dict(meta, blobs=[[k, len(v)] for k, v in blobs.items()], sha256=sha256_bytes(body))
    write_bytes_atomic(path, _MAGIC + json.dumps(head).encode() + b"\n" + body)


def _read(path: str) -> tuple[dict, dict[str, bytes]] | None:
    """(meta, blobs) of a cache file, or None if it is missing, truncated or corrupt."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
        if not raw.startswith(_MAGIC):
            return None
        line, _, body = raw[len(_MAGIC) :].partition(b"\n")
        meta = json.loads(line)
        if sha256_bytes(body) != meta.pop("sha256"):
            return None
        blobs, pos = {}, 0
        for name, n in meta.pop("blobs"):
            blobs[name] = body[pos : pos + n]
            pos += n
        return (meta, blobs) if pos == len(body) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


# ----------------------------------------------------------------------------- file layouts
@dataclass
class FileLayout:
    """Where one Level-2 file's window planes are, and the headers needed to read them."""

    key: str
    etag: str
    size: int
    version: str  # primary VERSION ("" if absent)
    image_raw: bytes
    image_data: int  # byte offset of the IMAGE data
    flags_raw: bytes
    flags_data: int  # FLAGS data (plain image, or the R7 descriptor table)
    desc_raw: bytes  # R7 FLAGS descriptor table (b"" for plain FLAGS)
    var_raw: bytes
    var_data: int
    psf_data: int = -1  # PSF/EPSF data offset when known

    _BLOBS = ("image_raw", "flags_raw", "desc_raw", "var_raw")

    @functools.cached_property
    def image(self) -> Hdu:
        return _hdu("IMAGE", self.image_raw, self.image_data)

    @functools.cached_property
    def flags(self) -> Hdu:
        return _hdu("FLAGS", self.flags_raw, self.flags_data)

    @functools.cached_property
    def variance(self) -> Hdu:
        return _hdu("VARIANCE", self.var_raw, self.var_data)

    @functools.cached_property
    def wcs(self) -> TanSip:
        """The full frame's celestial WCS, solved once per layout (every warm read needs it)."""
        return frame_wcs(self.image.header, self.key)

    @functools.cached_property
    def token(self) -> str:
        return calibration_token(self.image_raw, self.version)

    @property
    def detector(self) -> int:
        return int(self.image.header.get("DETECTOR", 0))

    def meta(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in self._BLOBS}


def _hdu(name: str, raw: bytes, data_start: int) -> Hdu:
    header = Header(raw)
    return Hdu(name, header, data_start, data_size(header))


class LayoutCache:
    """``FileLayout`` per object key (the entry of the ETag seen last), in memory and, with a
    ``directory``, on disk as ``<sha(key)[:2]>/<sha(key)>-<sha(etag)>.layout``."""

    def __init__(self, directory: str | os.PathLike | None = None):
        self.directory = os.fspath(directory) if directory is not None else None
        if self.directory:
            os.makedirs(self.directory, exist_ok=True)
        self._mem: dict[str, FileLayout] = {}
        self._lock = threading.Lock()

    def _dir(self, key: str) -> str:
        return os.path.join(self.directory, _digest(key)[:2])  # 256 fan-out directories

    def _path(self, key: str, etag: str) -> str:
        return os.path.join(self._dir(key), f"{_digest(key)}-{_digest(etag)}.layout")

    def get(self, key: str) -> FileLayout | None:
        with self._lock:
            if key in self._mem:
                return self._mem[key]
        if not self.directory:
            return None
        prefix, where = _digest(key) + "-", self._dir(key)
        try:
            names = [n for n in os.listdir(where) if n.startswith(prefix)]
        except OSError:
            return None
        paths = [os.path.join(where, n) for n in names if n.endswith(".layout")]
        for path in sorted(paths, key=_mtime, reverse=True):
            layout = self._load(path, key)
            if layout is not None:
                with self._lock:
                    return self._mem.setdefault(key, layout)
        return None

    @staticmethod
    def _load(path: str, key: str) -> FileLayout | None:
        got = _read(path)
        if got is None:
            return None
        meta, blobs = got
        try:
            layout = FileLayout(**meta, **blobs)
            _ = (layout.image, layout.flags, layout.variance)  # parse now: skip a bad entry
        except (TypeError, ValueError, KeyError):
            return None
        return layout if layout.key == key else None

    def put(self, layout: FileLayout) -> None:
        with self._lock:
            self._mem[layout.key] = layout
        if self.directory:
            with contextlib.suppress(OSError):  # a cache that cannot be written is no error
                blobs = {name: getattr(layout, name) for name in FileLayout._BLOBS}
                _write(self._path(layout.key, layout.etag), layout.meta(), blobs)

    def drop(self, key: str, etag: str) -> None:
        """Forget ``key`` at ``etag`` (the object was replaced)."""
        with self._lock:
            if key in self._mem and self._mem[key].etag == etag:
                del self._mem[key]
        if self.directory:
            with contextlib.suppress(OSError):
                os.unlink(self._path(key, etag))


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


# ----------------------------------------------------------------------------- constants
@dataclass
class ConstantEntry:
    """Per-(release, detector, token) constants of Level-2 files and where they were found."""

    release: str
    detector: int
    token: str
    psf_name: str  # "PSF" (QR2 cube) or "EPSF" (R7 table)
    psf_raw: bytes  # its header
    wave_raw: bytes  # WCS-WAVE header (b"" when the file has none)
    wave_bytes: bytes  # WCS-WAVE data
    epsf_table: bytes  # the whole EPSF table (R7), b"" for QR2
    var_from_end: int  # file size - VARIANCE data offset (seen last)
    psf_from_end: int  # file size - PSF/EPSF data offset
    flags_header_len: int  # hints: header lengths seen last
    desc_len: int
    var_header_len: int
    planes: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    _BLOBS = ("psf_raw", "wave_raw", "wave_bytes", "epsf_table")

    @property
    def ident(self) -> tuple[str, int, str]:
        return self.release, self.detector, self.token

    @functools.cached_property
    def psf_hdu(self) -> Hdu:
        return _hdu(self.psf_name, self.psf_raw, 0)

    @functools.cached_property
    def wave(self):
        """(X, Y, VALUES) of WCS-WAVE, or None."""
        if not self.wave_raw:
            return None
        from spxflow.photometry.cutout import wcs_wave_of
        from spxflow.photometry.fitsread import read_table_row

        return wcs_wave_of(read_table_row(self.wave_bytes, _hdu("WCS-WAVE", self.wave_raw, 0)))

    @functools.cached_property
    def lattice(self) -> EpsfLattice:
        return read_lattice(self.epsf_table, self.psf_hdu)

    def epsf_row(self, row: int) -> np.ndarray:
        return read_epsf_row(self.epsf_table, self.psf_hdu, row)

    def meta(self) -> dict:
        # not asdict: it deep-copies ``planes``, which other threads add to
        skip = {*self._BLOBS, "planes"}
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}


class ConstantCache:
    """``ConstantEntry`` per (release, detector, token); QR2 cube planes are added as read.
    In memory per process (thread-safe) and, with a ``directory``, on disk."""

    def __init__(self, directory: str | os.PathLike | None = None):
        self.directory = os.fspath(directory) if directory is not None else None
        if self.directory:
            os.makedirs(self.directory, exist_ok=True)
        self._mem: dict[tuple, ConstantEntry] = {}
        self._lock = threading.Lock()
        self._locks: dict[tuple, threading.Lock] = {}

    def lock(self, ident: tuple) -> threading.Lock:
        """A lock per ident: one thread locates a detector's constants, the others wait."""
        with self._lock:
            return self._locks.setdefault(ident, threading.Lock())

    def _path(self, ident: tuple, what: str = "const") -> str:
        return os.path.join(self.directory, f"{_digest(*map(str, ident))}.{what}")

    def get(self, ident: tuple) -> ConstantEntry | None:
        with self._lock:
            if ident in self._mem:
                return self._mem[ident]
        if not self.directory:
            return None
        got = _read(self._path(ident))
        if got is None:
            return None
        try:
            entry = ConstantEntry(**got[0], **got[1])
            _ = entry.psf_hdu  # parse now: skip a bad entry
        except (TypeError, ValueError, KeyError):
            return None
        if entry.ident != tuple(ident):
            return None
        with self._lock:
            return self._mem.setdefault(ident, entry)

    def put(self, entry: ConstantEntry) -> None:
        with self._lock:
            self._mem[entry.ident] = entry
        self._save(entry)

    def _save(self, entry: ConstantEntry) -> None:
        if self.directory:
            with contextlib.suppress(OSError):
                blobs = {name: getattr(entry, name) for name in ConstantEntry._BLOBS}
                _write(self._path(entry.ident), entry.meta(), blobs)

    def update_hints(self, entry: ConstantEntry, **hints: int) -> None:
        """Record header lengths / tail offsets seen on a file (saved when they changed)."""
        changed = {k: v for k, v in hints.items() if getattr(entry, k) != v}
        if changed:
            with self._lock:
                for k, v in changed.items():
                    setattr(entry, k, v)
            self._save(entry)

    def plane(self, entry: ConstantEntry, k: int) -> np.ndarray | None:
        """QR2 cube plane ``k`` if known (memory, then disk)."""
        if k in entry.planes:
            return entry.planes[k]
        if not self.directory:
            return None
        got = _read(self._path(entry.ident, f"plane{k}"))
        if got is None:
            return None
        try:
            return self.add_plane(entry, k, got[1]["plane"], save=False)
        except ValueError:
            return None

    def add_plane(self, entry: ConstantEntry, k: int, raw: bytes, save: bool = True):
        """Plane ``k`` from its raw bytes (the file's type, big-endian) as a native copy."""
        hdu = entry.psf_hdu
        shape = hdu.shape[1:]
        arr = np.frombuffer(raw, dtype=hdu.dtype, count=int(np.prod(shape))).reshape(shape)
        arr = arr.astype(hdu.dtype.newbyteorder("="))
        with self._lock:
            entry.planes[k] = arr
        if save and self.directory:
            with contextlib.suppress(OSError):
                _write(self._path(entry.ident, f"plane{k}"), {"k": k}, {"plane": raw})
        return arr
