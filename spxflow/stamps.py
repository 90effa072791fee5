"""QA stamps: data, model, residual and mask of a few representative measurements per source.

They are kept in ``results/qa/{source}/{source}_stamps.npz`` so the QA summary page can be
drawn from the measurements alone, after the cutouts are gone. When the pixels were read as
windows (no cutout files), the same file keeps every measurement's window
(``spxflow.windowstore``), from which full QA is rebuilt.
"""

from __future__ import annotations

import io
import logging
import os

import numpy as np
import pandas as pd

from spxflow.fileio import Written, write_bytes_atomic

log = logging.getLogger(__name__)

N_QA_STAMPS = 6
_PLANES = ("data", "model", "residual", "mask")


def representative(df: pd.DataFrame, n: int = N_QA_STAMPS) -> pd.DataFrame:
    """A few measurements worth looking at: the best S/N per detector, then the worst fits."""
    ok = df[df["detection_status"] != "failed"]
    if ok.empty:
        return ok
    best = ok.sort_values("snr", ascending=False).groupby("detector", sort=True).head(1)
    rest = ok.drop(best.index).sort_values("chi2_red", ascending=False)
    return pd.concat([best, rest]).head(n)


def make_stamps(df, pixels, target, neighbours, calibration, settings, earlier=None) -> dict:
    """``file_name -> stamp`` for the representative rows: rendered from the pixels (a cutout
    directory, or ``file_name -> window`` in memory) when they are there, else taken from
    ``earlier`` stamps (rows carried over from a previous run)."""
    from spxflow.photometry import model_images

    earlier = earlier or {}
    stamps = {}
    for row in representative(df).itertuples(index=False):
        if isinstance(pixels, dict):
            path = pixels.get(row.file_name)
        else:
            path = os.path.join(pixels, row.file_name)
            path = path if os.path.exists(path) else None
        if path is None:
            if row.file_name in earlier:
                stamps[row.file_name] = earlier[row.file_name]
            continue
        try:
            img = model_images(
                path, target["ra_deg"], target["dec_deg"], neighbours, calibration, settings
            )
        except Exception as exc:  # a QA stamp must never cost the science outputs
            log.warning("QA stamp for %s not made: %s", row.file_name, exc)
            continue
        stamps[row.file_name] = {
            **{key: np.asarray(img[key]) for key in _PLANES},
            "label": f"D{row.detector} {row.wavelength_um:.3f} um S/N {row.snr:.1f}",
        }
    return stamps


def write_stamps(path: str, stamps: dict, windows: dict | None = None) -> Written:
    """The QA stamps, and ``windows`` (``file_name -> Cutout``) of every measurement."""
    from spxflow.windowstore import window_arrays

    arrays = window_arrays(windows) if windows else {}
    for k, (file_name, stamp) in enumerate(stamps.items()):
        for key in _PLANES:
            arrays[f"{k}_{key}"] = stamp[key]
        arrays[f"{k}_label"] = np.array(stamp["label"])
        arrays[f"{k}_file_name"] = np.array(file_name)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return write_bytes_atomic(path, buf.getvalue())


def read_stamps(path: str) -> dict:
    """``file_name -> stamp``, in the order written."""
    data = np.load(path)
    out = {}
    k = 0
    while f"{k}_data" in data:
        name = str(data[f"{k}_file_name"]) if f"{k}_file_name" in data else str(k)
        out[name] = {key: data[f"{k}_{key}"] for key in _PLANES}
        out[name]["label"] = str(data[f"{k}_label"])
        k += 1
    return out


def read_stamp_windows(path: str) -> dict:
    """``file_name -> window`` kept in a stamps file (empty if it keeps none)."""
    from spxflow.windowstore import read_windows

    return read_windows(np.load(path)) if os.path.exists(path) else {}


def load_stamps(path: str) -> list[dict]:
    """The stamps as the QA summary plot takes them."""
    return list(read_stamps(path).values())
