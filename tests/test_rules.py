"""Every rule function of ``spxflow.rules``, called directly on small inputs (no Snakemake).

The archive is the simulated one, cut down to a few images per source, so the whole chain
validate_catalog -> ... -> check runs in seconds. The measure and source_products jobs are
also held to their straight line: no file they write is read back, and provenance copies the
calibration checksums instead of hashing the products again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os

import pandas as pd
import pytest

from spxflow import rerun, rules
from spxflow.archive.simulated import SimulatedArchive
from spxflow.catalog import CatalogError, CatalogSettings
from spxflow.fileio import read_json, sha256_file
from spxflow.format import calibration_file_name
from spxflow.manifest import verify_manifest
from spxflow.settings import Runtime, Science, calibration_needed
from spxflow.stamps import read_stamps

N_IMAGES = 4
CATALOG = "Name,RA_deg,DEC_deg,cutout_size_arcsec\nCalibStar,100.20,-10.00,45\n"
TARGET = {"name": "CalibStar", "ra_deg": 100.2, "dec_deg": -10.0, "cutout_size_arcsec": 45.0}
SOURCE = "CalibStar"


class FewImages:
    """The simulated archive with only the first few images per position; the last one's
    fetch fails. Counts the rows it is asked to fetch."""

    def __init__(self):
        self.sim = SimulatedArchive()
        self.fetched_rows = []
        self.pixels = "window"

    @property
    def serves_windows(self):
        return self.pixels != "cutout"

    def discover(self, ra, dec, radius_arcsec=0.0):
        return self.sim.discover(ra, dec, radius_arcsec).head(N_IMAGES)

    def discover_many(self, positions, radius_arcsec=0.0):
        return {key: self.discover(ra, dec, radius_arcsec) for key, ra, dec in positions}

    def fetch_cutouts(self, rows, ra, dec, size, dest):
        rows = list(rows)
        self.fetched_rows.append(len(rows))
        return [
            dataclasses.replace(r, status="failed", reason="test outage", path=None)
            if r.image_id == self.failing
            else r
            for r in self.sim.fetch_cutouts(rows, ra, dec, size, dest)
        ]

    def fetch_windows(self, rows, ra, dec, half_size, size):
        rows = list(rows)
        self.fetched_rows.append(len(rows))
        return [
            dataclasses.replace(r, status="failed", reason="test outage", cutout=None)
            if r.image_id == self.failing
            else r
            for r in self.sim.fetch_windows(rows, ra, dec, half_size, size)
        ]

    def replaced_objects(self, entries):
        return {}

    def fetch_calibration(self, release, family, detector, path):
        return self.sim.fetch_calibration(release, family, detector, path)

    def truth_sed(self, *args, **kwargs):
        return self.sim.truth_sed(*args, **kwargs)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A project folder in which the rules run in DAG order; returns (dir, archive, paths)."""
    root = tmp_path_factory.mktemp("rules")
    old = os.getcwd()
    os.chdir(root)
    archive = FewImages()
    ids = archive.discover(TARGET["ra_deg"], TARGET["dec_deg"])["obs_publisher_did"]
    archive.failing = str(ids.iloc[-1])
    mp = pytest.MonkeyPatch()

    def configured(science, runtime, cache_dir=None):
        archive.pixels = runtime["pixels"]  # as make_archive passes the runtime knobs on
        return archive

    mp.setattr(rules, "make_archive", configured)
    yield root, archive
    mp.undo()
    os.chdir(old)


SCIENCE = Science.from_config({})
RUNTIME = Runtime.from_config({})
OUT = rules.MeasureOutputs(
    discovery=f"results/discovery/{SOURCE}.parquet",
    cutout_index=f"results/cutouts/{SOURCE}.json",
    measurements=f"results/measurements/{SOURCE}.parquet",
    stamps=f"results/qa/{SOURCE}/{SOURCE}_stamps.npz",
)
PRODUCTS = rules.ProductOutputs(
    spectrum=f"results/spectra/{SOURCE}.csv",
    provenance=f"results/provenance/{SOURCE}_provenance.json",
    measurement_index=f"results/provenance/{SOURCE}_measurement_index.json",
    sed=f"results/plots/{SOURCE}_sed.png",
    qa=f"results/qa/{SOURCE}/{SOURCE}_qa_summary.png",
    manifest=f"results/provenance/{SOURCE}_output_manifest.json",
)
CAL_INDEX = "resources/calibration/calibration_index.json"


