"""One function per workflow rule: what each rule does, given its inputs and outputs.

Rule scripts under scripts/ only unpack the ``snakemake`` object and call these, so the logic
is importable and testable without Snakemake.
"""

from __future__ import annotations

import glob
import logging
import os
import platform
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from spxflow import __version__
from spxflow.archive import make_archive
from spxflow.archive.base import normalise_discovery
from spxflow.catalog import CatalogSettings, read_catalog
from spxflow.columns import (
    MEASUREMENT_COLUMN_NAMES,
    SCHEMA_VERSION,
    empty_measurements,
)
from spxflow.fileio import (
    atomic_path,
    canonical_json,
    read_json,
    sha256_file,
    write_csv_atomic,
    write_json_atomic,
    write_parquet_atomic,
)
from spxflow.format import parse_level2_file_name
from spxflow.identity import (
    archive_science_config,
    measurement_id,
    science_config_hash,
)
from spxflow.manifest import verify_manifest, write_manifest

log = logging.getLogger(__name__)

N_QA_STAMPS = 6


# --- catalog -------------------------------------------------------------------------------
def validate_catalog_file(catalog_path: str, config: dict, out_csv: str) -> None:
    table = read_catalog(catalog_path, CatalogSettings.from_config(config))
    write_csv_atomic(out_csv, table)
    log.info("catalog %s: %d sources valid", catalog_path, len(table))


# --- discovery -----------------------------------------------------------------------------
def _radius(config: dict) -> float:
    return float(config["archive"].get("search_radius_arcsec", 1.0))


def discover_source(config: dict, source: str, target: dict, out_path: str) -> None:
    archive = make_archive(config)
    table = archive.discover(target["ra_deg"], target["dec_deg"], _radius(config))
    write_parquet_atomic(out_path, normalise_discovery(table))
    log.info("source %s: %d Level-2 images cover the position", source, len(table))


def refresh_discovery(config: dict, catalog: pd.DataFrame, results_dir: str = "results") -> list:
    """``update=true``: re-query every source that already has a discovery table (in bulk
    where the backend can) and set aside the outputs of those whose image list changed, so
    that exactly they re-run; images measured before are carried over, new ones fetched."""
    out_dir = os.path.join(results_dir, "discovery")
    existing = [
        (row.source, float(row.ra_deg), float(row.dec_deg))
        for row in catalog.itertuples(index=False)
        if os.path.exists(os.path.join(out_dir, f"{row.source}.parquet"))
    ]
    if not existing:
        return []
    archive = make_archive(config)
    tables = archive.discover_many(existing, _radius(config))
    changed = []
    for source, _, _ in existing:
        old = pd.read_parquet(os.path.join(out_dir, f"{source}.parquet"))
        if not _same_images(old, normalise_discovery(tables[source])):
            _set_aside(source, results_dir)
            changed.append(source)
    logging.getLogger("spxflow.update").warning(
        "update=true: re-queried %d sources; image lists changed for %d: %s",
        len(existing),
        len(changed),
        ", ".join(changed[:20]) or "none",
    )
    return changed


