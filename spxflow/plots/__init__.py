"""Plots of spxflow: per-source SED and QA summary, full per-measurement QA.

All functions write PNGs atomically with headless Agg figures (no pyplot state) and raise on
failure; callers decide whether a failure becomes a placeholder (``plot_failure_png``).
"""

from spxflow.plots.qa_measurement import plot_measurement_qa, render_measurement_qas
from spxflow.plots.qa_summary import plot_qa_summary
from spxflow.plots.sed import fnu_to_flambda, plot_sed
from spxflow.plots.style import plot_failure_png

__all__ = [
    "fnu_to_flambda",
    "plot_failure_png",
    "plot_measurement_qa",
    "plot_qa_summary",
    "plot_sed",
    "render_measurement_qas",
]
