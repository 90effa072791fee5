"""One function per workflow rule, named after it and listed in DAG order.

Each takes typed settings (``spxflow.settings``) and paths, never the raw config; the rule
scripts under ``scripts/`` only unpack the ``snakemake`` object and call these, so every rule
is importable and testable without Snakemake. Each job is a straight line of values: no output
it writes is read back by the same job (writers return ``Written`` records for manifests); the
only files a job both writes and reads are the cutouts it downloads and then measures.
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from spxflow import __version__
from spxflow import catalog as catalog_io
from spxflow.archive import make_archive, normalise_discovery
from spxflow.calibration_files import calibration_index as build_calibration_index
from spxflow.calibration_files import load_calibration
from spxflow.chunks import chunk_record
from spxflow.columns import empty_measurements
from spxflow.cutouts import cutout_index, fetch_cutouts, prepare_cutout_dir, window_entries
from spxflow.discovery import deduplicate
from spxflow.diskbudget import CutoutDiskBudget
from spxflow.fileio import (
    read_json,
    sha256_file,
    write_csv_atomic,
    write_json_atomic,
    write_parquet_atomic,
)
from spxflow.manifest import check_manifests, write_manifest
from spxflow.measurements import assemble, failure_rows
from spxflow.provenance import measurement_index, provenance, spectrum_table
from spxflow.rerun import (
    carried_frame,
    carried_over,
    discard_set_aside,
    discard_set_aside_table,
    drop_carried,
)
from spxflow.settings import ArchiveScience, Runtime, Science
from spxflow.stamps import load_stamps, make_stamps, write_stamps

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MeasureOutputs:
    discovery: str
    cutout_index: str
    measurements: str
    stamps: str


@dataclass(frozen=True)
class ProductInputs:
    measurements: str
    stamps: str
    discovery: str
    cutout_index: str
    calibration_index: str


@dataclass(frozen=True)
class ProductOutputs:
    spectrum: str
    provenance: str
    measurement_index: str
    sed: str
    qa: str
    manifest: str


@dataclass(frozen=True)
class QaFullOutputs:
    pngs: str
    manifest: str


def per_source(sources, output, kind):
    """Source -> its ``kind`` outputs, from a chunk rule's named output lists (each in the
    order of ``sources``)."""
    names = [f.name for f in dataclasses.fields(kind)]
    columns = [list(getattr(output, n)) for n in names]
    return {s: kind(*(col[i] for col in columns)) for i, s in enumerate(sources)}


def _files(outs: dict) -> dict[str, dict[str, str]]:
    return {s: dataclasses.asdict(o) for s, o in outs.items()}


def recorded_files(record_paths: list[str], name: str) -> list[str]:
    """The ``name`` file of every source the chunk records list, in record order."""
    records = [read_json(p) for p in record_paths]
    return [r["files"][s][name] for r in records for s in r["sources"]]


class _Progress:
    """One log line per source of a chunk: done/total, measurements per second and an ETA
    (a line per source, so a Slurm log of a large chunk stays short)."""

    def __init__(self, stage: str, chunk: str, total: int):
        self.stage, self.chunk, self.total = stage, chunk, total
        self.t0, self.done, self.rows = time.perf_counter(), 0, 0

    def step(self, source: str, rows: int = 0) -> None:
        self.done += 1
        self.rows += rows
        dt = time.perf_counter() - self.t0
        eta = dt / self.done * (self.total - self.done)
        rate = f", {self.rows / dt:.1f} measurements/s" if self.rows and dt > 0 else ""
        log.info(
            "%s %s: %d/%d sources done (%s)%s, %.0f s elapsed, ETA %.0f s",
            self.stage,
            self.chunk,
            self.done,
            self.total,
            source,
            rate,
            dt,
            eta,
        )


# --- validate_catalog ----------------------------------------------------------------------
def validate_catalog(settings: catalog_io.CatalogSettings, catalog_path: str, out_csv: str) -> None:
    table = catalog_io.read_catalog(catalog_path, settings)
    write_csv_atomic(out_csv, table)
    log.info("catalog %s: %d sources valid", catalog_path, len(table))


# --- calibration ---------------------------------------------------------------------------
def calibration(
    science: ArchiveScience,
    runtime: Runtime,
    release: str,
    family: str,
    detector: int,
    out_path: str,
    data_dir: str = "data",
) -> None:
    archive = make_archive(science, runtime.archive, os.path.join(data_dir, "cache"))
    cal = archive.fetch_calibration(release, family, detector, Path(out_path))
    log.info(
        "calibration %s %s D%d: %s (%d bytes, sha256 %s)",
        release,
        family,
        detector,
        cal.calibration_id,
        cal.size_bytes,
        cal.sha256[:12],
    )


def calibration_index(paths: list[str], out_json: str) -> None:
    index = build_calibration_index(paths)
    write_json_atomic(out_json, index)
    log.info("calibration index: %d products", len(index["products"]))


# --- discover ------------------------------------------------------------------------------
def discover(
    science: Science,
    runtime: Runtime,
    batch: str,
    chunks: dict[str, list[str]],
    targets: dict[str, dict],
    out_table: str,
    record: str,
    data_dir: str = "data",
) -> None:
    """Discovery of every source of a batch of chunks in one bulk pass
    (``Archive.discover_many``), written as one table (the SIA2 columns plus ``source``),
    then the batch's record."""
    archive = make_archive(science.archive, runtime.archive, os.path.join(data_dir, "cache"))
    members = [s for sources in chunks.values() for s in sources]
    positions = [(s, targets[s]["ra_deg"], targets[s]["dec_deg"]) for s in members]
    t0 = time.perf_counter()
    found = archive.discover_many(positions, science.archive.search_radius_arcsec)
    log.info(
        "batch %s: %d sources, %d Level-2 image rows, discovered in %.1f s",
        batch,
        len(members),
        sum(len(t) for t in found.values()),
        time.perf_counter() - t0,
    )
    frames = [normalise_discovery(found[s]).assign(source=s) for s in members]
    # Empty frames would only blur the column dtypes; one keeps the columns.
    frames = [f for f in frames if len(f)] or frames[:1]
    write_parquet_atomic(out_table, pd.concat(frames, ignore_index=True))
    discard_set_aside_table(out_table)
    write_json_atomic(
        record,
        {"stage": "discover", "chunk": batch, "sources": members, "chunks": chunks,
         "files": {"table": out_table}},
    )  # fmt: skip


