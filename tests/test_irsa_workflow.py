"""The demo workflow with ``archive.backend: irsa`` and ``pixels: cutout`` against the
loopback emulator (30 % of cutout requests failing transiently, one image failing permanently)
gives the simulated backend's spectra; the per-host limit holds across parallel jobs."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

from spxflow.archive.emulator import get_stats, running_emulator
from spxflow.config import block_defaults
from tests.workflow_helpers import REPO, make_workspace, snakemake, spxflow_rerun

pytestmark = pytest.mark.slow

# Both sources in one chunk: a retry of one re-runs the chunk's jobs, and the other source
# carries everything over.
CONFIG = ["--config", "catalog=catalog.csv", "sources_per_job=2"]
PERMANENT = "0008_3D3"  # one image of the first source fails on every attempt
FAULTS = {
    "seed": 17,
    "rules": [
        {"kind": "cutout", "match": PERMANENT, "fault": "503", "permanent": True},
        {"kind": "cutout", "fault": "429", "rate": 0.06, "retry_after": 0.05},
        {"kind": "cutout", "fault": "503", "rate": 0.06 / 0.94},
        {"kind": "cutout", "fault": "truncate", "rate": 0.06 / 0.88},
        {"kind": "cutout", "fault": "reset", "rate": 0.06 / 0.82},
        {"kind": "cutout", "fault": "slow", "rate": 0.06 / 0.76, "slow_s": 6.0},
        {"kind": "cutout", "fault": "gzip", "rate": 0.2},
        {"kind": "sia", "fault": "503", "rate": 0.3},
        {"kind": "tap", "fault": "503", "rate": 0.3},
    ],
}


def tiny_catalog() -> pd.DataFrame:
    return pd.read_csv(REPO / "resources" / "demo_catalog.csv").head(2).reset_index(drop=True)


def workspace(path):
    ws = make_workspace(path, tiny_catalog())
    for extra in ("envs",):  # referenced by rules; copy if the helper does not
        if (REPO / extra).is_dir() and not (ws / extra).exists():
            shutil.copytree(REPO / extra, ws / extra)
    return ws


def sources(ws):
    from spxflow.slug import safe_slug

    return [safe_slug(n) for n in pd.read_csv(ws / "catalog.csv")["Name"]]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    sim_ws = workspace(tmp_path_factory.mktemp("sim"))
    snakemake(sim_ws, *CONFIG)
    irsa_ws = workspace(tmp_path_factory.mktemp("irsa"))
    cfg_path = irsa_ws / "config" / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    with running_emulator(cfg["archive"], FAULTS) as url:
        cfg["archive"]["backend"] = "irsa"
        cfg["archive"].setdefault("irsa", {}).update(
            pixels="cutout",  # the IBE cutout path; tests/test_s3_measure.py covers s3
            base_url_override=url,
            timeout_s=5.0,
            retry_attempts=8,
            backoff_base_s=0.05,
            backoff_max_s=0.5,
            lock_dir=str(irsa_ws / ".locks"),
        )
        cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        snakemake(irsa_ws, *CONFIG)
        stats = get_stats(url)
    return sim_ws, irsa_ws, stats


def test_spectra_equal_the_simulated_backend(runs):
    sim_ws, irsa_ws, _ = runs
    for s in sources(sim_ws):
        a = pd.read_csv(sim_ws / f"results/spectra/{s}.csv")
        b = pd.read_csv(irsa_ws / f"results/spectra/{s}.csv")
        assert list(a.columns) == list(b.columns) and len(a) == len(b) > 0
        a = a.set_index("image_id").sort_index()
        b = b.set_index("image_id").sort_index()
        failed = b["failure_reason"].fillna("").str.contains("cutout failed")
        assert int(failed.sum()) == (1 if s == sources(sim_ws)[0] else 0)
        a, b = a[~failed.to_numpy()], b[~failed.to_numpy()]
        for col in a.columns:
            if pd.api.types.is_numeric_dtype(a[col]) and not pd.api.types.is_bool_dtype(a[col]):
                np.testing.assert_allclose(
                    b[col].to_numpy(float),
                    a[col].to_numpy(float),
                    rtol=1e-9,
                    atol=0,
                    equal_nan=True,
                    err_msg=f"{s}: column {col}",
                )
            else:
                assert b[col].fillna("").tolist() == a[col].fillna("").tolist(), (s, col)


def test_manifests_clean_and_calibration_provenance_equal(runs):
    sim_ws, irsa_ws, _ = runs
    for s in sources(sim_ws):
        manifest = json.loads(
            (irsa_ws / f"results/provenance/{s}_output_manifest.json").read_text()
        )
        assert manifest.get("problems", []) == []
        cal = [
            json.loads((ws / f"results/provenance/{s}_provenance.json").read_text())["calibration"]
            for ws in (sim_ws, irsa_ws)
        ]
        assert cal[0] == cal[1] and len(cal[0]) == 36  # 2 QR2 + 4 QR3 families x 6


def test_cutout_index_records_the_permanent_failure(runs):
    _, irsa_ws, _ = runs
    first, second = sources(irsa_ws)
    index = json.loads((irsa_ws / f"results/cutouts/{first}.json").read_text())
    bad = [e for e in index["images"] if e["status"] != "ok"]
    assert len(bad) == 1 and PERMANENT in bad[0]["file_name"]
    assert "HTTP 503" in bad[0]["reason"] and bad[0]["path"] is None
    assert index["n_ok"] == index["n_images"] - 1
    other = json.loads((irsa_ws / f"results/cutouts/{second}.json").read_text())
    assert other["n_failed"] == 0
    assert not list(irsa_ws.glob("data/**/*.part"))


def test_emulator_saw_no_duplicates_and_the_host_limit(runs):
    _, irsa_ws, stats = runs
    n = sum(
        json.loads((irsa_ws / f"results/cutouts/{s}.json").read_text())["n_ok"]
        for s in sources(irsa_ws)
    )
    assert stats["status"]["cutout"]["200"] == n  # each cutout served exactly once
    assert sum(stats["faults"].values()) > 10
    assert stats["max_concurrent"]["cutout"] <= 2
    assert stats["max_concurrent"]["total"] <= 2


def test_retry_failed_fetches_only_the_failed_cutout(runs):
    """After the outage: `spxflow rerun --retry-failed` re-fetches just the failed image,
    carries the other measurements over, and the spectra then equal the simulated backend's."""
    sim_ws, irsa_ws, _ = runs
    first, second = sources(irsa_ws)
    untouched = (irsa_ws / f"results/spectra/{second}.csv").read_bytes()
    cfg_path = irsa_ws / "config" / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    with running_emulator(cfg["archive"], {"seed": 1, "rules": []}) as url:
        cfg["archive"]["irsa"]["base_url_override"] = url
        cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        out = spxflow_rerun(irsa_ws, "--retry-failed", "--", "--cores", "2", *CONFIG)
        stats = get_stats(url)
    assert "1 of 2 measured source(s) marked" in out
    assert "1 other source(s) share a measure job" in out  # the chunk's other source
    assert stats["status"]["cutout"]["200"] == 1  # only the image that failed before
    index = json.loads((irsa_ws / f"results/cutouts/{first}.json").read_text())
    assert index["n_failed"] == 0
    assert sum(bool(e.get("carried")) for e in index["images"]) == index["n_images"] - 1
    # Its chunk's jobs ran again, but the other source fetched nothing and kept its spectrum.
    index2 = json.loads((irsa_ws / f"results/cutouts/{second}.json").read_text())
    assert all(e.get("carried") for e in index2["images"] if e["status"] == "ok")
    assert (irsa_ws / f"results/spectra/{second}.csv").read_bytes() == untouched
    for s in (first, second):
        a = pd.read_csv(sim_ws / f"results/spectra/{s}.csv").set_index("image_id").sort_index()
        b = pd.read_csv(irsa_ws / f"results/spectra/{s}.csv").set_index("image_id").sort_index()
        assert list(a.index) == list(b.index)
        np.testing.assert_allclose(b["flux_uJy"], a["flux_uJy"], rtol=1e-9, equal_nan=True)
        assert b["measurement_id"].tolist() == a["measurement_id"].tolist()
    # Nothing left to retry: a second retry run does nothing.
    assert not list(irsa_ws.glob("results/cutouts/*.retry.json"))


