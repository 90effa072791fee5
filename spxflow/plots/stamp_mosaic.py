"""Cutout stamps (data / model / residual) of the QA summary as ONE image on ONE Axes.

One Axes per stamp panel (up to ~24) used to cost most of the QA summary's time (Axes
creation, tick machinery, title placement), so the colormaps are applied here with numpy and
the panels are tiled into a single RGBA mosaic, drawn by one ``imshow``; names are ``ax.text``
and the panel frames one collection. What is shown is unchanged: data and model share a
robust ``magma`` scale, the residual has its own symmetric ``RdBu_r`` scale, masked pixels are
translucent cyan on the data, NaN pixels are transparent (as ``imshow`` draws them).
"""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from matplotlib.collections import PatchCollection
from matplotlib.colors import Normalize
from matplotlib.patches import Rectangle

from spxflow.plots.style import FONT, robust_limits, symmetric_limit

PANEL_NAMES = ("data", "model", "resid")
PER_ROW = 3
MASK_RGBA = (0.0, 1.0, 1.0, 0.55)
# Gaps in units of the cell (largest stamp side): between the panels of a stamp, between
# stamps, and above each row for the stamp label and the panel names.
PANEL_GAP, STAMP_GAP, LABEL_SPACE = 0.06, 0.5, 0.32


def stamp_panels(stamp: dict) -> list[np.ndarray]:
    """The RGBA images (uint8, indexed like the input arrays) of one stamp's data, model and
    residual panels, with their colour scales applied and the mask overlaid."""
    data, model, resid = (_image(stamp.get(key), key) for key in ("data", "model", "residual"))
    vmin, vmax = robust_limits([data, model])
    rlim = symmetric_limit(resid)
    shared = Normalize(vmin=vmin, vmax=vmax)
    rgba = [
        colormaps["magma"](shared(data)),
        colormaps["magma"](shared(model)),
        colormaps["RdBu_r"](Normalize(vmin=-rlim, vmax=rlim)(resid)),
    ]
    mask = stamp.get("mask")
    if mask is not None and np.asarray(mask).shape == data.shape:
        m = np.asarray(mask).astype(bool)
        # Same result as a translucent cyan layer drawn over the data ("over" compositing;
        # a NaN data pixel is transparent, so the cyan stays translucent there).
        a, below = MASK_RGBA[3], rgba[0][m]
        alpha = a + (1 - a) * below[:, 3]
        rgb = a * np.asarray(MASK_RGBA[:3]) + (1 - a) * below[:, 3:] * below[:, :3]
        rgba[0][m] = np.column_stack([rgb / alpha[:, None], alpha])
    # 8 bits as imshow would make them (it truncates, too); resampling bytes is much cheaper.
    return [(255 * im).astype(np.uint8) for im in rgba]


def draw_stamp_mosaic(ax, stamps: list[dict]) -> None:
    """Tile the stamps ``PER_ROW`` per row into one RGBA image on ``ax`` and label them."""
    panels = [stamp_panels(st) for st in stamps]
    cell = max(max(p.shape[0], p.shape[1]) for triple in panels for p in triple)
    g = max(1, round(PANEL_GAP * cell))
    gs = max(1, round(STAMP_GAP * cell))
    top = max(1, round(LABEL_SPACE * cell))
    nrows = -(-len(panels) // PER_ROW)
    ncols = min(len(panels), PER_ROW)
    stamp_w = 3 * cell + 2 * g
    width = ncols * stamp_w + (ncols - 1) * gs
    height = nrows * (top + cell)
    # Transparent background: the gaps show the figure's colour, as between separate Axes.
    mosaic = np.zeros((height, width, 4), dtype=np.uint8)
    frames = []
    for k, triple in enumerate(panels):
        r, c = divmod(k, PER_ROW)
        x_stamp = c * (stamp_w + gs)
        y_cell = r * (top + cell) + top  # the mosaic is drawn with origin='upper'
        for j, (rgba, name) in enumerate(zip(triple, PANEL_NAMES, strict=True)):
            h, w = rgba.shape[:2]
            x0 = x_stamp + j * (cell + g) + (cell - w) // 2
            y0 = y_cell + (cell - h) // 2
            mosaic[y0 : y0 + h, x0 : x0 + w] = rgba[::-1]  # row 0 at the bottom
            frames.append(Rectangle((x0 - 0.5, y0 - 0.5), w, h))
            ax.text(
                x0 + w / 2 - 0.5,
                y0 - 0.5 - 0.03 * cell,
                name,
                ha="center",
                va="bottom",
                fontsize=FONT["small"],
            )
        ax.text(
            x_stamp + stamp_w / 2 - 0.5,
            y_cell - 0.5 - 0.2 * cell,
            str(stamps[k].get("label", f"stamp {k + 1}")),
            ha="center",
            va="bottom",
            fontsize=FONT["small"] + 1,
        )
    ax.imshow(mosaic, origin="upper", interpolation="nearest")
    ax.add_collection(
        # Not clipped: the frames of the outermost panels lie on the Axes edge.
        PatchCollection(frames, facecolor="none", edgecolor="k", linewidth=0.8, clip_on=False),
        autolim=False,
    )
    ax.set_axis_off()


def _image(value, key: str) -> np.ndarray:
    img = np.asarray(value, dtype=float)
    if img.ndim != 2 or img.size == 0:
        raise ValueError(f"stamp {key!r} must be a non-empty 2-D array, got shape {img.shape}")
    return img
