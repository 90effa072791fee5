"""Run the real workflow (Snakefile, rules, scripts) in a throw-away copy of the project."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
PROJECT_ITEMS = ("Snakefile", "workflow", "config", "scripts", "resources", "profiles", "envs")


def make_workspace(dest: Path, catalog_rows: pd.DataFrame | None = None) -> Path:
    """Copy the project's workflow files to ``dest`` (calibration cache excluded)."""
    dest.mkdir(parents=True, exist_ok=True)
    for item in PROJECT_ITEMS:
        src = REPO / item
        if not src.exists():
            continue
        if src.is_dir():
            shutil.copytree(
                src, dest / item, ignore=shutil.ignore_patterns("calibration", "__pycache__")
            )
        else:
            shutil.copy2(src, dest / item)
    if catalog_rows is not None:
        catalog_rows.to_csv(dest / "catalog.csv", index=False)
    return dest


def snakemake(ws: Path, *args: str, check: bool = True, timeout: float = 900):
    """Run ``snakemake`` in workspace ``ws``; returns the CompletedProcess (text output)."""
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", "--scheduler", "greedy", *args]
    env = {**os.environ, "MPLBACKEND": "Agg"}
    proc = subprocess.run(
        cmd, cwd=ws, capture_output=True, text=True, timeout=timeout, env=env, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
            f"{proc.stderr[-6000:]}"
        )
    return proc


def spxflow_rerun(ws: Path, *args: str, timeout: float = 900) -> str:
    """Run ``python -m spxflow rerun ARGS`` in ``ws``; returns its output (fails loudly)."""
    proc = subprocess.run(
        [sys.executable, "-m", "spxflow", "rerun", *args],
        cwd=ws,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "MPLBACKEND": "Agg"},
        check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"spxflow rerun {' '.join(args)} failed ({proc.returncode}):\n"
            f"{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
        )
    return proc.stdout + proc.stderr


# Jobs of a group are printed indented under their group job.
_JOB = re.compile(
    r"^\s*rule (\w+):\s*$(?P<body>(?:\n(?!\s*rule |\s*localrule |\s*group job ).*)*)",
    re.MULTILINE,
)
_WILDCARDS = re.compile(r"wildcards: (.*)")
_OUTPUT = re.compile(r"^\s*output: (.*)$", re.MULTILINE)
_CHUNK_RULE = re.compile(r"^(\w+)_([bc]\d{6})$")


def _dry_run_jobs(ws: Path, *args: str):
    proc = snakemake(ws, "-n", *args)
    text = (proc.stdout + proc.stderr).replace("localrule ", "rule ")
    for m in _JOB.finditer(text):
        if m.group(1) != "all":  # the target rule itself is not work
            yield m.group(1), m.group("body")


def planned_jobs(ws: Path, *args: str) -> list[tuple[str, str]]:
    """(rule, wildcards text) of every job a dry run plans; a chunk rule's job is
    (its family, its chunk), e.g. ("measure", "c000001") for rule measure_c000001."""
    jobs = []
    for rule, body in _dry_run_jobs(ws, *args):
        if chunk := _CHUNK_RULE.match(rule):
            jobs.append((chunk.group(1), chunk.group(2)))
            continue
        wc = _WILDCARDS.search(body)
        jobs.append((rule, wc.group(1).strip() if wc else ""))
    return jobs


def planned_outputs(ws: Path, *args: str) -> set[str]:
    """Every output path of the jobs a dry run plans."""
    out = set()
    for _, body in _dry_run_jobs(ws, *args):
        for m in _OUTPUT.finditer(body):
            out |= {p.strip() for p in m.group(1).split(",")}
    return out


def chunks_of(ws: Path, per_job: int) -> dict[str, list[str]]:
    """Chunk id -> slugs of the workspace catalog's sources, as the workflow chunks them."""
    from spxflow.chunks import chunk_sources
    from spxflow.slug import safe_slug

    names = pd.read_csv(ws / "catalog.csv")["Name"]
    return chunk_sources([safe_slug(n) for n in names], per_job)


def result_files(ws: Path) -> dict[str, bytes]:
    """Every file under results/ (logs and benchmarks live elsewhere) with its bytes."""
    root = ws / "results"
    return {
        str(p.relative_to(ws)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def assert_same_rows(b: pd.DataFrame, a: pd.DataFrame, skip=()) -> None:
    """Two measurement tables agree row by row (by image_id): numbers to 1e-9, the rest
    exactly; columns in ``skip`` are not compared."""
    a = a.set_index("image_id").sort_index()
    b = b.set_index("image_id").sort_index()
    assert list(a.index) == list(b.index)
    for col in a.columns:
        if col in skip:
            continue
        if pd.api.types.is_numeric_dtype(a[col]) and not pd.api.types.is_bool_dtype(a[col]):
            np.testing.assert_allclose(
                b[col].to_numpy(float), a[col].to_numpy(float), rtol=1e-9, atol=1e-12,
                equal_nan=True, err_msg=col,
            )  # fmt: skip
        else:
            assert b[col].tolist() == a[col].tolist(), col


def measure_outputs(results_dir: str, source: str = "AGN"):
    """``rules.MeasureOutputs`` of ``source`` under ``results_dir`` (the workflow's paths)."""
    from spxflow.rules import MeasureOutputs

    return MeasureOutputs(
        discovery=f"{results_dir}/discovery/{source}.parquet",
        cutout_index=f"{results_dir}/cutouts/{source}.json",
        measurements=f"{results_dir}/measurements/{source}.parquet",
        stamps=f"{results_dir}/qa/{source}/{source}_stamps.npz",
    )
