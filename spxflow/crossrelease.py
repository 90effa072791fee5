"""Cross-release check of one source: the median QR3/QR2 flux ratio at overlapping wavelengths.

QR2 and QR3 are consecutive time slices of the survey, so a source is measured at different
wavelengths in each; the check compares them where they sample the same spectral element.

Rows used: ``science_recommended``, ``detection_status == 'detected'``, finite wavelength,
flux and a positive finite flux error. A table without a ``release`` column (older results)
is all ``qr2``; missing values in the column count as ``qr2`` too.

Calibration scale: each release keeps the rows of one ``calibration_scale``. A scale common to
both releases is used if there is one (``r7`` first, else the one with the most rows), so mixed
tables compare like with like. If the releases share no scale, each keeps its most common scale
and the ratio is still computed; ``xrel_scales`` (``"qr3:r7,qr2:qr2"``) always says which
scales were compared. A table without the column, or blank values, means the release's own
scale (``qr2`` for QR2, ``r7`` for QR3).

Method:

1. Per detector, common wavelength bins for both releases: width = the median ``bandwidth_um``
   of that detector's usable rows (one SPHEREx resolution element; ``wavelength / R`` of
   ``format.BANDS`` if no bandwidth is known), edges starting at the smallest wavelength of the
   union of both releases' rows.
2. Per (release, bin): the inverse-variance-weighted mean flux ``F = sum(w f) / sum(w)``,
   ``w = 1 / err**2``, with error ``1 / sqrt(sum(w))``.
3. Per bin where both releases have a positive mean: ``r = F_qr3 / F_qr2`` with
   ``sigma_r = r * sqrt((e_qr3 / F_qr3)**2 + (e_qr2 / F_qr2)**2)``.
4. ``xrel_ratio`` = median of the per-bin ratios (robust against a line or a bad bin).
   ``xrel_ratio_err = 1.2533 * sigma / sqrt(n)`` with ``sigma = max(sigma_scatter, sigma_prop)``:
   ``sigma_scatter = 1.4826 * MAD`` of the ratios (catches scatter the errors miss, e.g. an SED
   slope within a bin or variability), ``sigma_prop`` = the harmonic mean of the per-bin
   ``sigma_r``, for which ``1.2533 * sigma_prop / sqrt(n)`` is the large-``n`` error of the
   median of normal values with unequal errors; it also gives a single bin an error.
   Simulated (tests/test_crossrelease.py): pull std ~1 from ~10 bins up; with a handful of
   bins the error is conservative (pull std ~0.75-0.85), since the median of very few values
   is more efficient than ``1 / 1.2533``.

``xrel_wave_min_um`` / ``xrel_wave_max_um`` span the wavelengths of the rows (both releases)
in the overlapping bins. Only one release, no common bin, or no usable detection: ``n_bins``
0 and NaN values.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from spxflow.format import BANDS

NUMERATOR, DENOMINATOR = "qr3", "qr2"
DEFAULT_RELEASE = "qr2"  # a table (or row) without a release is an older, QR2-only result
# Scale a release's flux is on when nothing says otherwise.
NATIVE_SCALE = {"qr2": "qr2", "qr3": "r7"}
PREFERRED_SCALE = "r7"
RELEASE_ORDER = ("qr2", "qr3")
XREL_KEYS = (
    "xrel_n_bins",
    "xrel_ratio",
    "xrel_ratio_err",
    "xrel_wave_min_um",
    "xrel_wave_max_um",
    "xrel_scales",
)
BIN_COLUMNS = (
    "detector",
    "wave_lo_um",
    "wave_hi_um",
    "n_qr2",
    "n_qr3",
    "flux_qr2",
    "err_qr2",
    "flux_qr3",
    "err_qr3",
    "both",
    "ratio",
    "ratio_err",
    "wave_min_um",
    "wave_max_um",
)
MEDIAN_EFFICIENCY = 1.2533  # sqrt(pi / 2): error of a median / error of a mean (normal data)
MAD_TO_SIGMA = 1.4826
DEFAULT_RESOLVING_POWER = 40.0


# --- per-row helpers (also used by the plots and sources.csv) ------------------------------
def releases_of(df: pd.DataFrame) -> np.ndarray:
    """Release of each row as an object array; ``qr2`` without a column or value."""
    if "release" not in df:
        return np.full(len(df), DEFAULT_RELEASE, dtype=object)
    return np.array([_text(v) or DEFAULT_RELEASE for v in df["release"].tolist()], dtype=object)


def _text(value) -> str:
    """Lower-case stripped text of a cell; '' for None / NaN / NA."""
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return ""
    return str(value).strip().lower()


def release_order(releases) -> list[str]:
    """Distinct releases in display order: qr2, qr3, then any others alphabetically."""
    present = set(releases)
    return [r for r in RELEASE_ORDER if r in present] + sorted(present - set(RELEASE_ORDER))


def release_counts(df: pd.DataFrame) -> dict[str, int]:
    """Rows per release, in display order (only releases that occur)."""
    rel = releases_of(df)
    return {r: int((rel == r).sum()) for r in release_order(rel)}


def scales_of(df: pd.DataFrame, releases: np.ndarray | None = None) -> np.ndarray:
    """``calibration_scale`` of each row; blank or missing -> the release's native scale."""
    rel = releases_of(df) if releases is None else releases
    values = df["calibration_scale"].tolist() if "calibration_scale" in df else [""] * len(rel)
    return np.array(
        [_text(v) or NATIVE_SCALE.get(r, r) for v, r in zip(values, rel, strict=True)],
        dtype=object,
    )