def _same_images(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    key = "obs_publisher_did"
    return (
        a[key].tolist() == b[key].tolist() and a["access_url"].tolist() == b["access_url"].tolist()
    )


def _retry_paths(source: str, results_dir: str = "results") -> dict[str, tuple[str, str]]:
    """The outputs a retry sets aside: name -> (path, set-aside path)."""
    index = os.path.join(results_dir, "cutouts", f"{source}.json")
    meas = os.path.join(results_dir, "measurements", f"{source}.parquet")
    return {
        "index": (index, index[: -len(".json")] + ".retry.json"),
        "measurements": (meas, meas[: -len(".parquet")] + ".retry.parquet"),
    }


def _set_aside(source: str, results_dir: str = "results") -> None:
    # The cutout index is requested by `rule all`, so its absence makes the source's measure
    # job run; the measurements are kept aside because Snakemake deletes a job's outputs
    # before running it.
    for path, aside in _retry_paths(source, results_dir).values():
        if os.path.exists(path):
            os.replace(path, aside)


def prepare_retry(sources: list[str], results_dir: str = "results") -> list[str]:
    """``retry_failed=true``: set aside the outputs of every source with failed cutouts, so
    that Snakemake re-runs that source's measure job; it then fetches only the failed images
    and carries the others' measurements over."""
    retried = []
    for source in sources:
        path = _retry_paths(source, results_dir)["index"][0]
        if os.path.exists(path) and read_json(path).get("n_failed", 0):
            _set_aside(source, results_dir)
            retried.append(source)
    logging.getLogger("spxflow.retry").warning(
        "retry_failed=true: %d source(s) with failed cutouts will retry them: %s",
        len(retried),
        ", ".join(retried[:20]) or "none",
    )
    return retried


def _carry_over(config, source, target, index_path):
    """(entries, measurement rows) of images fetched and measured in the previous run, when
    this run would measure them identically; empty when anything differs."""
    results_dir = os.path.dirname(os.path.dirname(os.path.abspath(index_path)))
    paths = _retry_paths(source, results_dir)
    prev_path, measurements_path = paths["index"][1], paths["measurements"][1]
    if not (os.path.exists(prev_path) and os.path.exists(measurements_path)):
        return {}, {}
    prev = read_json(prev_path)
    if (
        prev.get("backend") != config["archive"]["backend"]
        or prev.get("cutout_size_arcsec") != target["cutout_size_arcsec"]
    ):
        return {}, {}
    _, config_hash = _settings_and_hash(config)
    old = pd.read_parquet(measurements_path)
    from spxflow.photometry import PHOTOMETRY_VERSION

    rows = {}
    for r in old.to_dict(orient="records"):
        expected = measurement_id(
            source, r["image_id"], target["cutout_size_arcsec"], config_hash, PHOTOMETRY_VERSION
        )
        # Rows of images whose fetch failed are not carried: their index entry is not "ok".
        if r["measurement_id"] == expected:
            rows[r["image_id"]] = r
    entries = {
        e["image_id"]: e for e in prev["images"] if e["status"] == "ok" and e["image_id"] in rows
    }
    return entries, {k: rows[k] for k in entries}


# --- calibration ---------------------------------------------------------------------------
def fetch_calibration(config: dict, family: str, detector: int, out_path: str) -> None:
    archive = make_archive(config)
    cal = archive.fetch_calibration(family, detector, Path(out_path))
    log.info(
        "calibration %s D%d: %s (%d bytes, sha256 %s)",
        family,
        detector,
        cal.calibration_id,
        cal.size_bytes,
        cal.sha256[:12],
    )


def write_calibration_index(paths: list[str], out_json: str) -> None:
    """Ids, paths and checksums of every calibration product (one input for all sources)."""
    from spxflow.photometry import CalibrationSet

    cal = CalibrationSet.from_paths(paths)
    products = [
        {
            "calibration_id": cal.ids[key],
            "path": os.path.relpath(path),
            "sha256": sha256_file(path),
        }
        for key, path in sorted(cal.files.items())
    ]
    write_json_atomic(out_json, {"products": products})
    log.info("calibration index: %d products", len(products))


def calibration_paths(index_json: str) -> list[str]:
    return [p["path"] for p in read_json(index_json)["products"]]


# --- cutouts -------------------------------------------------------------------------------
def fetch_source_cutouts(
    config: dict, source: str, target: dict, discovery_path: str, out_dir: str, index_path: str
) -> pd.DataFrame | None:
    """Fetch every discovered image's cutout; per-image failures are recorded, not raised.

    Returns the earlier measurements of images carried over by a retry/update (not fetched
    again), or None."""
    from spxflow.diskbudget import CutoutDiskBudget, estimate_cutout_bytes
    from spxflow.validation import truth_from_cutout

    table = pd.read_parquet(discovery_path)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    archive = make_archive(config)
    carried, carried_rows = _carry_over(config, source, target, index_path)
    all_rows = table.to_dict(orient="records")
    rows = [r for r in all_rows if str(r["obs_publisher_did"]) not in carried]
    if carried:
        log.info(
            "source %s: retrying %d image(s); %d measured earlier are carried over",
            source,
            len(rows),
            len(carried),
        )
    # Live-cutout disk bound (max_live_cutout_gb): wait until this source's cutouts fit.
    budget = CutoutDiskBudget.from_config(config, os.path.dirname(os.path.normpath(out_dir)))
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
        fetched[entry["image_id"]] = entry
    images = []
    for r in all_rows:
        did = str(r["obs_publisher_did"])
        if did in carried:
            images.append({**carried[did], "path": None, "carried": True})
        else:
            images.append(fetched[did])
    n_ok = sum(e["status"] == "ok" for e in images)
    index = {
        "source": source,
        "backend": config["archive"]["backend"],
        "cutout_size_arcsec": target["cutout_size_arcsec"],
        "n_images": len(images),
        "n_ok": n_ok,
        "n_failed": len(images) - n_ok,
        "images": images,
    }
    write_json_atomic(index_path, index)
    for e in images:
        if e["status"] != "ok":
            log.warning(
                "source %s: cutout of %s %s: %s", source, e["image_id"], e["status"], e["reason"]
            )
    log.info("source %s: %d of %d cutouts fetched", source, n_ok, len(images))
    return pd.DataFrame(list(carried_rows.values())) if carried_rows else None


# --- photometry ----------------------------------------------------------------------------
def _failure_rows(source_entries: list[dict], target: dict) -> pd.DataFrame:
    from spxflow.photometry.result_flags import RESULT_FLAGS

    bit = RESULT_FLAGS["FETCH_FAILED"][0]
    rows = []
    for e in source_entries:
        obsid, det, _ = parse_level2_file_name(e["file_name"])
        rows.append(
            {
                "obs_id": obsid,
                "detector": det,
                "image_id": e["image_id"],
                "file_name": e["file_name"],
                "ra_deg": target["ra_deg"],
                "dec_deg": target["dec_deg"],
                "result_flags": 1 << bit,
                "detection_status": "failed",
                "science_recommended": False,
                "failure_reason": f"cutout {e['status']}: {e['reason']}",
                "zodi_subtracted": False,
            }
        )
    return pd.DataFrame(rows)


def _coerce_schema(df: pd.DataFrame) -> pd.DataFrame:
    """Schema column order and dtypes (missing values as NaN / empty strings)."""
    from spxflow.columns import MEASUREMENT_COLUMNS

    out = {}
    for col in MEASUREMENT_COLUMNS:
        s = df[col.name] if col.name in df.columns else pd.Series([None] * len(df), index=df.index)
        if col.dtype == "str":
            out[col.name] = s.fillna("").astype(str).astype(object)
        elif col.dtype == "bool":
            out[col.name] = s.fillna(False).astype(bool)
        elif col.dtype.startswith("int"):
            out[col.name] = (
                pd.to_numeric(s, errors="coerce")
                .fillna(-1 if col.name != "result_flags" else 0)
                .astype(col.dtype)
            )
        else:
            out[col.name] = pd.to_numeric(s, errors="coerce").astype("float64")
    return pd.DataFrame(out, columns=list(MEASUREMENT_COLUMN_NAMES))


def _settings_and_hash(config):
    from spxflow.photometry import PHOTOMETRY_VERSION, PhotometrySettings

    settings = PhotometrySettings.from_config(config.get("photometry", {}))
    return settings, science_config_hash(settings.science_dict(), PHOTOMETRY_VERSION)


def _calibration(paths: list[str], source: str):
    from spxflow.photometry import CalibrationSet

    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise FileNotFoundError(
            f"source {source}: calibration product(s) missing: {missing}; fetch them with "
            f"`snakemake {' '.join(missing)}`"
        )
    return CalibrationSet.from_paths(list(paths))


def measure_source(
    config, source, target, neighbours, inputs, outputs, threads=1, carried=None
) -> None:
    """Photometry of every cutout of one source -> measurements table (+ a few QA stamps).
    ``carried``: rows measured in an earlier run for images not fetched again."""
    from spxflow.photometry import PHOTOMETRY_VERSION, measure_cutouts, model_images

    settings, config_hash = _settings_and_hash(config)
    calibration = _calibration(calibration_paths(inputs.calibration), source)
    index = read_json(inputs.index)
    ok = [e for e in index["images"] if e["status"] == "ok" and not e.get("carried")]
    failed = [e for e in index["images"] if e["status"] != "ok"]
    paths = [os.path.join(inputs.cutouts, e["file_name"]) for e in ok]
    nbrs = [tuple(n) for n in neighbours]
    parts = []
    if paths:
        parts.append(
            measure_cutouts(
                paths,
                target["ra_deg"],
                target["dec_deg"],
                nbrs,
                calibration,
                settings,
                threads=threads,
            )
        )
    if failed:
        parts.append(_failure_rows(failed, target))
    if carried is not None:
        parts.append(carried)
    df = pd.concat(parts, ignore_index=True) if parts else empty_measurements()
    image_ids = {e["file_name"]: e["image_id"] for e in index["images"]}
    df["image_id"] = df["file_name"].map(image_ids).fillna(df.get("image_id", ""))
    df["source"] = source
    df["name"] = target["name"]
    df["ra_deg"] = target["ra_deg"]
    df["dec_deg"] = target["dec_deg"]
    df["measurement_id"] = [
        measurement_id(source, img, target["cutout_size_arcsec"], config_hash, PHOTOMETRY_VERSION)
        for img in df["image_id"]
    ]
    df = _coerce_schema(df)
    df = df.sort_values(["wavelength_um", "mjd", "image_id"], kind="mergesort", na_position="last")
    df = df.reset_index(drop=True)
    write_parquet_atomic(outputs.measurements, df)
    _write_stamps(
        outputs.stamps, df, inputs.cutouts, target, nbrs, calibration, settings, model_images
    )
    log.info(
        "source %s: %d measurements (%d detected, %d recommended, %d failed)",
        source,
        len(df),
        int((df["detection_status"] == "detected").sum()),
        int(df["science_recommended"].sum()),
        int((df["detection_status"] == "failed").sum()),
    )


def process_source(config, source, target, neighbours, calibration_index, outputs, threads=1):
    """Discovery, cutouts and photometry of one source in one job.

    One job per source instead of three keeps the DAG small (Snakemake costs ~3 ms per job
    at 10,000 sources) and needs no directory output: the cutouts live in
    ``data/cutouts/{source}/`` only while this job runs, unless ``cleanup: never`` keeps them
    (a later run then reuses the ones that are still valid for the same request).
    """
    cutout_dir = os.path.join("data", "cutouts", source)
    _reset_cutout_dir(cutout_dir, target)
    discover_source(config, source, target, outputs.discovery)
    carried = fetch_source_cutouts(
        config, source, target, outputs.discovery, cutout_dir, outputs.index
    )
    inputs = SimpleNamespace(calibration=calibration_index, index=outputs.index, cutouts=cutout_dir)
    measure_source(
        config, source, target, neighbours, inputs, outputs, threads=threads, carried=carried
    )
    for _, aside in _retry_paths(source).values():
        if os.path.exists(aside):
            os.unlink(aside)
    if config["cleanup"] == "success-after-source":
        shutil.rmtree(cutout_dir, ignore_errors=True)
        log.info("source %s: cutouts deleted (cleanup=success-after-source)", source)


def _reset_cutout_dir(cutout_dir: str, target: dict) -> None:
    """Keep kept cutouts only if they were cut for the same position and size."""
    marker = os.path.join(cutout_dir, ".request.json")
    request = {k: target[k] for k in ("ra_deg", "dec_deg", "cutout_size_arcsec")}
    if os.path.isdir(cutout_dir) and (not os.path.exists(marker) or read_json(marker) != request):
        shutil.rmtree(cutout_dir)
    write_json_atomic(marker, request)


def write_source_products(config, source, target, neighbours, inputs, outputs) -> None:
    """Spectrum CSV, provenance, measurement index, plots and the output manifest."""
    from spxflow.photometry import PHOTOMETRY_VERSION

    settings, config_hash = _settings_and_hash(config)
    df = pd.read_parquet(inputs.measurements)
    index = read_json(inputs.cutout_index)

    spectrum = df.copy()
    spectrum["config_hash"] = config_hash
    spectrum["code_version"] = __version__
    spectrum["schema_version"] = SCHEMA_VERSION
    write_csv_atomic(outputs.spectrum, spectrum, float_format="%.10g")
    rows_sha = sha256_file(outputs.spectrum)
    ids = df["measurement_id"].tolist()
    write_json_atomic(
        outputs.index,
        {
            "source": source,
            "config_hash": config_hash,
            "rows_sha256": rows_sha,
            "measurements": _json_records(
                df[
                    [
                        "measurement_id",
                        "image_id",
                        "obs_id",
                        "detector",
                        "file_name",
                        "detection_status",
                        "result_flags",
                    ]
                ]
            ),
        },
    )
    write_json_atomic(
        outputs.provenance,
        _provenance(
            config,
            source,
            target,
            neighbours,
            settings,
            config_hash,
            calibration_paths(inputs.calibration),
            index,
            PHOTOMETRY_VERSION,
        ),
    )
    plot_problems = _plots(config, target, df, inputs.stamps, outputs.sed, outputs.qa)
    write_manifest(
        outputs.manifest,
        source=source,
        files=[
            inputs.measurements,
            inputs.stamps,
            inputs.discovery,
            inputs.cutout_index,
            outputs.spectrum,
            outputs.provenance,
            outputs.index,
            outputs.sed,
            outputs.qa,
        ],
        measurement_ids=ids,
        rows_sha256=rows_sha,
        config_hash=config_hash,
        code_version=__version__,
        problems=plot_problems,
    )


def _json_records(df: pd.DataFrame) -> list[dict]:
    return [
        {k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()}
        for r in df.to_dict(orient="records")
    ]


def _plots(config, target, df, stamps_path, sed_png, qa_png) -> list[str]:
    """Render the SED and QA plots; a failure becomes a labelled placeholder and a manifest
    problem instead of costing the science outputs."""
    from spxflow.plots import plot_failure_png, plot_qa_summary, plot_sed

    problems = []
    plots = config.get("plots", {})
    try:
        truth = _truth_sed(config, target) if len(df) else None
        plot_sed(
            df,
            sed_png,
            title_name=target["name"],
            ra=target["ra_deg"],
            dec=target["dec_deg"],
            units=plots.get("sed_units", "fnu"),
            scale=plots.get("sed_scale", "linear"),
            truth=truth,
        )
    except Exception as exc:
        log.exception("SED plot failed for %s", target["name"])
        problems.append(f"sed plot failed: {type(exc).__name__}: {exc}")
        plot_failure_png(sed_png, f"SED plot failed for {target['name']}", str(exc))
    try:
        plot_qa_summary(df, qa_png, title_name=target["name"], stamps=load_stamps(stamps_path))
    except Exception as exc:
        log.exception("QA summary failed for %s", target["name"])
        problems.append(f"qa summary failed: {type(exc).__name__}: {exc}")
        plot_failure_png(qa_png, f"QA summary failed for {target['name']}", str(exc))
    return problems


def _provenance(
    config,
    source,
    target,
    neighbours,
    settings,
    config_hash,
    calibration_paths,
    index,
    photometry_version,
) -> dict:
    import astropy
    import numba

    from spxflow.photometry import CalibrationSet

    cal = CalibrationSet.from_paths(calibration_paths)
    ids_by_path = {os.path.basename(cal.files[k]): cal.ids[k] for k in cal.ids}

    return {
        "source": source,
        "name": target["name"],
        "ra_deg": target["ra_deg"],
        "dec_deg": target["dec_deg"],
        "cutout_size_arcsec": target["cutout_size_arcsec"],
        "neighbours": neighbours,
        "archive": archive_science_config(config),
        "n_images": index["n_images"],
        "n_cutouts_ok": index["n_ok"],
        "n_cutouts_failed": index["n_failed"],
        "calibration": [
            {
                "calibration_id": ids_by_path[os.path.basename(p)],
                "path": os.path.relpath(p),
                "sha256": sha256_file(p),
            }
            for p in calibration_paths
        ],
        "photometry_settings": settings.science_dict(),
        "photometry_version": photometry_version,
        "zodi_subtracted": False,
        "config_hash": config_hash,
        "code_version": __version__,
        "schema_version": SCHEMA_VERSION,
        "software": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "astropy": astropy.__version__,
            "numba": numba.__version__,
            "pandas": pd.__version__,
        },
    }


