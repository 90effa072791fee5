"""Jobs in chunks: which sources share a job (``sources_per_job``) and the paths it declares.

A measure, products or full-QA job handles the sources of one chunk, and still writes and
declares every output at its per-source path. Each job also writes a small chunk record
(written last, so it exists only for a finished job) that lists its sources and their files:
the next stage and the summaries depend on records, not on every per-source file. That keeps
Snakemake's cost per source low, because a job with many explicit outputs costs a scan of them
per requested file. ``rule all`` requests the records, plus any per-source output missing from
a finished chunk, so a deleted product still re-runs its chunk's job (and only that job).
"""

from __future__ import annotations

import os

# Per-source outputs of each chunked stage, in the order the rules declare them.
MEASURE_OUTPUTS = {
    "discovery": "results/discovery/{source}.parquet",
    "cutout_index": "results/cutouts/{source}.json",
    "measurements": "results/measurements/{source}.parquet",
    "stamps": "results/qa/{source}/{source}_stamps.npz",
}
PRODUCT_OUTPUTS = {
    "spectrum": "results/spectra/{source}.csv",
    "provenance": "results/provenance/{source}_provenance.json",
    "measurement_index": "results/provenance/{source}_measurement_index.json",
    "sed": "results/plots/{source}_sed.png",
    "qa": "results/qa/{source}/{source}_qa_summary.png",
    "manifest": "results/provenance/{source}_output_manifest.json",
}
QA_FULL_OUTPUTS = {
    "pngs": "results/qa/{source}/measurements",
    "manifest": "results/qa/{source}/{source}_qa_manifest.json",
}
STAGE_OUTPUTS = {
    "measure": MEASURE_OUTPUTS,
    "source_products": PRODUCT_OUTPUTS,
    "qa_full": QA_FULL_OUTPUTS,
}
RECORD = "results/chunks/{stage}/{chunk}.json"
# The discovery rows of a batch's sources (one file: a measure job reads its chunk's rows).
DISCOVERY_TABLE = "results/chunks/discovery/{batch}.parquet"
# Fixed width, so that a growing catalog never renames an existing chunk (or its rules).
CHUNK_ID = "c{:06d}"
BATCH_ID = "b{:06d}"


def chunk_sources(sources: list[str], per_job: int) -> dict[str, list[str]]:
    """Chunk id -> its sources: chunk k holds catalog rows k*N .. k*N+N-1.

    Membership depends only on a source's row, so appending rows to the catalog leaves every
    full chunk as it is (only the last, partial one gains members and runs again).
    """
    if per_job < 1:
        raise ValueError(f"sources_per_job must be >= 1, got {per_job}")
    return {
        CHUNK_ID.format(k // per_job): sources[k : k + per_job]
        for k in range(0, len(sources), per_job)
    }


def discovery_batches(
    chunks: dict[str, list[str]], per_job: int, batch_sources: int
) -> dict[str, list[str]]:
    """Batch id -> its chunks: one discover job per batch of about ``batch_sources`` sources
    (whole chunks, in order), so discovery of the whole catalog is a few bulk queries that
    finish before any pixel is fetched. Stable under appended rows, like the chunks."""
    if batch_sources < 1:
        raise ValueError(f"discovery_batch_sources must be >= 1, got {batch_sources}")
    width = max(1, batch_sources // per_job)
    ids = list(chunks)
    return {BATCH_ID.format(k // width): ids[k : k + width] for k in range(0, len(ids), width)}


def discovery_table(batch: str) -> str:
    return DISCOVERY_TABLE.format(batch=batch)


def record_path(stage: str, chunk: str) -> str:
    return RECORD.format(stage=stage, chunk=chunk)


def source_paths(stage: str, source: str) -> dict[str, str]:
    """Name -> path of one source's outputs of ``stage``."""
    return {k: v.format(source=source) for k, v in STAGE_OUTPUTS[stage].items()}


def stage_outputs(stage: str, sources: list[str]) -> dict[str, list[str]]:
    """Name -> the paths of ``sources``, in order: a chunk rule's named outputs."""
    return {k: [v.format(source=s) for s in sources] for k, v in STAGE_OUTPUTS[stage].items()}


def record_then_outputs(stage: str, chunk: str, sources: list[str]) -> dict[str, object]:
    """A chunk rule's named outputs with its record first: Snakemake finds the job of a
    requested file by matching the rule's outputs in order (a regex each), and the next stage
    requests the record."""
    return {"record": record_path(stage, chunk), **stage_outputs(stage, sources)}


def chunk_record(stage: str, chunk: str, files: dict[str, dict[str, str]]) -> dict:
    """What a chunk job writes last: its sources, in order, and each one's files."""
    return {"stage": stage, "chunk": chunk, "sources": list(files), "files": files}


def missing_outputs(stage: str, chunks: dict[str, list[str]]) -> list[str]:
    """Per-source outputs of ``stage`` missing from chunks whose job finished (its record is
    on disk): ``rule all`` requests them, so that Snakemake re-runs just those chunks' jobs.
    Read-only; unfinished chunks are re-run through their record anyway."""
    missing = []
    for chunk, sources in chunks.items():
        if not os.path.exists(record_path(stage, chunk)):
            continue
        for source in sources:
            missing += [p for p in source_paths(stage, source).values() if not os.path.exists(p)]
    return missing
