"""Re-running measured sources without losing what they measured.

``python -m spxflow rerun`` marks sources before Snakemake builds its DAG (never while the
Snakefile is parsed, which happens for dry runs, ``--lint``, ``--report`` and in every spawned
job). Marking a source sets its cutout index and measurements aside under ``*.retry.*`` names:
the missing cutout index (requested by ``rule all``) makes Snakemake re-run the measure job of
the source's chunk, which carries the set-aside rows over instead of fetching those images
again (Snakemake deletes a job's outputs before it runs, hence the other name) and removes the
set-aside files once it has written its own outputs. The other sources of that job are marked
too (``mark_mates``), and ``--update`` also sets the batch's discovery table aside, so its
discover job queries the archive again.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field

import pandas as pd

from spxflow.fileio import read_json
from spxflow.identity import measurement_id


def set_aside_paths(source: str, results_dir: str = "results") -> dict[str, tuple[str, str]]:
    """What a mark sets aside: name -> (output path, set-aside path)."""
    index = os.path.join(results_dir, "cutouts", f"{source}.json")
    meas = os.path.join(results_dir, "measurements", f"{source}.parquet")
    stamps = os.path.join(results_dir, "qa", source, f"{source}_stamps.npz")
    return {
        "cutout_index": (index, index[: -len(".json")] + ".retry.json"),
        "measurements": (meas, meas[: -len(".parquet")] + ".retry.parquet"),
        "stamps": (stamps, stamps[: -len(".npz")] + ".retry.npz"),
    }


def _set_aside(source: str, results_dir: str) -> None:
    for path, aside in set_aside_paths(source, results_dir).values():
        if os.path.exists(path):
            os.replace(path, aside)


def mark_for_update(sources: list[str], results_dir: str = "results") -> list[str]:
    """Mark every measured source: its measure job re-queries discovery once, carries over
    the images it measured before and fetches only new ones."""
    marked = [
        s for s in sources if os.path.exists(set_aside_paths(s, results_dir)["cutout_index"][0])
    ]
    for source in marked:
        _set_aside(source, results_dir)
    return marked


def mark_failed(sources: list[str], results_dir: str = "results") -> list[str]:
    """Mark the sources whose cutout index records failed fetches: their measure job fetches
    only the failed images again."""
    marked = []
    for source in sources:
        path = set_aside_paths(source, results_dir)["cutout_index"][0]
        if os.path.exists(path) and read_json(path).get("n_failed", 0):
            _set_aside(source, results_dir)
            marked.append(source)
    return marked


def mark_mates(
    marked: list[str], results_dir: str = "results", stage: str = "measure"
) -> list[str]:
    """Mark the other measured sources that share a job with a marked source (the records of
    ``stage`` say which: "measure" for a chunk, "discover" for a batch of chunks): Snakemake
    re-runs such a job as a whole, so they carry over what they measured instead of fetching
    it all again."""
    chosen, mates = set(marked), []
    for path in sorted(glob.glob(os.path.join(results_dir, "chunks", stage, "*.json"))):
        members = read_json(path)["sources"]
        if chosen & set(members):
            mates += [s for s in members if s not in chosen]
    return mark_for_update(mates, results_dir)


def set_aside_discovery(marked: list[str], results_dir: str = "results") -> list[str]:
    """Set aside the discovery tables of the batches that hold a marked source, so that their
    discover job queries the archive again (``rerun --update``); returns the tables."""
    chosen, tables = set(marked), []
    for path in sorted(glob.glob(os.path.join(results_dir, "chunks", "discover", "*.json"))):
        record = read_json(path)
        table = record["files"]["table"]
        if chosen & set(record["sources"]) and os.path.exists(table):
            os.replace(table, set_aside_table(table))
            tables.append(table)
    return tables


@dataclass(frozen=True)
class CarryOver:
    """What an earlier run of a marked source measured and this run keeps."""

    # image_id -> the earlier cutout-index entry (fetch succeeded).
    entries: dict = field(default_factory=dict)
    # image_id -> the earlier measurement row.
    rows: dict = field(default_factory=dict)
    # file_name -> the earlier QA stamp (data, model, residual, mask, label).
    stamps: dict = field(default_factory=dict)
    # file_name -> the earlier measurement window (when pixels were read as windows).
    windows: dict = field(default_factory=dict)


def carried_over(
    source: str,
    target: dict,
    backend: str,
    config_hash: str,
    photometry_version: str,
    results_dir: str = "results",
) -> CarryOver:
    """The set-aside measurements this run would reproduce (same backend, cutout size and
    science settings: the measurement id says so); empty when the source was not marked."""
    from spxflow.stamps import read_stamp_windows, read_stamps

    paths = set_aside_paths(source, results_dir)
    index_path, meas_path = paths["cutout_index"][1], paths["measurements"][1]
    if not (os.path.exists(index_path) and os.path.exists(meas_path)):
        return CarryOver()
    previous = read_json(index_path)
    if (
        previous.get("backend") != backend
        or previous.get("cutout_size_arcsec") != target["cutout_size_arcsec"]
    ):
        return CarryOver()
    rows = {}
    for r in pd.read_parquet(meas_path).to_dict(orient="records"):
        expected = measurement_id(
            source, r["image_id"], target["cutout_size_arcsec"], config_hash, photometry_version
        )
        if r["measurement_id"] == expected:
            rows[r["image_id"]] = r
    # Rows of images whose fetch failed are not carried: their index entry is not "ok".
    entries = {
        e["image_id"]: e
        for e in previous["images"]
        if e["status"] == "ok" and e["image_id"] in rows
    }
    stamps_path = paths["stamps"][1]
    stamps = read_stamps(stamps_path) if os.path.exists(stamps_path) else {}
    carried_files = {e["file_name"] for e in entries.values()}
    windows = {
        name: w for name, w in read_stamp_windows(stamps_path).items() if name in carried_files
    }
    return CarryOver(entries, {k: rows[k] for k in entries}, stamps, windows)


def drop_carried(carry: CarryOver, image_ids) -> CarryOver:
    """``carry`` without the images in ``image_ids`` (their objects changed: measure again)."""
    drop = set(image_ids)
    entries = {k: e for k, e in carry.entries.items() if k not in drop}
    names = {e["file_name"] for e in entries.values()}
    return CarryOver(
        entries,
        {k: r for k, r in carry.rows.items() if k not in drop},
        {n: st for n, st in carry.stamps.items() if n in names},
        {n: w for n, w in carry.windows.items() if n in names},
    )


def carried_frame(carry: CarryOver) -> pd.DataFrame | None:
    """The carried rows as a table (None when nothing is carried)."""
    if not carry.rows:
        return None
    return pd.DataFrame(list(carry.rows.values()))


def set_aside_table(path: str) -> str:
    """Where ``rerun --update`` sets a batch's discovery table aside (its discover job then
    queries the archive again)."""
    return path[: -len(".parquet")] + ".retry.parquet"


def discard_set_aside_table(path: str) -> None:
    if os.path.exists(set_aside_table(path)):
        os.unlink(set_aside_table(path))


def discard_set_aside(source: str, results_dir: str = "results") -> None:
    """Remove a marked source's set-aside files once its new outputs are written."""
    for _, aside in set_aside_paths(source, results_dir).values():
        if os.path.exists(aside):
            os.unlink(aside)
