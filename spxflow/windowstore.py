"""Every measurement's window, kept in the source's stamps file (``*_stamps.npz``).

With windows read straight into memory there are no cutout files, so the pixels a fit used
are stored here and full QA (``qa_level: full``) can always be rebuilt without the archive.
A window round-trips exactly: planes are stored as float32 when that is lossless (Level-2
files are float32), PSF planes and WCS-WAVE tables once per distinct array.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from spxflow.photometry.celestial import TanSip
from spxflow.photometry.cutout import Cutout

_PREFIX = "win"


def _compact(a: np.ndarray) -> np.ndarray:
    """float32 when exact (NaN included), else the array as it is."""
    if a.dtype == np.float64:
        f = a.astype(np.float32)
        if np.array_equal(f.astype(np.float64), a, equal_nan=True):
            return f
    return a


def _poly(m) -> list | None:
    return None if m is None else np.asarray(m).tolist()


def _array(v) -> np.ndarray | None:
    return None if v is None else np.asarray(v, dtype=np.float64)


def window_arrays(windows: dict[str, Cutout]) -> dict[str, np.ndarray]:
    """npz arrays of ``file_name -> window`` (shared arrays stored once)."""
    out: dict[str, np.ndarray] = {}
    shared: dict[str, str] = {}  # digest -> array name

    def share(kind: str, a: np.ndarray) -> str:
        a = np.ascontiguousarray(a)
        digest = hashlib.sha1(a.tobytes() + str((a.dtype, a.shape)).encode()).hexdigest()
        if digest not in shared:
            shared[digest] = f"{_PREFIX}_{kind}{len(shared)}"
            out[shared[digest]] = a
        return shared[digest]

    for k, (file_name, c) in enumerate(windows.items()):
        stem = f"{_PREFIX}{k}"
        out[f"{stem}_image"] = _compact(c.image)
        out[f"{stem}_flags"] = c.flags
        out[f"{stem}_variance"] = _compact(c.variance)
        wave = None if c.wcs_wave is None else [share("wave", a) for a in c.wcs_wave]
        meta = {
            "file_name": file_name,
            "path": c.path,
            "obs_id": c.obs_id,
            "detector": c.detector,
            "origin": list(c.origin),
            "cutout_origin": None if c.cutout_origin is None else list(c.cutout_origin),
            "crpix_w": list(c.crpix_w),
            "crval_w": list(c.crval_w),
            "mjd": c.mjd,
            "exptime_s": c.exptime_s,
            "flag_bits": c.flag_bits,
            "x": c.x,
            "y": c.y,
            "plane": c.plane,
            "layout": c.layout,
            "version": c.version,
            "psf_model": c.psf_model,
            "psf": share("psf", c.psf),
            "wave": wave,
            "wcs": {
                "crpix": list(c.wcs.crpix),
                "crval": list(c.wcs.crval),
                "cd": _poly(c.wcs.cd),
                **{n: _poly(getattr(c.wcs, n)) for n in ("a", "b", "ap", "bp")},
            },
        }
        out[f"{stem}_meta"] = np.array(json.dumps(meta))
    return out


def read_windows(data) -> dict[str, Cutout]:
    """``file_name -> window`` from a loaded npz (``np.load``), in the order written."""
    out = {}
    k = 0
    while f"{_PREFIX}{k}_meta" in data:
        stem = f"{_PREFIX}{k}"
        m = json.loads(str(data[f"{stem}_meta"]))
        w = m["wcs"]
        wcs = TanSip(
            crpix=tuple(w["crpix"]),
            crval=tuple(w["crval"]),
            cd=np.asarray(w["cd"], dtype=np.float64),
            **{n: _array(w[n]) for n in ("a", "b", "ap", "bp")},
        )
        wave = None if m["wave"] is None else tuple(data[name] for name in m["wave"])
        out[m["file_name"]] = Cutout(
            path=m["path"],
            obs_id=m["obs_id"],
            detector=int(m["detector"]),
            image=data[f"{stem}_image"].astype(np.float64),
            flags=data[f"{stem}_flags"].astype(np.int32),
            variance=data[f"{stem}_variance"].astype(np.float64),
            wcs=wcs,
            origin=tuple(m["origin"]),
            crpix_w=tuple(m["crpix_w"]),
            crval_w=tuple(m["crval_w"]),
            mjd=float(m["mjd"]),
            exptime_s=float(m["exptime_s"]),
            flag_bits={str(n): int(b) for n, b in m["flag_bits"].items()},
            wcs_wave=wave,
            x=float(m["x"]),
            y=float(m["y"]),
            plane=int(m["plane"]),
            psf=data[m["psf"]],
            layout=m["layout"],
            version=m["version"],
            psf_model=m["psf_model"],
            cutout_origin=None if m["cutout_origin"] is None else tuple(m["cutout_origin"]),
        )
        k += 1
    return out