def _reads(monkeypatch) -> list[str]:
    """Record every path the rules read through pandas or read_json."""
    seen: list[str] = []
    real_parquet, real_json = pd.read_parquet, rules.read_json

    def read_parquet(path, *a, **k):
        seen.append(str(path))
        return real_parquet(path, *a, **k)

    def read(path):
        seen.append(str(path))
        return real_json(path)

    monkeypatch.setattr(pd, "read_parquet", read_parquet)
    monkeypatch.setattr(rules, "read_json", read)
    return seen


def test_validate_catalog(work):
    with open("catalog.csv", "w") as fh:
        fh.write(CATALOG)
    rules.validate_catalog(CatalogSettings.from_config({}), "catalog.csv", "results/catalog.csv")
    table = pd.read_csv("results/catalog.csv")
    assert table["source"].tolist() == [SOURCE]
    open("empty.csv", "w").close()
    with pytest.raises(CatalogError, match="empty.csv.*is empty"):
        rules.validate_catalog(CatalogSettings.from_config({}), "empty.csv", "results/x.csv")
    assert not os.path.exists("results/x.csv")


def test_calibration_and_its_index(work):
    paths = []
    for release, family, det in calibration_needed(SCIENCE):
        path = f"resources/calibration/{calibration_file_name(release, family, det)}"
        rules.calibration(SCIENCE.archive, RUNTIME, release, family, det, path)
        paths.append(path)
    rules.calibration_index(paths, CAL_INDEX)
    products = read_json(CAL_INDEX)["products"]
    assert sorted(p["path"] for p in products) == sorted(paths)
    assert all(p["sha256"] == sha256_file(p["path"]) for p in products)


def test_measure_is_one_straight_line(work, monkeypatch):
    _, archive = work
    reads = _reads(monkeypatch)
    rules.measure_source(SCIENCE, RUNTIME, SOURCE, TARGET, [], CAL_INDEX, OUT)
    assert not set(reads) & set(dataclasses.astuple(OUT)), "an output was read back"
    index = read_json(OUT.cutout_index)
    assert (index["n_images"], index["n_ok"], index["n_failed"]) == (N_IMAGES, N_IMAGES - 1, 1)
    table = pd.read_parquet(OUT.measurements)
    assert len(table) == N_IMAGES and (table["detection_status"] == "failed").sum() == 1
    assert table["measurement_id"].is_unique
    assert len(pd.read_parquet(OUT.discovery)) == N_IMAGES
    assert not os.path.exists(f"data/cutouts/{SOURCE}")  # cleanup=success-after-source


def test_measure_after_retry_failed_fetches_only_the_failed_image(work):
    _, archive = work
    before = pd.read_parquet(OUT.measurements)
    assert rerun.mark_failed([SOURCE]) == [SOURCE]
    assert not os.path.exists(OUT.cutout_index)
    archive.fetched_rows.clear()
    archive.failing = None  # the outage is over
    rules.measure_source(SCIENCE, RUNTIME, SOURCE, TARGET, [], CAL_INDEX, OUT)
    assert archive.fetched_rows == [1]
    after = pd.read_parquet(OUT.measurements)
    assert (after["detection_status"] == "failed").sum() == 0
    kept = before[before["detection_status"] != "failed"].set_index("measurement_id")
    pd.testing.assert_frame_equal(after.set_index("measurement_id").loc[kept.index], kept)
    assert not any(p.endswith(".retry.json") for p in os.listdir("results/cutouts"))


def test_measure_after_update_fetches_nothing_new_and_keeps_the_stamps(work):
    _, archive = work
    before = pd.read_parquet(OUT.measurements)
    stamps_before = read_stamps(OUT.stamps)
    assert rerun.mark_for_update([SOURCE, "never_measured"]) == [SOURCE]
    archive.fetched_rows.clear()
    rules.measure_source(SCIENCE, RUNTIME, SOURCE, TARGET, [], CAL_INDEX, OUT)
    assert archive.fetched_rows == [0]
    pd.testing.assert_frame_equal(pd.read_parquet(OUT.measurements), before)
    stamps = read_stamps(OUT.stamps)
    assert stamps and list(stamps) == list(stamps_before)  # taken over: no cutouts on disk


def _source_products():
    inputs = rules.ProductInputs(
        OUT.measurements, OUT.stamps, OUT.discovery, OUT.cutout_index, CAL_INDEX
    )
    plots = {"sed_units": "fnu", "sed_scale": "linear"}
    rules.products_of_source(SCIENCE, plots, RUNTIME, SOURCE, TARGET, [], inputs, PRODUCTS)


