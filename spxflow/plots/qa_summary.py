"""One-page QA summary of one source's measurements.

Panels: S/N vs wavelength (marker shape = release, as on the SED plot); result flags by name;
reduced chi-square histogram; a pull distribution; masked fraction and fitted background vs
wavelength; a grid of representative cutout stamps (data / model / residual).

The header gives the measurements per release and the cross-release check of
``spxflow.crossrelease`` (median QR3/QR2 flux ratio at overlapping wavelengths, in red when it
is more than ``XREL_ALERT_SIGMA`` errors from 1 or the releases' calibration scales differ).

Pull: with a truth column (``TRUTH_COLUMNS``, e.g. from the simulator) it is
``(flux - truth) / flux_err``. Without one it is a *local* pull, ``(flux - median of the
2*LOCAL_PULL_HALF_WINDOW measurements nearest in wavelength) / flux_err``: for a spectrum that
is smooth on the scale of a few channels and correct errors it is close to N(0, 1) (slightly
wider, by the scatter of the median), so a much wider distribution means underestimated errors.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import pandas as pd

from spxflow.crossrelease import (
    cross_release_check,
    describe_cross_release,
    release_counts,
    release_order,
    releases_of,
    scales_differ,
)
from spxflow.fileio import Written
from spxflow.plots.sed import RELEASE_MARKER_SIZE, _num, classify_rows, release_markers
from spxflow.plots.stamp_mosaic import draw_stamp_mosaic
from spxflow.plots.style import (
    COLOR_NOT_RECOMMENDED,
    COLOR_RECOMMENDED,
    DETECTOR_COLORS,
    FONT,
    decode_flag_counts,
    load_result_flags,
    message_panel,
    new_figure,
    save_png,
    shade_detector_bands,
    wavelength_limits_um,
)

TRUTH_COLUMNS = ("truth_flux_uJy", "flux_true_uJy", "true_flux_uJy")
LOCAL_PULL_HALF_WINDOW = 3
MAX_STAMPS = 6
STAMP_GRID_RAISE = 0.03  # figure fraction
CHI2_MAX = 5.0
XREL_ALERT_SIGMA = 3.0
SNR_TITLE = "S/N vs wavelength (filled: science recommended)"
MARKER_GLYPHS = {"o": "○", "D": "◇", "s": "□", "^": "△", "P": "+", "X": "×"}


def plot_qa_summary(
    measurements: pd.DataFrame,
    out_png: str | os.PathLike,
    *,
    title_name: str,
    stamps: list[dict] | None = None,
    result_flags: Mapping[str, tuple[int, str]] | None = None,
) -> Written:
    """Write the QA summary PNG (1400 x 1050 px) of one source.

    ``stamps``: dicts with ``data``, ``model``, ``residual`` (2-D arrays), optional ``mask``
    (True = masked) and ``label``, e.g. from ``model_images``; at most ``MAX_STAMPS`` are shown.
    ``result_flags``: ``{name: (bit, help)}``; default: the photometry's ``RESULT_FLAGS``.
    """
    df = measurements.reset_index(drop=True)
    masks = classify_rows(df)
    flag_table = load_result_flags(result_flags)

    fig = new_figure(14, 10.5)
    outer = fig.add_gridspec(
        3,
        1,
        height_ratios=[1.0, 1.0, 1.3],
        left=0.05,
        right=0.985,
        top=0.885,
        bottom=0.03,
        hspace=0.32,
    )
    top = outer[0].subgridspec(1, 3, wspace=0.35, width_ratios=[1.4, 1.4, 1.0])
    mid = outer[1].subgridspec(1, 4, wspace=0.32)
    _snr_panel(fig.add_subplot(top[0, 0:2]), df, masks)
    _flag_panel(fig.add_subplot(top[0, 2]), df, flag_table)
    _chi2_panel(fig.add_subplot(mid[0, 0]), df, masks)
    _pull_panel(fig.add_subplot(mid[0, 1]), df, masks)
    _vs_wavelength(
        fig.add_subplot(mid[0, 2]), df, masks, "masked_frac", "Masked fraction of fit window"
    )
    _vs_wavelength(fig.add_subplot(mid[0, 3]), df, masks, "bkg_MJy_sr", "Background (MJy/sr)")
    _stamp_grid(fig, outer[2], stamps)

    status = df["detection_status"].astype(str) if "detection_status" in df else pd.Series([])
    counts = ", ".join(f"{k} {int((status == k).sum())}" for k in _status_order(status))
    fig.text(
        0.05,
        0.977,
        f"QA summary — {title_name}",
        fontsize=FONT["title"] + 3,
        fontweight="bold",
        va="center",
    )
    fig.text(
        0.05,
        0.95,
        f"{len(df)} measurement(s): {counts or 'none'}; "
        f"science recommended {int(masks['recommended'].sum())}",
        fontsize=FONT["label"],
        va="center",
    )
    text, alert = cross_release_line(df)
    fig.text(0.05, 0.925, text, fontsize=FONT["label"], va="center", color="#a00" if alert else "k")
    return save_png(fig, out_png)


def cross_release_line(df: pd.DataFrame) -> tuple[str, bool]:
    """Header line with the rows per release and the cross-release check, and whether it
    deserves attention (ratio off 1 by > ``XREL_ALERT_SIGMA`` errors, or scales differ)."""
    counts = release_counts(df)
    result = cross_release_check(df)
    per_release = ", ".join(f"{r.upper()} {k}" for r, k in counts.items()) or "none"
    ratio, err = result["xrel_ratio"], result["xrel_ratio_err"]
    alert = bool(
        result["xrel_n_bins"]
        and (abs(ratio - 1.0) > XREL_ALERT_SIGMA * err or scales_differ(result["xrel_scales"]))
    )
    return f"Releases: {per_release}.  {describe_cross_release(result, counts)}", alert


def _status_order(status: pd.Series) -> list[str]:
    known = ["detected", "non-detection", "negative", "failed"]
    return [k for k in known if (status == k).any()] + sorted(set(status) - set(known))


def _style(ax, title: str, xlabel: str = "", ylabel: str = "", *, auto_title: bool = False) -> None:
    # Automatic title placement only lifts the title above top-side tick labels or a y offset
    # text ('1e-5', '+0.2'), and costs a full y-tick layout per panel at draw time; only the
    # panels of arbitrary y values (auto_title) can have an offset text, so only they pay.
    ax.set_title(title, fontsize=FONT["label"], loc="left", y=None if auto_title else 1.0)
    ax.set_xlabel(xlabel, fontsize=FONT["small"] + 1)
    ax.set_ylabel(ylabel, fontsize=FONT["small"] + 1)
    ax.tick_params(labelsize=FONT["tick"])
    ax.grid(alpha=0.25, lw=0.5)


def _detector_colors(df: pd.DataFrame) -> np.ndarray:
    det = _num(df, "detector")
    return np.array(
        [DETECTOR_COLORS.get(int(d), "#444444") if np.isfinite(d) else "#444444" for d in det]
    )


def _snr_panel(ax, df, masks) -> None:
    _style(ax, SNR_TITLE, "Wavelength (µm)", "S/N")
    ok = ~masks["failed"]
    if not ok.any():
        message_panel(ax, "no measured fluxes")
        return
    shade_detector_bands(ax)
    wl, snr = _num(df, "wavelength_um"), _num(df, "snr")
    colors = _detector_colors(df)
    release = releases_of(df)
    releases = release_order(release[ok])
    markers = release_markers(releases)
    for rel in releases:
        for rec in (False, True):
            s = ok & (masks["recommended"] == rec) & np.isfinite(snr) & (release == rel)
            if s.any():
                ax.scatter(
                    wl[s],
                    snr[s],
                    s=16 * (RELEASE_MARKER_SIZE.get(markers[rel], 4.5) / 4.5) ** 2,
                    marker=markers[rel],
                    c=colors[s] if rec else "none",
                    edgecolors=colors[s],
                    linewidths=0.8,
                    zorder=3,
                )
    # Marker key in the title: a legend would hide points wherever the spectrum is.
    key = ", ".join(
        f"{MARKER_GLYPHS.get(markers[rel], markers[rel])} {rel.upper()} "
        f"{int((ok & np.isfinite(snr) & (release == rel)).sum())}"
        for rel in releases
    )
    ax.set_title(f"{SNR_TITLE}; {key}", fontsize=FONT["label"], loc="left", y=1.0)
    ax.axhline(0, color="#444", lw=0.7)
    ax.axhline(3, color="#b03a2e", lw=0.7, ls="--")
    ax.set_xlim(*wavelength_limits_um())
    finite = snr[ok & np.isfinite(snr)]
    if finite.size and np.nanmax(np.abs(finite)) > 50:
        ax.set_yscale("symlog", linthresh=10)


def _flag_panel(ax, df, flag_table) -> None:
    _style(ax, "Result flags (rows per flag)")
    flags = _num(df, "result_flags")
    flags = np.nan_to_num(flags, nan=0).astype("int64")
    counts = decode_flag_counts(flags, flag_table)
    if not counts:
        message_panel(ax, "no result flags set" if len(df) else "no measurements")
        return
    names = list(counts)[::-1]
    vals = [counts[n] for n in names]
    ax.barh(range(len(names)), vals, color="#7570b3")
    ax.set_yticks(range(len(names)), names, fontsize=FONT["small"])
    for i, v in enumerate(vals):
        ax.text(v, i, f" {v}", va="center", fontsize=FONT["small"])
    ax.set_xlim(0, max(vals) * 1.25)
    ax.grid(False)
    if flag_table is None:
        ax.text(
            0.98,
            0.02,
            "flag names unavailable",
            transform=ax.transAxes,
            ha="right",
            fontsize=FONT["small"],
            color="#a00",
        )


def _chi2_panel(ax, df, masks) -> None:
    _style(ax, "Reduced χ² of the fits", "χ²_red", "measurements")
    chi2 = _num(df, "chi2_red")
    s = ~masks["failed"] & np.isfinite(chi2)
    if not s.any():
        message_panel(ax, "no χ² values")
        return
    vals = chi2[s]
    n_over = int((vals > CHI2_MAX).sum())
    bins = np.linspace(0, CHI2_MAX, 41)
    rec = masks["recommended"][s]
    *_, patches = ax.hist(
        [np.clip(vals[rec], 0, CHI2_MAX), np.clip(vals[~rec], 0, CHI2_MAX)],
        bins=bins,
        stacked=True,
        histtype="stepfilled",  # one polygon per class, not one patch per bin
        color=[COLOR_RECOMMENDED, COLOR_NOT_RECOMMENDED],
        label=["recommended", "not recommended"],
    )
    ax.axvline(1.0, color="#b03a2e", lw=0.8, ls="--")
    # Stacked polygons are added top class first; keep the legend in the classes' order.
    ax.legend(handles=[p[0] for p in patches], fontsize=FONT["small"], loc="upper right")
    ax.text(
        0.98,
        0.6,
        f"median {np.median(vals):.2f}\n> {CHI2_MAX:g}: {n_over} (last bin)",
        transform=ax.transAxes,
        ha="right",
        fontsize=FONT["small"],
    )


def local_pull(wavelength_um, flux, err, half_window: int = LOCAL_PULL_HALF_WINDOW) -> np.ndarray:
    """(flux - median of the 2*half_window neighbours nearest in wavelength order) / err."""
    wl, f, e = (np.asarray(a, dtype=float) for a in (wavelength_um, flux, err))
    order = np.argsort(wl, kind="mergesort")
    fs = f[order]
    n = len(fs)
    pull = np.full(n, np.nan)
    if n < 3:
        return pull
    for i in range(n):
        lo = max(0, min(i - half_window, n - 2 * half_window - 1))
        hi = min(n, lo + 2 * half_window + 1)
        neigh = np.delete(fs[lo:hi], i - lo)
        pull[i] = (fs[i] - np.median(neigh)) / e[order][i]
    out = np.empty(n)
    out[order] = pull
    return out


def _pull_panel(ax, df, masks) -> None:
    ok = ~masks["failed"]
    flux, err, wl = _num(df, "flux_uJy"), _num(df, "flux_err_uJy"), _num(df, "wavelength_um")
    truth_col = next((c for c in TRUTH_COLUMNS if c in df), None)
    if truth_col:
        _style(ax, "Pull vs truth", "(flux − truth) / σ", "measurements")
        pull = np.where(ok, (flux - _num(df, truth_col)) / err, np.nan)
    else:
        _style(ax, "Local pull (no truth column)", "(flux − local median) / σ", "measurements")
        pull = np.full(len(df), np.nan)
        if ok.any():
            pull[ok] = local_pull(wl[ok], flux[ok], err[ok])
    pull = pull[np.isfinite(pull)]
    if pull.size < 3:
        message_panel(ax, "too few measurements\nfor a pull distribution")
        return
    bins = np.linspace(-6, 6, 49)
    ax.hist(np.clip(pull, -6, 6), bins=bins, histtype="stepfilled", color="#66a61e", alpha=0.85)
    x = np.linspace(-6, 6, 200)
    width = bins[1] - bins[0]
    ax.plot(
        x,
        pull.size * width * np.exp(-0.5 * x**2) / np.sqrt(2 * np.pi),
        color="#333",
        lw=1.0,
        label="N(0,1)",
    )
    mad_sigma = 1.4826 * np.median(np.abs(pull - np.median(pull)))
    ax.text(
        0.02,
        0.95,
        f"median {np.median(pull):+.2f}\nrobust σ {mad_sigma:.2f}",
        transform=ax.transAxes,
        va="top",
        fontsize=FONT["small"],
    )
    ax.legend(fontsize=FONT["small"], loc="upper right")


def _vs_wavelength(ax, df, masks, column: str, title: str) -> None:
    _style(ax, title, "Wavelength (µm)", auto_title=True)
    y = _num(df, column)
    s = ~masks["failed"] & np.isfinite(y)
    if not s.any():
        message_panel(ax, f"no {column} values")
        return
    shade_detector_bands(ax, label=False)
    colors = _detector_colors(df)
    ax.scatter(_num(df, "wavelength_um")[s], y[s], s=10, c=colors[s], linewidths=0)
    ax.set_xlim(*wavelength_limits_um())


def _stamp_grid(fig, spec, stamps: list[dict] | None) -> None:
    stamps = [s for s in (stamps or []) if s is not None][:MAX_STAMPS]
    ax = fig.add_subplot(spec)
    if not stamps:
        message_panel(ax, "cutout stamps not available for this source", fontsize=FONT["title"])
        return
    # The stamp labels need no room above the Axes (unlike the Axes titles of the panels
    # above), so the mosaic may use part of the gap: bigger stamps in the same figure.
    box = ax.get_position()
    ax.set_position((box.x0, box.y0, box.width, box.height + STAMP_GRID_RAISE))
    draw_stamp_mosaic(ax, stamps)
