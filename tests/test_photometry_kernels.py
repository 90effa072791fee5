"""The Numba kernels equal their numpy reference; rendering matches the simulator's PSF model."""

from __future__ import annotations

import numpy as np
import pytest

from spxflow.archive.simulated import SimulatedArchive
from spxflow.photometry import PhotometrySettings, kernels, reference
from spxflow.photometry.cutout import read_cutout
from spxflow.photometry.measure import fit_packed, pack, prepare
from spxflow.sim.psf_model import psf_cube, render_psf_native
from tests.photometry_data import PIX_DEG, calibration, fetch

RA, DEC = 100.20, -10.00  # CalibStar of the default truth table


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kern")
    archive = SimulatedArchive()
    cal = calibration(archive, tmp / "cal")
    paths = fetch(archive, RA, DEC, tmp / "cut", limit=24)
    return paths, cal


@pytest.mark.parametrize("dx,dy", [(0.0, 0.0), (0.31, -0.47), (-0.5, 0.5), (0.123, 0.456)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_render_stamp_equals_simulator_model_and_conserves_flux(dx, dy, dtype):
    # float32 is what the batch renders from (the files' type); sums must still be float64.
    plane = psf_cube(3)[37]
    out = np.empty((kernels.STAMP, kernels.STAMP))
    kernels.render_stamp(plane.astype(dtype), dx, dy, out)
    np.testing.assert_allclose(out, render_psf_native(plane, dx, dy), rtol=0, atol=1e-12)
    np.testing.assert_allclose(out, reference.render_stamp(plane, dx, dy), rtol=0, atol=1e-12)
    assert out.sum() == pytest.approx(float(plane.sum()), rel=1e-9)


def test_render_stamp_is_continuous_across_the_rounding_boundary():
    # A source at +0.5 from pixel i is the same source at -0.5 from pixel i+1: the rendered
    # stamps must agree after a one-pixel shift, whichever way a position is rounded.
    plane = psf_cube(1)[60].astype(np.float64)
    a = np.empty((kernels.STAMP, kernels.STAMP))
    b = np.empty((kernels.STAMP, kernels.STAMP))
    kernels.render_stamp(plane, 0.5, -0.2, a)
    kernels.render_stamp(plane, -0.5, -0.2, b)
    np.testing.assert_allclose(a[:, 1:], b[:, :-1], atol=1e-12)
    assert np.abs(a - b).max() > 1e-3  # and the shift is real


def test_batched_kernel_equals_numpy_reference(data):
    paths, cal = data
    settings = PhotometrySettings()
    # Two fake neighbours (one close, one at the window edge) exercise the joint fit.
    nbrs = [(RA + 2.2 * PIX_DEG, DEC + 1.1 * PIX_DEG), (RA - 6.5 * PIX_DEG, DEC)]
    prepared = [prepare(read_cutout(p, RA, DEC), nbrs, cal, settings) for p in paths]
    # Mask a few extra pixels so masks matter.
    for k, p in enumerate(prepared):
        p.good[k % 7 :: 11] = False
    batch = pack(prepared)
    assert batch["sx"].shape[1] == 3
    out = fit_packed(batch, settings.core_radius_px, threads=2)
    S = batch["sx"].shape[1]
    n_ok = 0
    for k, p in enumerate(prepared):
        ref = reference.fit_one(
            p.px, p.py, p.data, p.var, p.good, p.kconv, p.cwave, p.cband, p.sx, p.sy,
            p.cutout.psf, settings.core_radius_px, n_slots=S,
        )  # fmt: skip
        assert out["status"][k] == ref["status"]
        if ref["status"] != kernels.OK:
            continue
        n_ok += 1
        act = ref["active"]
        np.testing.assert_array_equal(out["active"][k], act)
        np.testing.assert_allclose(out["params"][k][act], ref["params"][act], rtol=1e-6)
        np.testing.assert_allclose(
            out["cov"][k][np.ix_(act, act)], ref["cov"][np.ix_(act, act)], rtol=1e-6, atol=1e-14
        )
        for name in ("chi2", "resid_core", "model_core", "var_core", "sum_wm2", "wave", "band"):
            assert out[name][k] == pytest.approx(ref[name], rel=1e-6, abs=1e-9), name
        for name in ("psf_window", "psf_masked", "cond"):
            assert out[name][k] == pytest.approx(ref[name], rel=1e-6), name
        assert out["dof"][k] == ref["dof"]
        assert out["nused"][k] == ref["nused"]
    assert n_ok >= 20


def test_kernel_reports_all_masked_without_raising(data):
    paths, cal = data
    settings = PhotometrySettings()
    p = prepare(read_cutout(paths[0], RA, DEC), [], cal, settings)
    p.good[:] = False
    out = fit_packed(pack([p]), settings.core_radius_px)
    assert out["status"][0] == kernels.ALL_MASKED
    ref = reference.fit_one(
        p.px, p.py, p.data, p.var, p.good, p.kconv, p.cwave, p.cband, p.sx, p.sy,
        p.cutout.psf, settings.core_radius_px,
    )  # fmt: skip
    assert ref["status"] == kernels.ALL_MASKED


def test_noise_free_fit_recovers_injected_flux_exactly(tmp_path):
    archive = SimulatedArchive(noise=False, field_stars=False)
    cal = calibration(archive, tmp_path / "cal")
    paths = fetch(archive, RA, DEC, tmp_path / "cut", limit=12)
    from spxflow.photometry import measure_cutouts
    from spxflow.validation import truth_from_cutout

    df = measure_cutouts(paths, RA, DEC, [], cal, PhotometrySettings())
    truth = np.array([truth_from_cutout(p)["flux_uJy"] for p in paths])
    ok = df["detection_status"] != "failed"
    assert ok.sum() >= 10
    # Without noise only the (smooth) zodi + airglow background departs from the plane model.
    np.testing.assert_allclose(df.loc[ok, "flux_uJy"], truth[ok.to_numpy()], rtol=2e-3)