def test_source_products_copy_checksums_and_read_back_nothing(work, monkeypatch):
    import spxflow.manifest

    hashed: list[str] = []
    real = spxflow.manifest.sha256_file
    monkeypatch.setattr(
        spxflow.manifest, "sha256_file", lambda p, *a: hashed.append(str(p)) or real(p, *a)
    )
    reads = _reads(monkeypatch)
    _source_products()
    outputs = set(dataclasses.astuple(PRODUCTS))
    assert not set(reads) & outputs and not set(hashed) & outputs
    assert not any(p.endswith(".fits") for p in hashed)  # calibration is never re-hashed
    assert verify_manifest(PRODUCTS.manifest) == []
    prov = read_json(PRODUCTS.provenance)
    assert prov["calibration"] == read_json(CAL_INDEX)["products"]
    assert prov["config_hash"] == SCIENCE.config_hash
    spectrum = pd.read_csv(PRODUCTS.spectrum)
    index = read_json(PRODUCTS.measurement_index)
    assert [m["measurement_id"] for m in index["measurements"]] == spectrum[
        "measurement_id"
    ].tolist()
    assert index["rows_sha256"] == sha256_file(PRODUCTS.spectrum)


def test_qa_full_from_windows_from_kept_cutouts_or_neither(work):
    manifest = f"results/qa/{SOURCE}/{SOURCE}_qa_manifest.json"
    pngs = f"results/qa/{SOURCE}/measurements"
    cutouts = f"data/cutouts/{SOURCE}"

    def qa(runtime, cutout_dir=cutouts):
        rules.qa_full_source(
            SCIENCE, runtime, SOURCE, TARGET, [], cutout_dir, OUT.measurements, OUT.stamps,
            CAL_INDEX, pngs, manifest, measure_rule="measure_c000000",
        )  # fmt: skip
        return read_json(manifest)

    # windows (the default): no cutout files, full QA from the windows in the stamps file
    rules.measure_source(SCIENCE, RUNTIME, SOURCE, TARGET, [], CAL_INDEX, OUT)
    assert not os.path.exists(cutouts)
    m = qa(RUNTIME)
    assert len(m["files"]) == N_IMAGES and not m["problems"]
    assert verify_manifest(manifest) == []
    # cutout files kept by cleanup=never
    kept = dataclasses.replace(
        RUNTIME, cleanup="never", archive={**RUNTIME.archive, "pixels": "cutout"}
    )
    rules.measure_source(SCIENCE, kept, SOURCE, TARGET, [], CAL_INDEX, OUT)
    assert len([f for f in os.listdir(cutouts) if f.endswith(".fits")]) == N_IMAGES
    m = qa(kept)
    assert len(m["files"]) == N_IMAGES and not m["problems"]
    # cutouts deleted after the source and no windows kept: says so, re-downloads nothing
    m = qa(RUNTIME, "data/nowhere")
    problem = m["problems"][0]
    assert "neither a kept window nor a cutout" in problem
    assert "--forcerun measure_c000000" in problem


def test_summary_accuracy_and_check(work):
    _source_products()  # after qa_full's measure run
    rules.summary(
        "results/catalog.csv", [OUT.measurements], "results/sources.csv", "results/m.fits"
    )
    assert pd.read_csv("results/sources.csv")["source"].tolist() == [SOURCE]
    rules.accuracy([OUT.measurements], [OUT.cutout_index], "results/accuracy.csv")
    assert len(pd.read_csv("results/accuracy.csv"))
    rules.check("results/provenance", "results/qa", "results/check.json")
    assert json.loads(open("results/check.json").read())["n_problems"] == 0
    with open(PRODUCTS.spectrum, "a") as fh:
        fh.write("tampered\n")
    with pytest.raises(RuntimeError, match="1 output problem"):
        rules.check("results/provenance", "results/qa", "results/check.json")