def _num(df: pd.DataFrame, col: str) -> np.ndarray:
    if col not in df:
        return np.full(len(df), np.nan)
    return pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)


def _bool(df: pd.DataFrame, col: str) -> np.ndarray:
    if col not in df:
        return np.zeros(len(df), dtype=bool)
    return df[col].astype("boolean").fillna(False).to_numpy(dtype=bool)


# --- the check -----------------------------------------------------------------------------
def empty_result(scales: str = "") -> dict:
    return {
        "xrel_n_bins": 0,
        "xrel_ratio": np.nan,
        "xrel_ratio_err": np.nan,
        "xrel_wave_min_um": np.nan,
        "xrel_wave_max_um": np.nan,
        "xrel_scales": scales,
    }


def cross_release_check(df: pd.DataFrame) -> dict:
    """The per-source QR3/QR2 flux-ratio check (see the module docstring) as a dict with
    ``XREL_KEYS``."""
    bins, scales = _bin_arrays(df)
    both = bins["both"] if bins else np.zeros(0, dtype=bool)
    n = int(both.sum())
    if n == 0:
        return empty_result(scales)
    ratio, sigma_r = bins["ratio"][both], bins["ratio_err"][both]
    med = float(np.median(ratio))
    sigma_scatter = MAD_TO_SIGMA * float(np.median(np.abs(ratio - med)))
    sigma_prop = 1.0 / float(np.mean(1.0 / sigma_r))
    err = MEDIAN_EFFICIENCY * max(sigma_scatter, sigma_prop) / np.sqrt(n)
    return {
        "xrel_n_bins": int(n),
        "xrel_ratio": med,
        "xrel_ratio_err": float(err),
        "xrel_wave_min_um": float(bins["wave_min_um"][both].min()),
        "xrel_wave_max_um": float(bins["wave_max_um"][both].max()),
        "xrel_scales": scales,
    }


