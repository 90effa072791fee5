"""Photometry speed: the fit alone and end to end per cutout, ours vs numpy and photutils.

Prints, for cutouts of about 11, 31 and 61 px (real files with the full 5 MB PSF cube), one row
per PSF model: ``cube`` (the file's QR2 plane) and ``epsf`` (a 33×33, 5× ePSF made from the
same plane with ``reference.epsf_from_plane``, fitted on the same pixels):
  - µs per cutout of the PSF stamp rendering (``kernels.render_batch_stamps``, which ``pack``
    calls; for the ePSF it includes the spline prefilter), of the batched Numba fit alone
    (``fit_packed``: 1 and 2 threads), the numpy reference (render + fit), and photutils
    ``PSFPhotometry`` with fixed positions (the plane as a 10× ``ImagePSF``, or the ePSF as a 5×
    one);
  - ms per cutout end to end (open, parse, WCS, read arrays and one PSF plane, fit) for our
    path (``measure_cutouts``) vs a plain astropy path (``fits.open`` + ``WCS(header)`` +
    photutils), and the ratios (cube only: the simulated archive has no ePSF library).
Also prints our flux over photutils' on the same pixels. For the ePSF both evaluate the same
model (point samples at pixel centres), so it is ~1; for the cube it is not, since
``ImagePSF`` point-samples the optical plane instead of integrating it over the pixels.

Usage: python benchmarks/bench_photometry.py [--n 40]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from spxflow.archive.simulated import SimulatedArchive
from spxflow.format import PIXEL_SCALE_ARCSEC
from spxflow.photometry import (
    CalibrationSet,
    PhotometrySettings,
    kernels,
    measure_cutouts,
    reference,
)
from spxflow.photometry.cutout import read_cutout
from spxflow.photometry.measure import fit_packed, pack, prepare

RA, DEC = 100.20, -10.00


def timeit(fn, repeat=3):
    """Best of ``repeat`` wall times: the least disturbed run of the same work."""
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def astropy_load(path, ra, dec):
    """The plain astropy path's reading: open, WCS, arrays and the target's PSF plane."""
    from astropy.io import fits
    from astropy.wcs import WCS

    from spxflow.format import psf_plane

    with fits.open(path) as hdul:
        h = hdul["IMAGE"].header
        x, y = WCS(h).all_world2pix(ra, dec, 0)
        img = hdul["IMAGE"].data.astype(float)
        var = hdul["VARIANCE"].data.astype(float)
        xp, yp = float(x) + 1 - h["CRPIX1A"], float(y) + 1 - h["CRPIX2A"]
        plane = hdul["PSF"].data[psf_plane(xp, yp)].astype(float)
    return float(x), float(y), img, var, plane


def photutils_fit(x, y, img, var, plane, half, model_name="cube"):
    """photutils PSFPhotometry at a fixed position (plane as a 10x oversampled ImagePSF, or the
    ePSF as a 5x one)."""
    from astropy.table import Table
    from photutils.psf import ImagePSF, PSFPhotometry

    # ImagePSF wants unit integral over native pixels: the oversampled plane sums to 1 over
    # 100 samples per native pixel, hence the factor (the ePSF already sums to ~25 = 5x5).
    if model_name == "cube":
        model = ImagePSF(plane * 100.0, oversampling=10)
    else:
        model = ImagePSF(reference.epsf_from_plane(plane), oversampling=5)
    model.x_0.fixed = True
    model.y_0.fixed = True
    good = np.isfinite(img) & np.isfinite(var) & (var > 0)
    bkg = np.median(img[good])
    shape = min(2 * half + 1, (min(img.shape) - 1) // 2 * 2 + 1)
    phot = PSFPhotometry(model, (shape, shape))
    init = Table({"x": [x], "y": [y], "flux": [1.0]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = phot(
            np.where(good, img - bkg, 0.0),
            mask=~good,
            error=np.sqrt(np.where(good, var, 1.0)),
            init_params=init,
        )
    return float(out["flux_fit"][0])


def as_epsf(p):
    """The same cutout fitted with the ePSF model (the ePSF made from its cube plane)."""
    return dataclasses.replace(p, psf_model="epsf", psf=reference.epsf_from_plane(p.psf))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40, help="cutouts per size")
    args = ap.parse_args(argv)
    settings = PhotometrySettings()
    core_r = settings.core_radius_px
    print(f"{'size':>6} {'model':>5} {'render':>9} {'numba fit':>10} {'2 threads':>10} "
          f"{'numpy ref':>10} {'photutils':>10} {'ours e2e':>9} {'astropy+pu':>10} "
          f"{'e2e x':>6} {'fit x':>6} {'ours/pu':>8}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        archive = SimulatedArchive()
        cal = CalibrationSet.from_archive(archive, tmp / "cal")
        rows = archive.discover(RA, DEC).to_dict(orient="records")[: args.n]
        for npx in (11, 31, 61):
            size = npx * PIXEL_SCALE_ARCSEC
            d = tmp / f"c{npx}"
            paths = [
                r.path for r in archive.fetch_cutouts(rows, RA, DEC, size, d) if r.status == "ok"
            ]
            n = len(paths)
            half = min(settings.fit_half_size_px, (npx - 1) // 2)
            sub = paths[: min(n, 15)]
            loaded = [astropy_load(p, RA, DEC) for p in sub]
            cube = [prepare(read_cutout(p, RA, DEC), [], cal, settings) for p in paths]
            for model_name, prep in (("cube", cube), ("epsf", [as_epsf(p) for p in cube])):
                batch = pack(prep)
                models = [p.psf_model for p in prep]
                psfs = [p.psf for p in prep]

                def render(b=batch, m=models, f=psfs):
                    kernels.render_batch_stamps(m, f, b["sx"], b["sy"], b["nsrc"])

                # A whole batch fits in ~0.2 ms, so one stray interrupt would dominate a best
                # of 3.
                render()  # compile
                t_render = timeit(render, 20) / n
                fit_packed(batch, core_r)  # compile
                t_numba = timeit(lambda b=batch: fit_packed(b, core_r), 20) / n
                fit_packed(batch, core_r, threads=2)
                t_numba2 = timeit(lambda b=batch: fit_packed(b, core_r, 2), 20) / n

                def numpy_all(prep=prep):
                    for p in prep:
                        reference.fit_one(
                            p.px, p.py, p.data, p.var, p.good, p.kconv, p.cwave, p.cband,
                            p.sx, p.sy, reference.stamp_renderer(p.psf_model, p.psf), core_r,
                        )  # fmt: skip

                t_numpy = timeit(numpy_all) / n
                photutils_fit(*loaded[0], half, model_name)  # warm up
                t_pu_fit = timeit(
                    lambda ld=loaded, h=half, m=model_name: [photutils_fit(*a, h, m) for a in ld]
                ) / len(sub)
                e2e = f"{'-':>9} {'-':>10} {'-':>6}"
                if model_name == "cube":
                    t_pu_e2e = timeit(
                        lambda s=sub, h=half: [
                            photutils_fit(*astropy_load(p, RA, DEC), h) for p in s
                        ]
                    ) / len(sub)
                    measure_cutouts(paths, RA, DEC, [], cal, settings)
                    t_ours = (
                        timeit(lambda p=paths: measure_cutouts(p, RA, DEC, [], cal, settings)) / n
                    )
                    e2e = (
                        f"{t_ours * 1e3:>7.2f}ms {t_pu_e2e * 1e3:>8.2f}ms {t_pu_e2e / t_ours:>6.1f}"
                    )
                # Flux ratio on the same pixels (the first len(sub) cutouts of the batch).
                out = fit_packed(pack(prep[: len(sub)]), core_r)
                pu = np.array([photutils_fit(*a, half, model_name) for a in loaded])
                # photutils fits the file's pixels; ours may be rescaled to another
                # calibration scale (``flux_correction``, ~1 across a fit window).
                conv = np.array(
                    [p.pix_to_uJy * getattr(p, "flux_correction", 1.0) for p in prep[: len(sub)]]
                )
                ratio = np.nanmedian(out["params"][:, 0] / (pu * conv))
                print(
                    f"{npx:>4}px {model_name:>5} {t_render * 1e6:>7.1f}us "
                    f"{t_numba * 1e6:>8.1f}us {t_numba2 * 1e6:>8.1f}us "
                    f"{t_numpy * 1e6:>8.0f}us {t_pu_fit * 1e6:>8.0f}us {e2e} "
                    f"{t_pu_fit / (t_render + t_numba):>6.0f} {ratio:>8.3f}"
                )
    print("render + numba fit = the old 'numba fit' (rendering was inside the fit until the")
    print("PSF models were split); fit x = photutils fit / (render + Numba fit); e2e x =")
    print("astropy+photutils / ours (per cutout); ours/pu = median flux ratio on the same pixels")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