def discovered_by_source(table: pd.DataFrame, sources: list[str]) -> dict[str, pd.DataFrame]:
    """A chunk's discovery rows split back into each source's table (SIA2 columns, in
    order; an empty table for a source that no image covers)."""
    rows = table.drop(columns="source")
    groups = {s: idx for s, idx in table.groupby("source", sort=False).indices.items()}
    return {
        s: normalise_discovery(rows.iloc[groups[s]] if s in groups else rows.iloc[:0])
        for s in sources
    }


# --- measure -------------------------------------------------------------------------------
def measure(
    science: Science,
    runtime: Runtime,
    chunk: str,
    targets: dict[str, dict],
    neighbours: dict[str, list],
    discovery_path: str,
    calibration_index_path: str,
    outs: dict[str, MeasureOutputs],
    record: str,
    threads: int = 1,
    data_dir: str = "data",
) -> None:
    """Measure the sources of one chunk (``measure_source`` each) from the chunk's discovery
    table, then write the chunk's record. The archive client and the calibration are made
    once per chunk."""
    archive = make_archive(science.archive, runtime.archive, os.path.join(data_dir, "cache"))
    calibration_set = load_calibration(read_json(calibration_index_path), f"chunk {chunk}")
    # Only this chunk's rows of the batch's table.
    table = pd.read_parquet(discovery_path, filters=[("source", "in", list(outs))])
    discovered = discovered_by_source(table, list(outs))
    progress = _Progress("measure", chunk, len(outs))
    for source, out in outs.items():
        n_rows = measure_source(
            science,
            runtime,
            source,
            targets[source],
            neighbours[source],
            calibration_index_path,
            out,
            threads=threads,
            data_dir=data_dir,
            archive=archive,
            calibration_set=calibration_set,
            discovered=discovered[source],
        )
        progress.step(source, n_rows)
    write_json_atomic(record, chunk_record("measure", chunk, _files(outs)))