def test_a_chunk_job_measures_its_sources_then_writes_its_record_last(work, monkeypatch, caplog):
    second = {"name": "Second", "ra_deg": 100.3, "dec_deg": -10.1, "cutout_size_arcsec": 45.0}
    targets = {SOURCE: TARGET, "Second": second}
    outs = {
        s: rules.MeasureOutputs(*(p.replace("results/", "chunked/").replace(SOURCE, s)
                                  for p in dataclasses.astuple(OUT)))
        for s in targets
    }  # fmt: skip
    record = "chunked/chunks/measure/c000000.json"
    table = "chunked/chunks/discovery/b000000.parquet"
    batch = "chunked/chunks/discover/b000000.json"
    rules.discover(SCIENCE, RUNTIME, "b000000", {"c000000": list(targets)}, targets, table,
                   batch)  # fmt: skip
    assert read_json(batch)["chunks"] == {"c000000": [SOURCE, "Second"]}
    assert set(pd.read_parquet(table)["source"]) == {SOURCE, "Second"}
    reads = _reads(monkeypatch)
    written = []
    real = rules.write_json_atomic
    monkeypatch.setattr(rules, "write_json_atomic", lambda p, o: written.append(p) or real(p, o))
    caplog.set_level(logging.INFO, logger="spxflow.rules")
    rules.measure(SCIENCE, RUNTIME, "c000000", targets, {s: [] for s in targets}, table,
                  CAL_INDEX, outs, record)  # fmt: skip
    assert written[-1] == record
    # A line per source: its photometry cost, then the chunk's progress with an ETA.
    lines = [r.getMessage() for r in caplog.records]
    assert sum(f"photometry of {N_IMAGES} images in" in m for m in lines) == 2
    assert [m.split(": ", 1)[1].split(" (")[0] for m in lines if "sources done" in m] == [
        "1/2 sources done", "2/2 sources done"
    ]  # fmt: skip
    assert all("measurements/s" in m and "ETA" in m for m in lines if "sources done" in m)
    everything = {p for o in outs.values() for p in dataclasses.astuple(o)} | {record}
    assert not set(reads) & everything, "an output was read back"
    content = read_json(record)
    assert content["sources"] == [SOURCE, "Second"]
    assert content["files"]["Second"] == dataclasses.asdict(outs["Second"])
    for s, out in outs.items():
        measured = pd.read_parquet(out.measurements)
        assert len(measured) == N_IMAGES and set(measured["source"]) == {s}
    assert rules.recorded_files([record], "measurements") == [
        outs[SOURCE].measurements, outs["Second"].measurements
    ]  # fmt: skip


def test_a_rerun_also_marks_the_measured_chunk_mates(tmp_path):
    results = tmp_path / "results"
    for s in ("a", "b", "c"):
        (results / "cutouts").mkdir(parents=True, exist_ok=True)
        (results / "cutouts" / f"{s}.json").write_text(json.dumps({"n_failed": int(s == "a")}))
    (results / "chunks" / "measure").mkdir(parents=True)
    for chunk, members in {"c000000": ["a", "b"], "c000001": ["c"]}.items():
        (results / "chunks" / "measure" / f"{chunk}.json").write_text(
            json.dumps({"sources": members})
        )
    assert rerun.mark_failed(["a", "b", "c"], str(results)) == ["a"]
    assert rerun.mark_mates(["a"], str(results), "measure") == ["b"]
    assert sorted(p.name for p in (results / "cutouts").iterdir()) == [
        "a.retry.json", "b.retry.json", "c.json"
    ]  # fmt: skip


class Duplicated(FewImages):
    """At the demo AGN (QR2 and QR3 cover it): one QR3 exposure under `l2b` and `l2b_retry`,
    and one QR2 file returned by both the wide and the deep collection."""

    def discover(self, ra, dec, radius_arcsec=0.0):
        table = self.sim.discover(ra, dec, radius_arcsec)
        retry = table[table["access_url"].str.contains("l2b_retry")].iloc[:1]
        stem = retry["access_url"].iloc[0].rsplit("_spx_", 1)[0].rsplit("/", 1)[1]
        normal = table[
            table["access_url"].str.contains(stem, regex=False)
            & ~table["access_url"].str.contains("l2b_retry")
        ]
        qr2 = table[table["obs_collection"] == "spherex_qr2"].iloc[:1]
        deep = qr2.assign(obs_collection="spherex_qr2_deep")
        return pd.concat([normal, retry, qr2, deep], ignore_index=True)


def test_measure_keeps_each_exposure_once_and_lists_the_dropped_rows(work, monkeypatch):
    archive = Duplicated()
    archive.failing = None
    monkeypatch.setattr(rules, "make_archive", lambda science, runtime, cache_dir=None: archive)
    target = {"name": "AGN", "ra_deg": 35.5, "dec_deg": 48.1, "cutout_size_arcsec": 45.0}
    out = rules.MeasureOutputs(*(p.replace(SOURCE, "AGN") for p in dataclasses.astuple(OUT)))
    rules.measure_source(SCIENCE, RUNTIME, "AGN", target, [], CAL_INDEX, out)
    table = pd.read_parquet(out.measurements)
    assert len(table) == 2 and not table[["obs_id", "detector"]].duplicated().any()
    assert sorted(table["release"]) == ["qr2", "qr3"]
    assert table.loc[table["release"] == "qr3", "file_name"].str.contains("l2b_retry").all()
    index = read_json(out.cutout_index)
    assert index["n_duplicates"] == 2 and index["n_by_release"] == {"qr2": 1, "qr3": 1}
    reasons = sorted(d["reason"] for d in index["duplicates"])
    assert "older processing" in reasons[0] and "l2b_retry" in reasons[0]
    assert "spherex_qr2" in reasons[1]
    assert {d["obs_collection"] for d in index["duplicates"]} == {"spherex_qr3", "spherex_qr2_deep"}