def _representative(df: pd.DataFrame, n: int) -> pd.DataFrame:
    """A few measurements worth looking at: the best S/N per detector, then the worst fits."""
    ok = df[df["detection_status"] != "failed"]
    if ok.empty:
        return ok
    best = ok.sort_values("snr", ascending=False).groupby("detector", sort=True).head(1)
    rest = ok.drop(best.index).sort_values("chi2_red", ascending=False)
    return pd.concat([best, rest]).head(n)


def _write_stamps(path, df, cutout_dir, target, nbrs, calibration, settings, model_images):
    stamps = {}
    chosen = _representative(df, N_QA_STAMPS)
    for k, row in enumerate(chosen.itertuples(index=False)):
        f = os.path.join(cutout_dir, row.file_name)
        try:
            img = model_images(f, target["ra_deg"], target["dec_deg"], nbrs, calibration, settings)
        except Exception as exc:  # a QA stamp must never cost the science outputs
            log.warning("QA stamp for %s not made: %s", row.file_name, exc)
            continue
        for key in ("data", "model", "residual", "mask"):
            stamps[f"{k}_{key}"] = np.asarray(img[key])
        stamps[f"{k}_label"] = np.array(
            f"D{row.detector} {row.wavelength_um:.3f} um S/N {row.snr:.1f}"
        )
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **stamps)