def cross_release_bins(df: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Per-bin table behind ``cross_release_check`` and the ``xrel_scales`` string.

    One row per occupied (detector, bin): ``detector``, ``wave_lo_um``, ``wave_hi_um``,
    ``n_qr2``/``n_qr3`` rows, weighted means ``flux_qr2``/``flux_qr3`` with errors
    ``err_qr2``/``err_qr3``, ``both`` (both releases have a positive mean), ``ratio``,
    ``ratio_err`` (NaN unless ``both``), and ``wave_min_um``/``wave_max_um`` of its rows.
    """
    bins, scales = _bin_arrays(df)
    if not bins:
        return pd.DataFrame(columns=list(BIN_COLUMNS)).astype({"both": bool}), scales
    return pd.DataFrame(bins)[list(BIN_COLUMNS)], scales


def _bin_arrays(df: pd.DataFrame) -> tuple[dict[str, np.ndarray], str]:
    """``cross_release_bins`` as a dict of arrays ({} without usable rows) and the scales."""
    num, den = NUMERATOR, DENOMINATOR
    rel = releases_of(df)
    wl, flux, err = _num(df, "wavelength_um"), _num(df, "flux_uJy"), _num(df, "flux_err_uJy")
    status = (
        df["detection_status"].astype(str).to_numpy()
        if "detection_status" in df
        else np.full(len(df), "")
    )
    use = (
        _bool(df, "science_recommended")
        & (status == "detected")
        & np.isfinite(wl)
        & np.isfinite(flux)
        & np.isfinite(err)
        & (err > 0)
        & np.isin(rel, [num, den])
    )
    scale = scales_of(df, rel)
    chosen = _choose_scales(rel[use], scale[use])
    scales = ",".join(f"{r}:{chosen[r]}" for r in (num, den) if r in chosen)
    for r, s in chosen.items():
        use &= (rel != r) | (scale == s)
    if not use.any():
        return {}, scales

    det = _num(df, "detector")[use]
    det = np.where(np.isfinite(det), det, -1).astype(int)
    wl, flux, err, is_num = wl[use], flux[use], err[use], rel[use] == num
    bw = _num(df, "bandwidth_um")[use]
    key = np.empty(wl.size, dtype=np.int64)
    bin_det, bin_lo, bin_width = [], [], []
    offset = 0
    for d in np.unique(det):
        m = det == d
        width = _bin_width(bw[m], wl[m], d)
        lo = float(wl[m].min())
        idx = np.floor((wl[m] - lo) / width).astype(np.int64)
        key[m] = offset + idx
        nb = int(idx.max()) + 1
        bin_det += [d] * nb
        bin_lo.append(lo + width * np.arange(nb))
        bin_width += [width] * nb
        offset += nb
    # Keep only occupied bins, then sum per (bin, release) with bincount.
    occupied, key = np.unique(key, return_inverse=True)
    nb = occupied.size
    w = 1.0 / err**2
    out = {"detector": np.asarray(bin_det)[occupied]}
    lo = np.concatenate(bin_lo)[occupied]
    out["wave_lo_um"] = lo
    out["wave_hi_um"] = lo + np.asarray(bin_width)[occupied]
    for name, m in ((den, ~is_num), (num, is_num)):
        k = key[m]
        sw = np.bincount(k, weights=w[m], minlength=nb)
        swf = np.bincount(k, weights=(w * flux)[m], minlength=nb)
        out[f"n_{name}"] = np.bincount(k, minlength=nb)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[f"flux_{name}"] = np.where(sw > 0, swf / sw, np.nan)
            out[f"err_{name}"] = np.where(sw > 0, 1.0 / np.sqrt(sw), np.nan)
    fn, en = out[f"flux_{num}"], out[f"err_{num}"]
    fd, ed = out[f"flux_{den}"], out[f"err_{den}"]
    both = (out[f"n_{num}"] > 0) & (out[f"n_{den}"] > 0) & (fn > 0) & (fd > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(both, fn / fd, np.nan)
        out["ratio_err"] = np.where(both, ratio * np.hypot(en / fn, ed / fd), np.nan)
    out["both"], out["ratio"] = both, ratio
    out["wave_min_um"] = np.full(nb, np.inf)
    out["wave_max_um"] = np.full(nb, -np.inf)
    np.minimum.at(out["wave_min_um"], key, wl)
    np.maximum.at(out["wave_max_um"], key, wl)
    return out, scales


def _choose_scales(rel: np.ndarray, scale: np.ndarray) -> dict[str, str]:
    """Calibration scale to use per release present (see the module docstring)."""
    counts = {r: Counter(scale[rel == r].tolist()) for r in release_order(rel)}
    if not counts:
        return {}

    def best(options: dict[str, int]) -> str:
        return sorted(options, key=lambda s: (s != PREFERRED_SCALE, -options[s], s))[0]

    common = set.intersection(*(set(c) for c in counts.values()))
    if len(counts) > 1 and common:
        total = {s: sum(c[s] for c in counts.values()) for s in common}
        s = best(total)
        return {r: s for r in counts}
    return {r: best(c) for r, c in counts.items()}


def _bin_width(bandwidth: np.ndarray, wl: np.ndarray, detector: int) -> float:
    bw = bandwidth[np.isfinite(bandwidth) & (bandwidth > 0)]
    if bw.size:
        return float(np.median(bw))
    r = BANDS[detector][2] if detector in BANDS else DEFAULT_RESOLVING_POWER
    return float(np.median(wl)) / r


# --- text for the plots --------------------------------------------------------------------
def describe_cross_release(result: dict, counts: dict[str, int] | None = None) -> str:
    """One line: ``QR3/QR2 median flux ratio 0.998 ± 0.004 over 12 bins (1.1–4.9 µm)``, or
    ``no overlapping releases (…)`` saying why (``counts``: rows per release)."""
    n = int(result.get("xrel_n_bins") or 0)
    scales = str(result.get("xrel_scales") or "")
    if n == 0 or not np.isfinite(result.get("xrel_ratio", np.nan)):
        present = [r for r, k in (counts or {}).items() if k]
        if counts is not None and not present:
            why = "no measurements"
        elif counts is not None and not {NUMERATOR, DENOMINATOR} <= set(present):
            why = f"only {', '.join(r.upper() for r in present)} measurements"
        else:
            why = "no common wavelength bin with recommended detections"
        return f"no overlapping releases ({why})"
    text = (
        f"{NUMERATOR.upper()}/{DENOMINATOR.upper()} median flux ratio "
        f"{result['xrel_ratio']:.3f} ± {result['xrel_ratio_err']:.3f} over {n} "
        f"bin{'s' if n != 1 else ''} "
        f"({result['xrel_wave_min_um']:.1f}–{result['xrel_wave_max_um']:.1f} µm)"
    )
    if scales_differ(scales):
        text += f"; calibration scales differ ({scales.replace(',', ', ')})"
    return text


def scales_differ(scales: str) -> bool:
    """True if an ``xrel_scales`` string names more than one scale."""
    return len({part.split(":", 1)[-1] for part in scales.split(",") if part}) > 1
