"""Per-source output manifests and their verification (the ``check`` rule)."""

from __future__ import annotations

import os
from pathlib import Path

from spxflow.fileio import read_json, sha256_file, write_json_atomic

MANIFEST_VERSION = "1"


def file_entry(path: str | os.PathLike, root: str | os.PathLike = ".") -> dict:
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
    files: list[str],
    measurement_ids: list[str],
    rows_sha256: str,
    config_hash: str,
    code_version: str,
    kind: str = "science",
    problems: list[str] | None = None,
) -> dict:
    """Write a manifest listing every output file with size and sha256."""
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "kind": kind,
        "source": source,
        "config_hash": config_hash,
        "code_version": code_version,
        "rows_sha256": rows_sha256,
        "measurement_ids": list(measurement_ids),
        "files": [file_entry(f) for f in sorted(files)],
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
