"""Measurement windows (``pixels: window``): the simulator renders only the fit window, and
the numbers equal the cutout-file path's; every window is kept in the stamps file and full QA
is rebuilt from it bit for bit."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pandas as pd
import pytest

from spxflow import rules
from spxflow.archive.simulated import SimulatedArchive
from spxflow.fileio import write_json_atomic
from spxflow.photometry import model_images
from spxflow.photometry.cutout import read_cutout
from spxflow.photometry.window import cutout_span, window_box
from spxflow.settings import Runtime, Science
from spxflow.stamps import read_stamp_windows
from tests.workflow_helpers import assert_same_rows, measure_outputs

TARGET = {"name": "AGN", "ra_deg": 35.5, "dec_deg": 48.1, "cutout_size_arcsec": 120.0}
CAL_INDEX = "calibration_index.json"
SCIENCE = Science.from_config({})
WINDOWS = Runtime.from_config({})
CUTOUTS = dataclasses.replace(
    WINDOWS, cleanup="never", archive={**WINDOWS.archive, "pixels": "cutout"}
)


class BothReleases:
    """The simulated archive limited to 12 QR2 and 12 QR3 images of a position."""

    def __init__(self, pixels: str):
        self.sim = SimulatedArchive(pixels=pixels)

    def discover(self, ra, dec, radius_arcsec=0.0):
        t = self.sim.discover(ra, dec, radius_arcsec)
        return (
            t.groupby(t["obs_collection"].str[:11], group_keys=False)
            .head(12)
            .reset_index(drop=True)
        )

    def __getattr__(self, name):
        return getattr(self.sim, name)


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """(window outputs, cutout outputs, data dir) of one source measured both ways."""
    root = tmp_path_factory.mktemp("windows")
    old = os.getcwd()
    os.chdir(root)
    mp = pytest.MonkeyPatch()
    # as make_archive does: the runtime knobs (pixels: window | cutout) configure the backend
    mp.setattr(
        rules,
        "make_archive",
        lambda science, runtime, cache_dir=None: BothReleases(runtime["pixels"]),
    )
    # No calibration products: both paths fall back alike (nominal solid angle, WCS-WAVE).
    write_json_atomic(CAL_INDEX, {"products": []})
    win, cut = measure_outputs("win"), measure_outputs("cut")
    rules.measure_source(SCIENCE, WINDOWS, "AGN", TARGET, [], CAL_INDEX, win)
    assert not (root / "data").exists()  # windows: no file outside the outputs
    rules.measure_source(SCIENCE, CUTOUTS, "AGN", TARGET, [], CAL_INDEX, cut)
    yield win, cut, root / "data"
    mp.undo()
    os.chdir(old)


def test_window_measurements_equal_the_cutout_path_for_both_releases(both):
    win, cut, data = both
    a, b = pd.read_parquet(cut.measurements), pd.read_parquet(win.measurements)
    assert sorted(set(a["release"])) == ["qr2", "qr3"] and len(a) == len(b) == 24
    assert (a["detection_status"] != "failed").sum() >= 20
    assert_same_rows(b, a)
    index = pd.read_json(win.cutout_index, typ="series")
    assert {e["pixels"] for e in index["images"]} == {"window"}
    assert all(e["truth"]["source"] for e in index["images"])


def test_windows_equal_the_cutout_pixels(both):
    _, cut, data = both
    windows = read_stamp_windows(measure_outputs("win").stamps)
    assert len(windows) == 24
    for name, w in list(windows.items())[::5]:
        c = read_cutout(data / "cutouts" / "AGN" / name, TARGET["ra_deg"], TARGET["dec_deg"])
        ox, oy = int(w.origin[0] - c.origin[0]), int(w.origin[1] - c.origin[1])
        ny, nx = w.image.shape
        for plane in ("image", "flags", "variance"):
            np.testing.assert_array_equal(
                getattr(w, plane), getattr(c, plane)[oy : oy + ny, ox : ox + nx], err_msg=name
            )
        assert (w.plane, w.layout, w.flag_bits) == (c.plane, c.layout, c.flag_bits)
        np.testing.assert_array_equal(w.psf, c.psf)
        assert abs(w.x_parent - c.x_parent) < 1e-9 and abs(w.y_parent - c.y_parent) < 1e-9


def test_full_qa_from_kept_windows_equals_qa_from_cutouts(both):
    _, _, data = both
    windows = read_stamp_windows(measure_outputs("win").stamps)
    args = (TARGET["ra_deg"], TARGET["dec_deg"], [], None, SCIENCE.photometry)
    for name, w in list(windows.items())[:4]:
        from_window = model_images(w, *args)
        from_file = model_images(str(data / "cutouts" / "AGN" / name), *args)
        for key in ("data", "model", "residual", "mask"):
            np.testing.assert_allclose(from_window[key], from_file[key], rtol=1e-9, atol=1e-12)


def test_window_box_is_the_fit_window_inside_the_requested_cutout():
    assert cutout_span(100.2, 60.0) == (96, 106)  # 10 px, IRSA's placement
    assert window_box(100.2, 500.0, 6, 60.0) == (96, 106, 496, 506)
    assert window_box(100.2, 500.0, 6, 600.0) == (94, 107, 494, 507)  # 13 px fit window
    assert window_box(2.0, 2039.2, 6, 600.0) == (0, 9, 2033, 2040)  # clipped to the frame
    assert window_box(-0.6, 10.0, 6, 60.0) is None
