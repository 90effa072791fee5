"""The one interface every archive backend (simulated, IRSA) implements.

Rules and scripts talk to an ``Archive`` obtained from ``spxflow.archive.make_archive``
and never know which backend is active.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd

from spxflow.format import SIA_COLUMN_NAMES


@dataclass
class CutoutResult:
    """Outcome of fetching one cutout; recorded per image in ``results/cutouts/{source}.json``."""

    image_id: str  # obs_publisher_did of the Level-2 image
    file_name: str  # Level-2 file name; the cutout is stored under this name
    status: str  # "ok", "failed" or "no_overlap"
    reason: str = ""  # why it is not "ok"
    path: str | None = None  # final path of a validated file (status "ok" only)
    size_bytes: int = 0
    sha256: str = ""
    attempts: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class WindowResult:
    """Outcome of reading one measurement window (no file); its entry (``to_dict``, without
    the pixels) is recorded per image in ``results/cutouts/{source}.json``."""

    image_id: str
    file_name: str
    status: str  # "ok", "failed" or "no_overlap"
    reason: str = ""
    flag: str = "FETCH_FAILED"  # result flag of a failure row (READ_FAILED: a bad file)
    key: str = ""  # object key of the whole file (S3); "" for the simulator
    etag: str = ""  # of the object read (S3); "" for the simulator
    size_bytes: int = 0  # bytes transferred for this window
    requests: int = 0
    attempts: int = 0
    replaced: bool = False  # the object changed (new ETag) while it was read, and was re-read
    cutout: Any = field(default=None, repr=False)  # photometry Cutout of the window (ok)
    truth: dict | None = None  # injected truth (simulator only), never read by the fit

    def fail(self, exc: Exception) -> WindowResult:
        """Record why the window could not be read: a target off the frame is
        ``no_overlap``; a bad file keeps its CutoutError flag (READ_FAILED, BAD_WCS); an
        archive error stays FETCH_FAILED with the error named."""
        flag = getattr(exc, "flag", None)  # photometry.CutoutError (not imported: no cycle)
        if flag is not None:
            self.status = "no_overlap" if flag == "OFF_CUTOUT" else "failed"
            self.reason, self.flag = str(exc), flag
        else:
            self.status, self.reason = "failed", f"{type(exc).__name__}: {exc}"
        return self

    def to_dict(self) -> dict:
        # not asdict: it would deep-copy the pixels
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "cutout"}
        return {**out, "path": None, "sha256": "", "pixels": "window"}


@dataclass
class CalibrationFile:
    family: str  # a family of format.CALIBRATION_TOKENS[release], e.g. "spectral_wcs", "epsf"
    release: str  # "qr2" / "qr3": which release's product (tokens differ per release)
    detector: int
    calibration_id: str
    path: str
    size_bytes: int
    sha256: str

    def to_dict(self) -> dict:
        return asdict(self)


class ArchiveError(RuntimeError):
    """An archive request failed in a way the caller should report (names what failed)."""


class NoOverlapError(ArchiveError):
    """The requested cutout does not overlap the image (IRSA answers HTTP 400)."""


class Archive(abc.ABC):
    """A source of SPHEREx Level-2 discovery tables, cutouts and calibration files."""

    name: str = "abstract"
    # How a measure job takes pixels: "cutout" (fetch_cutouts, files) or a windowed mode
    # ("window", "s3": fetch_windows); a backend's config block chooses (archive.*.pixels).
    pixels: str = "cutout"

    @property
    def serves_windows(self) -> bool:
        return self.pixels != "cutout"

    @abc.abstractmethod
    def discover(self, ra: float, dec: float, radius_arcsec: float) -> pd.DataFrame:
        """Level-2 images covering (ra, dec): the SIA2 table of §3.1, columns in
        ``SIA_COLUMN_NAMES`` order, sorted by (t_min, obs_publisher_did)."""

    def discover_many(
        self, positions: Sequence[tuple[str, float, float]], radius_arcsec: float
    ) -> dict[str, pd.DataFrame]:
        """Discovery for many (key, ra, dec) positions at once; backends that can answer many
        positions in one pass override this."""
        return {key: self.discover(ra, dec, radius_arcsec) for key, ra, dec in positions}

    @abc.abstractmethod
    def fetch_cutout(
        self, row: Mapping, ra: float, dec: float, size_arcsec: float, dest_dir: Path
    ) -> CutoutResult:
        """Fetch one cutout of discovery ``row`` centred on (ra, dec) into
        ``dest_dir/<Level-2 file name>``: validated before an atomic rename, never raising for
        a per-image failure (the result says why)."""

    def fetch_cutouts(
        self,
        rows: Iterable[Mapping],
        ra: float,
        dec: float,
        size_arcsec: float,
        dest_dir: Path,
    ) -> list[CutoutResult]:
        """All cutouts of one source; backends may fetch concurrently (same order as rows)."""
        return [self.fetch_cutout(row, ra, dec, size_arcsec, dest_dir) for row in rows]

    def fetch_windows(
        self, rows: Iterable[Mapping], ra: float, dec: float, half_size: int, size_arcsec: float
    ) -> list[WindowResult]:
        """The fit window of (ra, dec) in every image of ``rows`` (``photometry.window``: the
        target's pixel ± ``half_size`` within the ``size_arcsec`` cutout), read into memory;
        never raising for a per-image failure. Same order as rows."""
        raise ArchiveError(f"the {self.name} backend serves no windows; use pixels: cutout")

    def replaced_objects(self, entries: list[dict]) -> dict[str, str]:
        """``image_id -> recorded ETag`` of the index entries whose object the archive has
        replaced since (reprocessing); backends without ETags replace nothing."""
        return {}

    @abc.abstractmethod
    def fetch_calibration(
        self, release: str, family: str, detector: int, dest: Path
    ) -> CalibrationFile:
        """Write calibration product ``family`` of ``release`` for ``detector`` to ``dest`` (a
        ``.fits`` path, or a directory to hold ``format.calibration_file_name(release, family,
        detector)``), atomically."""

    def truth_sed(self, ra: float, dec: float, wavelength_um, *, bandwidth_um=None):
        """Injected SED [µJy] at ``wavelength_um`` of a simulated source; None for real data."""
        return None


def normalise_discovery(df: pd.DataFrame) -> pd.DataFrame:
    """Same columns, order and row order for every backend; raises naming missing columns."""
    missing = [c for c in SIA_COLUMN_NAMES if c not in df.columns]
    if missing:
        raise ArchiveError(f"discovery table lacks SIA2 columns {missing}")
    out = df.loc[:, list(SIA_COLUMN_NAMES)].copy()
    out = out.sort_values(["t_min", "obs_publisher_did"], kind="mergesort")
    return out.reset_index(drop=True)
