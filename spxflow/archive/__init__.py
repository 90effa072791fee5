"""Archive backends behind one interface; ``make_archive(config)`` picks the configured one."""

from __future__ import annotations

from spxflow.archive.base import (
    Archive,
    ArchiveError,
    CalibrationFile,
    CutoutResult,
    NoOverlapError,
    normalise_discovery,
)

__all__ = [
    "Archive",
    "ArchiveError",
    "CalibrationFile",
    "CutoutResult",
    "NoOverlapError",
    "make_archive",
    "normalise_discovery",
]


def make_archive(config: dict) -> Archive:
    """Build the backend named by ``config['archive']['backend']`` from the workflow config."""
    archive_cfg = config.get("archive", {})
    backend = archive_cfg.get("backend", "simulated")
    if backend == "simulated":
        from spxflow.archive.simulated import SimulatedArchive

        return SimulatedArchive.from_config(archive_cfg.get("simulated", {}))
    if backend == "irsa":
        from spxflow.archive.irsa import IrsaArchive

        return IrsaArchive.from_config(archive_cfg.get("irsa", {}))
    raise ArchiveError(f"config key archive.backend: unknown backend {backend!r}")
