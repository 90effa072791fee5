"""Per-source output manifests and their verification (the ``check`` rule)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from spxflow.fileio import Written, read_json, sha256_file, write_json_atomic

log = logging.getLogger(__name__)

MANIFEST_VERSION = "1"


def file_entry(path: str | os.PathLike | Written, root: str | os.PathLike = ".") -> dict:
    """Manifest entry of a file: from its ``Written`` record (no re-read) or from disk."""
    if isinstance(path, Written):
        return path.entry(root)
    p = Path(path)
    return {
        "path": os.path.relpath(p, root),
        "size_bytes": p.stat().st_size,
        "sha256": sha256_file(p),
    }


def write_manifest(
    out_path: str | os.PathLike,
    *,
    source: str,
    files: list[str | Written],
    measurement_ids: list[str],
    rows_sha256: str,
    config_hash: str,
    code_version: str,
    kind: str = "science",
    problems: list[str] | None = None,
) -> dict:
    """Write a manifest listing every file with size and sha256: inputs as paths (hashed from
    disk), this job's outputs as ``Written`` records."""
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "kind": kind,
        "source": source,
        "config_hash": config_hash,
        "code_version": code_version,
        "rows_sha256": rows_sha256,
        "measurement_ids": list(measurement_ids),
        "files": sorted((file_entry(f) for f in files), key=lambda e: e["path"]),
        "problems": list(problems or []),
    }
    write_json_atomic(out_path, manifest)
    return manifest


def verify_manifest(path: str | os.PathLike, root: str | os.PathLike = ".") -> list[dict]:
    """Problems found re-verifying one manifest against the files on disk.

    Each problem is ``{"manifest", "path", "status", "detail"}`` with status ``missing``
    (file gone), ``tampered`` (checksum differs), ``stale`` (newer than the manifest:
    rewritten after the manifest was made) or ``incomplete`` (the manifest itself records a
    problem, e.g. a plot that failed).
    """
    problems = []
    manifest = read_json(path)
    mtime = Path(path).stat().st_mtime
    for entry in manifest.get("files", []):
        p = Path(root) / entry["path"]
        if not p.exists():
            problems.append(
                {"path": entry["path"], "status": "missing", "detail": "file not found"}
            )
            continue
        digest = sha256_file(p)
        if digest != entry["sha256"]:
            problems.append(
                {
                    "path": entry["path"],
                    "status": "tampered",
                    "detail": f"sha256 {digest[:12]}… != manifest {entry['sha256'][:12]}…",
                }
            )
        elif p.stat().st_mtime > mtime + 1.0:
            problems.append(
                {"path": entry["path"], "status": "stale", "detail": "newer than its manifest"}
            )
    for text in manifest.get("problems", []):
        problems.append({"path": "", "status": "incomplete", "detail": text})
    for p in problems:
        p["manifest"] = str(path)
    return problems


def check_manifests(manifests: list[str], out_json: str) -> dict:
    """Verify every manifest and write the report. Missing, tampered or stale files fail the
    check; problems the run itself recorded (e.g. full QA skipped because cutouts were
    cleaned up) are reported as warnings."""
    found = []
    for m in manifests:
        found.extend(verify_manifest(m))
    problems = [p for p in found if p["status"] != "incomplete"]
    warnings = [p for p in found if p["status"] == "incomplete"]
    report = {
        "n_manifests": len(manifests),
        "n_problems": len(problems),
        "problems": problems,
        "n_warnings": len(warnings),
        "warnings": warnings,
    }
    write_json_atomic(out_json, report)
    for p in warnings:
        log.warning("recorded problem: %s [manifest %s]", p["detail"], p["manifest"])
    for p in problems:
        log.error("%s: %s (%s) [manifest %s]", p["status"], p["path"], p["detail"], p["manifest"])
    if problems:
        raise RuntimeError(
            f"{len(problems)} output problem(s) in {len(manifests)} manifests; see {out_json}. "
            f"Re-create them with `snakemake --rerun-triggers mtime` or by deleting the listed "
            f"files and running `snakemake`."
        )
    log.info(
        "check: %d manifests verified, no problems, %d recorded warning(s)",
        len(manifests),
        len(warnings),
    )
    return report