def measure_source(
    science: Science,
    runtime: Runtime,
    source: str,
    target: dict,
    neighbours: list,
    calibration_index_path: str,
    out: MeasureOutputs,
    threads: int = 1,
    data_dir: str = "data",
    archive=None,
    calibration_set=None,
    discovered: pd.DataFrame | None = None,
) -> int:
    """Discover, fetch and measure one source: discovery table, cutout index, measurements
    and QA stamps (with every measurement's window), written at the end.

    One job for all three steps keeps the DAG small and needs no directory output. Pixels
    are read as windows into memory (``pixels: window | s3``), or, with ``pixels: cutout``,
    as cutout files that live in ``data/cutouts/{source}/`` only while this job runs, unless
    ``cleanup: never`` keeps them (a later run then reuses the ones still valid).
    """
    from spxflow.photometry import measure_cutouts, measure_windows

    results_dir = str(Path(out.cutout_index).parents[1])
    if archive is None:
        archive = make_archive(science.archive, runtime.archive, os.path.join(data_dir, "cache"))
    if calibration_set is None:
        calibration_set = load_calibration(read_json(calibration_index_path), source)

    # discovery (every release and collection; the chunk's table, or asked here), then keep
    # each exposure once
    ra, dec = target["ra_deg"], target["dec_deg"]
    if discovered is None:
        discovered = archive.discover(ra, dec, science.archive.search_radius_arcsec)
    kept, duplicates = deduplicate(normalise_discovery(discovered))
    discovered = kept.to_dict(orient="records")
    log.info(
        "source %s: %d Level-2 images cover the position (%d duplicate rows dropped)",
        source,
        len(discovered),
        len(duplicates),
    )

    # fetch (images measured before, when `spxflow rerun` marked the source, are carried
    # unless the archive replaced the object since: its ETag changed)
    carry = carried_over(
        source,
        target,
        science.archive.backend,
        science.config_hash,
        science.photometry_version,
        results_dir,
    )
    reprocessed = archive.replaced_objects(list(carry.entries.values()))
    if reprocessed:
        log.info("source %s: %d image(s) were reprocessed since", source, len(reprocessed))
        carry = drop_carried(carry, reprocessed)
    to_fetch = [r for r in discovered if str(r["obs_publisher_did"]) not in carry.entries]
    if carry.entries:
        log.info(
            "source %s: fetching %d image(s); %d measured earlier are carried over",
            source,
            len(to_fetch),
            len(carry.entries),
        )
    cutouts = os.path.join(data_dir, "cutouts", source)
    fetched, windows = _fetch(archive, science, runtime, source, target, to_fetch, cutouts)
    for image_id, etag in reprocessed.items():
        if image_id in fetched:
            fetched[image_id]["reprocessed_from_etag"] = etag
    windowed = windows is not None
    if windowed:
        windows = {**carry.windows, **windows}
    nbrs = [tuple(n) for n in neighbours]
    index = cutout_index(
        source, science.archive.backend, target, discovered, carry.entries, fetched, duplicates
    )
    log.info("source %s: %d of %d images read", source, index["n_ok"], index["n_images"])

    # measure
    ok = [e for e in index["images"] if e["status"] == "ok" and not e.get("carried")]
    failed = [e for e in index["images"] if e["status"] != "ok"]
    measured = None
    t_fit = time.perf_counter()
    if ok and windowed:
        measured = measure_windows(
            [windows[e["file_name"]] for e in ok],
            nbrs,
            calibration_set,
            science.photometry,
            threads=threads,
            releases=[e["release"] for e in ok],
        )
    elif ok:
        measured = measure_cutouts(
            [os.path.join(cutouts, e["file_name"]) for e in ok],
            ra,
            dec,
            nbrs,
            calibration_set,
            science.photometry,
            threads=threads,
            releases=[e["release"] for e in ok],
        )
    if ok:
        # The photometry cost inside the job, per source (benchmarks/bench_catalog.py adds
        # these lines up); with cutout files it includes reading them and solving the WCS.
        dt = time.perf_counter() - t_fit
        log.info(
            "source %s: photometry of %d images in %.3f s (%.2f ms each)",
            source,
            len(ok),
            dt,
            1000 * dt / len(ok),
        )
    table = assemble(
        [measured, failure_rows(failed, target) if failed else None, carried_frame(carry)],
        source,
        target,
        {e["file_name"]: e["image_id"] for e in index["images"]},
        science.config_hash,
        science.photometry_version,
    )
    stamps = make_stamps(
        table,
        windows if windowed else cutouts,
        target,
        nbrs,
        calibration_set,
        science.photometry,
        carry.stamps,
    )

    # write
    write_parquet_atomic(out.discovery, kept)  # the dropped rows are in the cutout index
    write_json_atomic(out.cutout_index, index)
    write_parquet_atomic(out.measurements, table)
    write_stamps(out.stamps, stamps, windows)
    discard_set_aside(source, results_dir)
    log.info(
        "source %s: %d measurements (%d detected, %d recommended, %d failed)",
        source,
        len(table),
        int((table["detection_status"] == "detected").sum()),
        int(table["science_recommended"].sum()),
        int((table["detection_status"] == "failed").sum()),
    )
    if not windowed and runtime.cleanup == "success-after-source":
        shutil.rmtree(cutouts, ignore_errors=True)
        log.info("source %s: cutouts deleted (cleanup=success-after-source)", source)
    return len(table)


