"""SimulatedArchive: an offline SPHEREx QR2 archive with known injected truth.

Discovery tables, cutouts and calibration files have the structure of the real IRSA products
(``shared/spherex_format.md`` §1-§4); the sky is the simulator of ``spxflow.sim``. The simulated
truth travels in ``SIM*`` cards of the IMAGE header and in ``truth_sed``.

One concept, hence one module over ~400 lines: the ``Archive`` interface of a simulated
archive (discovery, cutouts, calibration, truth) and its CLI; the sky itself is ``spxflow.sim``.

CLI::

    python -m spxflow.archive.simulated discover RA DEC [--radius-arcsec R] [--passes N]
    python -m spxflow.archive.simulated cutout IMAGE_ID RA DEC SIZE_ARCSEC OUT.fits
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from spxflow.archive.base import (
    Archive,
    ArchiveError,
    CalibrationFile,
    CutoutResult,
    NoOverlapError,
    normalise_discovery,
)
from spxflow.archive.validate import cutout_problem, maybe_gunzip
from spxflow.config import block_defaults
from spxflow.fileio import atomic_path, sha256_file
from spxflow.format import (
    BANDS,
    CALIBRATION_FAMILIES,
    DETECTOR_FOV_DEG,
    NPIX,
    PIXEL_SCALE_ARCSEC,
    SIA_COLUMN_NAMES,
    calibration_file_name,
    calibration_id,
)
from spxflow.sim import render, sky, spectral_model, survey
from spxflow.sim import wcs as simwcs
from spxflow.sim.fitsout import card, data_bytes, header_bytes, image_structure_cards
from spxflow.sim.fitsout import primary_cards as _primary_cards
from spxflow.sim.sed import band_average, monochromatic

DEFAULT_TRUTH_TABLE = Path(__file__).resolve().parents[2] / "resources" / "sim_sky_truth.csv"
CONFIG_DEFAULTS = block_defaults("archive", "simulated")  # the schema is their one home
MAX_SIZE_ARCSEC = NPIX * PIXEL_SCALE_ARCSEC  # one detector side
_DID_RE = re.compile(r"^ivo://irsa\.ipac/spherex_qr2\?(?P<obsid>[^/]+)/D(?P<det>\d)$")
_URL_RE = re.compile(
    r"^https://irsa\.ipac\.caltech\.edu/ibe/data/spherex/qr2/level2/(?P<pp>[^/]+)/(?P<token>[^/]+)/"
    r"(?P<det>\d)/level2_(?P<obsid>[^/]+?)D(?P<det2>\d)_spx_(?P<token2>[^/?]+)\.fits(?:\?.*)?$"
)


class SimulatedArchive(Archive):
    """Simulated SPHEREx QR2 archive (deterministic for a given configuration).

    Config keys (``from_config``): ``seed`` (sky noise, field stars, pixel defects),
    ``passes`` (6-month survey passes served), ``noise`` (False: no Gaussian noise and no value
    corruption of TRANSIENT/OUTLIER/PERSIST/COLD pixels; flags, NONFUNC pixels and the
    field stars stay), ``psf_header_erratum`` (pre-6.5.6 transposed PSF zone cards, VERSION
    6.5.4; data unchanged), ``gzip`` (``cutout_bytes`` returns gzip), ``field_stars``,
    ``truth_table`` (CSV path; default ``resources/sim_sky_truth.csv`` of the checkout).
    The survey geometry (pointings, OBSIDs, times) does not depend on the seed.
    """

    name = "simulated"

    def __init__(
        self,
        seed: int = CONFIG_DEFAULTS["seed"],
        passes: int = CONFIG_DEFAULTS["passes"],
        noise: bool = CONFIG_DEFAULTS["noise"],
        psf_header_erratum: bool = CONFIG_DEFAULTS["psf_header_erratum"],
        gzip: bool = CONFIG_DEFAULTS["gzip"],
        field_stars: bool = CONFIG_DEFAULTS["field_stars"],
        truth_table: str | os.PathLike | None = CONFIG_DEFAULTS["truth_table"],
    ):
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
            raise ValueError(f"simulated archive: seed must be an integer, got {seed!r}")
        if (
            not isinstance(passes, (int, np.integer))
            or isinstance(passes, bool)
            or not 1 <= passes <= 8
        ):
            raise ValueError(f"simulated archive: passes must be an integer 1..8, got {passes!r}")
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
    def from_config(cls, cfg: Mapping | None) -> SimulatedArchive:
        """Build from the ``archive.simulated`` config mapping (unknown keys are an error)."""
        cfg = dict(cfg or {})
        unknown = sorted(set(cfg) - set(CONFIG_DEFAULTS))
        if unknown:
            raise ValueError(
                f"config archive.simulated: unknown key(s) {unknown}; "
                f"known: {sorted(CONFIG_DEFAULTS)}"
            )
        merged = {**CONFIG_DEFAULTS, **cfg}
        return cls(**merged)

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
        pos, slew, step, det, _, _ = survey.find_images(ra, dec, radius, self.passes)
        table = _discovery_rows(slew, step, det)
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
        """Resolve an obs_publisher_did or access_url; ArchiveError if unknown."""
        text = str(image).strip()
        m = _DID_RE.match(text)
        url = None
        if not m:
            url = _URL_RE.match(text)
            if not url or url["det"] != url["det2"] or url["token"] != url["token2"]:
                raise ArchiveError(f"unknown image id {image!r} (not a SPHEREx QR2 DID or URL)")
            m = url
        try:
            info = survey.parse_obsid(m["obsid"], int(m["det"]), self.passes)
        except KeyError as exc:
            raise ArchiveError(f"unknown image id {image!r}: {exc.args[0]}") from None
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

    # ------------------------------------------------------------------ calibration
    def calibration_bytes(self, family: str, detector: int) -> bytes:
        """Bytes of calibration product ``family`` (spectral_wcs / solid_angle_pixel_map)."""
        if family not in CALIBRATION_FAMILIES:
            raise ArchiveError(
                f"unknown calibration family {family!r}; known: {sorted(CALIBRATION_FAMILIES)}"
            )
        if detector not in BANDS:
            raise ArchiveError(f"calibration detector must be 1..6, got {detector!r}")
        prim = header_bytes(
            _primary_cards("6.5.6", [card("DETECTOR", int(detector)), card("CALFAM", family)])
        )
        parts = [prim]
        if family == "spectral_wcs":
            cwave, cband = spectral_model.cwave_cband(detector)
            for name, arr in (("CWAVE", cwave), ("CBAND", cband)):
                cards = image_structure_cards(arr) + [
                    card("EXTNAME", name, "extension name"),
                    card("BUNIT", "um", "micron"),
                    card("DETECTOR", int(detector)),
                ]
                parts.append(header_bytes(cards) + data_bytes(arr))
            parts.append(render.wcs_wave_bytes(detector))
        else:
            sapm = sky.solid_angle_map(detector)
            cards = image_structure_cards(sapm) + [
                card("EXTNAME", "IMAGE", "extension name"),
                card("BUNIT", "arcsec2", "pixel solid angle"),
                card("DETECTOR", int(detector)),
            ]
            parts.append(header_bytes(cards) + data_bytes(sapm))
        return b"".join(parts)

    def fetch_calibration(self, family: str, detector: int, dest: Path) -> CalibrationFile:
        """Write the product to ``dest`` (a ``.fits`` path) or into directory ``dest`` under
        ``calibration_file_name(family, detector)``; atomic."""
        dest = Path(dest)
        if dest.suffix.lower() != ".fits" or dest.is_dir():
            dest = dest / calibration_file_name(family, detector)
        data = self.calibration_bytes(family, detector)
        with atomic_path(dest) as tmp:
            tmp.write_bytes(data)
        return CalibrationFile(
            family=family,
            detector=int(detector),
            calibration_id=calibration_id(family, detector),
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


_CORNERS = np.array(
    [[-0.5, -0.5], [NPIX - 0.5, -0.5], [NPIX - 0.5, NPIX - 0.5], [-0.5, NPIX - 0.5]]
)


@functools.lru_cache(maxsize=262144)
def _release_date(slew: int) -> str:
    return survey.mjd_to_datetime(survey.slew_meta(slew)[3] + 37.0).strftime("%Y-%m-%d %H:%M:%S")


def _discovery_rows(slew, step, det) -> pd.DataFrame:
    """SIA2 rows (§3.1 columns, realistic values) for frames (slew, step, det), vectorised."""
    slew = np.asarray(slew, dtype=np.int64)
    step = np.asarray(step, dtype=np.int64)
    dets = np.asarray(det, dtype=np.int64)
    n = len(slew)
    pair = np.array([survey.DETECTOR_PAIR[int(d)] for d in dets], dtype=np.int64)
    ra0, dec0, pa = survey.pointing(slew, step, pair)
    cd = simwcs.cd_matrix(pa)
    s_ra = np.zeros(n)
    s_dec = np.zeros(n)
    corners = np.zeros((n, 5, 2))
    for d in np.unique(dets):
        sel = dets == d
        sip = simwcs.detector_sip(int(d))
        px = np.append(_CORNERS[:, 0], (NPIX - 1) / 2.0)
        py = np.append(_CORNERS[:, 1], (NPIX - 1) / 2.0)
        r, dd = simwcs.pixel_to_world(
            px[None, :], py[None, :], ra0[sel, None], dec0[sel, None], cd[sel, None], sip
        )
        corners[sel, :4, 0], corners[sel, :4, 1] = r[:, :4], dd[:, :4]
        s_ra[sel], s_dec[sel] = r[:, 4], dd[:, 4]
    corners[:, 4] = corners[:, 0]
    meta = [survey.slew_meta(int(a)) for a in slew]
    obsid = [f"{m[1]}_{s}" for m, s in zip(meta, step, strict=True)]
    keys = [
        f"qr2/level2/{m[0]}/{m[2]}/{d}/level2_{o}D{d}_spx_{m[2]}.fits"
        for m, o, d in zip(meta, obsid, dets, strict=True)
    ]
    fmt = "POLYGON ICRS " + " ".join(["%.7f"] * 10)
    regions = [fmt % tuple(c) for c in corners.reshape(n, 10).tolist()]
    t_min = survey.step_mjd(slew, step)
    release = [_release_date(int(a)) for a in slew]
    bands = np.array([BANDS[d] for d in range(1, 7)])
    df = pd.DataFrame(
        {
            "s_ra": s_ra,
            "s_dec": s_dec,
            "facility_name": "SPHEREx",
            "instrument_name": "SPHEREx",
            "dataproduct_subtype": "science",
            "calib_level": 2,
            "dataproduct_type": "image",
            "energy_bandpassname": [f"SPHEREx-D{d}" for d in dets],
            "energy_emband": "Infrared",
            "obs_id": obsid,
            "s_resolution": 3.075,
            "em_min": bands[dets - 1, 0],
            "em_max": bands[dets - 1, 1],
            "em_res_power": bands[dets - 1, 2],
            "proposal_title": "SPHEREx LVF Survey Data",
            "access_url": [f"https://irsa.ipac.caltech.edu/ibe/data/spherex/{k}" for k in keys],
            "access_format": "image/fits",
            "access_estsize": 71638,
            "t_exptime": survey.XPOSURE,
            "s_region": regions,
            "obs_collection": "spherex_qr2",
            "obs_intent": "science",
            "algorithm_name": "exposure",
            "facility_keywords": "",
            "instrument_keywords": "",
            "environment_photometric": np.nan,
            "proposal_id": "",
            "proposal_pi": "",
            "proposal_project": "SPHEREx",
            "target_name": [f"SPS_{10000 + (int(a) * 7919) % 90000}" for a in slew],
            "target_type": "field",
            "target_standard": 0,
            "target_moving": 0,
            "target_keywords": "",
            "obs_release_date": release,
            "s_xel1": NPIX,
            "s_xel2": NPIX,
            "s_pixel_scale": PIXEL_SCALE_ARCSEC,
            "position_timedependent": 0,
            "t_min": t_min,
            "t_max": t_min + survey.SPAN_SECONDS / 86400.0,
            "t_resolution": np.nan,
            "t_xel": np.nan,
            "obs_publisher_did": [
                f"ivo://irsa.ipac/spherex_qr2?{o}/D{d}" for o, d in zip(obsid, dets, strict=True)
            ],
            "s_fov": DETECTOR_FOV_DEG,
            "em_xel": np.nan,
            "pol_states": "",
            "pol_xel": np.nan,
            "cloud_access": [
                '{"aws": {"bucket_name": "nasa-irsa-spherex", '
                f'"key": "{k}", "region": "us-east-1"}}}}'
                for k in keys
            ],
            "o_ucd": "",
            "upload_row_id": 1,
        }
    )
    return df.loc[:, list(SIA_COLUMN_NAMES)]


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
    d.add_argument("--passes", type=int, default=1)
    c = sub.add_parser("cutout", help="write one cutout FITS file")
    c.add_argument("image_id")
    c.add_argument("ra", type=float)
    c.add_argument("dec", type=float)
    c.add_argument("size_arcsec", type=float)
    c.add_argument("out")
    c.add_argument("--passes", type=int, default=1)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        arch = SimulatedArchive(seed=args.seed, passes=args.passes)
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