def load_stamps(path: str) -> list[dict]:
    data = np.load(path)
    out = []
    k = 0
    while f"{k}_data" in data:
        out.append(
            {
                "data": data[f"{k}_data"],
                "model": data[f"{k}_model"],
                "residual": data[f"{k}_residual"],
                "mask": data[f"{k}_mask"],
                "label": str(data[f"{k}_label"]),
            }
        )
        k += 1
    return out


# --- per-source products ------------------------------------------------------------
def _truth_sed(config, target) -> pd.DataFrame | None:
    """The injected SED of a simulated source, drawn as a line on its SED plot."""
    archive = make_archive(config)
    wl = np.linspace(0.72, 5.05, 600)
    flux = archive.truth_sed(target["ra_deg"], target["dec_deg"], wl)
    if flux is None:
        return None
    return pd.DataFrame({"wavelength_um": wl, "flux_uJy": flux})


# --- full QA -------------------------------------------------------------------------------
def full_qa(config, source, target, neighbours, cutout_dir, inputs, outputs, threads=1) -> None:
    """One QA PNG per measurement from kept cutouts; says so (and re-downloads nothing) when
    the cutouts were cleaned up. Never touches science outputs or measurement ids."""
    from spxflow.plots import render_measurement_qas

    settings, _ = _settings_and_hash(config)
    df = pd.read_parquet(inputs.measurements)
    out_dir = Path(outputs.pngs)
    out_dir.mkdir(parents=True, exist_ok=True)
    measured = df[df["detection_status"] != "failed"]
    jobs = [
        {
            "path": os.path.join(cutout_dir, row.file_name),
            "row": row._asdict(),
            "out_png": str(out_dir / f"{row.measurement_id}_qa.png"),
            "ra": target["ra_deg"],
            "dec": target["dec_deg"],
            "neighbours": [tuple(n) for n in neighbours],
        }
        for row in measured.itertuples(index=False)
        if os.path.exists(os.path.join(cutout_dir, row.file_name))
    ]
    problems = []
    if len(jobs) < len(measured):
        problems.append(
            f"{len(measured) - len(jobs)} of {len(measured)} cutouts of {source} are not on disk "
            f"(cleanup={config['cleanup']}), so their full-QA PNGs were not made; nothing was "
            f"re-downloaded. To make them: snakemake --config cleanup=never qa_level=full "
            f"--forcerun cutouts"
        )
        log.warning(problems[-1])
    calibration = _calibration(sorted(glob.glob("resources/calibration/*.fits")), source)
    written = (
        render_measurement_qas(jobs, threads=threads, calibration=calibration, settings=settings)
        if jobs
        else []
    )
    write_manifest(
        outputs.manifest,
        source=source,
        files=sorted(written),
        measurement_ids=measured["measurement_id"].tolist(),
        rows_sha256=sha256_file(inputs.measurements),
        config_hash="",
        code_version=__version__,
        kind="qa",
        problems=problems,
    )


