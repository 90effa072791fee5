"""Cross-process disk cache for the simulator's deterministic per-detector tables.

Every measure job is a new process; without this each one rebuilt the six EPSF tables
(2.5-4 s each) the first time it rendered a window of a detector. The tables are the archive's
own models (not read by the measurement path, which sees only the bytes of the files served),
so caching them changes no output: an entry holds the exact bytes of the array built here.

Key (file name): product, detector and a version digest of the bytes of the source files that
compute the product plus the numpy version and the CPU features numpy dispatches on. A source
hash cannot be forgotten the way a hand-bumped constant can (the cost is a spurious rebuild
after an unrelated edit of those files); numpy and the CPU features are in it because ``exp``
and friends may round differently across numpy builds and SIMD paths, and a node must get the
bits it would have computed itself. No config value (seed, noise, ...) feeds these tables.

Entry: ``MAGIC``, sha256 (hex) of the rest, a JSON line with the key, then ``np.save`` bytes.
A truncated or corrupt entry fails the checksum and is rebuilt. Writes use
``fileio.write_bytes_atomic`` (temporary + rename); concurrent builders of one entry write equal
bytes, so whichever rename lands last is right. Writing is best-effort: ``atomic_path`` removes
other writers' temporaries of the same name, so a racing writer may lose its rename (its
in-memory table is still correct), and a read-only or full disk must not fail a job either.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import platform
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from spxflow.fileio import sha256_bytes, write_bytes_atomic

MAGIC = b"SPXSIMC1\n"
_SIM = Path(__file__).resolve().parent
_DIR: Path | None = None  # None: in-memory only (the default)


def set_dir(path: str | Path | None) -> None:
    """Where entries live (``<data>/cache/sim``); None switches the disk cache off."""
    global _DIR
    _DIR = None if path is None else Path(path)


def cache_dir() -> Path | None:
    return _DIR


def _numpy_build() -> dict:
    try:
        from numpy._core import _multiarray_umath as umath  # numpy 2
    except ImportError:  # pragma: no cover - numpy 1
        from numpy.core import _multiarray_umath as umath
    features = getattr(umath, "__cpu_features__", {})
    return {
        "numpy": np.__version__,
        "machine": platform.machine(),
        "cpu": sorted(k for k, on in features.items() if on),
    }


def version_of(sources: Iterable[Path]) -> str:
    """Digest of the generating code (source bytes) and of the numpy build it runs on."""
    h = hashlib.sha256(json.dumps(_numpy_build(), sort_keys=True).encode())
    for path in sorted(Path(p) for p in sources):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def _encode(key: str, array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    body = key.encode() + b"\n" + buf.getvalue()
    return MAGIC + sha256_bytes(body).encode() + b"\n" + body


def _decode(key: str, data: bytes) -> np.ndarray | None:
    """The array of a valid entry of ``key``, else None (wrong magic, checksum or key)."""
    head = len(MAGIC) + 65
    if len(data) < head or not data.startswith(MAGIC):
        return None
    body = data[head:]
    if data[len(MAGIC) : head] != sha256_bytes(body).encode() + b"\n":
        return None
    got_key, _, npy = body.partition(b"\n")
    if got_key != key.encode():
        return None
    try:
        return np.load(io.BytesIO(npy), allow_pickle=False)
    except ValueError:
        return None


def cached(product: str, detector: int, version: str, build: Callable[[], np.ndarray]):
    """``build()`` (read-only), from the disk cache when a valid entry exists."""
    key = json.dumps({"product": product, "detector": detector, "version": version})
    path = None if _DIR is None else _DIR / f"{product}_d{detector}_{version[:20]}.bin"
    if path is not None:
        with contextlib.suppress(OSError):
            array = _decode(key, path.read_bytes())
            if array is not None:
                array.setflags(write=False)
                return array
    array = build()
    if path is not None:
        with contextlib.suppress(OSError):  # best-effort (see module docstring)
            write_bytes_atomic(path, _encode(key, array))
    array.setflags(write=False)
    return array
