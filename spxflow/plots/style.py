"""Shared look of spxflow figures: colours, sizes, detector bands and atomic PNG saving.

Everything uses the object-oriented API on ``matplotlib.figure.Figure`` with an Agg canvas and
never touches pyplot's global state, so figures can be rendered from several threads at once.
Font sizes are passed explicitly instead of through ``rcParams`` for the same reason.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Mapping

import numpy as np

# The Agg canvas is attached explicitly, so no pyplot backend is ever selected (headless).
from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg
from matplotlib.collections import PatchCollection
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from spxflow.fileio import Written, write_bytes_atomic
from spxflow.format import BANDS

# Report-size figures: ~1300 px wide at the report's display width.
REPORT_DPI = 100
FONT = {"title": 13, "label": 11, "tick": 9, "small": 8, "note": 9}

# One colour per detector (colour-blind-friendly Okabe-Ito palette).
DETECTOR_COLORS = {
    1: "#0072B2",
    2: "#009E73",
    3: "#56B4E9",
    4: "#E69F00",
    5: "#D55E00",
    6: "#CC79A7",
}
COLOR_RECOMMENDED = "#1f3b73"
COLOR_NOT_RECOMMENDED = "#8c8c8c"
COLOR_LIMIT = "#b03a2e"
COLOR_TRUTH = "#2ca02c"

# Faster PNG encoding: the plots are regenerated cheaply, so size matters less than speed.
PNG_KWARGS = {"format": "png", "pil_kwargs": {"compress_level": 3}, "metadata": {"Software": None}}


def band_limits_um() -> dict[int, tuple[float, float]]:
    """Detector bandpasses in µm from ``format.BANDS`` (stored in metres)."""
    return {det: (lo * 1e6, hi * 1e6) for det, (lo, hi, _) in BANDS.items()}


class _ThreadRendererCanvas(FigureCanvasAgg):
    """Agg canvas drawing with one renderer per thread and image size, not one per figure.

    The renderer keeps the text-metrics cache of matplotlib (tick labels, titles and names
    repeat from figure to figure), so reusing it saves ~10 % of a plot. Each draw clears it
    first, so the pixels are the same; but a figure's pixels are only valid until the next
    draw of the same size in the thread, which is fine as ``save_png`` encodes them at once.
    """

    def get_renderer(self):
        w, h = self.get_width_height(physical=True)
        key = (w, h, self.figure.dpi)
        renderers = _RENDERERS.__dict__.setdefault("by_key", {})
        if key not in renderers:
            renderers[key] = RendererAgg(w, h, self.figure.dpi)
        self.renderer = renderers[key]
        return self.renderer


_RENDERERS = threading.local()


def new_figure(width_in: float, height_in: float, dpi: float = REPORT_DPI) -> Figure:
    """A pyplot-free Figure with an Agg canvas attached."""
    fig = Figure(figsize=(width_in, height_in), dpi=dpi)
    _ThreadRendererCanvas(fig)
    return fig


def save_png(fig: Figure, out_png: str | os.PathLike, dpi: float | None = None) -> Written:
    """Render ``fig`` in memory and write it to ``out_png`` atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi or fig.dpi, **PNG_KWARGS)
    return write_bytes_atomic(out_png, buf.getvalue())


def shade_detector_bands(ax, *, label: bool = True, alpha: float = 0.07) -> None:
    """Shade and label the D1-D6 bandpasses along the x (wavelength, µm) axis."""
    bands = band_limits_um()
    # One collection instead of one axvspan patch per band (each costs a data-limit update);
    # x in data units, y spanning the axes. The callers set the x limits themselves.
    ax.add_collection(
        PatchCollection(
            [Rectangle((lo, 0.0), hi - lo, 1.0) for lo, hi in bands.values()],
            facecolors=[to_rgba(DETECTOR_COLORS[det], alpha) for det in bands],
            linewidths=0,
            zorder=0,
            transform=ax.get_xaxis_transform(),
        ),
        autolim=False,
    )
    for det, (lo, hi) in bands.items():
        if label:
            # x in data units, y in axes fraction: the label stays at the top whatever the scale.
            ax.text(
                np.sqrt(lo * hi) if ax.get_xscale() == "log" else 0.5 * (lo + hi),
                0.985,
                f"D{det}",
                transform=ax.get_xaxis_transform(),
                ha="center",
                va="top",
                fontsize=FONT["small"],
                color=DETECTOR_COLORS[det],
                fontweight="bold",
            )


