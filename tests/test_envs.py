"""envs/spxflow.yaml (conda, for `--sdm conda`) and pyproject.toml list the same packages with
the same version floors. The conda solve itself is not tested (no conda channels here)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
ENV_FILE = REPO / "envs" / "spxflow.yaml"
# PyPI name (extras dropped) -> conda-forge/bioconda name, where they differ.
CONDA_NAME = {}
# Conda-only entries that have no [project] dependency counterpart.
CONDA_ONLY = {"python", "pip"}
_REQ = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(?:\[[^\]]*\])?\s*(.*)$")


def _split(spec: str) -> tuple[str, str]:
    m = _REQ.match(spec)
    assert m, f"cannot parse requirement {spec!r}"
    name = re.sub(r"[-_.]+", "-", m.group(1)).lower()
    return CONDA_NAME.get(name, name), m.group(2).replace(" ", "")


def pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = dict(_split(s) for s in project["dependencies"])
    reqs["python"] = project["requires-python"].replace(" ", "")
    return reqs


def conda_requirements() -> tuple[dict[str, str], list]:
    env = yaml.safe_load(ENV_FILE.read_text())
    reqs, pip = {}, []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip.extend(dep.get("pip", []))
            continue
        name, spec = _split(dep)
        reqs[name] = spec
    return reqs, pip


def test_conda_env_has_the_same_packages_and_floors_as_pyproject():
    py = pyproject_requirements()
    conda, _ = conda_requirements()
    conda_deps = {k: v for k, v in conda.items() if k not in CONDA_ONLY - {"python"}}
    missing = sorted(set(py) - set(conda_deps))
    extra = sorted(set(conda_deps) - set(py))
    assert not missing, f"in pyproject.toml but not envs/spxflow.yaml: {missing}"
    assert not extra, f"in envs/spxflow.yaml but not pyproject.toml: {extra}"
    differ = {k: (py[k], conda_deps[k]) for k in py if py[k] != conda_deps[k]}
    assert not differ, f"version floors differ (pyproject, conda): {differ}"


def test_every_floor_is_a_lower_bound_only():
    # A pin or cap in one list and not the other would make the two environments diverge.
    for name, spec in {**pyproject_requirements(), **conda_requirements()[0]}.items():
        if name in CONDA_ONLY - {"python"}:
            continue
        assert re.fullmatch(r">=[0-9][0-9.]*", spec), f"{name}: {spec!r} is not a plain floor"


def test_env_installs_spxflow_itself_from_the_checkout():
    _, pip = conda_requirements()
    assert "-e .." in pip  # rule scripts import spxflow; ".." is resolved from envs/


def test_channels_are_explicit():
    env = yaml.safe_load(ENV_FILE.read_text())
    assert env["channels"][:2] == ["conda-forge", "bioconda"]
