"""SED plot of one source: flux density vs wavelength from its measurement table.

Drawing conventions (also in workflow/report/sed.rst):

* detections recommended for science: filled dark markers with 1-sigma error bars;
* detections not recommended: open grey markers;
* the marker shape names the release (``RELEASE_MARKERS``: circles QR2, diamonds QR3; a table
  without a ``release`` column is all QR2), with one legend entry per release giving its
  number of points drawn (detections and upper limits);
* non-detections and negative fluxes: red downward arrows at the 3-sigma upper limit
  ``max(flux, 0) + 3 * flux_err`` (faint for rows not recommended for science);
* failed rows (no valid flux) are not drawn but counted in the legend;
* detector bandpasses D1-D6 (``format.BANDS``) are shaded and labelled;
* the injected truth SED of a simulated source (if given) is a green line.

Units: ``fnu`` plots F_nu in µJy. ``flambda`` plots F_lambda = F_nu c / lambda^2 in
W m^-2 µm^-1 (1 µJy at 1 µm = 2.998e-18 W m^-2 µm^-1; 1 W m^-2 µm^-1 =
0.1 erg s^-1 cm^-2 Å^-1). Scale ``log`` makes both
axes logarithmic; points at or below zero cannot be drawn there and are counted in the legend.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from spxflow.crossrelease import release_order, releases_of
from spxflow.fileio import Written
from spxflow.plots.style import (
    COLOR_LIMIT,
    COLOR_NOT_RECOMMENDED,
    COLOR_RECOMMENDED,
    COLOR_TRUTH,
    FONT,
    new_figure,
    save_png,
    shade_detector_bands,
    wavelength_limits_um,
)

UPPER_LIMIT_SIGMA = 3.0
# F_lambda [W m^-2 µm^-1] = F_nu [µJy] * FLAMBDA_PER_UJY_UM2 / lambda[µm]^2  (c = 2.99792458e8)
FLAMBDA_PER_UJY_UM2 = 1e-32 * 2.99792458e8 / 1e-12 * 1e-6
UNITS = ("fnu", "flambda")
RELEASE_MARKERS = {"qr2": "o", "qr3": "D"}
OTHER_RELEASE_MARKERS = ("s", "^", "P", "X")
RELEASE_MARKER_SIZE = {"o": 4.5, "D": 4.0}
SCALES = ("linear", "log")


def fnu_to_flambda(flux_uJy, wavelength_um):
    """F_nu in µJy -> F_lambda in W m^-2 µm^-1 at ``wavelength_um`` (also for 1-sigma errors)."""
    wl = np.asarray(wavelength_um, dtype=float)
    return np.asarray(flux_uJy, dtype=float) * FLAMBDA_PER_UJY_UM2 / wl**2


def classify_rows(df: pd.DataFrame) -> dict[str, np.ndarray]:
    """Boolean masks: ``failed`` (no valid flux), ``limit`` (non-detection / negative),
    ``detected``, and ``recommended`` (science_recommended), aligned with ``df`` rows."""
    n = len(df)
    status = (
        df["detection_status"].astype(str).to_numpy()
        if "detection_status" in df
        else np.full(n, "detected")
    )
    flux = _num(df, "flux_uJy")
    err = _num(df, "flux_err_uJy")
    wl = _num(df, "wavelength_um")
    valid = np.isfinite(flux) & np.isfinite(err) & np.isfinite(wl) & (err > 0)
    failed = (status == "failed") | ~valid
    limit = ~failed & np.isin(status, ["non-detection", "negative"])
    rec = (
        df["science_recommended"].fillna(False).astype(bool).to_numpy()
        if "science_recommended" in df
        else np.zeros(n, dtype=bool)
    )
    return {"failed": failed, "limit": limit, "detected": ~failed & ~limit, "recommended": rec}


def _num(df: pd.DataFrame, col: str) -> np.ndarray:
    if col not in df:
        return np.full(len(df), np.nan)
    return pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)


def plot_sed(
    measurements: pd.DataFrame,
    out_png: str | os.PathLike,
    *,
    title_name: str,
    ra: float,
    dec: float,
    units: str = "fnu",
    scale: str = "linear",
    truth: pd.DataFrame | None = None,
) -> Written:
    """Write the SED PNG of one source (about 1320 x 620 px). Raises on bad arguments; the
    caller decides what a failure means (see ``plot_failure_png``)."""
    if units not in UNITS:
        raise ValueError(f"units must be one of {UNITS}, got {units!r}")
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    df = measurements.reset_index(drop=True)
    masks = classify_rows(df)
    wl = _num(df, "wavelength_um")
    flux = _num(df, "flux_uJy")
    err = _num(df, "flux_err_uJy")
    if units == "flambda":
        flux, err = fnu_to_flambda(flux, wl), fnu_to_flambda(err, wl)
        ylabel = r"$F_\lambda$ (W m$^{-2}$ µm$^{-1}$)"
    else:
        ylabel = r"$F_\nu$ (µJy)"
    limit_value = np.maximum(flux, 0.0) + UPPER_LIMIT_SIGMA * err

    fig = new_figure(13.2, 6.2)
    ax = fig.add_axes((0.07, 0.1, 0.9, 0.78))
    log = scale == "log"
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log", nonpositive="clip")
    shade_detector_bands(ax)
    handles: list = []

    release = releases_of(df)
    releases = release_order(release)
    markers = release_markers(releases)
    for rec, color, fill, label in (
        (True, COLOR_RECOMMENDED, True, "detection, recommended"),
        (False, COLOR_NOT_RECOMMENDED, False, "detection, not recommended"),
    ):
        sel = masks["detected"] & (masks["recommended"] == rec)
        if log:
            sel &= flux > 0
        if not sel.any():
            continue
        # One set of error bars per class, then the markers of each release on top.
        z = 3 if rec else 2
        alpha = 1.0 if rec else 0.8
        ax.errorbar(
            wl[sel],
            flux[sel],
            yerr=err[sel],
            fmt="none",
            ecolor=color,
            elinewidth=0.8,
            capsize=0,
            alpha=alpha,
            zorder=z,
        )
        for rel in releases:
            s = sel & (release == rel)
            if s.any():
                ax.plot(
                    wl[s],
                    flux[s],
                    ls="none",
                    marker=markers[rel],
                    ms=RELEASE_MARKER_SIZE.get(markers[rel], 4.5),
                    color=color,
                    mfc=color if fill else "white",
                    alpha=alpha,
                    zorder=z,
                )
        # One release: its marker; several: a neutral patch (the shape names the release).
        shape = markers[releases[0]] if len(releases) == 1 else None
        handles.append(_marker(color, fill, f"{label} ({int(sel.sum())})", shape))

    lim_sel = masks["limit"]
    if lim_sel.any():
        _draw_upper_limits(ax, wl, limit_value, lim_sel, masks["recommended"], log)
        handles.append(
            Line2D(
                [],
                [],
                ls="none",
                marker="v",
                color=COLOR_LIMIT,
                alpha=0.7,
                label=f"{UPPER_LIMIT_SIGMA:.0f}σ upper limit, non-detection ({int(lim_sel.sum())})"
                " (faint: not recommended)",
            )
        )

    drawn = masks["detected"] & (flux > 0) if log else masks["detected"].copy()
    drawn |= lim_sel & np.isfinite(limit_value) & ((limit_value > 0) if log else True)
    for rel in releases:
        n_rel = int((drawn & (release == rel)).sum())
        handles.append(
            Line2D(
                [],
                [],
                ls="none",
                marker=markers[rel],
                color="#333333",
                mfc="none",
                label=f"{rel.upper()}: {n_rel} point{'s' if n_rel != 1 else ''}",
            )
        )

    truth_flux = np.zeros(0)
    if truth is not None and len(truth):
        twl = pd.to_numeric(truth["wavelength_um"], errors="coerce").to_numpy(dtype=float)
        tfl = pd.to_numeric(truth["flux_uJy"], errors="coerce").to_numpy(dtype=float)
        if units == "flambda":
            tfl = fnu_to_flambda(tfl, twl)
        order = np.argsort(twl)
        (line,) = ax.plot(twl[order], tfl[order], color=COLOR_TRUTH, lw=1.4, alpha=0.9, zorder=4)
        line.set_label("injected truth SED (simulation)")
        truth_flux = tfl
        handles.append(line)

    notes = []
    n_failed = int(masks["failed"].sum())
    if n_failed:
        notes.append(f"{n_failed} failed row(s) not drawn")
    if log:
        n_nonpos = int((masks["detected"] & ~(flux > 0)).sum())
        if n_nonpos:
            notes.append(f"{n_nonpos} detection(s) ≤ 0 not drawn on log axis")
    for note in notes:
        handles.append(Line2D([], [], ls="none", marker="", label=note))

    _set_limits(ax, wl, flux, err, limit_value, masks, truth_flux, log)
    if not (masks["detected"].any() or lim_sel.any()):
        msg = "no measurements" if len(df) == 0 else "no valid flux measured"
        ax.text(
            0.5,
            0.5,
            f"{msg}\n({len(df)} row(s), {n_failed} failed)",
            transform=ax.transAxes,
            ha="center",
            va="center",
            fontsize=FONT["title"],
            color="#666666",
        )
    ax.set_xlabel("Wavelength (µm)", fontsize=FONT["label"])
    ax.set_ylabel(ylabel, fontsize=FONT["label"])
    ax.tick_params(labelsize=FONT["tick"])
    if log:
        ticks = [0.75, 1, 1.5, 2, 3, 4, 5]
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.grid(alpha=0.25, lw=0.6)
    if handles:
        ax.legend(
            handles=handles,
            loc="upper right",
            bbox_to_anchor=(1.0, 0.95),
            fontsize=FONT["note"],
            framealpha=0.85,
        )
    fig.text(
        0.07,
        0.955,
        f"{title_name}",
        fontsize=FONT["title"] + 2,
        fontweight="bold",
        ha="left",
        va="center",
    )
    fig.text(
        0.97,
        0.955,
        f"RA {ra:.5f}°  Dec {dec:+.5f}° (ICRS)   "
        f"{len(df)} measurement(s): {int(masks['recommended'].sum())} recommended"
        + _release_note(release, releases),
        fontsize=FONT["label"],
        ha="right",
        va="center",
    )
    return save_png(fig, out_png)


def release_markers(releases) -> dict[str, str]:
    """Marker of each release: ``RELEASE_MARKERS``, then ``OTHER_RELEASE_MARKERS`` in turn."""
    others = iter(OTHER_RELEASE_MARKERS * 4)
    return {r: RELEASE_MARKERS.get(r) or next(others, "o") for r in releases}


def _release_note(release: np.ndarray, releases: list[str]) -> str:
    if not releases:
        return ""
    return " (" + ", ".join(f"{r.upper()} {int((release == r).sum())}" for r in releases) + ")"


def _marker(color: str, fill: bool, label: str, marker: str | None = "o"):
    if marker is None:
        return Patch(facecolor=color if fill else "white", edgecolor=color, label=label)
    return Line2D(
        [], [], ls="none", marker=marker, color=color, mfc=color if fill else "white", label=label
    )


def _draw_upper_limits(ax, wl, value, sel, rec, log: bool) -> None:
    # Arrow length: 40 % of the value on a log axis, a fixed fraction of the range otherwise.
    span = np.nanmax(value[sel]) - min(0.0, np.nanmin(value[sel]))
    for is_rec in (True, False):
        s = sel & (rec == is_rec) & np.isfinite(value)
        if log:
            s &= value > 0
        if not s.any():
            continue
        length = 0.4 * value[s] if log else np.full(s.sum(), 0.06 * (span if span > 0 else 1.0))
        ax.errorbar(
            wl[s],
            value[s],
            yerr=length,
            uplims=True,
            fmt="_",
            ms=6,
            color=COLOR_LIMIT,
            elinewidth=0.9,
            alpha=0.9 if is_rec else 0.45,
            zorder=2,
        )


def _set_limits(ax, wl, flux, err, limit_value, masks, truth_flux, log: bool) -> None:
    ax.set_xlim(*((0.72, 5.1) if log else wavelength_limits_um()))
    vals = [flux[masks["detected"]] + err[masks["detected"]]]
    vals.append(flux[masks["detected"]] - err[masks["detected"]])
    vals.append(limit_value[masks["limit"]])
    vals.append(truth_flux)
    v = np.concatenate([np.asarray(a, dtype=float) for a in vals])
    v = v[np.isfinite(v)]
    if log:
        v = v[v > 0]
        if v.size:
            lo, hi = np.percentile(v, [0.5, 100])
            ax.set_ylim(lo / 2.0, hi * 2.5)
        else:
            ax.set_ylim(1e-1, 1e3)
        return
    if v.size:
        # Robust range: a single wild error bar must not squash the spectrum.
        lo, hi = np.percentile(v, [1, 99.5]) if v.size > 20 else (v.min(), v.max())
        lo = min(lo, 0.0)
        pad = 0.08 * (hi - lo if hi > lo else 1.0)
        ax.set_ylim(lo - pad, hi + 2.5 * pad)
    ax.axhline(0.0, color="#444444", lw=0.7, zorder=1)