# --- catalog-wide --------------------------------------------------------------------------
def summarize(catalog_csv, measurement_paths, out_sources, out_fits) -> None:
    from spxflow.summary import build_sources_summary, write_measurements_fits

    catalog = pd.read_csv(catalog_csv, dtype={"source": str, "name": str})
    tables = {}
    for path in measurement_paths:
        source = Path(path).stem
        tables[source] = pd.read_parquet(path)
    summary = build_sources_summary(catalog, tables, failures={})
    write_csv_atomic(out_sources, summary, float_format="%.6g")
    all_rows = [t for t in tables.values() if len(t)]
    merged = pd.concat(all_rows, ignore_index=True) if all_rows else empty_measurements()
    write_measurements_fits(merged, out_fits)


def accuracy(measurement_paths, index_paths, out_csv) -> None:
    from spxflow.validation import accuracy_table

    meas = pd.concat([pd.read_parquet(p) for p in measurement_paths], ignore_index=True)
    truth_rows = []
    for p in index_paths:
        idx = read_json(p)
        for e in idx["images"]:
            if e.get("truth"):
                truth_rows.append(
                    {
                        "source": idx["source"],
                        "file_name": e["file_name"],
                        "flux_uJy": e["truth"]["flux_uJy"],
                        "wavelength_um": e["truth"]["wavelength_um"],
                        "truth_source": e["truth"]["source"],
                    }
                )
    truth = pd.DataFrame(truth_rows)
    table = accuracy_table(meas, truth)
    write_csv_atomic(out_csv, table, float_format="%.6g")
    log.info("accuracy vs injected truth:\n%s", table.to_string(index=False))


def check_manifests(provenance_dir: str, qa_dir: str, out_json: str) -> None:
    """Verify every manifest. Missing, tampered or stale files fail the check; problems the
    run itself recorded (e.g. full QA skipped because cutouts were cleaned up) are reported
    as warnings."""
    manifests = sorted(glob.glob(os.path.join(provenance_dir, "*_output_manifest.json")))
    manifests += sorted(glob.glob(os.path.join(qa_dir, "*", "*_qa_manifest.json")))
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
    with atomic_path(out_json) as tmp:
        tmp.write_text(canonical_json(report))
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
