"""Fetching one source's cutouts and the cutout index that records them."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from spxflow.diskbudget import CutoutDiskBudget, estimate_cutout_bytes
from spxflow.fileio import read_json, write_json_atomic
from spxflow.validation import truth_from_cutout

log = logging.getLogger(__name__)


def prepare_cutout_dir(path: str, target: dict) -> None:
    """Keep cutouts kept by an earlier run only if they were cut for the same position and
    size; the request marker says which."""
    marker = os.path.join(path, ".request.json")
    request = {k: target[k] for k in ("ra_deg", "dec_deg", "cutout_size_arcsec")}
    if os.path.isdir(path) and (not os.path.exists(marker) or read_json(marker) != request):
        shutil.rmtree(path)
    write_json_atomic(marker, request)


def fetch_cutouts(
    archive, rows: list[dict], source: str, target: dict, out_dir: str, budget: CutoutDiskBudget
) -> dict[str, dict]:
    """``image_id -> cutout-index entry`` for ``rows``; per-image failures are recorded in the
    entry, never raised. Waits for the live-cutout disk bound first."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    need = estimate_cutout_bytes(len(rows), target["cutout_size_arcsec"])
    with budget.reserve(source, need):
        results = archive.fetch_cutouts(
            rows, target["ra_deg"], target["dec_deg"], target["cutout_size_arcsec"], Path(out_dir)
        )
    fetched = {}
    for res in results:
        entry = res.to_dict()
        entry["path"] = os.path.basename(res.path) if res.path else None
        # Injected truth (simulated files only) is copied for the accuracy rule; the
        # photometry never sees it.
        entry["truth"] = truth_from_cutout(res.path) if res.status == "ok" else None
        fetched[entry["image_id"]] = _logged(entry, source, "cutout")
    return fetched


def window_entries(results, source: str) -> dict[str, dict]:
    """``image_id -> cutout-index entry`` of windows read into memory (failures logged)."""
    return {res.image_id: _logged(res.to_dict(), source, "window") for res in results}


def _logged(entry: dict, source: str, what: str) -> dict:
    if entry["status"] != "ok":
        log.warning(
            "source %s: %s of %s %s: %s",
            source,
            what,
            entry["image_id"],
            entry["status"],
            entry["reason"],
        )
    return entry


def cutout_index(
    source: str,
    backend: str,
    target: dict,
    discovered: list[dict],
    carried: dict[str, dict],
    fetched: dict[str, dict],
    duplicates: list[dict] | None = None,
) -> dict:
    """Per discovered image (in discovery order, after de-duplication): the fetched entry, or
    the earlier run's entry marked ``carried`` when its measurement is carried over; each
    with its release. ``duplicates`` lists the discovery rows dropped as duplicates, and why."""
    from spxflow.discovery import release_of_row

    images = []
    for row in discovered:
        did = str(row["obs_publisher_did"])
        entry = {**carried[did], "path": None, "carried": True} if did in carried else fetched[did]
        images.append({**entry, "release": release_of_row(row)})
    n_ok = sum(e["status"] == "ok" for e in images)
    releases = sorted({e["release"] for e in images})
    return {
        "source": source,
        "backend": backend,
        "cutout_size_arcsec": target["cutout_size_arcsec"],
        "n_images": len(images),
        "n_ok": n_ok,
        "n_failed": len(images) - n_ok,
        "n_by_release": {r: sum(e["release"] == r for e in images) for r in releases},
        "n_duplicates": len(duplicates or []),
        "images": images,
        "duplicates": list(duplicates or []),
    }
