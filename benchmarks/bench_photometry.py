"""Photometry speed: the fit alone and end to end per cutout, ours vs numpy and photutils.

Prints, for cutouts of about 11, 31 and 61 px (real files with the full 5 MB PSF cube):
  - µs per cutout of the batched Numba fit alone, the numpy reference, and photutils
    ``PSFPhotometry`` with fixed positions (one PSF plane as an ``ImagePSF``);
  - ms per cutout end to end (open, parse, WCS, read arrays and one PSF plane, fit) for our
    path (``measure_cutouts``) vs a plain astropy path (``fits.open`` + ``WCS(header)`` +
    photutils), and the ratios.
Also checks that our flux and photutils' agree on the same pixels (they fit the same model).

Usage: python benchmarks/bench_photometry.py [--n 40]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from spxflow.archive.simulated import SimulatedArchive
from spxflow.format import PIXEL_SCALE_ARCSEC
from spxflow.photometry import CalibrationSet, PhotometrySettings, measure_cutouts, reference
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


def photutils_fit(x, y, img, var, plane, half):
    """photutils PSFPhotometry at a fixed position (plane as a 10x oversampled ImagePSF)."""
    from astropy.table import Table
    from photutils.psf import ImagePSF, PSFPhotometry

    # ImagePSF wants unit integral over native pixels: the oversampled plane sums to 1 over
    # 100 samples per native pixel, hence the factor.
    model = ImagePSF(plane * 100.0, oversampling=10)
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40, help="cutouts per size")
    args = ap.parse_args(argv)
    settings = PhotometrySettings()
    print(f"{'size':>6} {'numba fit':>11} {'2 threads':>11} {'numpy ref':>11} {'photutils':>11} "
          f"{'ours e2e':>10} {'astropy+pu':>11} {'fit x':>8} {'e2e x':>7}")  # fmt: skip
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
            prep = [prepare(read_cutout(p, RA, DEC), [], cal, settings) for p in paths]
            batch = pack(prep)
            # A whole batch fits in ~0.2 ms, so one stray interrupt would dominate a best of 3.
            fit_packed(batch, settings.core_radius_px)  # compile
            t_numba = timeit(lambda b=batch: fit_packed(b, settings.core_radius_px), 20) / n
            fit_packed(batch, settings.core_radius_px, threads=2)
            t_numba2 = timeit(lambda b=batch: fit_packed(b, settings.core_radius_px, 2), 20) / n

            def numpy_all(prep=prep):
                for p in prep:
                    reference.fit_one(
                        p.px, p.py, p.data, p.var, p.good, p.kconv, p.cwave, p.cband, p.sx,
                        p.sy, p.cutout.psf, settings.core_radius_px,
                    )  # fmt: skip

            t_numpy = timeit(numpy_all) / n
            sub = paths[: min(n, 15)]
            loaded = [astropy_load(p, RA, DEC) for p in sub]
            photutils_fit(*loaded[0], half)  # warm up
            t_pu_fit = timeit(lambda ld=loaded, h=half: [photutils_fit(*a, h) for a in ld])
            t_pu_fit /= len(sub)
            t_pu_e2e = timeit(
                lambda s=sub, h=half: [photutils_fit(*astropy_load(p, RA, DEC), h) for p in s]
            ) / len(sub)
            measure_cutouts(paths, RA, DEC, [], cal, settings)
            t_ours = timeit(lambda p=paths: measure_cutouts(p, RA, DEC, [], cal, settings)) / n
            print(
                f"{npx:>4}px {t_numba * 1e6:>9.1f}us {t_numba2 * 1e6:>9.1f}us "
                f"{t_numpy * 1e6:>9.0f}us {t_pu_fit * 1e6:>9.0f}us {t_ours * 1e3:>8.2f}ms "
                f"{t_pu_e2e * 1e3:>9.2f}ms {t_pu_fit / t_numba:>8.0f} {t_pu_e2e / t_ours:>7.1f}"
            )
            ours = measure_cutouts(sub, RA, DEC, [], cal, settings)
            pu = np.array([photutils_fit(*a, half) for a in loaded])
            conv = ours["pix_to_uJy"].to_numpy()
            ratio = np.nanmedian(ours["flux_uJy"].to_numpy() / (pu * conv))
            print(f"       flux ours / photutils on the same pixels: median {ratio:.3f}")
    print("fit x = photutils fit / Numba fit; e2e x = astropy+photutils / ours (per cutout)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
