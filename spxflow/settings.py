"""The two typed objects every job gets: what it measures (science) and how it runs (runtime).

``Science`` holds every setting that changes a measured number; rules pass it through
``params:`` so that changing one re-runs the jobs it affects. ``Runtime`` holds the knobs that
never change a result (URLs, timeouts, concurrency, cleanup, disk bound); jobs read it from the
config, outside ``params:``, so changing one re-runs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from spxflow.config import completed_config
from spxflow.format import RELEASES, calibration_products, release_of_collection
from spxflow.identity import science_config_hash
from spxflow.photometry import PHOTOMETRY_VERSION, PhotometrySettings

# Keys of each backend's block that change what is discovered or measured.
ARCHIVE_SCIENCE_KEYS = {
    "simulated": (
        "seed",
        "passes",
        "noise",
        "psf_header_erratum",
        "field_stars",
        "truth_table",
        "releases",
        "qr3_days",
    ),
    "irsa": ("collections",),
}


@dataclass(frozen=True)
class ArchiveScience:
    backend: str
    search_radius_arcsec: float
    # The backend block's science keys (ARCHIVE_SCIENCE_KEYS).
    options: dict

    def to_params(self) -> dict:
        return {
            "backend": self.backend,
            "search_radius_arcsec": self.search_radius_arcsec,
            **self.options,
        }

    @property
    def releases(self) -> tuple[str, ...]:
        """Releases this archive configuration discovers images in."""
        if self.backend == "irsa":
            return tuple(sorted({release_of_collection(c) for c in self.options["collections"]}))
        return tuple(sorted(self.options["releases"]))

    @classmethod
    def from_params(cls, params: dict) -> ArchiveScience:
        params = dict(params)
        backend = params.pop("backend")
        radius = float(params.pop("search_radius_arcsec"))
        return cls(backend, radius, params)


@dataclass(frozen=True)
class Science:
    archive: ArchiveScience
    photometry: PhotometrySettings
    photometry_version: str = PHOTOMETRY_VERSION

    @classmethod
    def from_config(cls, config: dict) -> Science:
        config = completed_config(config)
        archive = config["archive"]
        backend = archive["backend"]
        block = archive[backend]
        return cls(
            ArchiveScience(
                backend,
                float(archive["search_radius_arcsec"]),
                {k: block[k] for k in ARCHIVE_SCIENCE_KEYS[backend]},
            ),
            PhotometrySettings.from_config(config["photometry"]),
        )

    def to_params(self) -> dict:
        """Plain, deterministic values for ``params:`` (compared by Snakemake between runs)."""
        return {
            "archive": self.archive.to_params(),
            "photometry": self.photometry.science_dict(),
            "photometry_version": self.photometry_version,
        }

    @classmethod
    def from_params(cls, params: dict) -> Science:
        return cls(
            ArchiveScience.from_params(params["archive"]),
            PhotometrySettings.from_config(params["photometry"]),
            params["photometry_version"],
        )

    @property
    def config_hash(self) -> str:
        """The hash recorded in every spectrum row and measurement id."""
        return science_config_hash(self.photometry.science_dict(), self.photometry_version)


def calibration_needed(science: Science) -> list[tuple[str, str, int]]:
    """(release, family, detector) of every product the measurements use: each release's own,
    plus the QR3 products that serve QR2-layout images (flux corrections on the r7 scale, the
    ePSF library for ``qr2_psf: epsf``)."""
    releases = science.archive.releases
    products = calibration_products(releases)
    if any(RELEASES[r].layout == "qr2" for r in releases) and "qr3" not in releases:
        families = set()
        if science.photometry.calibration_scale == "r7":
            families.add("l3_flux_corrections")
        if science.photometry.qr2_psf == "epsf":
            families.add("epsf")
        products += [p for p in calibration_products(["qr3"]) if p[1] in families]
    return products


@dataclass(frozen=True)
class Runtime:
    # The backend block's keys that are not science (URLs, timeouts, concurrency, ...).
    archive: dict
    cleanup: str
    max_live_cutout_gb: float | None
    cutout_budget_max_wait_s: float

    @classmethod
    def from_config(cls, config: dict) -> Runtime:
        config = completed_config(config)
        backend = config["archive"]["backend"]
        block = config["archive"][backend]
        science = ARCHIVE_SCIENCE_KEYS[backend]
        return cls(
            archive={k: v for k, v in block.items() if k not in science},
            cleanup=config["cleanup"],
            max_live_cutout_gb=config["max_live_cutout_gb"],
            cutout_budget_max_wait_s=float(config["cutout_budget_max_wait_s"]),
        )
