"""profiles/slurm: job grouping (dry run, always) and real submissions (needs a Slurm cluster).

Tests marked ``slurm`` submit real jobs (minutes, mostly Slurm polling). They run only when
selected explicitly with ``-m slurm`` AND a controller answers (`scontrol ping`); otherwise they
skip, so a cluster that happens to be up does not slow everybody's `pytest`.
`.ci/run_slurm_demo.sh` starts a single-node cluster and runs `pytest -m slurm tests/test_slurm.py`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.workflow_helpers import REPO, chunks_of, make_workspace, snakemake, spxflow_rerun

PROFILE = REPO / "profiles" / "slurm" / "config.v8+.yaml"
CHUNK_FAMILIES = ("measure", "source_products")
CHUNK_RULE = re.compile(r"^(\w+)_[bc]\d{6}$")


def synthetic_catalog(n: int, seed: int = 7) -> pd.DataFrame:
    """n well-separated positions (no neighbours, no near-duplicates)."""
    rng = np.random.default_rng(seed)
    ra = (np.arange(n) * 360.0 / n + rng.uniform(0, 1, n)) % 360
    dec = rng.uniform(-60, 60, n)
    return pd.DataFrame(
        {"Name": [f"Src{i:05d}" for i in range(n)], "RA_deg": ra.round(6), "DEC_deg": dec.round(6)}
    )


def slurm_jobs_per_stage(dry_run_text: str) -> tuple[Counter, int]:
    """From a `snakemake -n` printout: for each rule (chunk rules by family), how many submitted
    units (a group job or a lone job) contain it; and the number of submitted units. Local
    rules are not counted."""
    per_rule: Counter = Counter()
    units = 0
    current: set | None = None
    for line in dry_run_text.splitlines():
        if re.search(r"\] Group job \S+", line):
            if current is not None:
                per_rule.update(current)
            current, units = set(), units + 1
            continue
        m = re.match(r"^(\s*)(local)?rule (\w+):\s*$", line)
        if not m:
            continue
        indented, local, rule = bool(m.group(1)), bool(m.group(2)), m.group(3)
        if chunk := CHUNK_RULE.match(rule):
            rule = chunk.group(1)  # counted by family
        if indented and current is not None:
            current.add(rule)
            continue
        if current is not None:  # a top-level job ends the group listing
            per_rule.update(current)
            current = None
        if not local and rule != "all":  # a target rule without action runs locally
            per_rule[rule] += 1
            units += 1
    if current is not None:
        per_rule.update(current)
    return per_rule, units


def test_profile_sets_partition_and_account_in_one_place():
    prof = yaml.safe_load(PROFILE.read_text())
    assert prof["executor"] == "slurm"
    assert "slurm_partition" in prof["default-resources"]
    # Per-rule mem_mb/runtime live in the rules only (attempt-scaled); a profile entry would
    # replace them and their scaling.
    for rule, res in (prof.get("set-resources") or {}).items():
        assert not {"mem_mb", "runtime", "slurm_account"} & set(res), rule
    assert "cpus_per_task" not in prof["default-resources"]  # would override every rule's threads
    # Chunk rules are named per chunk, so a set-threads key could not name them.
    assert "set-threads" not in prof
    # sacct polling without slurmdbd hangs Snakemake forever (shared/slurm/README.md)
    assert prof["slurm-status-command"] == "squeue"
    assert prof["group-components"]["per_chunk"] >= 1


def test_every_submitted_rule_sets_attempt_scaled_memory_and_time():
    # Named rules (`rule x:`) and the chunk rules defined in loops (`rule:` + `name:`).
    blocks = re.findall(
        r"^([ \t]*)rule( \w+)?:\n((?:\1[ \t]+.*\n|\n)*)", _rule_text(), re.MULTILINE
    )
    local = set(re.findall(r"localrules:\n\s+(\w+)", _rule_text()))
    names = []
    for _, name, body in blocks:
        name = name.strip() or re.search(r"name:\s*\n?\s*(f?\"[^\"]+\")", body).group(1)
        names.append(name)
        if name in local or "script:" not in body:
            continue
        assert "mem_mb=mem_mb_scaled(" in body and "runtime=runtime_scaled(" in body, name
    assert {'f"measure_{chunk}"', 'f"source_products_{chunk}"', "summary"} <= set(names), names


def _rule_text() -> str:
    return "".join(p.read_text() for p in sorted((REPO / "workflow" / "rules").glob("*.smk")))


def test_50_sources_go_to_slurm_as_few_jobs_per_stage(tmp_path, capsys):
    ws = make_workspace(tmp_path / "ws", synthetic_catalog(50))
    proc = snakemake(ws, "-n", "--profile", "profiles/slurm", "--config", "catalog=catalog.csv")
    per_rule, units = slurm_jobs_per_stage(proc.stdout + proc.stderr)
    per_chunk = yaml.safe_load(PROFILE.read_text())["group-components"]["per_chunk"]
    n_chunks = len(chunks_of(ws, _sources_per_job(ws)))
    with capsys.disabled():
        print(
            f"\n50 sources in {n_chunks} chunks, group-components per_chunk={per_chunk}: "
            f"{units} Slurm jobs"
        )
        for rule, n in sorted(per_rule.items()):
            print(f"    {rule:16s} in {n:3d} Slurm job(s)")
    for rule in CHUNK_FAMILIES:
        assert per_rule[rule] == -(-n_chunks // per_chunk), (rule, per_rule[rule])
    assert per_rule["calibration"] == 1
    assert units <= 4 * 10


def cluster_up() -> bool:
    if not shutil.which("scontrol"):
        return False
    try:
        out = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=15)
    except (subprocess.TimeoutExpired, OSError):
        return False
    return out.returncode == 0 and "UP" in out.stdout


@pytest.fixture
def slurm_cluster(request):
    markexpr = request.config.getoption("-m") or ""
    if "slurm" not in markexpr or "not slurm" in markexpr:
        pytest.skip("real Slurm submissions run only with `pytest -m slurm`")
    if not cluster_up():
        pytest.skip("no Slurm controller answers (start one with .ci/slurm/start-slurm.sh)")


def _sources_per_job(ws: Path) -> int:
    return yaml.safe_load((ws / "config" / "config.yaml").read_text())["sources_per_job"]


def measure_on_slurm(ws: Path) -> list[str]:
    """Snakemake arguments: the committed Slurm profile up to the measure jobs (their chunk
    records) on this cluster's partition, one core per submission (the CI node has 2 CPUs),
    early polling."""
    records = [f"results/chunks/measure/{c}.json" for c in chunks_of(ws, _sources_per_job(ws))]
    partition = (
        subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, check=True)
        .stdout.split()[0]
        .rstrip("*")
    )
    return [
        "--profile",
        "profiles/slurm",
        "--cores",
        "1",
        "--slurm-init-seconds-before-status-checks",
        "5",
        "--default-resources",
        f"slurm_partition={partition}",
        "--config",
        "catalog=catalog.csv",
        "--until",
        *records,
    ]


def _only_qr2(ws: Path, irsa: dict | None = None) -> None:
    """Serve (or query) QR2 only: half the images and calibration products of both releases."""
    cfg_path = ws / "config" / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["archive"].setdefault("simulated", {})["releases"] = ["qr2"]
    if irsa is not None:
        cfg["archive"]["backend"] = "irsa"
        cfg["archive"]["irsa"] = {**irsa, "collections": ["spherex_qr2", "spherex_qr2_deep"]}
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))


@pytest.mark.slurm
def test_measure_of_50_sources_is_submitted_as_grouped_slurm_jobs(slurm_cluster, tmp_path, capsys):
    # Small cutouts keep 50 sources' discovery + cutouts + photometry quick on a 2-CPU node,
    # and so does QR2 alone: this test is about submission and grouping, not releases.
    ws = make_workspace(tmp_path / "ws", synthetic_catalog(50).assign(cutout_size_arcsec=20.0))
    _only_qr2(ws)
    proc = snakemake(ws, *measure_on_slurm(ws), timeout=900)
    log = proc.stdout + proc.stderr
    ids = set(re.findall(r"submitted with SLURM jobid (\d+)", log))
    with capsys.disabled():
        print(f"\n50 sources, measure: {len(ids)} Slurm jobs ({sorted(ids, key=int)})")
    assert 1 <= len(ids) <= 10 + 1  # chunk groups + the calibration group
    assert len(list((ws / "results" / "measurements").glob("*.parquet"))) == 50
    states = subprocess.run(
        ["squeue", "--states=all", "--noheader", "--format=%i|%T", "-j", ",".join(ids)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert states.count("|COMPLETED") == len(ids), states
    assert list(Path(ws, ".snakemake", "slurm_logs").rglob("*.log"))


@pytest.mark.slurm
def test_rerun_update_through_slurm_queries_discovery_once(slurm_cluster, tmp_path):
    """`python -m spxflow rerun --update -- --profile profiles/slurm`: the marking step
    contacts no archive, and the Slurm jobs that follow query discovery once (one TAP query
    for the batch of uploaded positions; the emulator counts), however often Snakemake
    re-parses the workflow in them."""
    from spxflow.archive.emulator import get_stats, running_emulator

    catalog = synthetic_catalog(3).assign(cutout_size_arcsec=20.0)
    ws = make_workspace(tmp_path / "ws", catalog)
    slurm_args = measure_on_slurm(ws)
    _only_qr2(ws)
    cfg = yaml.safe_load((ws / "config" / "config.yaml").read_text())
    with running_emulator(cfg["archive"], {"seed": 1, "rules": []}) as url:
        _only_qr2(ws, {"base_url_override": url, "lock_dir": str(ws / ".locks")})
        snakemake(ws, *slurm_args, timeout=900)
        first = get_stats(url)["requests"]
        # One discover job: one TAP query for all positions, no SIA2.
        assert (first.get("tap", 0), first.get("sia", 0)) == (1, 0)
        out = spxflow_rerun(ws, "--update", "--", *slurm_args)
        second = get_stats(url)["requests"]
    assert f"{len(catalog)} of {len(catalog)} measured source(s) marked" in out
    assert "submitted with SLURM jobid" in out
    assert second["tap"] - first["tap"] == 1 and second.get("sia", 0) == 0  # once
    assert second.get("cutout", 0) == first.get("cutout", 0)  # nothing fetched twice
    assert not list(ws.glob("results/**/*.retry.*"))
