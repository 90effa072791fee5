"""SimulatedArchive: an offline SPHEREx QR2 + QR3 archive with known injected truth.

Discovery tables, cutouts and calibration files have the structure of the real IRSA products
(``shared/spherex_format.md`` §1-§4 for QR2, §8 for the R7 layout of QR3); the sky is the
simulator of ``spxflow.sim``. QR2 and QR3 are consecutive time slices of one survey
(``spxflow.sim.timeline``) with one true sky on the R7 gain scale: QR2 pixels are that sky
divided by the QR3 ``l3_flux_corrections`` map. The simulated truth travels in ``SIM*`` cards
of the IMAGE header (SIMFLUX: the true flux) and in ``truth_sed``.

One concept, hence one module over ~400 lines: the ``Archive`` interface of a simulated
archive (discovery, cutouts, calibration, truth) and its CLI; the sky itself is ``spxflow.sim``.

CLI::

    python -m spxflow.archive.simulated discover RA DEC [--radius-arcsec R] [--passes N]
        [--releases qr2,qr3] [--qr3-days D]
    python -m spxflow.archive.simulated cutout IMAGE_ID RA DEC SIZE_ARCSEC OUT.fits [same options]
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from spxflow.archive.base import (
    Archive,
    ArchiveError,
    CalibrationFile,
    CutoutResult,
    NoOverlapError,
    WindowResult,
    normalise_discovery,
)
from spxflow.archive.validate import cutout_problem, maybe_gunzip
from spxflow.config import block_defaults
from spxflow.fileio import atomic_path, sha256_file
from spxflow.format import (
    BANDS,
    NPIX,
    PIXEL_SCALE_ARCSEC,
    calibration_file_name,
    calibration_id,
)
from spxflow.sim import (
    calproducts,
    discovery,
    diskcache,
    render,
    sky,
    spectral_model,
    survey,
    wholefile,
)
from spxflow.sim.sed import band_average, monochromatic

DEFAULT_TRUTH_TABLE = Path(__file__).resolve().parents[2] / "resources" / "sim_sky_truth.csv"
CONFIG_DEFAULTS = block_defaults("archive", "simulated")  # the schema is their one home
MAX_SIZE_ARCSEC = NPIX * PIXEL_SCALE_ARCSEC  # one detector side
_DID_RE = re.compile(
    r"^ivo://irsa\.ipac/spherex_(?P<rel>qr2|qr3)\?(?P<obsid>[^/]+)/D(?P<det>\d)(?P<retry>/retry)?$"
)
_URL_RE = re.compile(
    r"^https://irsa\.ipac\.caltech\.edu/ibe/data/spherex/(?P<rel>qr2|qr3)/level2/(?P<pp>[^/]+)/"
    r"(?P<token>[^/]+)/(?P<det>\d)/level2_(?P<obsid>[^/]+?)D(?P<det2>\d)_spx_(?P<token2>[^/?]+)"
    r"\.fits(?:\?.*)?$"
)


class SimulatedArchive(Archive):
    """Simulated SPHEREx QR2 + QR3 archive (deterministic for a given configuration).

    Config keys (``from_config``): ``seed`` (sky noise, field stars, pixel defects),
    ``passes`` (6-month survey passes served as QR2, cut at the QR3 start 2026-07-20),
    ``releases`` (subset of qr2, qr3), ``qr3_days`` (length of the QR3 time slice from
    2026-07-20, whatever ``passes`` is), ``noise`` (False: no Gaussian noise and no value
    corruption of TRANSIENT/OUTLIER/PERSIST/COLD pixels; flags, NONFUNC pixels and the
    field stars stay), ``psf_header_erratum`` (pre-6.5.6 transposed PSF zone cards, VERSION
    6.5.4; data unchanged), ``gzip`` (``cutout_bytes`` returns gzip), ``field_stars``,
    ``truth_table`` (CSV path; default ``resources/sim_sky_truth.csv`` of the checkout).
    The survey geometry (pointings, OBSIDs, times) does not depend on the seed.
    ``psf_header_erratum`` concerns QR2 files only.
    """

    name = "simulated"

    def __init__(
        self,
        seed: int = CONFIG_DEFAULTS["seed"],
        passes: int = CONFIG_DEFAULTS["passes"],
        releases: Sequence[str] = tuple(CONFIG_DEFAULTS["releases"]),
        qr3_days: float = CONFIG_DEFAULTS["qr3_days"],
        noise: bool = CONFIG_DEFAULTS["noise"],
        psf_header_erratum: bool = CONFIG_DEFAULTS["psf_header_erratum"],
        gzip: bool = CONFIG_DEFAULTS["gzip"],
        field_stars: bool = CONFIG_DEFAULTS["field_stars"],
        truth_table: str | os.PathLike | None = CONFIG_DEFAULTS["truth_table"],
        pixels: str = CONFIG_DEFAULTS["pixels"],
        cache_dir: str | os.PathLike | None = None,
    ):
        if pixels not in ("window", "cutout"):
            raise ValueError(f"simulated archive: pixels must be window or cutout, got {pixels!r}")
        self.pixels = pixels  # what the measure job asks for: fetch_windows or fetch_cutouts
        if cache_dir is not None:
            # The simulator's own tables (EPSF), shared by the jobs of a run under
            # <cache_dir>/sim. Process-wide, as the in-memory caches are; the bytes are the same
            # either way. None leaves the setting alone (in-memory only unless set).
            diskcache.set_dir(Path(cache_dir) / "sim")
        self._whole_files = wholefile.ObjectCache()  # S3 objects served by whole_file()
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
            raise ValueError(f"simulated archive: seed must be an integer, got {seed!r}")
        if (
            not isinstance(passes, (int, np.integer))
            or isinstance(passes, bool)
            or not 1 <= passes <= 8
        ):
            raise ValueError(f"simulated archive: passes must be an integer 1..8, got {passes!r}")
        if isinstance(releases, str) or not isinstance(releases, Sequence):
            raise ValueError(f"simulated archive: releases must be a list, got {releases!r}")
        try:
            rels = survey.check_releases(releases)
        except ValueError as exc:
            raise ValueError(f"simulated archive: {exc}") from None
        if len(rels) != len(releases):
            raise ValueError(f"simulated archive: releases must be unique, got {releases!r}")
        if (
            isinstance(qr3_days, bool)
            or not isinstance(qr3_days, (int, float, np.integer, np.floating))
            or not 0 < float(qr3_days) <= 182
        ):
            raise ValueError(f"simulated archive: qr3_days must be in (0, 182], got {qr3_days!r}")
        for key, val in (
            ("noise", noise),
            ("psf_header_erratum", psf_header_erratum),
            ("gzip", gzip),
            ("field_stars", field_stars),
        ):
            if not isinstance(val, bool):
                raise ValueError(f"simulated archive: {key} must be true/false, got {val!r}")
        path = Path(truth_table) if truth_table is not None else DEFAULT_TRUTH_TABLE
        if not path.is_file():
            raise ValueError(f"simulated archive: truth_table {str(path)!r} does not exist")
        self.seed = int(seed)
        self.passes = int(passes)
        self.releases = rels
        self.qr3_days = float(qr3_days)
        self.gzip = gzip
        self.truth_path = str(path.resolve())
        self.truth = sky.load_truth(self.truth_path)
        self.cfg = render.SimConfig(
            seed=self.seed,
            noise=noise,
            field_stars=field_stars,
            truth=self.truth,
            psf_header_erratum=psf_header_erratum,
        )

    @classmethod
    def from_config(
        cls, cfg: Mapping | None, cache_dir: str | os.PathLike | None = None
    ) -> SimulatedArchive:
        """Build from the ``archive.simulated`` config mapping (unknown keys are an error);
        ``cache_dir`` (a run's ``data/cache``) keeps the simulator's tables across jobs."""
        cfg = dict(cfg or {})
        unknown = sorted(set(cfg) - set(CONFIG_DEFAULTS))
        if unknown:
            raise ValueError(
                f"config archive.simulated: unknown key(s) {unknown}; "
                f"known: {sorted(CONFIG_DEFAULTS)}"
            )
        merged = {**CONFIG_DEFAULTS, **cfg}
        return cls(**merged, cache_dir=cache_dir)

    # ------------------------------------------------------------------ discovery
    def discover(self, ra: float, dec: float, radius_arcsec: float = 0.0) -> pd.DataFrame:
        return self.discover_many([("_", ra, dec)], radius_arcsec)["_"]

    def discover_many(
        self, positions: Sequence[tuple[str, float, float]], radius_arcsec: float = 0.0
    ) -> dict[str, pd.DataFrame]:
        """Vectorised discovery for many (key, ra, dec) positions."""
        keys = [str(p[0]) for p in positions]
        ra = np.array([_check_ra(p[1]) for p in positions], dtype=float)
        dec = np.array([_check_dec(p[2]) for p in positions], dtype=float)
        radius = float(radius_arcsec)
        if not math.isfinite(radius) or radius < 0:
            raise ValueError(f"radius_arcsec must be finite and >= 0, got {radius_arcsec!r}")
        pos, slew, step, det, _, _ = survey.find_images(
            ra, dec, radius, self.passes, self.releases, self.qr3_days
        )
        table, frame = discovery.discovery_table(slew, step, det)
        pos = pos[frame]
        # One global sort (position, t_min, did) so each position is a contiguous, ordered run.
        order = np.lexsort(
            (table["obs_publisher_did"].to_numpy(dtype=str), table["t_min"].to_numpy(), pos)
        )
        table = table.iloc[order].reset_index(drop=True)
        bounds = np.searchsorted(pos[order], np.arange(len(keys) + 1))
        return {
            key: normalise_discovery(table.iloc[bounds[i] : bounds[i + 1]])
            for i, key in enumerate(keys)
        }

    # ------------------------------------------------------------------ cutouts
    def image_info(self, image: str) -> survey.ImageInfo:
        """Resolve an obs_publisher_did or access_url (QR2, QR3, l2b_retry copies);
        ArchiveError if this archive does not serve it."""
        text = str(image).strip()
        m = _DID_RE.match(text)
        url = None
        if m:
            retry = bool(m["retry"])
        else:
            url = _URL_RE.match(text)
            if not url or url["det"] != url["det2"] or url["token"] != url["token2"]:
                raise ArchiveError(f"unknown image id {image!r} (not a SPHEREx Level-2 DID or URL)")
            m, retry = url, url["token"].startswith("l2b_retry-")
        try:
            info = survey.parse_obsid(
                m["obsid"], int(m["det"]), self.passes, self.releases, self.qr3_days, retry
            )
        except KeyError as exc:
            raise ArchiveError(f"unknown image id {image!r}: {exc.args[0]}") from None
        if info.release != m["rel"]:
            raise ArchiveError(
                f"unknown image id {image!r}: {m['obsid']} is a {info.release} image"
            )
        if url is not None and (url["pp"] != info.planning_period or url["token"] != info.token):
            raise ArchiveError(f"unknown image id {image!r}: path does not match the archive")
        return info

    def cutout_bytes(self, image: str, ra: float, dec: float, size_arcsec: float) -> bytes:
        """Bytes of an IRSA-style cutout (gzip-compressed if configured)."""
        ra, dec = _check_ra(ra), _check_dec(dec)
        size = _check_size(size_arcsec)
        info = self.image_info(image)
        box = render.cutout_box(info, ra, dec, size)
        if box is None:
            raise NoOverlapError(
                f"cutout of {size:g} arcsec at ({ra:.6f}, {dec:.6f}) does not overlap {image}"
            )
        return render.cutout_fits_bytes(info, box, ra, dec, self.cfg, compress=self.gzip)

    def fetch_cutout(
        self, row: Mapping, ra: float, dec: float, size_arcsec: float, dest_dir: Path
    ) -> CutoutResult:
        image_id = str(row.get("obs_publisher_did", "") or row.get("access_url", ""))
        url = str(row.get("access_url", "") or "")
        file_name = url.split("?")[0].rsplit("/", 1)[-1] if url else ""
        result = CutoutResult(image_id=image_id, file_name=file_name, status="failed", attempts=1)
        try:
            if not file_name:
                file_name = self.image_info(image_id).file_name
                result.file_name = file_name
            data = maybe_gunzip(self.cutout_bytes(url or image_id, ra, dec, size_arcsec))
            final = Path(dest_dir) / file_name
            with atomic_path(final) as tmp:
                tmp.write_bytes(data)
                problem = cutout_problem(tmp)
                if problem:
                    raise ArchiveError(f"invalid cutout {file_name}: {problem}")
        except NoOverlapError as exc:
            result.status, result.reason = "no_overlap", str(exc)
            return result
        except (ArchiveError, ValueError, OSError) as exc:
            result.reason = f"{type(exc).__name__}: {exc}"
            return result
        result.status = "ok"
        result.path = str(final)
        result.size_bytes = final.stat().st_size
        result.sha256 = sha256_file(final)
        return result

    def fetch_windows(
        self, rows: Iterable[Mapping], ra: float, dec: float, half_size: int, size_arcsec: float
    ) -> list[WindowResult]:
        from spxflow.photometry.cutout import CutoutError
        from spxflow.sim.windows import render_window

        out = []
        for row in rows:
            image_id = str(row.get("obs_publisher_did", "") or row.get("access_url", ""))
            result = WindowResult(image_id=image_id, file_name="", status="failed", attempts=1)
            try:
                info = self.image_info(str(row.get("access_url", "") or image_id))
                result.file_name = info.file_name
                result.cutout, result.truth = render_window(
                    info, self.cfg, _check_ra(ra), _check_dec(dec), half_size, size_arcsec
                )
                result.status = "ok"
            except (CutoutError, ArchiveError, ValueError) as exc:
                result.fail(exc)
            out.append(result)
        return out

    # ------------------------------------------------------------------ calibration
    def calibration_bytes(self, release: str, family: str, detector: int) -> bytes:
        """Bytes of calibration product ``family`` of ``release`` for ``detector``: any family
        of ``format.CALIBRATION_TOKENS[release]`` (ArchiveError otherwise)."""
        try:
            return calproducts.calibration_bytes(release, family, detector)
        except ValueError as exc:
            raise ArchiveError(str(exc)) from None

    def whole_file(self, key: str):
        """The object at S3 key ``key`` (the IBE path after ``/ibe/data/spherex/``, see
        ``wholefile.s3_key_of``): a lazily rendered ``wholefile.WholeFile`` for a Level-2 file,
        a ``wholefile.BytesFile`` for a calibration product
        (``<release>/<family>/<token>/<det>/<file>``). Cached per key (LRU); ArchiveError for a
        key this archive does not serve."""
        return self._whole_files.get(self, str(key))

    def fetch_calibration(
        self, release: str, family: str, detector: int, dest: Path
    ) -> CalibrationFile:
        """Write the product to ``dest`` (a ``.fits`` path) or into directory ``dest`` under
        ``calibration_file_name(release, family, detector)``; atomic."""
        data = self.calibration_bytes(release, family, detector)
        dest = Path(dest)
        if dest.suffix.lower() != ".fits" or dest.is_dir():
            dest = dest / calibration_file_name(release, family, detector)
        with atomic_path(dest) as tmp:
            tmp.write_bytes(data)
        return CalibrationFile(
            family=family,
            release=release,
            detector=int(detector),
            calibration_id=calibration_id(release, family, detector),
            path=str(dest),
            size_bytes=dest.stat().st_size,
            sha256=sha256_file(dest),
        )

    # ------------------------------------------------------------------ truth
    def truth_sed(
        self, ra: float, dec: float, wavelength_um, *, bandwidth_um=None
    ) -> np.ndarray | None:
        """True SED [µJy] of the truth source within 3″ of (ra, dec), or None.

        By default it is smoothed to SPHEREx resolution (top-hat of width λ/R of the detector
        that covers λ, as an image sees it); pass ``bandwidth_um`` (scalar or array) to choose
        the width, or 0 for the intrinsic monochromatic SED (narrow lines).
        """
        i, sep = self.truth.nearest(_check_ra(ra), _check_dec(dec))
        if i < 0 or sep > sky.TRUTH_MATCH_ARCSEC:
            return None
        lam = np.asarray(wavelength_um, dtype=float)
        if bandwidth_um is None:
            bandwidth_um = lam / nominal_resolving_power(lam)
        band = np.broadcast_to(np.asarray(bandwidth_um, dtype=float), lam.shape)
        sed = self.truth.seds[i]
        if np.all(band <= 0):
            return monochromatic(sed, lam)
        return band_average(sed, lam, band)


def nominal_resolving_power(wavelength_um) -> np.ndarray:
    """Resolving power of the detector whose band contains each wavelength."""
    lam = np.asarray(wavelength_um, dtype=float)
    edges = [BANDS[d][1] * 1e6 for d in (1, 2, 3, 4, 5)]
    det = np.searchsorted(edges, lam) + 1
    r = np.array([spectral_model.RESOLVING_POWER[d] for d in range(1, 7)])
    return r[np.clip(det, 1, 6) - 1]


def _check_ra(ra) -> float:
    try:
        val = float(ra)
    except (TypeError, ValueError):
        raise ValueError(f"ra must be a number, got {ra!r}") from None
    if not math.isfinite(val):
        raise ValueError(f"ra must be finite, got {ra!r}")
    return val % 360.0


def _check_dec(dec) -> float:
    try:
        val = float(dec)
    except (TypeError, ValueError):
        raise ValueError(f"dec must be a number, got {dec!r}") from None
    if not math.isfinite(val) or not -90.0 <= val <= 90.0:
        raise ValueError(f"dec must be finite and within [-90, 90], got {dec!r}")
    return val


def _check_size(size) -> float:
    try:
        val = float(size)
    except (TypeError, ValueError):
        raise ValueError(f"size_arcsec must be a number, got {size!r}") from None
    if not math.isfinite(val) or val <= 0 or val > MAX_SIZE_ARCSEC:
        raise ValueError(
            f"size_arcsec must be > 0 and <= {MAX_SIZE_ARCSEC:g} (one detector), got {size!r}"
        )
    return val


# ---------------------------------------------------------------------------------------------
# CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m spxflow.archive.simulated", description=__doc__.split("\n")[0]
    )
    p.add_argument("--seed", type=int, default=CONFIG_DEFAULTS["seed"])
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("discover", help="print the discovery table (CSV) of a position")
    d.add_argument("ra", type=float)
    d.add_argument("dec", type=float)
    d.add_argument("--radius-arcsec", type=float, default=0.0)
    c = sub.add_parser("cutout", help="write one cutout FITS file")
    c.add_argument("image_id")
    c.add_argument("ra", type=float)
    c.add_argument("dec", type=float)
    c.add_argument("size_arcsec", type=float)
    c.add_argument("out")
    for q in (d, c):
        q.add_argument("--passes", type=int, default=CONFIG_DEFAULTS["passes"])
        q.add_argument(
            "--releases",
            default=",".join(CONFIG_DEFAULTS["releases"]),
            help="comma-separated releases served (default: %(default)s)",
        )
        q.add_argument("--qr3-days", type=float, default=CONFIG_DEFAULTS["qr3_days"])
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        releases = [r.strip() for r in args.releases.split(",") if r.strip()]
        arch = SimulatedArchive(
            seed=args.seed, passes=args.passes, releases=releases, qr3_days=args.qr3_days
        )
        if args.command == "discover":
            table = arch.discover(args.ra, args.dec, args.radius_arcsec)
            try:
                table.to_csv(sys.stdout, index=False, lineterminator="\n")
            except BrokenPipeError:  # e.g. piped into `head`
                return 0
        else:
            data = maybe_gunzip(
                arch.cutout_bytes(args.image_id, args.ra, args.dec, args.size_arcsec)
            )
            with atomic_path(args.out) as tmp:
                tmp.write_bytes(data)
            print(f"wrote {args.out} ({len(data)} bytes)", file=sys.stderr)
    except (ArchiveError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
