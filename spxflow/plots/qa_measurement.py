"""Full per-measurement QA: data, model, residual, mask and PSF stamps with the fit numbers.

Built for speed (thousands of PNGs per catalog): one small Agg figure at 80 dpi without any
Axes (their tick machinery costs more than the drawing): stamps are placed 1:1 with
``Figure.figimage`` after integer zoom, text with ``Figure.text``, no layout engine, no colour
bars, fast PNG encoding.
``render_measurement_qas`` renders many in parallel with threads; Agg figures made without
pyplot are independent, and matplotlib's font cache is per-thread.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.transforms import IdentityTransform

from spxflow.fileio import Written
from spxflow.plots.style import (
    decode_flag_counts,
    load_result_flags,
    new_figure,
    robust_limits,
    save_png,
    symmetric_limit,
)

log = logging.getLogger(__name__)

QA_DPI = 80
FIG_W_PX, FIG_H_PX = 960, 160
PANEL_PX, PAD_PX = 120, 6
PANELS = ("data", "model", "residual", "mask", "psf")
# Row fields printed in the margin: (column, label, format).
ROW_FIELDS = (
    ("obs_id", "obs_id", "{}"),
    ("detector", "detector", "D{}"),
    ("wavelength_um", "lambda", "{:.4f} um"),
    ("bandwidth_um", "dlambda", "{:.4f} um"),
    ("flux_uJy", "flux", "{:.4g} uJy"),
    ("flux_err_uJy", "flux_err", "{:.3g} uJy"),
    ("snr", "S/N", "{:.2f}"),
    ("chi2_red", "chi2_red", "{:.3f}"),
    ("n_pix", "n_pix", "{}"),
    ("masked_frac", "masked", "{:.3f}"),
    ("psf_masked_frac", "psf_masked", "{:.3f}"),
    ("bkg_MJy_sr", "bkg MJy/sr", "{:.4g}"),
    ("n_neighbors", "neighbours", "{}"),
    ("resid_core", "resid_core", "{:.3f}"),
    ("detection_status", "status", "{}"),
    ("science_recommended", "recommended", "{}"),
)


def plot_measurement_qa(
    images: Mapping,
    row: Mapping,
    out_png: str | os.PathLike,
    *,
    result_flags: Mapping[str, tuple[int, str]] | None = None,
) -> Written:
    """Write one measurement's QA PNG (960 x 160 px).

    ``images``: ``model_images`` output — 2-D ``data``, ``model``, ``residual``, ``mask``
    (True/non-zero = masked) and ``psf`` arrays (any may be missing or None) plus scalar fit
    numbers, which are printed too. ``row``: the measurement's table row (a mapping).
    """
    fig = new_figure(FIG_W_PX / QA_DPI, FIG_H_PX / QA_DPI, dpi=QA_DPI)
    data = _arr(images.get("data"))
    model = _arr(images.get("model"))
    vmin, vmax = robust_limits([a for a in (data, model) if a is not None])
    for k, name in enumerate(PANELS):
        x0 = PAD_PX + k * (PANEL_PX + PAD_PX)
        fig.text(
            (x0 + PANEL_PX / 2) / FIG_W_PX,
            (PAD_PX + PANEL_PX + 4) / FIG_H_PX,
            name,
            ha="center",
            va="bottom",
            fontsize=9,
        )
        img = _arr(images.get(name))
        if img is None or img.ndim != 2 or img.size == 0:
            fig.text(
                (x0 + PANEL_PX / 2) / FIG_W_PX,
                (PAD_PX + PANEL_PX / 2) / FIG_H_PX,
                "n/a",
                ha="center",
                va="center",
                fontsize=9,
                color="#777",
            )
            continue
        if name in ("data", "model"):
            kw = {"cmap": "magma", "vmin": vmin, "vmax": vmax}
        elif name == "residual":
            lim = symmetric_limit(img)
            kw = {"cmap": "RdBu_r", "vmin": -lim, "vmax": lim}
        elif name == "mask":
            kw = {"cmap": "gray_r", "vmin": 0, "vmax": 1}
            img = (img != 0).astype(float)
        else:  # PSF: log stretch shows the wings
            peak = np.nanmax(img) if np.isfinite(img).any() else 1.0
            img = np.log10(np.clip(img / (peak if peak > 0 else 1.0), 1e-4, None))
            kw = {"cmap": "viridis", "vmin": -4, "vmax": 0}
        shown, zoom, step = _fit_to_panel(img)
        ox = x0 + (PANEL_PX - shown.shape[1]) // 2
        oy = PAD_PX + (PANEL_PX - shown.shape[0]) // 2
        # figimage draws pixels 1:1 without axes, ticks or resampling: the cheap path.
        fig.figimage(shown, xo=ox, yo=oy, origin="lower", **kw)
        fig.add_artist(
            Rectangle(
                (ox - 0.5, oy - 0.5),
                shown.shape[1],
                shown.shape[0],
                fill=False,
                lw=0.6,
                ec="#888",
                transform=IdentityTransform(),
            )
        )
        if name in ("data", "residual"):
            x, y = _float(row.get("x_cutout")), _float(row.get("y_cutout"))
            if np.isfinite(x) and np.isfinite(y):
                px = ox + (x / step + 0.5) * zoom
                py = oy + (y / step + 0.5) * zoom
                fig.add_artist(
                    Line2D(
                        [px],
                        [py],
                        marker="+",
                        color="cyan",
                        ms=8,
                        mew=1,
                        transform=IdentityTransform(),
                    )
                )

    head = f"{row.get('measurement_id', '')}  {row.get('source', '')}"[:64]
    x_text = (PAD_PX + len(PANELS) * (PANEL_PX + PAD_PX) + 4) / FIG_W_PX
    fig.text(x_text, 0.95, head, fontsize=8, va="top", family="monospace", fontweight="bold")
    fig.text(
        x_text,
        0.83,
        _margin_text(row, images, load_result_flags(result_flags)),
        fontsize=7,
        va="top",
        family="monospace",
        linespacing=1.1,
    )
    return save_png(fig, out_png, dpi=QA_DPI)


def _fit_to_panel(img: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Integer-zoom (or stride) an image to at most PANEL_PX pixels: (image, zoom, step)."""
    n = max(img.shape)
    step = max(1, -(-n // PANEL_PX))
    if step > 1:
        img = img[::step, ::step]
    zoom = max(1, PANEL_PX // max(img.shape))
    if zoom > 1:
        img = np.repeat(np.repeat(img, zoom, axis=0), zoom, axis=1)
    return img, zoom, step


def _arr(a):
    return None if a is None else np.asarray(a, dtype=float)


def _float(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _fmt(fmt: str, v) -> str:
    try:
        return fmt.format(v)
    except (TypeError, ValueError):
        return str(v)


def _margin_text(row: Mapping, images: Mapping, flag_table) -> str:
    left = [f"{label:<12}{_fmt(f, row[k])}"[:32] for k, label, f in ROW_FIELDS if k in row]
    f = _float(row.get("result_flags"))
    flags = int(f) if np.isfinite(f) else 0
    names = ",".join(decode_flag_counts([flags], flag_table)) if flags else "-"
    left.append(f"{'flags':<12}{flags} {names}"[:32])
    reason = str(row.get("failure_reason") or "")
    if reason:
        left.append(f"{'failure':<12}{reason}"[:32])
    # Scalar fit numbers from model_images not already shown from the row.
    fit = [
        f"{k[:11]:<12}{_fmt('{:.4g}', v)}"[:32]
        for k, v in images.items()
        if k not in PANELS and k not in row and np.ndim(v) == 0 and not isinstance(v, str)
    ]
    lines = left + fit
    half = (len(lines) + 1) // 2 if len(lines) > 11 else len(lines)
    cols = [lines[:half], lines[half:]]
    width = max((len(s) for s in cols[0]), default=0) + 2
    return "\n".join(
        a.ljust(width) + (cols[1][i] if i < len(cols[1]) else "") for i, a in enumerate(cols[0])
    )


# (model_images, calibration, settings, flag_table) of the running render_measurement_qas call;
# a module global so forked worker processes inherit it instead of receiving pickled copies.
_CONTEXT: tuple | None = None


def _run_job(job: Mapping) -> tuple[Written | None, tuple[str, str] | None]:
    model_images, calibration, settings, flag_table = _CONTEXT
    try:
        images = job.get("images")
        if images is None:
            images = model_images(
                job["path"],
                job["ra"],
                job["dec"],
                job.get("neighbours", []),
                calibration,
                settings,
            )
        written = plot_measurement_qa(images, job["row"], job["out_png"], result_flags=flag_table)
        return written, None
    except Exception as exc:  # one bad cutout must not cost the other PNGs
        log.warning("full QA %s failed: %s: %s", job.get("out_png"), type(exc).__name__, exc)
        return None, (str(job.get("out_png")), f"{type(exc).__name__}: {exc}")


def render_measurement_qas(
    jobs: Sequence[Mapping],
    threads: int = 1,
    *,
    calibration=None,
    settings=None,
    model_images: Callable | None = None,
    result_flags: Mapping[str, tuple[int, str]] | None = None,
    errors: list | None = None,
    executor: str = "thread",
) -> list[Written]:
    """Render many per-measurement QA PNGs in parallel; returns the PNGs written.

    ``executor``: ``"thread"`` (default; safe anywhere, but matplotlib holds the GIL, so it
    mostly overlaps I/O) or ``"process"`` (forked workers that inherit ``calibration`` without
    pickling it; real parallel speed-up, POSIX only).

    Each job: ``out_png``, ``row`` and either ``images`` (a ready ``model_images`` dict) or
    ``path``, ``ra``, ``dec``, ``neighbours``, from which the images are made with
    ``model_images(path, ra, dec, neighbours, calibration, settings)`` (default: the
    photometry's). A failing job never stops the others. If ``errors`` is a list, failures are
    appended to it as ``(out_png, message)``; otherwise a RuntimeError naming them is raised
    after all other PNGs were written. Not re-entrant: one call at a time per process.
    """
    if executor not in ("thread", "process"):
        raise ValueError(f"executor must be 'thread' or 'process', got {executor!r}")
    flag_table = load_result_flags(result_flags)
    if model_images is None and any("images" not in j for j in jobs):
        from spxflow.photometry import model_images

    global _CONTEXT
    _CONTEXT = (model_images, calibration, settings, flag_table)
    written: list[Written] = []
    failed: list[tuple[str, str]] = []
    try:
        if threads <= 1 or len(jobs) <= 1:
            results = [_run_job(j) for j in jobs]
        elif executor == "thread":
            with ThreadPoolExecutor(max_workers=threads) as pool:
                results = list(pool.map(_run_job, jobs))
        else:
            ctx = multiprocessing.get_context("fork")  # workers inherit _CONTEXT, no pickling
            with ProcessPoolExecutor(max_workers=threads, mp_context=ctx) as pool:
                results = list(pool.map(_run_job, jobs, chunksize=max(1, len(jobs) // 32)))
    finally:
        _CONTEXT = None
    for ok, err in results:
        if ok:
            written.append(ok)
        else:
            failed.append(err)
    if failed:
        if errors is None:
            raise RuntimeError(
                f"{len(failed)} of {len(jobs)} measurement QA PNGs failed; first: "
                f"{failed[0][0]}: {failed[0][1]}"
            )
        errors.extend(failed)
    return written
