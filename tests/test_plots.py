"""Every plot kind renders a valid, non-blank PNG on demo-like data and on edge cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from spxflow.columns import empty_measurements
from spxflow.plots import (
    fnu_to_flambda,
    plot_failure_png,
    plot_measurement_qa,
    plot_qa_summary,
    plot_sed,
    render_measurement_qas,
)
from spxflow.plots.demo_data import (
    DEMO_RESULT_FLAGS,
    synthetic_measurements,
    synthetic_model_images,
    synthetic_stamps,
    synthetic_truth,
)
from spxflow.plots.qa_summary import local_pull
from spxflow.plots.sed import classify_rows
from spxflow.plots.style import decode_flag_counts

PIXEL_STD_FLOOR = 8.0  # grey levels (0-255); a blank or near-blank PNG is far below


def png_stats(path) -> tuple[int, int, float]:
    """(width, height, std of the grey levels) of a PNG; fails if it is not a valid PNG."""
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.load()
        grey = np.asarray(im.convert("L"), dtype=float)
    return grey.shape[1], grey.shape[0], float(grey.std())


def assert_good_png(path, min_w=600, min_h=150, max_w=2000):
    w, h, std = png_stats(path)
    assert min_w <= w <= max_w and h >= min_h, (w, h)
    assert std > PIXEL_STD_FLOOR, f"{path} looks blank (grey std {std:.2f})"
    assert not list(path.parent.glob(f".{path.name}.*")), "temporary file left behind"


@pytest.fixture(scope="module")
def demo():
    return synthetic_measurements(120, seed=3)


def edge_tables(demo) -> dict[str, pd.DataFrame]:
    nondet = demo.copy()
    nondet["detection_status"] = "non-detection"
    nondet["science_recommended"] = False
    nondet["flux_uJy"] = nondet["flux_err_uJy"] * 0.5
    failed = demo.copy()
    failed["detection_status"] = "failed"
    failed["science_recommended"] = False
    failed[["flux_uJy", "flux_err_uJy", "snr", "chi2_red"]] = np.nan
    return {
        "demo": demo,
        "all_nondetections": nondet,
        "all_failed": failed,
        "empty": empty_measurements(),
        "single_row": demo[demo["detection_status"] == "detected"].head(1),
    }


def test_png_check_can_fail(tmp_path):
    """The blank-image floor really rejects a blank PNG."""
    blank = tmp_path / "blank.png"
    Image.new("RGB", (1000, 600), "white").save(blank)
    with pytest.raises(AssertionError, match="blank"):
        assert_good_png(blank)


@pytest.mark.parametrize("case", ["demo", "all_nondetections", "all_failed", "empty", "single_row"])
@pytest.mark.parametrize("units,scale", [("fnu", "linear"), ("flambda", "log")])
def test_sed_plot(tmp_path, demo, case, units, scale):
    out = tmp_path / "sub" / f"{case}_sed.png"
    truth = synthetic_truth() if case == "demo" else None
    plot_sed(
        edge_tables(demo)[case],
        out,
        title_name="Demo α",
        ra=150.1,
        dec=-2.2,
        units=units,
        scale=scale,
        truth=truth,
    )
    assert_good_png(out, min_w=1000, min_h=450, max_w=1400)


def test_sed_rejects_bad_options(tmp_path, demo):
    with pytest.raises(ValueError, match="units"):
        plot_sed(demo, tmp_path / "x.png", title_name="x", ra=0, dec=0, units="jansky")
    with pytest.raises(ValueError, match="scale"):
        plot_sed(demo, tmp_path / "x.png", title_name="x", ra=0, dec=0, scale="sqrt")
    assert not list(tmp_path.iterdir())


def test_flambda_conversion_matches_astropy():
    import astropy.units as u

    wl = np.array([0.8, 2.0, 4.5])
    flux = np.array([1.0, 250.0, 3e4])
    ref = (flux * u.uJy).to(u.W / u.m**2 / u.um, u.spectral_density(wl * u.um)).value
    np.testing.assert_allclose(fnu_to_flambda(flux, wl), ref, rtol=1e-10)


def test_row_classes(demo):
    m = classify_rows(demo)
    assert not (m["failed"] & m["limit"]).any() and not (m["failed"] & m["detected"]).any()
    assert m["failed"].sum() == (demo["detection_status"] == "failed").sum()
    assert (m["failed"] | m["limit"] | m["detected"]).all()


@pytest.mark.parametrize("case", ["demo", "all_nondetections", "all_failed", "empty", "single_row"])
def test_qa_summary(tmp_path, demo, case):
    out = tmp_path / f"{case}_qa.png"
    stamps = synthetic_stamps(6) if case == "demo" else None
    plot_qa_summary(
        edge_tables(demo)[case],
        out,
        title_name="Demo",
        stamps=stamps,
        result_flags=DEMO_RESULT_FLAGS,
    )
    assert_good_png(out, min_w=1000, min_h=700, max_w=1500)


def test_qa_summary_with_truth_and_few_stamps(tmp_path, demo):
    df = demo.copy()
    df["truth_flux_uJy"] = df["flux_uJy"]
    out = tmp_path / "qa.png"
    plot_qa_summary(df, out, title_name="Demo", stamps=synthetic_stamps(2), result_flags=None)
    assert_good_png(out, min_w=1000, min_h=700)


def test_stamps_change_the_picture(tmp_path, demo):
    """With stamps the lower third shows images; without it shows the placeholder panel."""
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    plot_qa_summary(demo, a, title_name="D", stamps=synthetic_stamps(3))
    plot_qa_summary(demo, b, title_name="D", stamps=None)
    ga = np.asarray(Image.open(a).convert("L"), dtype=float)
    gb = np.asarray(Image.open(b).convert("L"), dtype=float)
    bottom = slice(int(ga.shape[0] * 0.7), None)
    assert ga[bottom].std() > gb[bottom].std() + 5


def cyan_pixels(path) -> int:
    """Pixels of the mask overlay colour (translucent cyan over dark data) in the stamp area."""
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=int)
    r, g, b = (rgb[int(rgb.shape[0] * 0.62) :, :, k] for k in range(3))
    return int(((r < 60) & (g > 110) & (abs(g - b) < 25)).sum())


def test_stamp_mask_overlay_is_drawn(tmp_path, demo):
    """Masked pixels show as cyan on the data panels, and only where there is a mask."""
    stamps = synthetic_stamps(3)
    unmasked = [{k: v for k, v in st.items() if k != "mask"} for st in stamps]
    a, b = tmp_path / "mask.png", tmp_path / "nomask.png"
    plot_qa_summary(demo, a, title_name="D", stamps=stamps)
    plot_qa_summary(demo, b, title_name="D", stamps=unmasked)
    n_masked = sum(int(st["mask"].sum()) for st in stamps)
    assert cyan_pixels(a) > 4 * n_masked  # each stamp pixel is several PNG pixels
    assert cyan_pixels(b) == 0


def test_stamp_panels_keep_the_colour_scales():
    """Data and model share one robust magma scale, the residual has a symmetric RdBu_r scale,
    masked data pixels are cyan composited over the data colour."""
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    from spxflow.plots.stamp_mosaic import MASK_RGBA, stamp_panels
    from spxflow.plots.style import robust_limits, symmetric_limit

    st = synthetic_stamps(1)[0]
    data, model, resid = st["data"], st["model"], st["residual"]
    shown = stamp_panels(st)
    norm = Normalize(*robust_limits([data, model]))
    m = st["mask"]
    assert m.any() and not m.all()
    want_data = colormaps["magma"](norm(data))
    np.testing.assert_allclose(shown[0][~m], 255 * want_data[~m], atol=1)
    np.testing.assert_allclose(shown[1], 255 * colormaps["magma"](norm(model)), atol=1)
    rlim = symmetric_limit(resid)
    want_resid = colormaps["RdBu_r"](Normalize(-rlim, rlim)(resid))
    np.testing.assert_allclose(shown[2], 255 * want_resid, atol=1)
    a = MASK_RGBA[3]
    blended = (1 - a) * want_data[m, :3] + a * np.asarray(MASK_RGBA[:3])
    np.testing.assert_allclose(shown[0][m, :3], 255 * blended, atol=1)


def test_qa_summary_labels_every_stamp(tmp_path, demo, captured):
    stamps = synthetic_stamps(5)
    plot_qa_summary(demo, tmp_path / "qa.png", title_name="D", stamps=stamps)
    texts = [t.get_text() for ax in captured[-1].axes for t in ax.texts]
    for st in stamps:
        assert st["label"] in texts
    for name in ("data", "model", "resid"):
        assert texts.count(name) == len(stamps)


def test_flag_decoding():
    counts = decode_flag_counts(np.array([0, 1, 5, 4, 1 << 40]), DEMO_RESULT_FLAGS)
    assert counts == {"FETCH_FAILED": 2, "EDGE": 2, "bit 40": 1}
    assert decode_flag_counts(np.array([], dtype="int64"), None) == {}


def test_local_pull_is_unit_width_for_flat_noise():
    rng = np.random.default_rng(1)
    wl = np.sort(rng.uniform(0.8, 5, 2000))
    err = rng.uniform(1, 3, wl.size)
    pull = local_pull(wl, 100 + rng.normal(0, 1, wl.size) * err, err)
    assert abs(np.median(pull)) < 0.1
    assert 0.95 < 1.4826 * np.median(np.abs(pull)) < 1.35  # median of 6 adds ~15 %


def test_measurement_qa(tmp_path, demo):
    out = tmp_path / "m_qa.png"
    plot_measurement_qa(synthetic_model_images(), demo.iloc[0].to_dict(), out)
    assert_good_png(out, min_w=800, min_h=120, max_w=1200)
    partial = tmp_path / "partial.png"
    images = {"data": synthetic_model_images()["data"], "psf": None}
    plot_measurement_qa(images, {"measurement_id": "x"}, partial)
    assert_good_png(partial, min_w=800, min_h=120, max_w=1200)


def test_render_measurement_qas_threads_match_serial(tmp_path, demo):
    rows = [demo.iloc[i].to_dict() for i in range(6)]
    images = [synthetic_model_images(seed=i) for i in range(6)]

    def jobs(d):
        return [
            {"images": im, "row": r, "out_png": str(tmp_path / d / f"{i}.png")}
            for i, (im, r) in enumerate(zip(images, rows, strict=True))
        ]

    serial = render_measurement_qas(jobs("serial"), threads=1, result_flags=DEMO_RESULT_FLAGS)
    threaded = render_measurement_qas(jobs("thr"), threads=2, result_flags=DEMO_RESULT_FLAGS)
    forked = render_measurement_qas(
        jobs("proc"), threads=2, result_flags=DEMO_RESULT_FLAGS, executor="process"
    )
    assert len(serial) == len(threaded) == len(forked) == 6
    for a, b, c in zip(serial, threaded, forked, strict=True):
        assert a.sha256 == b.sha256 == c.sha256
        assert open(a.path, "rb").read() == open(c.path, "rb").read()


def test_render_measurement_qas_failures(tmp_path, demo):
    good = {"images": synthetic_model_images(), "row": {}, "out_png": str(tmp_path / "ok.png")}
    bad = {"path": "missing.fits", "ra": 0, "dec": 0, "row": {}, "out_png": str(tmp_path / "b.png")}

    def broken_model_images(*args):
        raise OSError("cannot read missing.fits")

    errors: list = []
    written = render_measurement_qas(
        [good, bad], threads=2, model_images=broken_model_images, errors=errors
    )
    assert [w.path for w in written] == [good["out_png"]]
    assert errors and "missing.fits" in errors[0][1]
    with pytest.raises(RuntimeError, match="1 of 2"):
        render_measurement_qas([good, bad], model_images=broken_model_images)
    assert (tmp_path / "ok.png").exists() and not (tmp_path / "b.png").exists()


def test_failure_placeholder(tmp_path):
    out = tmp_path / "failed.png"
    plot_failure_png(out, "SED plot failed for X", "ValueError: something\nsecond line")
    assert_good_png(out, min_w=800, min_h=200)


@pytest.fixture
def captured(monkeypatch):
    """The figures the SED and QA-summary plots save, to read their legends and texts."""
    import spxflow.plots.qa_summary as qa_module
    import spxflow.plots.sed as sed_module

    figs: list = []
    for module in (sed_module, qa_module):
        original = module.save_png

        def keep(fig, out_png, *args, _original=original, **kwargs):
            figs.append(fig)
            return _original(fig, out_png, *args, **kwargs)

        monkeypatch.setattr(module, "save_png", keep)
    return figs


def legend_texts(fig) -> list[str]:
    return [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def figure_texts(fig) -> list[str]:
    return [t.get_text() for t in fig.texts] + [ax.get_title(loc="left") for ax in fig.axes]


@pytest.mark.parametrize("scale", ["linear", "log"])
def test_sed_legend_names_each_release(tmp_path, demo, captured, scale):
    assert set(demo["release"]) == {"qr2", "qr3"}
    out = tmp_path / "sed.png"
    plot_sed(demo, out, title_name="Demo", ra=1.0, dec=2.0, scale=scale)
    assert_good_png(out, min_w=1000, min_h=450, max_w=1400)
    texts = legend_texts(captured[-1])
    qr2 = [t for t in texts if t.startswith("QR2:")]
    qr3 = [t for t in texts if t.startswith("QR3:")]
    assert len(qr2) == len(qr3) == 1, texts
    n_points = sum(int(t.split()[1]) for t in qr2 + qr3)
    m = classify_rows(demo)
    if scale == "linear":  # every valid row is drawn on a linear axis
        assert n_points == int((m["detected"] | m["limit"]).sum())
        n_qr3 = int(((m["detected"] | m["limit"]) & (demo["release"] == "qr3").to_numpy()).sum())
        assert qr3[0] == f"QR3: {n_qr3} points"
    # Circles for QR2, diamonds for QR3, in the plot and the legend.
    handles = captured[-1].axes[0].get_legend().legend_handles
    markers = {
        t: h.get_marker() for t, h in zip(texts, handles, strict=True) if t[:4] in ("QR2:", "QR3:")
    }
    assert markers == {qr2[0]: "o", qr3[0]: "D"}
    drawn = {line.get_marker() for line in captured[-1].axes[0].get_lines()}
    assert {"o", "D"} <= drawn


def test_sed_single_release_and_old_tables(tmp_path, demo, captured):
    old = demo.drop(columns=["release"])  # results from before releases: all QR2
    plot_sed(old, tmp_path / "old.png", title_name="Old", ra=1.0, dec=2.0)
    texts = legend_texts(captured[-1])
    assert [t for t in texts if t.startswith("QR")] == [
        f"QR2: {int((~classify_rows(old)['failed']).sum())} points"
    ]
    assert "detection, recommended" in texts[0]
    only3 = synthetic_measurements(60, seed=4, releases=("qr3",))
    plot_sed(only3, tmp_path / "qr3.png", title_name="QR3", ra=1.0, dec=2.0)
    assert [t for t in legend_texts(captured[-1]) if t.startswith("QR")][0].startswith("QR3:")
    assert_good_png(tmp_path / "qr3.png", min_w=1000, min_h=450, max_w=1400)


@pytest.mark.parametrize("with_release", [True, False])
def test_qa_summary_releases(tmp_path, demo, captured, with_release):
    df = demo if with_release else demo.drop(columns=["release"])
    out = tmp_path / "qa.png"
    plot_qa_summary(df, out, title_name="Demo", stamps=None, result_flags=DEMO_RESULT_FLAGS)
    assert_good_png(out, min_w=1000, min_h=700, max_w=1500)
    texts = figure_texts(captured[-1])
    line = next(t for t in texts if t.startswith("Releases:"))
    if with_release:
        n2, n3 = (int((demo["release"] == r).sum()) for r in ("qr2", "qr3"))
        assert line.startswith(f"Releases: QR2 {n2}, QR3 {n3}.")
        assert "QR3/QR2 median flux ratio" in line and " ± " in line and " bins (" in line
        assert any("○ QR2" in t and "◇ QR3" in t for t in texts)
        header = next(t for t in captured[-1].texts if t.get_text() == line)
        assert header.get_color() == "k"  # no alert: the demo releases agree
    else:
        assert (
            line == f"Releases: QR2 {len(demo)}.  no overlapping releases (only QR2 measurements)"
        )


def test_qa_summary_without_measurements_says_so(tmp_path, captured):
    plot_qa_summary(empty_measurements(), tmp_path / "qa.png", title_name="E")
    assert "Releases: none.  no overlapping releases (no measurements)" in figure_texts(
        captured[-1]
    )


def test_qa_summary_flags_a_release_offset(tmp_path, captured):
    df = synthetic_measurements(200, seed=5, qr2_flux_factor=1.3)
    plot_qa_summary(df, tmp_path / "qa.png", title_name="Offset", result_flags=DEMO_RESULT_FLAGS)
    header = next(t for t in captured[-1].texts if t.get_text().startswith("Releases:"))
    assert header.get_color() == "#a00"