def _checksums(ws) -> dict[str, str]:
    return {
        str(p.relative_to(ws)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((ws / "results").rglob("*"))
        if p.is_file()
    }


def _with_emulator(ws, faults=None):
    """Point the workspace's config at a fresh emulator (a runtime knob: re-runs nothing)."""
    cfg_path = ws / "config" / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    emulator = running_emulator(cfg["archive"], faults or {"seed": 1, "rules": []})
    url = emulator.__enter__()
    cfg["archive"]["irsa"]["base_url_override"] = url
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return emulator, url


def test_parsing_the_workflow_changes_nothing_and_contacts_no_archive(runs, tmp_path):
    """Dry runs, --lint, --report and --rulegraph, plain and with the former update /
    retry_failed keys: every file under results/ is unchanged and the archive sees nothing."""
    _, irsa_ws, _ = runs
    ws = tmp_path / "ws"
    shutil.copytree(irsa_ws, ws, symlinks=True)
    emulator, url = _with_emulator(ws)
    try:
        before = _checksums(ws)
        assert before
        for command in (["-n"], ["--lint"], ["--report", "report.html"], ["--rulegraph"]):
            for extra in ([], ["update=true"], ["retry_failed=true"]):
                proc = snakemake(ws, *command, *CONFIG, *extra, check=not extra)
                if extra:  # removed keys fail validation, saying what replaces them
                    assert proc.returncode != 0
                    assert "python -m spxflow rerun" in proc.stdout + proc.stderr
                assert _checksums(ws) == before, (command, extra)
        assert sum(get_stats(url)["requests"].values()) == 0
    finally:
        emulator.__exit__(None, None, None)


def test_rerun_update_queries_discovery_once(runs, tmp_path):
    """`spxflow rerun --update` itself contacts no archive; the run that follows queries
    discovery exactly once (one TAP query for the catalog's batch: every source's positions
    uploaded together) and fetches no cutout already measured."""
    _, irsa_ws, _ = runs
    ws = tmp_path / "ws"
    shutil.copytree(irsa_ws, ws, symlinks=True)
    # Images whose fetch failed are not carried over: they are fetched again.
    failed_before = sum(
        json.loads((ws / f"results/cutouts/{s}.json").read_text())["n_failed"] for s in sources(ws)
    )
    emulator, url = _with_emulator(ws)
    try:
        assert "2 of 2 measured source(s) marked" in spxflow_rerun(ws, "--update")
        assert sum(get_stats(url)["requests"].values()) == 0
        snakemake(ws, *CONFIG)
        stats = get_stats(url)
    finally:
        emulator.__exit__(None, None, None)
    # One discover job for the batch, one TAP query for its positions; no SIA2 at all.
    assert len(sources(ws)) <= block_defaults("archive", "irsa")["tap_upload_rows"]
    assert stats["requests"].get("tap", 0) == 1
    assert stats["requests"].get("sia", 0) == 0
    assert stats["requests"].get("cutout", 0) == failed_before
