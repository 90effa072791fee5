"""Archive backends behind one interface; ``make_archive`` builds the configured one."""

from __future__ import annotations

from spxflow.archive.base import (
    Archive,
    ArchiveError,
    CalibrationFile,
    CutoutResult,
    NoOverlapError,
    WindowResult,
    normalise_discovery,
)

__all__ = [
    "Archive",
    "ArchiveError",
    "CalibrationFile",
    "CutoutResult",
    "NoOverlapError",
    "WindowResult",
    "make_archive",
    "normalise_discovery",
]


def make_archive(science, runtime: dict, cache_dir: str | None = None) -> Archive:
    """The backend named by ``science.backend``, built from its science options
    (``spxflow.settings.ArchiveScience``) and its runtime knobs (``Runtime.archive``);
    ``cache_dir`` holds what a backend caches across jobs (IRSA: S3 file layouts; simulated:
    its EPSF tables under ``sim/``)."""
    options = {**science.options, **runtime}
    if science.backend == "simulated":
        from spxflow.archive.simulated import SimulatedArchive

        return SimulatedArchive.from_config(options, cache_dir=cache_dir)
    if science.backend == "irsa":
        from spxflow.archive.irsa import IrsaArchive

        return IrsaArchive.from_config(options, cache_dir=cache_dir)
    raise ArchiveError(f"config key archive.backend: unknown backend {science.backend!r}")