def wavelength_limits_um(pad: float = 0.05) -> tuple[float, float]:
    lims = band_limits_um().values()
    return min(lo for lo, _ in lims) - pad, max(hi for _, hi in lims) + pad


def message_panel(ax, text: str, *, fontsize: float | None = None) -> None:
    """Replace an axes' content by a centred message (e.g. 'stamps not available')."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_color("#bbbbbb")
    ax.set_facecolor("#f4f4f4")
    ax.text(
        0.5,
        0.5,
        text,
        transform=ax.transAxes,
        ha="center",
        va="center",
        fontsize=fontsize or FONT["label"],
        color="#555555",
        wrap=True,
    )


def plot_failure_png(out_png: str | os.PathLike, title: str, message: str) -> Written:
    """A labelled placeholder PNG used when a plot could not be made.

    The caller (not the plot function) decides to write one, so a plot failure is visible in
    the report without costing any science output.
    """
    fig = new_figure(10, 3)
    ax = fig.add_axes((0.02, 0.05, 0.96, 0.75))
    fig.text(0.5, 0.9, title, ha="center", va="center", fontsize=FONT["title"], color="#a00")
    message_panel(ax, _wrap(message, 110)[:1200], fontsize=FONT["note"])
    return save_png(fig, out_png)


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.fill(line, width) for line in str(text).splitlines() or [""])


def robust_limits(arrays, lo: float = 1.0, hi: float = 99.5) -> tuple[float, float]:
    """Percentile display limits over finite values of several images (never equal)."""
    vals = np.concatenate([np.asarray(a, dtype=float).ravel() for a in arrays if a is not None])
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return 0.0, 1.0
    vmin, vmax = np.percentile(vals, [lo, hi])
    if not vmax > vmin:
        vmin, vmax = vmin - 0.5, vmax + 0.5
    return float(vmin), float(vmax)


def symmetric_limit(a, q: float = 99.0) -> float:
    vals = np.abs(np.asarray(a, dtype=float))
    vals = vals[np.isfinite(vals)]
    lim = float(np.percentile(vals, q)) if vals.size else 1.0
    return lim if lim > 0 else 1.0


def decode_flag_counts(flags, flag_table: Mapping[str, tuple[int, str]] | None) -> dict[str, int]:
    """Rows carrying each result-flag bit, by flag name ('bit N' for undocumented bits).

    ``flag_table`` is ``{name: (bit, help)}`` as ``spxflow.photometry.result_flags.RESULT_FLAGS``.
    Only bits that occur are returned, in bit order.
    """
    values = np.asarray(flags, dtype="int64") if len(flags) else np.zeros(0, dtype="int64")
    names = {bit: name for name, (bit, _) in (flag_table or {}).items()}
    counts: dict[str, int] = {}
    for bit in range(63):
        n = int(np.count_nonzero(values & (np.int64(1) << bit)))
        if n:
            counts[names.get(bit, f"bit {bit}")] = n
    return counts


def load_result_flags(
    flag_table: Mapping[str, tuple[int, str]] | None = None,
) -> Mapping[str, tuple[int, str]] | None:
    """The given flag table, else the photometry's ``RESULT_FLAGS`` if importable, else None."""
    if flag_table is not None:
        return flag_table
    try:
        from spxflow.photometry.result_flags import RESULT_FLAGS
    except ImportError:
        return None
    return RESULT_FLAGS