def _fetch(archive, science: Science, runtime: Runtime, source, target, rows, cutouts):
    """(cutout-index entries by image id, windows by file name) of ``rows``; the windows are
    None when ``pixels: cutout`` fetched cutout files into ``cutouts`` instead."""
    if not archive.serves_windows:
        prepare_cutout_dir(cutouts, target)
        budget = CutoutDiskBudget.from_runtime(runtime, os.path.dirname(cutouts))
        return fetch_cutouts(archive, rows, source, target, cutouts, budget), None
    read = archive.fetch_windows(
        rows,
        target["ra_deg"],
        target["dec_deg"],
        science.photometry.fit_half_size_px,
        target["cutout_size_arcsec"],
    )
    return window_entries(read, source), {r.file_name: r.cutout for r in read if r.status == "ok"}


# --- source_products -----------------------------------------------------------------------
def source_products(
    science: Science,
    plots: dict,
    runtime: Runtime,
    chunk: str,
    targets: dict[str, dict],
    neighbours: dict[str, list],
    measured_record: str,
    calibration_index_path: str,
    outs: dict[str, ProductOutputs],
    record: str,
) -> None:
    """The products of each source of one chunk (``products_of_source``), from the files its
    measure record lists; then the chunk's record."""
    measured = read_json(measured_record)["files"]
    calibration = read_json(calibration_index_path)
    archive = make_archive(science.archive, runtime.archive)
    progress = _Progress("source_products", chunk, len(outs))
    for source, out in outs.items():
        files = measured[source]
        inp = ProductInputs(
            **{k: files[k] for k in MEASURE_INPUTS}, calibration_index=calibration_index_path
        )
        products_of_source(
            science,
            plots,
            runtime,
            source,
            targets[source],
            neighbours[source],
            inp,
            out,
            calibration=calibration,
            archive=archive,
        )
        progress.step(source)
    write_json_atomic(record, chunk_record("source_products", chunk, _files(outs)))


MEASURE_INPUTS = ("measurements", "stamps", "discovery", "cutout_index")


