"""The workflow end to end through Snakemake on a tiny catalog: outputs, reruns, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from spxflow.columns import MEASUREMENT_COLUMN_NAMES, REQUIRED_COLUMNS
from spxflow.manifest import verify_manifest
from tests.workflow_helpers import (
    REPO,
    chunks_of,
    make_workspace,
    planned_jobs,
    planned_outputs,
    result_files,
    snakemake,
    spxflow_rerun,
)

pytestmark = pytest.mark.slow

# Three sources in two chunks ([s0, s1], [s2]): every rerun below must stay in its chunk.
PER_JOB = 2
CONFIG = ["--config", "catalog=catalog.csv", f"sources_per_job={PER_JOB}"]


def tiny_catalog() -> pd.DataFrame:
    demo = pd.read_csv(REPO / "resources" / "demo_catalog.csv")
    return demo.head(3).reset_index(drop=True)


def chunk_of(ws, source: str) -> str:
    return next(c for c, members in chunks_of(ws, PER_JOB).items() if source in members)


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """A workspace in which the whole workflow has run once on the tiny catalog."""
    ws = make_workspace(tmp_path_factory.mktemp("wf"), tiny_catalog())
    snakemake(ws, *CONFIG)
    return ws


def sources(ws):
    from spxflow.slug import safe_slug

    return [safe_slug(n) for n in pd.read_csv(ws / "catalog.csv")["Name"]]


def test_every_contract_output_exists_and_is_consistent(done):
    for s in sources(done):
        for rel in [
            f"results/discovery/{s}.parquet",
            f"results/cutouts/{s}.json",
            f"results/measurements/{s}.parquet",
            f"results/spectra/{s}.csv",
            f"results/provenance/{s}_provenance.json",
            f"results/provenance/{s}_measurement_index.json",
            f"results/provenance/{s}_output_manifest.json",
            f"results/plots/{s}_sed.png",
            f"results/qa/{s}/{s}_qa_summary.png",
        ]:
            assert (done / rel).is_file(), rel
        meas = pd.read_parquet(done / f"results/measurements/{s}.parquet")
        disc = pd.read_parquet(done / f"results/discovery/{s}.parquet")
        assert len(meas) == len(disc) > 0  # one row per discovered image, none dropped
        assert list(meas.columns) == list(MEASUREMENT_COLUMN_NAMES)
        spec = pd.read_csv(done / f"results/spectra/{s}.csv")
        assert set(REQUIRED_COLUMNS) <= set(spec.columns)
        assert {"config_hash", "code_version", "schema_version"} <= set(spec.columns)
        assert spec["measurement_id"].tolist() == meas["measurement_id"].tolist()
        assert meas["measurement_id"].is_unique
        manifest = done / f"results/provenance/{s}_output_manifest.json"
        os.chdir(done)
        assert verify_manifest(manifest, root=done) == []
        m = json.loads(manifest.read_text())
        assert m["measurement_ids"] == meas["measurement_id"].tolist()
        # cleanup=success-after-source: the measure job deletes its cutouts when it succeeds
        assert not (done / f"data/cutouts/{s}").exists()
    summary = pd.read_csv(done / "results/summary/sources.csv")
    assert len(summary) == 3
    for stage in ("measure", "source_products"):
        for chunk, members in chunks_of(done, PER_JOB).items():
            record = json.loads((done / f"results/chunks/{stage}/{chunk}.json").read_text())
            assert record["sources"] == members
    acc = pd.read_csv(done / "results/validation/accuracy.csv")
    assert len(acc) >= 1


def test_complete_run_plans_nothing(done):
    assert planned_jobs(done, *CONFIG) == []


def test_sigkill_midway_then_rerun_gives_identical_outputs(done, tmp_path):
    # Runs before the tests below change `done`, which is the uninterrupted reference. This
    # run has a job per source (sources_per_job=1), so it also proves that chunks change no
    # output: every file but the chunk records is byte-identical.
    ws = make_workspace(tmp_path / "killed", tiny_catalog())
    config = [*CONFIG, "sources_per_job=1"]
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", "--scheduler", "greedy", *config]
    proc = subprocess.Popen(
        cmd, cwd=ws, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 300
    while time.time() < deadline and not list((ws / "results").glob("measurements/*.parquet")):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    snakemake(ws, "--unlock", *config)
    snakemake(ws, "--rerun-incomplete", *config)
    leftovers = list(ws.rglob("*.part"))
    assert not leftovers, leftovers
    ours, reference = result_files(ws), result_files(done)
    ours.pop("results/check/check_report.json", None)
    reference.pop("results/check/check_report.json", None)
    reference = {
        k: v for k, v in reference.items() if "/measurements/" not in k or k.endswith(".parquet")
    }
    measure_records = [k for k in ours if k.startswith("results/chunks/measure/")]
    assert len(measure_records) == len(sources(ws))  # a chunk per source
    ours = {k: v for k, v in ours.items() if not k.startswith("results/chunks/")}
    reference = {k: v for k, v in reference.items() if not k.startswith("results/chunks/")}
    ours = {k: v for k, v in ours.items() if k in reference or "/qa/" not in k}
    assert sorted(ours) == sorted(k for k in reference if not k.endswith("_qa_manifest.json"))
    for k in ours:
        assert ours[k] == reference[k], f"{k} differs after kill + rerun"


def test_report_builds_and_opens_in_chromium(done):
    from tests.chromium_report import CHROMIUM, check_report_in_chromium

    snakemake(done, "--report", "report.html", *CONFIG)
    html = (done / "report.html").read_text(errors="replace")
    assert "Sources" in html and "sed.png" in html and "qa_summary.png" in html
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} not installed (Debian: apt-get install -y chromium)")
    result = check_report_in_chromium(done / "report.html")
    assert result["console_errors"] == [], result["console_errors"]
    # The rendered page lists the per-source categories and the summary tables.
    for text in ("Sources", "Summary", *sources(done)):
        assert text in result["dom"], text
    assert result["screenshot"].stat().st_size > 5000


@pytest.mark.parametrize("index", [0, 2])
def test_deleting_one_spectrum_reruns_only_its_chunks_products(done, index):
    s = sources(done)[index]
    (done / f"results/spectra/{s}.csv").unlink()
    jobs = planned_jobs(done, *CONFIG)
    per_chunk = {(r, w) for r, w in jobs if w}
    assert per_chunk == {("source_products", chunk_of(done, s))}
    assert {r for r, _ in jobs} <= {"source_products", "summary"}
    snakemake(done, *CONFIG)
    assert planned_jobs(done, *CONFIG) == []


def test_deleting_one_measurement_table_remeasures_only_its_chunk(done):
    s = sources(done)[2]
    (done / f"results/measurements/{s}.parquet").unlink()
    jobs = planned_jobs(done, *CONFIG)
    assert {(r, w) for r, w in jobs if w} == {
        ("measure", chunk_of(done, s)),
        ("source_products", chunk_of(done, s)),
    }
    snakemake(done, *CONFIG)
    assert planned_jobs(done, *CONFIG) == []


def test_runtime_knobs_rerun_nothing(done):
    assert planned_jobs(done, *CONFIG, "cleanup=never") == []
    assert planned_jobs(done, *CONFIG, "--set-threads", "measure_c000000=2") == []
    assert planned_jobs(done, "--cores", "1", *CONFIG) == []


def test_changing_a_photometry_parameter_reruns_photometry_for_all(done):
    # --config flattens nested values to strings; a config file keeps their types.
    (done / "changed.yaml").write_text("photometry:\n  fit_half_size_px: 5\n")
    jobs = planned_jobs(done, "--configfile", "config/config.yaml", "changed.yaml", *CONFIG)
    measured = {w for r, w in jobs if r == "measure"}
    assert measured == set(chunks_of(done, PER_JOB))
    products = {w for r, w in jobs if r == "source_products"}
    assert products == measured
    assert not any(r in ("calibration", "validate_catalog") for r, _ in jobs)


def test_full_qa_runs_only_qa_jobs_from_the_kept_windows(done):
    jobs = planned_jobs(done, *CONFIG, "qa_level=full")
    assert {r for r, _ in jobs} == {"qa_full"}
    assert len(jobs) == len(chunks_of(done, PER_JOB))
    snakemake(done, *CONFIG, "qa_level=full")
    for s in sources(done):
        m = json.loads((done / f"results/qa/{s}/{s}_qa_manifest.json").read_text())
        measured = pd.read_parquet(done / f"results/measurements/{s}.parquet")
        n = int((measured["detection_status"] != "failed").sum())
        assert not m["problems"] and len(m["files"]) == n > 0
        assert not (done / f"data/cutouts/{s}").exists()  # nothing was downloaded


def test_rerun_update_fetches_only_new_images(done):
    s0, s1, _ = sources(done)
    path = done / f"results/discovery/{s0}.parquet"
    table = pd.read_parquet(path)
    new_image = table["obs_publisher_did"].iloc[0]
    # Pretend s0 was processed when the archive had one image fewer (discovery table, cutout
    # index and measurements without it)...
    table.iloc[1:].to_parquet(path, index=False)
    meas_path = done / f"results/measurements/{s0}.parquet"
    meas = pd.read_parquet(meas_path)
    meas[meas["image_id"] != new_image].to_parquet(meas_path, index=False)
    index_path = done / f"results/cutouts/{s0}.json"
    index = json.loads(index_path.read_text())
    index["images"] = [e for e in index["images"] if e["image_id"] != new_image]
    index["n_images"] = len(index["images"])
    index["n_ok"] = sum(e["status"] == "ok" for e in index["images"])
    index_path.write_text(json.dumps(index))
    snakemake(done, *CONFIG)  # the products follow that state
    n_before = len(pd.read_parquet(meas_path))
    spectrum_s1 = (done / f"results/spectra/{s1}.csv").read_bytes()
    time.sleep(1.1)
    # ...and the archive has gained it since. `spxflow rerun --update` marks both sources
    # (nothing else: it contacts no archive); each re-queries discovery in its measure job,
    # s0 fetches only the new image and s1 nothing.
    assert not planned_jobs(done, *CONFIG)
    assert "3 of 3 measured source(s) marked" in spxflow_rerun(done, "--update")
    planned = planned_jobs(done, *CONFIG)
    assert {w for r, w in planned if r == "measure"} == set(chunks_of(done, PER_JOB))
    assert ("discover", "b000000") in planned  # discovery is queried again
    snakemake(done, *CONFIG)
    assert len(pd.read_parquet(path)) == len(table)
    assert len(pd.read_parquet(meas_path)) == n_before + 1
    index = json.loads(index_path.read_text())
    fetched = [e["image_id"] for e in index["images"] if not e.get("carried")]
    assert fetched == [new_image]
    index1 = json.loads((done / f"results/cutouts/{s1}.json").read_text())
    assert all(e.get("carried") for e in index1["images"])
    assert (done / f"results/spectra/{s1}.csv").read_bytes() == spectrum_s1
    assert not list(done.glob("results/**/*.retry.*"))
    assert planned_jobs(done, *CONFIG) == []


def test_check_verifies_and_detects_tampering(done):
    snakemake(done, "check", "--forcerun", "check", *CONFIG)
    s = sources(done)[1]
    spec = done / f"results/spectra/{s}.csv"
    original = spec.read_bytes()
    spec.write_bytes(original.replace(b"detected", b"DETECTED", 1))
    proc = snakemake(done, "check", "--forcerun", "check", *CONFIG, check=False)
    assert proc.returncode != 0
    report = json.loads((done / "results/check/check_report.json").read_text())
    assert any(p["status"] == "tampered" and s in p["path"] for p in report["problems"])
    spec.write_bytes(original)


@pytest.mark.parametrize(
    "rows, message",
    [
        ([["ok", 10.0, 95.0]], "DEC_deg='95.0' is not in"),
        ([["ok", float("nan"), 5.0]], "row 1 ('ok'): RA_deg=''"),
        ([["x", 10.0, 5.0], ["x", 11.0, 5.0]], "duplicate name 'x'"),
        ([["a/b", 10.0, 5.0], ["a b", 11.0, 5.0]], "becomes file name 'a_b'"),
    ],
)
def test_hostile_catalog_is_rejected_before_anything_runs(tmp_path, rows, message):
    ws = make_workspace(tmp_path, pd.DataFrame(rows, columns=["Name", "RA_deg", "DEC_deg"]))
    proc = snakemake(ws, "-n", *CONFIG, check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert not (ws / "results").exists()


def test_hostile_names_are_slugged_into_the_project_folders(tmp_path):
    demo = tiny_catalog().head(1)
    rows = pd.DataFrame(
        {
            "Name": ["../../escape", "$(touch pwned)", 'quote\'s "x"'],
            "RA_deg": [demo.RA_deg[0]] * 3,
            "DEC_deg": [demo.DEC_deg[0] + d for d in (0.0, 0.05, 0.1)],
        }
    )
    ws = make_workspace(tmp_path / "ws", rows)
    outputs = planned_outputs(ws, *CONFIG)
    slugs = {p[len("results/cutouts/") : -len(".json")] for p in outputs if "/cutouts/" in p}
    assert slugs == {"escape", "touch_pwned", "quote_s_x"}
    assert all(p.startswith(("results/", "resources/")) for p in outputs), sorted(outputs)
    assert not (tmp_path / "escape").exists() and not (ws / "pwned").exists()
