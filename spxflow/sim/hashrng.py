"""Counter-based random numbers: value = f(key, stream, index), no state.

Why: a cutout must contain exactly the pixels the full frame would contain, whichever part is
cut out and in whatever order. Hashing (key, stream, parent-pixel index) with SplitMix64 gives
each pixel its own reproducible random numbers without generating the 2040² frame.
"""

from __future__ import annotations

import hashlib

import numpy as np

_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def key_of(*parts) -> int:
    """64-bit key from any printable parts (stable across processes and platforms)."""
    text = "|".join(str(p) for p in parts).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")


def _splitmix64(x: np.ndarray) -> np.ndarray:
    z = x + np.uint64(_GOLDEN)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def hash64(key: int, stream: int, index) -> np.ndarray:
    """uint64 hash of (key, stream, index) for an integer array ``index``."""
    mixed = (key ^ ((stream + 1) * _GOLDEN)) & _M64
    seed = _splitmix64(np.array([mixed], dtype=np.uint64))[0]
    idx = np.asarray(index, dtype=np.uint64)
    return _splitmix64(np.atleast_1d(idx) ^ seed).reshape(idx.shape)


def uniform(key: int, stream: int, index) -> np.ndarray:
    """Uniform [0, 1) floats, one per element of ``index``."""
    return (hash64(key, stream, index) >> np.uint64(11)).astype(np.float64) * (2.0**-53)


def normal(key: int, stream: int, index) -> np.ndarray:
    """Standard normal deviates (Box-Muller on two independent hash streams)."""
    u1 = uniform(key, 2 * stream + 1000, index)
    u2 = uniform(key, 2 * stream + 1001, index)
    return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)