def products_of_source(
    science: Science,
    plots: dict,
    runtime: Runtime,
    source: str,
    target: dict,
    neighbours: list,
    inp: ProductInputs,
    out: ProductOutputs,
    calibration: dict | None = None,
    archive=None,
) -> None:
    """Spectrum CSV, provenance, measurement index, plots and the output manifest."""
    df = pd.read_parquet(inp.measurements)
    index = read_json(inp.cutout_index)
    if calibration is None:
        calibration = read_json(inp.calibration_index)
    config_hash = science.config_hash

    spectrum = write_csv_atomic(out.spectrum, spectrum_table(df, config_hash), float_format="%.10g")
    m_index = write_json_atomic(
        out.measurement_index, measurement_index(source, config_hash, spectrum.sha256, df)
    )
    prov = write_json_atomic(
        out.provenance, provenance(source, target, neighbours, science, index, calibration)
    )
    truth = (
        _truth_sed(archive or make_archive(science.archive, runtime.archive), target)
        if len(df)
        else None
    )
    pngs, problems = _plots(df, target, plots, truth, inp.stamps, out.sed, out.qa)
    write_manifest(
        out.manifest,
        source=source,
        files=[
            inp.measurements,
            inp.stamps,
            inp.discovery,
            inp.cutout_index,
            spectrum,
            prov,
            m_index,
            *pngs,
        ],
        measurement_ids=df["measurement_id"].tolist(),
        rows_sha256=spectrum.sha256,
        config_hash=config_hash,
        code_version=__version__,
        problems=problems,
    )


def _truth_sed(archive, target: dict) -> pd.DataFrame | None:
    """The injected SED of a simulated source, drawn as a line on its SED plot (display only;
    the measurements never see it)."""
    wl = np.linspace(0.72, 5.05, 600)
    flux = archive.truth_sed(target["ra_deg"], target["dec_deg"], wl)
    if flux is None:
        return None
    return pd.DataFrame({"wavelength_um": wl, "flux_uJy": flux})


def _plots(df, target, plots, truth, stamps_path, sed_png, qa_png):
    """Render the SED and QA plots; a failure becomes a labelled placeholder and a manifest
    problem instead of costing the science outputs. Returns (written PNGs, problems)."""
    from spxflow.plots import plot_failure_png, plot_qa_summary, plot_sed

    problems, written = [], []
    try:
        written.append(
            plot_sed(
                df,
                sed_png,
                title_name=target["name"],
                ra=target["ra_deg"],
                dec=target["dec_deg"],
                units=plots["sed_units"],
                scale=plots["sed_scale"],
                truth=truth,
            )
        )
    except Exception as exc:
        log.exception("SED plot failed for %s", target["name"])
        problems.append(f"sed plot failed: {type(exc).__name__}: {exc}")
        written.append(plot_failure_png(sed_png, f"SED plot failed for {target['name']}", str(exc)))
    try:
        written.append(
            plot_qa_summary(df, qa_png, title_name=target["name"], stamps=load_stamps(stamps_path))
        )
    except Exception as exc:
        log.exception("QA summary failed for %s", target["name"])
        problems.append(f"qa summary failed: {type(exc).__name__}: {exc}")
        written.append(
            plot_failure_png(qa_png, f"QA summary failed for {target['name']}", str(exc))
        )
    return written, problems


# --- qa_full -------------------------------------------------------------------------------
def qa_full(
    science: Science,
    runtime: Runtime,
    chunk: str,
    targets: dict[str, dict],
    neighbours: dict[str, list],
    cutout_root: str,
    measured_record: str,
    calibration_index_path: str,
    outs: dict[str, QaFullOutputs],
    record: str,
    threads: int = 1,
) -> None:
    """Full QA of each source of one chunk (``qa_full_source``); then the chunk's record."""
    measured = read_json(measured_record)["files"]
    progress = _Progress("qa_full", chunk, len(outs))
    for source, out in outs.items():
        qa_full_source(
            science,
            runtime,
            source,
            targets[source],
            neighbours[source],
            os.path.join(cutout_root, source),
            measured[source]["measurements"],
            measured[source]["stamps"],
            calibration_index_path,
            out.pngs,
            out.manifest,
            threads=threads,
            measure_rule=f"measure_{chunk}",
        )
        progress.step(source)
    write_json_atomic(record, chunk_record("qa_full", chunk, _files(outs)))


