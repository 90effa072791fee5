"""IrsaArchive: SPHEREx discovery, cutouts and calibration from IRSA's real services.

- Discovery: pyvo ``SIA2Service`` per configured collection, ``POS=CIRCLE``, ``MAXREC`` with
  TIME paging when a (deep-field) answer overflows; HTTP-200 ``QUERY_STATUS=ERROR`` answers
  become ``ArchiveError`` with IRSA's message; rows normalised to the simulated backend's table
  (``spxflow.archive.sia``).
- Catalog discovery (``discover_many``): ``archive.irsa.discovery: tap`` (default) uploads the
  positions to IRSA TAP, ``tap_upload_rows`` per query (``spxflow.archive.tap``), with the same
  retries and host slots; ``sia`` runs the per-position SIA2 queries above. Both give equal
  tables.
- Cutouts: ``access_url?center=<ra>,<dec>&size=<deg>&gzip=false`` streamed through
  ``spxflow.archive.http.download`` (retries, backoff with jitter, Retry-After, per-host
  concurrency limit shared by threads and processes, validation before an atomic rename).
- Releases: every configured collection must be one ``format.release_of_collection`` knows
  (``spherex_qr2``/``_deep``, ``spherex_qr3``/``_deep``); discovery rows keep their
  ``obs_collection``, and the same file returned by wide and deep, or one exposure under two
  processing tokens, is left for ``spxflow.discovery.deduplicate`` to resolve (and report).
- Calibration: IRSA's fixed paths ``<ibe_data_url>/<release>/<family>/<token>/<det>/<file>``
  (``format.calibration_key``; ``shared/spherex_format.md`` §4, §8.6), downloaded once,
  validated per family (``format.CALIBRATION_HDUS``) and checksummed.

Every URL goes through ``base_url_override`` (scheme+host replaced), which is how the loopback
emulator (``spxflow.archive.emulator``) stands in for IRSA.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
from astropy.io import fits

from spxflow.archive.base import (
    Archive,
    ArchiveError,
    CalibrationFile,
    CutoutResult,
    NoOverlapError,
)
from spxflow.archive.http import (
    DownloadError,
    HostSlots,
    RetryPolicy,
    download,
    make_session,
    rewrite_url,
)
from spxflow.archive.sia import SiaClient
from spxflow.archive.tap import TapClient
from spxflow.archive.validate import cutout_problem
from spxflow.config import block_defaults
from spxflow.fileio import sha256_file
from spxflow.format import (
    CALIBRATION_HDUS,
    CALIBRATION_TOKENS,
    DETECTORS,
    RELEASES,
    calibration_file_name,
    calibration_id,
    calibration_key,
    release_of_collection,
)

CONFIG_DEFAULTS = block_defaults("archive", "irsa")  # the schema is their one home


class IrsaArchive(Archive):
    """The IRSA backend (``archive.backend: irsa``); see the module docstring."""

    name = "irsa"

    def __init__(
        self,
        sia_url: str = CONFIG_DEFAULTS["sia_url"],
        collections: Sequence[str] = tuple(CONFIG_DEFAULTS["collections"]),
        ibe_data_url: str = CONFIG_DEFAULTS["ibe_data_url"],
        base_url_override: str | None = CONFIG_DEFAULTS["base_url_override"],
        timeout_s: float = CONFIG_DEFAULTS["timeout_s"],
        max_concurrent_per_host: int = CONFIG_DEFAULTS["max_concurrent_per_host"],
        retry_attempts: int = CONFIG_DEFAULTS["retry_attempts"],
        backoff_base_s: float = CONFIG_DEFAULTS["backoff_base_s"],
        backoff_max_s: float = CONFIG_DEFAULTS["backoff_max_s"],
        maxrec: int = CONFIG_DEFAULTS["maxrec"],
        discovery: str = CONFIG_DEFAULTS["discovery"],
        tap_url: str = CONFIG_DEFAULTS["tap_url"],
        tap_upload_rows: int = CONFIG_DEFAULTS["tap_upload_rows"],
        tap_maxrec: int = CONFIG_DEFAULTS["tap_maxrec"],
        lock_dir: str | os.PathLike | None = CONFIG_DEFAULTS["lock_dir"],
        pixels: str = CONFIG_DEFAULTS["pixels"],
        s3_url: str = CONFIG_DEFAULTS["s3_url"],
        s3_max_concurrency: int = CONFIG_DEFAULTS["s3_max_concurrency"],
        s3_timeout_s: float = CONFIG_DEFAULTS["s3_timeout_s"],
        cache_dir: str | os.PathLike | None = None,
    ):
        if int(max_concurrent_per_host) < 1:
            raise ValueError("config archive.irsa.max_concurrent_per_host must be >= 1")
        if int(retry_attempts) < 1:
            raise ValueError("config archive.irsa.retry_attempts must be >= 1")
        if not float(timeout_s) > 0:
            raise ValueError("config archive.irsa.timeout_s must be > 0")
        self.base_url_override = base_url_override or None
        self.sia_url = rewrite_url(sia_url, self.base_url_override)
        self.collections = check_collections(collections)
        # Releases the configured collections belong to, in RELEASES order ("qr2", "qr3").
        self.releases = tuple(
            r for r in RELEASES if r in {release_of_collection(c) for c in self.collections}
        )
        if pixels not in ("s3", "cutout"):
            raise ValueError(f"config archive.irsa.pixels must be s3 or cutout, got {pixels!r}")
        self.pixels = pixels
        if discovery not in ("tap", "sia"):
            raise ValueError(f"config archive.irsa.discovery must be tap or sia, got {discovery!r}")
        if int(tap_upload_rows) < 1 or int(tap_maxrec) < 1:
            raise ValueError("config archive.irsa.tap_upload_rows and tap_maxrec must be >= 1")
        self.discovery = discovery
        # Discovery rows carry real IBE URLs; only those under this root are read from S3.
        self.ibe_root = check_ibe_data_url(ibe_data_url)
        self.s3_options = {
            "s3_url": s3_url,
            "max_concurrency": int(s3_max_concurrency),
            "timeout_s": float(s3_timeout_s),
            "attempts": int(retry_attempts),
            "backoff_s": float(backoff_base_s),
            "backoff_max_s": float(backoff_max_s),
            "cache_dir": None if cache_dir is None else str(cache_dir),
        }
        self._s3 = None
        self.ibe_data_url = rewrite_url(self.ibe_root, self.base_url_override)
        self.timeout_s = float(timeout_s)
        self.max_concurrent = int(max_concurrent_per_host)
        self.policy = RetryPolicy(int(retry_attempts), float(backoff_base_s), float(backoff_max_s))
        self.slots = HostSlots(self.max_concurrent, lock_dir)
        self.session = make_session(max(4, self.max_concurrent * 2), self.timeout_s)
        self.sia = SiaClient(
            self.sia_url,
            self.collections,
            maxrec=int(maxrec),
            session=self.session,
            slot=self.slots,
            retry=lambda fn: self.policy.run(fn, f"SIA2 {self.sia_url}"),
        )
        self.tap_url = rewrite_url(tap_url, self.base_url_override)
        self.tap = TapClient(
            self.tap_url,
            self.collections,
            self.ibe_root,
            upload_rows=int(tap_upload_rows),
            maxrec=int(tap_maxrec),
            max_concurrent=self.max_concurrent,
            session=self.session,
            slot=self.slots,
            retry=lambda fn: self.policy.run(fn, f"TAP {self.tap_url}"),
        )

    @classmethod
    def from_config(cls, cfg: Mapping | None, cache_dir: str | None = None) -> IrsaArchive:
        """Build from the ``archive.irsa`` config mapping (unknown keys are an error)."""
        cfg = dict(cfg or {})
        unknown = sorted(set(cfg) - set(CONFIG_DEFAULTS))
        if unknown:
            raise ValueError(
                f"config archive.irsa: unknown key(s) {unknown}; known: {sorted(CONFIG_DEFAULTS)}"
            )
        return cls(**{**CONFIG_DEFAULTS, **cfg}, cache_dir=cache_dir)

    # ------------------------------------------------------------------ discovery
    def discover(self, ra: float, dec: float, radius_arcsec: float = 0.0) -> pd.DataFrame:
        return self.sia.discover(float(ra), float(dec), float(radius_arcsec))

    def discover_many(
        self, positions: Sequence[tuple[str, float, float]], radius_arcsec: float = 0.0
    ) -> dict[str, pd.DataFrame]:
        """TAP with uploaded positions (``discovery: tap``), or one SIA2 query set per position,
        at most ``max_concurrent_per_host`` at a time (``discovery: sia``)."""
        positions = list(positions)
        if self.discovery == "tap":
            return self.tap.discover_many(positions, float(radius_arcsec))
        width = max(1, min(self.max_concurrent, len(positions)))
        with ThreadPoolExecutor(max_workers=width) as pool:
            tables = list(pool.map(lambda p: self.discover(p[1], p[2], radius_arcsec), positions))
        return {str(p[0]): t for p, t in zip(positions, tables, strict=True)}

    # ------------------------------------------------------------------ windows (S3)
    @property
    def s3(self):
        """The S3 range reader, made on first use (a job that reads no pixels opens none)."""
        if self._s3 is None:
            from spxflow.archive.s3pixels import S3Pixels

            opts = dict(self.s3_options)
            self._s3 = S3Pixels(opts.pop("s3_url"), self.ibe_root, **opts)
        return self._s3

    def fetch_windows(
        self, rows: Iterable[Mapping], ra: float, dec: float, half_size: int, size_arcsec: float
    ):
        return self.s3.fetch_windows(rows, float(ra), float(dec), half_size, size_arcsec)

    def replaced_objects(self, entries: list[dict]) -> dict[str, str]:
        if not any(e.get("etag") for e in entries):
            return {}
        return self.s3.replaced_objects(entries)

    # ------------------------------------------------------------------ cutouts
    def cutout_request(self, row: Mapping, ra: float, dec: float, size_arcsec: float):
        """(URL, params) of the IRSA cutout of ``row`` centred on (ra, dec)."""
        url = str(row.get("access_url", "") or "").split("?", 1)[0]
        if not url:
            raise ArchiveError("discovery row has no access_url")
        params = {
            "center": f"{float(ra)!r},{float(dec)!r}",
            "size": repr(float(size_arcsec) / 3600.0),
            "gzip": "false",
        }
        return rewrite_url(url, self.base_url_override), params

    def fetch_cutout(
        self, row: Mapping, ra: float, dec: float, size_arcsec: float, dest_dir: Path
    ) -> CutoutResult:
        image_id = str(row.get("obs_publisher_did", "") or row.get("access_url", ""))
        url = str(row.get("access_url", "") or "").split("?", 1)[0]
        file_name = url.rsplit("/", 1)[-1]
        result = CutoutResult(image_id=image_id, file_name=file_name, status="failed")
        try:
            if not file_name.endswith(".fits"):
                raise ArchiveError(f"access_url {url!r} does not name a Level-2 FITS file")
            final = Path(dest_dir) / file_name
            if final.exists():
                # A validated cutout from an earlier attempt (a rerun fetches only failures).
                if not cutout_problem(final):
                    return self._ok(result, final, attempts=0)
                final.unlink()
            req_url, params = self.cutout_request(row, ra, dec, size_arcsec)
            got = download(
                req_url,
                final,
                session=self.session,
                timeout_s=self.timeout_s,
                policy=self.policy,
                slots=self.slots,
                validate=cutout_problem,
                params=params,
            )
        except NoOverlapError as exc:
            result.status, result.reason, result.attempts = "no_overlap", str(exc), 1
            return result
        except Exception as exc:  # noqa: BLE001 - one image's failure is recorded, never raised
            result.reason = f"{type(exc).__name__}: {exc}"
            result.attempts = getattr(exc, "attempts", 0) or 1
            return result
        result.status = "ok"
        result.path = got.path
        result.size_bytes = got.size_bytes
        result.sha256 = got.sha256
        result.attempts = got.attempts
        return result

    @staticmethod
    def _ok(result: CutoutResult, path: Path, attempts: int) -> CutoutResult:
        result.status = "ok"
        result.path = str(path)
        result.size_bytes = path.stat().st_size
        result.sha256 = sha256_file(path)
        result.attempts = attempts
        return result

    def fetch_cutouts(
        self,
        rows: Iterable[Mapping],
        ra: float,
        dec: float,
        size_arcsec: float,
        dest_dir: Path,
    ) -> list[CutoutResult]:
        """All cutouts of one source through a thread pool no wider than the per-host limit
        (results in row order; one image's failure never stops the others)."""
        rows = list(rows)
        if not rows:
            return []
        Path(dest_dir).mkdir(parents=True, exist_ok=True)
        width = max(1, min(self.max_concurrent, len(rows)))
        with ThreadPoolExecutor(max_workers=width) as pool:
            return list(
                pool.map(lambda r: self.fetch_cutout(r, ra, dec, size_arcsec, dest_dir), rows)
            )

    # ------------------------------------------------------------------ calibration
    def calibration_url(self, release: str, family: str, detector: int) -> str:
        """IRSA path of a calibration product: ``<ibe_data_url>/<release>/<family>/<token>/
        <det>/<file>`` (``format.calibration_key``, the token chosen per detector)."""
        if release not in RELEASES:
            raise ArchiveError(
                f"unknown calibration release {release!r}; known: {sorted(RELEASES)}"
            )
        if family not in CALIBRATION_TOKENS.get(release, {}):
            raise ArchiveError(
                f"no calibration family {family!r} in release {release!r}; known: "
                f"{sorted(CALIBRATION_TOKENS.get(release, {}))}"
            )
        if isinstance(detector, bool) or detector not in DETECTORS:
            raise ArchiveError(f"calibration detector must be 1..6, got {detector!r}")
        return f"{self.ibe_data_url}/{calibration_key(release, family, int(detector))}"

    def fetch_calibration(
        self, release: str, family: str, detector: int, dest: Path
    ) -> CalibrationFile:
        """Download (once) to ``dest`` (a ``.fits`` path) or into directory ``dest`` (under
        ``format.calibration_file_name``); a valid file already there is not fetched again."""
        url = self.calibration_url(release, family, detector)
        detector = int(detector)
        dest = Path(dest)
        if dest.suffix.lower() != ".fits" or dest.is_dir():
            dest = dest / calibration_file_name(release, family, detector)

        def problem(path: Path) -> str:
            return calibration_problem(path, family)

        if not (dest.exists() and not problem(dest)):
            try:
                download(
                    url,
                    dest,
                    session=self.session,
                    timeout_s=self.timeout_s,
                    policy=self.policy,
                    slots=self.slots,
                    validate=problem,
                )
            except (DownloadError, NoOverlapError) as exc:
                raise ArchiveError(
                    f"calibration {release} {family} D{detector} from {url}: {exc}"
                ) from None
        return CalibrationFile(
            release=release,
            family=family,
            detector=detector,
            calibration_id=calibration_id(release, family, detector),
            path=str(dest),
            size_bytes=dest.stat().st_size,
            sha256=sha256_file(dest),
        )

    # ------------------------------------------------------------------ truth
    def truth_sed(self, ra: float, dec: float, wavelength_um, *, bandwidth_um=None) -> None:
        """Real archive data carry no injected truth: always None."""
        return None


def check_collections(collections: Sequence[str]) -> list[str]:
    """The configured science collections, each one a release of ``format.RELEASES`` knows."""
    if isinstance(collections, str):
        collections = [collections]
    out = [str(c) for c in collections]
    if not out:
        raise ValueError("config archive.irsa.collections: at least one collection needed")
    science = [c for r in RELEASES.values() for c in r.collections]
    for c in out:
        try:
            release = release_of_collection(c)
        except ValueError:
            raise ValueError(
                f"config archive.irsa.collections: unknown SPHEREx collection {c!r}; "
                f"known: {science}"
            ) from None
        if c not in RELEASES[release].collections:
            raise ValueError(
                f"config archive.irsa.collections: {c!r} is a calibration collection, not a "
                f"Level-2 science collection; known: {science} (calibration products come "
                "from their fixed IBE paths)"
            )
    twice = sorted({c for c in out if out.count(c) > 1})
    if twice:
        raise ValueError(f"config archive.irsa.collections: {twice} listed more than once")
    return out


def check_ibe_data_url(url: str) -> str:
    """``archive.irsa.ibe_data_url`` without a trailing '/'; it is the data root and must not
    end in a release segment (the old meaning of the key: ``…/spherex/qr2``)."""
    root = str(url).rstrip("/")
    last = root.rsplit("/", 1)[-1]
    if last in RELEASES:
        raise ValueError(
            f"config archive.irsa.ibe_data_url {url!r} ends with the release segment "
            f"'/{last}': the key is now the IBE data root without the release (e.g. "
            f"{root[: -len(last) - 1]!r}); release paths ({', '.join(RELEASES)}) are appended "
            "by the code"
        )
    return root


# HDUs of calibration products that are binary tables; every other listed HDU is a 2-D image.
_TABLE_HDUS = {"WCS-WAVE", "EPSF"}


def calibration_problem(path: str | os.PathLike, family: str) -> str:
    """Empty string if ``path`` is a readable calibration file with the HDUs of ``family``
    (``format.CALIBRATION_HDUS``): 2-D images, and non-empty binary tables for ``WCS-WAVE``
    and ``EPSF`` (the latter with an ``EPSF`` column)."""
    try:
        want = CALIBRATION_HDUS[family]
    except KeyError:
        return f"unknown calibration family {family!r}; known: {sorted(CALIBRATION_HDUS)}"
    try:
        with fits.open(path, memmap=False, lazy_load_hdus=False) as hdul:
            names = [h.name for h in hdul]
            missing = [n for n in want if n not in names]
            if missing:
                return f"HDUs {names} lack {missing}"
            for h in hdul[1:]:
                _ = h.data
            for n in want:
                hdu = hdul[n]
                if n in _TABLE_HDUS:
                    if not isinstance(hdu, fits.BinTableHDU) or hdu.data is None:
                        return f"{n} is not a binary table"
                    if len(hdu.data) == 0:
                        return f"{n} table has no rows"
                    if n == "EPSF" and "EPSF" not in hdu.columns.names:
                        return f"EPSF table lacks the EPSF column (has {hdu.columns.names})"
                elif (
                    not isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU))
                    or hdu.data is None
                    or hdu.data.ndim != 2
                ):
                    return f"{n} is not a 2-D image"
    except (OSError, ValueError, TypeError, IndexError, KeyError) as exc:
        return f"not a readable FITS file: {type(exc).__name__}: {exc}"
    return ""