def qa_full_source(
    science: Science,
    runtime: Runtime,
    source: str,
    target: dict,
    neighbours: list,
    cutout_dir: str,
    measurements_path: str,
    stamps_path: str,
    calibration_index_path: str,
    out_pngs: str,
    out_manifest: str,
    threads: int = 1,
    *,
    measure_rule: str,
) -> None:
    """One QA PNG per measurement, from the windows kept in the stamps file or from kept
    cutouts; says so (and re-downloads nothing) when neither is there. Never touches science
    outputs or measurement ids. ``measure_rule`` (the source's chunk's) goes in the hint."""
    from spxflow.plots import render_measurement_qas
    from spxflow.stamps import read_stamp_windows

    df = pd.read_parquet(measurements_path)
    out_dir = Path(out_pngs)
    out_dir.mkdir(parents=True, exist_ok=True)
    measured = df[df["detection_status"] != "failed"]
    windows = read_stamp_windows(stamps_path)

    def pixels_of(file_name: str):
        path = os.path.join(cutout_dir, file_name)
        return windows.get(file_name) or (path if os.path.exists(path) else None)

    jobs = [
        {
            "path": pixels,
            "row": row._asdict(),
            "out_png": str(out_dir / f"{row.measurement_id}_qa.png"),
            "ra": target["ra_deg"],
            "dec": target["dec_deg"],
            "neighbours": [tuple(n) for n in neighbours],
        }
        for row in measured.itertuples(index=False)
        if (pixels := pixels_of(row.file_name)) is not None
    ]
    problems = []
    if len(jobs) < len(measured):
        problems.append(
            f"{len(measured) - len(jobs)} of {len(measured)} measurements of {source} have "
            f"neither a kept window nor a cutout on disk (cleanup={runtime.cleanup}), so their "
            f"full-QA PNGs were not made; nothing was re-downloaded. To make them: snakemake "
            f"--config cleanup=never qa_level=full --forcerun {measure_rule}"
        )
        log.warning(problems[-1])
    written = []
    if jobs:
        calibration_set = load_calibration(read_json(calibration_index_path), source)
        written = render_measurement_qas(
            jobs, threads=threads, calibration=calibration_set, settings=science.photometry
        )
    write_manifest(
        out_manifest,
        source=source,
        files=written,
        measurement_ids=measured["measurement_id"].tolist(),
        rows_sha256=sha256_file(measurements_path),
        config_hash="",
        code_version=__version__,
        kind="qa",
        problems=problems,
    )


# --- summary -------------------------------------------------------------------------------
def summary(catalog_csv: str, measurement_paths: list[str], out_sources: str, out_fits: str):
    from spxflow.summary import build_sources_summary, write_measurements_fits

    catalog = pd.read_csv(catalog_csv, dtype={"source": str, "name": str})
    tables = {Path(p).stem: pd.read_parquet(p) for p in measurement_paths}
    write_csv_atomic(
        out_sources, build_sources_summary(catalog, tables, failures={}), float_format="%.6g"
    )
    rows = [t for t in tables.values() if len(t)]
    merged = pd.concat(rows, ignore_index=True) if rows else empty_measurements()
    write_measurements_fits(merged, out_fits)


# --- accuracy ------------------------------------------------------------------------------
def accuracy(measurement_paths: list[str], cutout_index_paths: list[str], out_csv: str) -> None:
    from spxflow.validation import accuracy_table, truth_from_indexes

    meas = pd.concat([pd.read_parquet(p) for p in measurement_paths], ignore_index=True)
    truth = truth_from_indexes([read_json(p) for p in cutout_index_paths])
    table = accuracy_table(meas, truth)
    write_csv_atomic(out_csv, table, float_format="%.6g")
    log.info("accuracy vs injected truth:\n%s", table.to_string(index=False))


# --- check ---------------------------------------------------------------------------------
def check(provenance_dir: str, qa_dir: str, out_json: str) -> None:
    """Verify every manifest; see ``spxflow.manifest.check_manifests``."""
    manifests = sorted(glob.glob(os.path.join(provenance_dir, "*_output_manifest.json")))
    manifests += sorted(glob.glob(os.path.join(qa_dir, "*", "*_qa_manifest.json")))
    check_manifests(manifests, out_json)
